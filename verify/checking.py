"""Comparisons that say where hardware and model first disagree."""

from __future__ import annotations

import numpy as np

__all__ = ["first_difference", "assert_bit_exact"]


def first_difference(expected, got):
    """``(index, expected, got)`` of the first differing element, or None.

    Floating-point arrays are compared by bit pattern so NaN payloads and the
    sign of zero count, as they do in hardware.
    """
    expected = np.asarray(expected)
    got = np.asarray(got)
    if expected.shape != got.shape:
        raise AssertionError(f"shape mismatch: expected {expected.shape}, got {got.shape}")
    if expected.dtype.kind == "f":
        width = {2: np.uint16, 4: np.uint32, 8: np.uint64}[expected.dtype.itemsize]
        e_bits, g_bits = expected.view(width), got.astype(expected.dtype).view(width)
        diff = np.argwhere(e_bits != g_bits)
    else:
        diff = np.argwhere(expected != got)
    if len(diff) == 0:
        return None
    idx = tuple(int(i) for i in diff[0])
    return idx, expected[idx], got[idx]


def assert_bit_exact(expected, got, what: str = "result") -> None:
    """Raise an AssertionError naming the first differing element."""
    first = first_difference(expected, got)
    if first is not None:
        idx, e, g = first
        n_bad = int(np.sum(np.asarray(expected) != np.asarray(got)))
        raise AssertionError(
            f"{what}: first difference at index {idx}: expected {e!r}, got {g!r} "
            f"({n_bad} of {np.asarray(expected).size} elements differ)")
