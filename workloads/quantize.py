"""The quantization scheme of the transformer path (docs/quantization.md).

Everything the accelerator multiplies is int8 and every product accumulates
exactly in int32, so the scheme is a choice of *scales* applied on the host around
exact integer matmuls:

* **weights**: symmetric int8 per output channel (``scale[n] = max|W[n, :]| / 127``);
* **activations**: symmetric per token (per row) — one scale per row, calibrated
  from the row itself at run time, so an outlier token cannot crush the others;
* **higher-precision path**: a row can be split into two int8 parts,
  ``x ~= s * (256 * hi + lo)`` with ``hi, lo`` int8, giving a 16-bit mantissa per
  element (it absorbs the few hidden dimensions with outliers ~20x the typical
  magnitude that BERT's LayerNorm outputs carry).  ``A @ W`` then costs two int8
  matmuls whose int32 results the host combines exactly as ``256 * acc_hi + acc_lo``
  in int64.

The functions here are pure NumPy and hold no device numerics: requantization and
the activation tables are :mod:`hetaccel.sim.activation_model`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["QuantizedTensor", "SplitTensor", "quantize_weight", "quantize_rows",
           "split_rows", "combine_split", "dequantize_product", "QMAX", "SPLIT_QMAX"]

QMAX = 127
#: Largest magnitude of the 16-bit value 256*hi + lo with hi, lo in [-128, 127] that
#: keeps ``hi`` in range after round-to-nearest of the low part.
SPLIT_QMAX = 127 * 256 + 127


@dataclass
class QuantizedTensor:
    """``values * scale`` approximates the float tensor.

    ``scale`` broadcasts against ``values``: shape ``(rows, 1)`` for per-row
    (per-token) scales, ``(1, cols)`` or ``(cols,)`` for per-column scales.
    """

    values: np.ndarray   # int8
    scale: np.ndarray    # float64

    def dequantize(self) -> np.ndarray:
        return (self.values.astype(np.float64) * self.scale).astype(np.float32)


@dataclass
class SplitTensor:
    """``scale * (256 * hi + lo)`` approximates the float tensor (two int8 parts)."""

    hi: np.ndarray       # int8
    lo: np.ndarray       # int8
    scale: np.ndarray    # float64, per row: (rows, 1)

    @property
    def parts(self) -> list[np.ndarray]:
        return [self.hi, self.lo]

    def dequantize(self) -> np.ndarray:
        q = 256 * self.hi.astype(np.int64) + self.lo.astype(np.int64)
        return (q * self.scale).astype(np.float32)


def _check_matrix(name: str, x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise ValueError(f"{name} contains a non-finite value at {bad}: {x[bad]!r}")
    return x


def _safe_scale(maxabs: np.ndarray, qmax: int) -> np.ndarray:
    # An all-zero row keeps scale 1 so the quantized row is exactly zero.
    return np.where(maxabs > 0, maxabs / qmax, 1.0)


def _row_codes(x: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``(clip(round(x / s), -qmax, qmax), s)`` per row, ``s = max|row| / qmax``,
    the codes as float64 integers."""
    # |x| of a float matrix in its own dtype: widening to float64 is exact and
    # keeps the order, so the row maxima are those of the float64 values
    ax = np.abs(x) if x.dtype.kind == "f" else np.abs(x.astype(np.float64))
    scale = _safe_scale(ax.max(axis=1, keepdims=True).astype(np.float64), qmax)
    r = x.astype(np.float64)
    r /= scale
    np.rint(r, out=r)
    np.clip(r, -qmax, qmax, out=r)
    return r, scale


def _split_codes(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``hi = floor((q + 128) / 256)``, ``lo = q - 256 * hi`` (int8 both) of the
    codes ``q`` (``|q| <= SPLIT_QMAX``)."""
    q = r.astype(np.int16)      # q + 128 and 256 * hi stay within int16
    hi = q + 128
    hi >>= 8
    lo = q - (hi << 8)
    return hi.astype(np.int8), lo.astype(np.int8)


def quantize_weight(w) -> QuantizedTensor:
    """Symmetric int8 per output channel.

    ``w`` is ``out x in`` (torch's Linear layout); the result's ``values`` are
    ``out x in`` int8 and ``scale`` is ``(out, 1)``.
    """
    r, scale = _row_codes(_check_matrix("weight", w), QMAX)
    return QuantizedTensor(r.astype(np.int8), scale)


def quantize_rows(x, qmax: int = QMAX) -> QuantizedTensor:
    """Symmetric int8 with one scale per row (per token), calibrated from the row."""
    x = _check_matrix("activation", x)
    if not 1 <= qmax <= 127:
        raise ValueError(f"qmax must be in [1, 127], got {qmax}")
    r, scale = _row_codes(x, qmax)
    return QuantizedTensor(r.astype(np.int8), scale)


def split_rows(x) -> SplitTensor:
    """Per-row 16-bit quantization split into two int8 parts.

    ``q = round(x / s)`` with ``s = max|row| / 32639``; ``hi = floor((q + 128) / 256)``
    and ``lo = q - 256 * hi`` so ``lo`` is in ``[-128, 127]`` and ``hi`` in
    ``[-128, 127]``.
    """
    r, scale = _row_codes(_check_matrix("activation", x), SPLIT_QMAX)
    return SplitTensor(*_split_codes(r), scale)


def combine_split(acc_parts: list[np.ndarray]) -> np.ndarray:
    """Exact int64 value of a product whose left operand was split.

    ``acc_parts`` are the int32 accumulators of ``hi @ W`` and ``lo @ W`` (or a
    single accumulator for an unsplit operand).
    """
    if len(acc_parts) == 1:
        return np.asarray(acc_parts[0], dtype=np.int64)
    if len(acc_parts) != 2:
        raise ValueError(f"expected 1 or 2 accumulator parts, got {len(acc_parts)}")
    return 256 * np.asarray(acc_parts[0], np.int64) + np.asarray(acc_parts[1], np.int64)


def dequantize_product(acc: np.ndarray, row_scale: np.ndarray,
                       col_scale: np.ndarray) -> np.ndarray:
    """``acc * row_scale * col_scale`` in float64, returned as float32.

    ``row_scale`` is ``(M, 1)`` (per token), ``col_scale`` ``(N,)`` or ``(1, N)``
    (per output channel); a stack of products ``(B, M, N)`` takes ``(B, M, 1)``
    and ``(B, 1, N)``.
    """
    col = np.asarray(col_scale, dtype=np.float64)
    if col.ndim < 2:
        col = col.reshape(1, -1)
    v = np.array(acc, np.float64)
    v *= np.asarray(row_scale, np.float64)
    v *= col
    return v.astype(np.float32)


@dataclass
class SplitWeight:
    """Per-output-channel 16-bit weight in two int8 parts: ``scale * (256*hi + lo)``."""

    hi: np.ndarray       # int8, out x in
    lo: np.ndarray       # int8, out x in
    scale: np.ndarray    # float64, (out, 1)

    def dequantize(self) -> np.ndarray:
        q = 256 * self.hi.astype(np.int64) + self.lo.astype(np.int64)
        return (q * self.scale).astype(np.float32)


def split_weight(w) -> SplitWeight:
    """Per-output-channel 16-bit weight quantization split into two int8 parts.

    Used for the few layers whose int8 weight error dominates the encoder's
    (measured: MiniLM's FFN down-projection, docs/quantization.md).
    """
    r, scale = _row_codes(_check_matrix("weight", w), SPLIT_QMAX)
    return SplitWeight(*_split_codes(r), scale)
