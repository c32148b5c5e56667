"""Elaboration-time checks that a generator built the pipeline the contract times.

The device model, the planner and the cycle counters' predictions all count
with :mod:`hetaccel.spec.timing`.  A generator whose pipeline had another depth
would make those counts wrong while every bit-exact test still passed, so it
refuses to elaborate instead.
"""

from __future__ import annotations

__all__ = ["ContractMismatch", "check_depth"]


class ContractMismatch(AssertionError):
    """A generator built a pipeline of another depth than the one it is timed with."""


def check_depth(unit: str, built: int, expected: int, source: str) -> None:
    """Raise :class:`ContractMismatch` unless ``built == expected``.

    ``unit`` names what was built, ``built`` is the depth of the registers it
    generated and ``expected`` the depth ``source`` (e.g.
    ``"hetaccel.spec.timing.ACTIVATION_LATENCY"``) says it has.
    """
    if built != expected:
        raise ContractMismatch(f"{unit}: the pipeline built is {built} cycles deep, but "
                               f"{source} is {expected}")
