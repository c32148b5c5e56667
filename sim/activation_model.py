"""Bit-exact reference model of the requantisation + activation unit.

This module is the ONE implementation of the unit's arithmetic.  Its number
formats -- the saturation bounds and the piecewise-linear ROM, which the RTL
generator (:mod:`hetaccel.rtl.activation`) is initialised from too -- belong to
the contract (:mod:`hetaccel.spec.formats`, :mod:`hetaccel.spec.pwl`).  The
RTL tests compare against :func:`apply` / :class:`ActivationUnitModel`, the
device model executes ACTIVATE with them and the host runtime computes
multipliers and tables with :func:`quantize_multiplier` and :func:`build_table`.
Every function is vectorised over NumPy arrays (per-channel parameters
broadcast along the last axis).  docs/numerics.md states the same rules in
prose.

Per element, with the per-channel parameters ``bias`` (int32), ``multiplier``
(0 .. 2**31-1) and ``shift`` (0 .. 63):

1. ``x = sat32(acc + bias)``  (saturating at -2**31 and 2**31-1);
2. ``p = x * multiplier``     (exact, |p| < 2**62);
3. ``y = round(p / 2**shift)``, ties away from zero (``shift = 0``: ``y = p``);
4. ``y`` saturates to int8 (precision INT8) or int16 = Q4.12 (precision FIXED16);
5. the activation:

   ========  ============================  ==========================================
   function  INT8 (result int8)            FIXED16 (result int16)
   ========  ============================  ==========================================
   NONE      ``y``                         ``y`` (Q4.12)
   RELU      ``max(y, 0)``                 ``max(y, 0)`` (Q4.12)
   SIGMOID   ``table[y & 0xFF]``           sigma(y) in Q1.14, PWL (:func:`sigmoid_q`)
   TANH      ``table[y & 0xFF]``           tanh(y) = 2 sigma(2y) - 1 in Q1.14 (:func:`tanh_q`)
   GELU      ``table[y & 0xFF]``           y Phi(y) in Q4.12, PWL Phi (:func:`gelu_q`)
   ========  ============================  ==========================================

The 16-bit functions share one piecewise-linear evaluator: a 512-entry ROM
(bank 0 = sigma on [0, 16), bank 1 = Phi, the normal CDF, on [0, 16)), 256
segments of 1/16 per bank, each ``S = C0 + ((C1 * t + 128) >> 8)`` in units of
2**-20, ``t`` the low 8 bits of ``|z|`` in Q4.12; negative arguments use
``sigma(-z) = 1 - sigma(z)``, ``Phi(-z) = 1 - Phi(z)``.
"""

from __future__ import annotations

import math

import numpy as np

from ..spec import (ACTIVATION_FORMAT, INT32_MAX, INT32_MIN, MULTIPLIER_MAX, SHIFT_MAX,
                    AcceleratorConfig, ActivationFunction, ActivationPrecision)
from ..spec.pwl import PWL_FRAC, PWL_SEGMENT_BITS, PWL_SEGMENTS, pwl_rom, pwl_segment

__all__ = [
    "quantize_multiplier", "requantize", "round_shift",
    "reference_function", "build_table", "table_error_lsb", "pwl_eval",
    "sigmoid_q", "tanh_q", "gelu_q", "fixed_function", "fixed_reference", "fixed_output_frac",
    "apply", "ActivationUnitModel", "TABLE_FUNCTIONS",
]

F = ACTIVATION_FORMAT
IN_FRAC = F.fixed_in_frac      # Q4.12
OUT_FRAC = F.fixed_out_frac    # Q1.14

#: Functions that use a 256-entry table in the INT8 precision.
TABLE_FUNCTIONS = (ActivationFunction.SIGMOID, ActivationFunction.TANH, ActivationFunction.GELU)

_RANGES = {ActivationPrecision.INT8: (-128, 127), ActivationPrecision.FIXED16: (-32768, 32767)}


# --------------------------------------------------------------------------
# argument checking


def _function(function) -> ActivationFunction:
    try:
        return ActivationFunction(function)
    except (ValueError, TypeError):
        names = ", ".join(f.name for f in ActivationFunction)
        raise ValueError(f"function must be one of {names}, got {function!r}") from None


def _precision(precision) -> ActivationPrecision:
    if isinstance(precision, str):
        try:
            return ActivationPrecision[precision.upper()]
        except KeyError:
            pass
    else:
        try:
            return ActivationPrecision(precision)
        except (ValueError, TypeError):
            pass
    raise ValueError(f"precision must be INT8 or FIXED16, got {precision!r}")


def _int_array(name: str, value, lo: int, hi: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object:
        try:
            arr = arr.astype(np.int64)
        except (OverflowError, TypeError):
            raise ValueError(f"{name} must hold integers in [{lo}, {hi}]") from None
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.size:
        amin, amax = int(arr.min()), int(arr.max())
        if amin < lo or amax > hi:
            bad = amin if amin < lo else amax
            raise ValueError(f"{name} must be in [{lo}, {hi}], got {bad}")
    return arr.astype(np.int64, copy=False)


def _scale_array(name: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from None
    bad = ~np.isfinite(arr) | (arr <= 0)
    if np.any(bad):
        raise ValueError(f"{name} must be a positive finite number, got {float(arr[bad].flat[0])!r}")
    return arr


# --------------------------------------------------------------------------
# requantisation


def quantize_multiplier(real_scale):
    """Fixed-point ``(multiplier, shift)`` with ``multiplier * 2**-shift ~ real_scale``.

    ``multiplier`` is normalised to [2**30, 2**31 - 1] (a Q0.31 fraction in
    [0.5, 1)), rounded to nearest (ties away from zero), so the relative error
    of the scale is at most 2**-31.  ``shift`` is the total right shift, 0..63,
    which bounds the representable scales to [2**-33, 2**31 - 1].

    Parameters
    ----------
    real_scale : float or array_like of float
        Positive, finite scale(s), e.g. ``in_scale * w_scale / out_scale`` per
        output channel.

    Returns
    -------
    (multiplier, shift) : (int, int) for a scalar, else two int64 arrays.

    Raises
    ------
    ValueError
        For a zero, negative, NaN or infinite scale, or one outside
        [2**-33, 2**31 - 1] (the shift would leave 0..63).
    """
    scale = _scale_array("real_scale", real_scale)
    mant, exp = np.frexp(scale)                       # scale = mant * 2**exp, mant in [0.5, 1)
    mult = np.floor(mant * (1 << 31) + 0.5).astype(np.int64)
    carry = mult == (1 << 31)                          # mantissa rounded up to 1.0
    mult = np.where(carry, 1 << 30, mult)
    exp = exp.astype(np.int64) + carry
    shift = 31 - exp
    if np.any(shift < 0) or np.any(shift > SHIFT_MAX) or np.any(mult > MULTIPLIER_MAX):
        bad = float(scale[(shift < 0) | (shift > SHIFT_MAX) | (mult > MULTIPLIER_MAX)].flat[0])
        raise ValueError(
            f"real_scale {bad!r} cannot be represented: the multiplier/shift pair covers "
            f"[2**-33, 2**31 - 1] (shift 0..{SHIFT_MAX})")
    if scale.ndim == 0:
        return int(mult), int(shift)
    return mult, shift


def round_shift(p, shift):
    """``round(p / 2**shift)`` with ties away from zero, exactly as the RTL.

    The RTL adds ``2**(shift-1) - (p < 0)`` and shifts arithmetically, which is
    ``floor(p/2**s + 1/2)`` for ``p >= 0`` and ``ceil(p/2**s - 1/2)`` for
    ``p < 0``.  ``shift = 0`` leaves ``p`` unchanged.  ``|p| < 2**62``.
    """
    p = np.asarray(p, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    bias = half - ((p < 0) & (s > 0))
    return np.right_shift(p + bias, s)


def requantize(acc, bias, multiplier, shift, *, precision=ActivationPrecision.INT8):
    """Bias add, fixed-point scaling, rounding and saturation.

    Parameters
    ----------
    acc : array_like of int
        Accumulators, shape ``(..., channels)`` (or anything broadcasting with
        the parameters).  Any integer width; values beyond int32 saturate in
        the bias add exactly as in the RTL.
    bias : int or array_like of int
        int32 bias per output channel.
    multiplier : int or array_like of int
        0 .. 2**31-1 per channel (see :func:`quantize_multiplier`).  0 gives 0.
    shift : int or array_like of int
        Total right shift 0 .. 63 per channel.
    precision : ActivationPrecision or "int8"/"fixed16"
        INT8 saturates to [-128, 127] (int8 result); FIXED16 to
        [-32768, 32767] (a Q4.12 value, int16 result).

    Returns
    -------
    np.ndarray of int8 or int16
    """
    prec = _precision(precision)
    acc = _int_array("acc", acc, -(1 << 63), (1 << 63) - 1)
    bias = _int_array("bias", bias, INT32_MIN, INT32_MAX)
    multiplier = _int_array("multiplier", multiplier, 0, MULTIPLIER_MAX)
    shift = _int_array("shift", shift, 0, SHIFT_MAX)
    # Anything beyond +-2**33 saturates whatever the int32 bias is, so clipping
    # first is exact and keeps the sum inside int64.
    x = np.clip(np.clip(acc, -(1 << 33), 1 << 33) + bias, INT32_MIN, INT32_MAX)
    y = round_shift(x * multiplier, shift)
    lo, hi = _RANGES[prec]
    return np.clip(y, lo, hi).astype(np.int8 if prec == ActivationPrecision.INT8 else np.int16)


# --------------------------------------------------------------------------
# int8 tables


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def reference_function(function, x):
    """The exact float64 function: identity, ReLU, logistic sigmoid, tanh, erf-GELU."""
    fn = _function(function)
    x = np.asarray(x, dtype=np.float64)
    if fn == ActivationFunction.NONE:
        return x.copy()
    if fn == ActivationFunction.RELU:
        return np.maximum(x, 0.0)
    if fn == ActivationFunction.SIGMOID:
        # exp of a non-positive argument only, so nothing overflows.
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if fn == ActivationFunction.TANH:
        return np.tanh(x)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _round_half_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _check_zero(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not -128 <= int(value) <= 127:
        raise ValueError(f"{name} must be an integer in [-128, 127], got {value!r}")
    return int(value)


def build_table(function, in_scale, out_scale, in_zero=0, out_zero=0) -> np.ndarray:
    """The 256-entry int8 table of ``function`` for the given quantisation.

    Entry ``i`` (the input code ``c = i`` read as int8, i.e. ``i - 256`` for
    ``i >= 128``) holds ``clip(round(f(in_scale * (c - in_zero)) / out_scale)
    + out_zero, -128, 127)``, rounded to nearest with ties away from zero: the
    correctly rounded value, within 0.5 LSB of the exact function for every
    code whose result is representable.  Load it into the unit's table memory
    as is (address ``slot * 256 + i``).

    Raises
    ------
    ValueError
        Bad function, non-positive/NaN/infinite scale, zero point outside int8.
    """
    fn = _function(function)
    for name, s in (("in_scale", in_scale), ("out_scale", out_scale)):
        if np.ndim(s) != 0:
            raise ValueError(f"{name} must be a scalar, got shape {np.shape(s)}")
        _scale_array(name, s)
    in_zero = _check_zero("in_zero", in_zero)
    out_zero = _check_zero("out_zero", out_zero)
    codes = np.arange(256, dtype=np.int64).astype(np.uint8).view(np.int8).astype(np.int64)
    y = reference_function(fn, float(in_scale) * (codes - in_zero)) / float(out_scale)
    q = _round_half_away(y) + out_zero
    return np.clip(q, -128, 127).astype(np.int8)


def table_error_lsb(table, function, in_scale, out_scale, in_zero=0, out_zero=0):
    """|table - exact| in output LSBs per code, the exact value clipped to the
    representable range (saturation is not an approximation error)."""
    fn = _function(function)
    codes = np.arange(256, dtype=np.int64).astype(np.uint8).view(np.int8).astype(np.int64)
    exact = reference_function(fn, in_scale * (codes - in_zero)) / out_scale + out_zero
    exact = np.clip(exact, -128, 127)
    return np.abs(np.asarray(table, dtype=np.float64) - exact)


# --------------------------------------------------------------------------
# 16-bit fixed point: one piecewise-linear evaluator, two ROM banks

_ABS_MAX = (PWL_SEGMENTS << PWL_SEGMENT_BITS) - 1   # |z| saturates at 65535 (~16.0)
_ONE = 1 << PWL_FRAC


def pwl_eval(bank: int, z):
    """``(S, neg)``: the PWL value of f(|z|) in units of 2**-20 and ``z < 0``.

    ``z`` is a Q4.12 integer (up to 17 bits); ``|z|`` saturates at 65535.
    """
    c0, c1 = pwl_rom()
    z = np.asarray(z, dtype=np.int64)
    a = np.minimum(np.abs(z), _ABS_MAX)
    idx = bank * PWL_SEGMENTS + (a >> PWL_SEGMENT_BITS)
    t = a & ((1 << PWL_SEGMENT_BITS) - 1)
    return pwl_segment(c0[idx], c1[idx], t), z < 0


def _q412(v) -> np.ndarray:
    return _int_array("v (Q4.12)", v, -32768, 32767)


def _out_round(s: np.ndarray) -> np.ndarray:
    # s >= 0 in units of 2**-20 -> Q1.14, ties away from zero (up).
    sh = PWL_FRAC - OUT_FRAC
    return (s + (1 << (sh - 1))) >> sh


def sigmoid_q(v) -> np.ndarray:
    """Logistic sigmoid: Q4.12 int16 in, Q1.14 int16 out (0 .. 16384)."""
    v = _q412(v)
    s, neg = pwl_eval(0, v)
    return _out_round(np.where(neg, _ONE - s, s)).astype(np.int16)


def tanh_q(v) -> np.ndarray:
    """tanh as ``2 sigma(2v) - 1``: Q4.12 in, Q1.14 out (-16384 .. 16384), odd."""
    v = _q412(v)
    s, neg = pwl_eval(0, 2 * v)
    o = _out_round(2 * s - _ONE)
    return np.where(neg, -o, o).astype(np.int16)


def gelu_q(v) -> np.ndarray:
    """erf-GELU ``v * Phi(v)``: Q4.12 in, Q4.12 out, Phi from PWL bank 1."""
    v = _q412(v)
    s, neg = pwl_eval(1, v)
    p = v * np.where(neg, _ONE - s, s)
    return round_shift(p, PWL_FRAC).astype(np.int16)


def fixed_function(function, v) -> np.ndarray:
    """The FIXED16 activation of Q4.12 inputs ``v`` (int16 result)."""
    fn = _function(function)
    if fn == ActivationFunction.NONE:
        return _q412(v).astype(np.int16)
    if fn == ActivationFunction.RELU:
        return np.maximum(_q412(v), 0).astype(np.int16)
    return {ActivationFunction.SIGMOID: sigmoid_q, ActivationFunction.TANH: tanh_q,
            ActivationFunction.GELU: gelu_q}[fn](v)


def fixed_output_frac(function) -> int:
    """Fraction bits of a FIXED16 result: 14 for sigmoid/tanh, else 12."""
    fn = _function(function)
    return OUT_FRAC if fn in (ActivationFunction.SIGMOID, ActivationFunction.TANH) else IN_FRAC


def fixed_reference(function, v) -> np.ndarray:
    """Exact float64 result of the FIXED16 function, in output LSBs."""
    x = np.asarray(v, dtype=np.float64) / (1 << IN_FRAC)
    return reference_function(function, x) * (1 << fixed_output_frac(function))



# --------------------------------------------------------------------------
# the whole unit


#: A larger ``acc`` whose values span a quarter of its size or less, with one
#: set of parameters for every element, is evaluated once per value of its span
_SPAN_MIN_SIZE = 4096


def apply(acc, bias, multiplier, shift, function, precision=ActivationPrecision.INT8,
          table=None) -> np.ndarray:
    """Bit-exact result of the unit for accumulators ``acc``.

    Parameters
    ----------
    acc : array_like of int, shape ``(..., channels)``
    bias, multiplier, shift : per-channel parameters (see :func:`requantize`)
    function : ActivationFunction
    precision : ActivationPrecision
    table : array_like of int8 [256], optional
        Required for SIGMOID/TANH/GELU in the INT8 precision.

    Returns
    -------
    np.ndarray
        int8 for INT8, int16 for FIXED16 (the unit's output lanes are int16;
        int8 results are sign-extended there).
    """
    fn = _function(function)
    prec = _precision(precision)
    acc = _int_array("acc", acc, -(1 << 63), (1 << 63) - 1)
    params = [np.asarray(p) for p in (bias, multiplier, shift)]
    if (acc.size >= _SPAN_MIN_SIZE and all(p.size and (p == p.flat[0]).all() for p in params)
            and np.broadcast_shapes(acc.shape, *(p.shape for p in params)) == acc.shape):
        # every step is elementwise: with the same parameters everywhere an
        # element's result is a function of its value alone
        lo, hi = int(acc.min()), int(acc.max())
        if hi - lo < acc.size // 4:
            span = np.arange(lo, hi + 1, dtype=np.int64)
            return _apply(span, *(p.flat[0] for p in params), fn, prec, table)[acc - lo]
    return _apply(acc, bias, multiplier, shift, fn, prec, table)


def _apply(acc, bias, multiplier, shift, fn, prec, table) -> np.ndarray:
    y = requantize(acc, bias, multiplier, shift, precision=prec)
    if prec == ActivationPrecision.FIXED16:
        return fixed_function(fn, y)
    if fn == ActivationFunction.NONE:
        return y
    if fn == ActivationFunction.RELU:
        return np.maximum(y, 0).astype(np.int8)
    if table is None:
        raise ValueError(f"{fn.name} in the INT8 precision needs a 256-entry table")
    table = _int_array("table", table, -128, 127)
    if table.shape != (256,):
        raise ValueError(f"table must have 256 entries, got shape {table.shape}")
    return table[y.astype(np.int64) & 0xFF].astype(np.int8)


class ActivationUnitModel:
    """State and row-level behaviour of :class:`hetaccel.rtl.activation.ActivationUnit`.

    Holds the parameter memory (``config.act_param_depth`` entries x
    ``config.lanes`` channels) and the table memory (``config.act_tables`` x
    256 int8), both zero after reset like the RTL.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        self.lanes = config.lanes
        depth = config.act_param_depth
        self.bias = np.zeros((depth, self.lanes), dtype=np.int64)
        self.multiplier = np.zeros((depth, self.lanes), dtype=np.int64)
        self.shift = np.zeros((depth, self.lanes), dtype=np.int64)
        self.tables = np.zeros((config.act_tables, 256), dtype=np.int8)

    def _entry(self, entry) -> int:
        depth = self.config.act_param_depth
        if isinstance(entry, bool) or not isinstance(entry, (int, np.integer)) \
                or not 0 <= int(entry) < depth:
            raise ValueError(f"param entry must be in [0, {depth - 1}], got {entry!r}")
        return int(entry)

    def write_params(self, entry, bias, multiplier, shift, mask=None) -> None:
        """Write channel parameters of ``entry`` (lanes where ``mask`` bit is set)."""
        e = self._entry(entry)
        shape = (self.lanes,)
        b = np.broadcast_to(_int_array("bias", bias, INT32_MIN, INT32_MAX), shape)
        m = np.broadcast_to(_int_array("multiplier", multiplier, 0, MULTIPLIER_MAX), shape)
        s = np.broadcast_to(_int_array("shift", shift, 0, SHIFT_MAX), shape)
        sel = np.ones(shape, bool) if mask is None else \
            np.array([(int(mask) >> i) & 1 for i in range(self.lanes)], bool)
        self.bias[e, sel] = b[sel]
        self.multiplier[e, sel] = m[sel]
        self.shift[e, sel] = s[sel]

    def write_table(self, slot, values) -> None:
        """Load 256 int8 entries into table ``slot``."""
        n = self.config.act_tables
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < n:
            raise ValueError(f"table slot must be in [0, {n - 1}], got {slot!r}")
        values = _int_array("table", values, -128, 127)
        if values.shape != (256,):
            raise ValueError(f"table must have 256 entries, got shape {values.shape}")
        self.tables[int(slot)] = values

    def write_table_entry(self, addr, value) -> None:
        """One write on the RTL's table port: ``addr = slot * 256 + code``."""
        n = self.config.act_tables * 256
        if not 0 <= int(addr) < n:
            raise ValueError(f"table address must be in [0, {n - 1}], got {addr!r}")
        if not -128 <= int(value) <= 127:
            raise ValueError(f"table value must be int8, got {value!r}")
        self.tables[int(addr) >> 8, int(addr) & 0xFF] = int(value)

    def process(self, data, function, precision, param_entry, table=0) -> np.ndarray:
        """Results (int16, ``(rows, lanes)``) of rows sharing one control word.

        ``data`` is ``(rows, lanes)`` accumulators; ``table`` the slot used by
        SIGMOID/TANH/GELU in the INT8 precision.
        """
        e = self._entry(param_entry)
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[1] != self.lanes:
            raise ValueError(f"data must have shape (rows, {self.lanes}), got {data.shape}")
        fn, prec = _function(function), _precision(precision)
        tab = self._table(fn, prec, table)
        out = apply(data, self.bias[e], self.multiplier[e], self.shift[e], fn, prec, tab)
        return out.astype(np.int16, copy=False)

    def _table(self, fn, prec, table):
        """The table slot's entries when ``fn`` in ``prec`` reads one, else None."""
        if prec == ActivationPrecision.INT8 and fn in TABLE_FUNCTIONS:
            n = self.config.act_tables
            if not 0 <= int(table) < n:
                raise ValueError(f"table slot must be in [0, {n - 1}], got {table!r}")
            return self.tables[int(table)]
        return None

    def process_blocks(self, data, function, precision, first_entry, table=0) -> np.ndarray:
        """:meth:`process` of ``n`` row blocks at once: ``data`` is ``(n, rows,
        lanes)`` and block ``j`` uses parameter entry ``first_entry + j``
        (the elementwise arithmetic broadcasts each block's parameters)."""
        data = np.asarray(data)
        if data.ndim != 3 or data.shape[2] != self.lanes:
            raise ValueError(f"data must have shape (blocks, rows, {self.lanes}), "
                             f"got {data.shape}")
        n = data.shape[0]
        e = self._entry(first_entry)
        if n and e + n > self.config.act_param_depth:
            self._entry(e + n - 1)
        fn, prec = _function(function), _precision(precision)
        tab = self._table(fn, prec, table)
        sl = slice(e, e + n)
        out = apply(data, self.bias[sl, None, :], self.multiplier[sl, None, :],
                    self.shift[sl, None, :], fn, prec, tab)
        return out.astype(np.int16)
