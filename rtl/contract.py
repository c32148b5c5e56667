"""Elaboration-time checks that a generator built the pipeline the contract times.

The device model, the planner and the cycle counters' predictions all count
with :mod:`hetaccel.spec.timing`.  A generator whose pipeline had another depth
would make those counts wrong while every bit-exact test still passed, so it
refuses to elaborate instead.
"""

from __future__ import annotations

__all__ = ["ContractMismatch", "check_depth", "check_generated"]


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


def check_generated(config) -> None:
    """Refuse a config the generators do not build yet (ValueError naming the
    field): the SPRAM store's LOAD / STORE run on the emulator
    (:mod:`hetaccel.sim.device_model`), but no DMA engine moves SPRAM lines in
    the generated device yet, and a device that answered UNKNOWN_OPCODE to
    them would not be the config it reports."""
    if config.memory is not None and config.memory.kind != "sdram":
        raise ValueError(f"device_memory={config.device_memory!r}: the generated device has "
                         f"no DMA for it yet; generate it with device_memory='none' or "
                         f"'sdram32m' (the emulator runs LOAD / STORE on any)")
