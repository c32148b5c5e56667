"""The 16-bit activations' piecewise-linear evaluator: its number format and ROM.

Sigmoid, tanh and GELU in the FIXED16 precision share one evaluator
(docs/numerics.md): a 512-entry ROM in two banks (bank 0 = sigma, bank 1 =
Phi, the normal CDF, both of ``|z|`` on [0, 16)), 256 segments of 1/16 per
bank, each evaluated as :func:`pwl_segment` in units of ``2**-PWL_FRAC``.
The RTL initialises its ROM from :func:`pwl_rom_words` and builds its fields
from these widths; the bit-exact model evaluates the same coefficients.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .formats import ACTIVATION_FORMAT

__all__ = ["PWL_FRAC", "PWL_SLOPE_FRAC", "PWL_SEGMENT_BITS", "PWL_SEGMENTS", "PWL_C0_BITS",
           "PWL_C1_BITS", "PWL_BANKS", "pwl_segment", "pwl_rom", "pwl_rom_words"]

PWL_FRAC = 20          # S is in units of 2**-20
PWL_SLOPE_FRAC = 8     # C1 carries 8 more fraction bits than S
PWL_SEGMENT_BITS = 8   # 256 Q4.12 codes (1/16) per segment
PWL_SEGMENTS = 256     # per bank: |z| in [0, 16)
PWL_C0_BITS = 21       # C0 in [0, 2**20]
PWL_C1_BITS = 16       # C1 in [0, 2**16)
PWL_BANKS = ("sigmoid", "phi")
_ONE = 1 << PWL_FRAC


def _target(bank: str, a: np.ndarray) -> np.ndarray:
    # The float64 function a bank approximates, of the Q4.12 magnitude ``a``.
    x = a / float(1 << ACTIVATION_FORMAT.fixed_in_frac)
    if bank == "sigmoid":
        # exp of a non-positive argument only, so nothing overflows.
        e = np.exp(-np.abs(x))
        f = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    else:
        f = 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))
    return f * _ONE


def pwl_segment(c0, c1, t):
    """``S = C0 + ((C1 * t + 2**(PWL_SLOPE_FRAC-1)) >> PWL_SLOPE_FRAC)``: one segment
    at offset ``t`` (the low ``PWL_SEGMENT_BITS`` of ``|z|``), as the RTL computes it."""
    return c0 + ((c1 * t + (1 << (PWL_SLOPE_FRAC - 1))) >> PWL_SLOPE_FRAC)


@lru_cache(maxsize=None)
def _pwl_rom_cached() -> tuple[np.ndarray, np.ndarray]:
    seg = 1 << PWL_SEGMENT_BITS
    t = np.arange(seg, dtype=np.int64)
    c0s, c1s = [], []
    for bank in PWL_BANKS:
        prev_end = 0
        for i in range(PWL_SEGMENTS):
            target = _target(bank, i * seg + t)
            chord = (target[-1] - target[0]) / (seg - 1) * (1 << PWL_SLOPE_FRAC)
            best = None
            # Minimax over the segment's integer inputs: try slopes around the
            # chord and centre the error band with C0.
            for c1 in range(max(0, int(chord) - 3), int(chord) + 5):
                approx = pwl_segment(0, c1, t)
                err = target - approx
                c0 = int(math.floor((err.max() + err.min()) / 2 + 0.5))
                c0 = min(c0, _ONE - int(approx.max()))   # keep S <= 1.0
                worst = float(np.max(np.abs(target - (approx + c0))))
                if best is None or worst < best[0]:
                    best = (worst, c0, c1)
            _, c0, c1 = best
            # Monotonic across segment joins: never start below where the
            # previous segment ended (costs a fraction of an LSB at most).
            c0 = max(c0, prev_end)
            prev_end = int(pwl_segment(c0, c1, seg - 1))
            c0s.append(c0)
            c1s.append(c1)
    c0 = np.array(c0s, dtype=np.int64)
    c1 = np.array(c1s, dtype=np.int64)
    assert c0.min() >= 0 and c0.max() < (1 << PWL_C0_BITS)
    assert c1.min() >= 0 and c1.max() < (1 << PWL_C1_BITS)
    # sigma and Phi of |z| lie in [1/2, 1]: the RTL's unsigned "1 - S" and
    # "2S - 1" rely on it.  Both are non-decreasing in |z|.
    a = np.arange(PWL_SEGMENTS << PWL_SEGMENT_BITS, dtype=np.int64)
    for bank in range(len(PWL_BANKS)):
        idx = bank * PWL_SEGMENTS + (a >> PWL_SEGMENT_BITS)
        s = pwl_segment(c0[idx], c1[idx], a & ((1 << PWL_SEGMENT_BITS) - 1))
        assert s.min() >= _ONE // 2 and s.max() <= _ONE and np.all(np.diff(s) >= 0)
    c0.setflags(write=False)
    c1.setflags(write=False)
    return c0, c1


def pwl_rom() -> tuple[np.ndarray, np.ndarray]:
    """``(C0, C1)``: the 2 x 256 segment coefficients (bank 0 sigma, bank 1 Phi).

    Computed once per process from float64 math by a per-segment minimax fit
    over the segment's integer inputs; the RTL ROM is initialised from it.
    """
    return _pwl_rom_cached()


def pwl_rom_words() -> list[int]:
    """ROM words as the RTL stores them: ``C0 | C1 << PWL_C0_BITS``."""
    c0, c1 = pwl_rom()
    return [int(a) | (int(b) << PWL_C0_BITS) for a, b in zip(c0, c1)]
