"""The quantization scheme: scales, the hi/lo split and exact recombination."""

import numpy as np
import pytest

from hetaccel.workloads import quantize as Q
from hetaccel.workloads.placement import exact_int_matmul

# The scheme as docs/quantization.md states it, written here rather than taken from the
# module's constants and dequantize methods, so a change to both sides still shows:
# int8 codes in [-127, 127] at scale max / 127, 16-bit codes 256 * hi + lo in
# [-32639, 32639] at scale max / 32639, rounded to nearest.
QMAX8 = 127
QMAX16 = 127 * 256 + 127


def _value8(q):
    return q.values.astype(np.float64) * q.scale


def _value16(s):
    return (256 * s.hi.astype(np.float64) + s.lo) * s.scale


def test_weight_per_output_channel():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    w[2] *= 100                                     # one loud channel must not hurt others
    q = Q.quantize_weight(w)
    assert q.values.dtype == np.int8 and q.scale.shape == (5, 1)
    assert np.all(np.abs(q.values).max(axis=1) == QMAX8)
    np.testing.assert_allclose(q.scale, np.abs(w).max(axis=1, keepdims=True) / QMAX8,
                               rtol=1e-7)
    assert np.all(np.abs(_value8(q) - w) <= q.scale / 2 * (1 + 1e-6))
    err = np.abs(q.dequantize() - w)
    assert np.all(err <= q.scale / 2 + 1e-6)


def test_zero_rows_and_channels():
    q = Q.quantize_weight(np.zeros((3, 4)))
    assert np.all(q.values == 0) and np.all(q.scale == 1)
    s = Q.split_rows(np.zeros((2, 5)))
    assert np.all(s.hi == 0) and np.all(s.lo == 0)


def test_rows_per_token():
    x = np.array([[1.0, -0.5, 0.25], [1000.0, 1.0, -3.0]])
    q = Q.quantize_rows(x)
    assert q.scale.shape == (2, 1)
    np.testing.assert_allclose(_value8(q)[0], x[0], atol=1 / 254)
    np.testing.assert_allclose(_value8(q)[1], x[1], atol=1000 / 254)
    np.testing.assert_allclose(q.dequantize()[0], x[0], atol=1 / 254)


@pytest.mark.parametrize("vals", [[1.0, -1.0], [-1.0, 0.999999], [1.0, 1 / 32639, -1 / 32639],
                                  [0.5, -0.49999, 1e-9]])
def test_split_corners_stay_in_int8(vals):
    x = np.array([vals], dtype=np.float64)
    s = Q.split_rows(x)
    q = 256 * s.hi.astype(np.int64) + s.lo
    assert s.hi.dtype == np.int8 and s.lo.dtype == np.int8
    assert -128 <= s.hi.min() and s.hi.max() <= 127
    assert np.abs(q).max() == Q.SPLIT_QMAX == QMAX16
    np.testing.assert_allclose(_value16(s), x, atol=float(s.scale.max()) / 2 * 1.0001)
    np.testing.assert_allclose(s.dequantize(), x, atol=float(s.scale.max()) / 2 * 1.0001)


def test_split_error_is_16_bit():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 64)) * np.exp(rng.standard_normal((50, 1)))
    x[:, 5] *= 40                                   # outlier dimension
    s = Q.split_rows(x)
    rel = np.abs(_value16(s) - x).max(axis=1) / np.abs(x).max(axis=1)
    assert rel.max() <= 0.5 / QMAX16 * 1.01
    rel = np.abs(s.dequantize() - x).max(axis=1) / np.abs(x).max(axis=1)
    assert rel.max() <= 0.5 / Q.SPLIT_QMAX * 1.01
    q8 = Q.quantize_rows(x)
    rel8 = np.abs(_value8(q8) - x).max(axis=1) / np.abs(x).max(axis=1)
    assert rel8.max() <= 0.5 / QMAX8 * 1.0001
    assert np.abs(s.dequantize() - x).max() < np.abs(q8.dequantize() - x).max() / 100


def test_split_weight():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((6, 9))
    s = Q.split_weight(w)
    np.testing.assert_allclose(s.scale, np.abs(w).max(axis=1, keepdims=True) / QMAX16,
                               rtol=1e-12)
    assert np.all(np.abs(_value16(s) - w) <= s.scale / 2 * 1.0001)
    assert np.abs(s.dequantize() - w).max() <= float(s.scale.max()) / 2 * 1.0001


def test_combine_split_is_exact():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 33))
    w = rng.integers(-127, 128, (33, 5)).astype(np.int8)
    s = Q.split_rows(x)
    acc = Q.combine_split([exact_int_matmul(s.hi, w), exact_int_matmul(s.lo, w)])
    q = 256 * s.hi.astype(np.int64) + s.lo
    np.testing.assert_array_equal(acc, q @ w.astype(np.int64))
    with pytest.raises(ValueError, match="1 or 2"):
        Q.combine_split([acc, acc, acc])


def test_exact_int_matmul_matches_int64_at_extremes():
    a = np.full((3, 4096), -128, np.int8)
    b = np.full((4096, 2), -128, np.int8)
    np.testing.assert_array_equal(exact_int_matmul(a, b), a.astype(np.int64) @ b)
    assert exact_int_matmul(a, b)[0, 0] == 4096 * 128 * 128


def test_dequantize_product():
    acc = np.array([[10, -20]])
    out = Q.dequantize_product(acc, np.array([[0.5]]), np.array([2.0, 0.25]))
    np.testing.assert_array_equal(out, [[10.0, -2.5]])


@pytest.mark.parametrize("bad, exc, match", [
    (np.zeros(3), ValueError, "2-D"),
    (np.array([[1.0, np.nan]]), ValueError, r"non-finite value at \(0, 1\)"),
    (np.array([["a"]]), TypeError, "numeric"),
])
def test_bad_inputs(bad, exc, match):
    with pytest.raises(exc, match=match):
        Q.quantize_rows(bad)
    with pytest.raises(exc, match=match):
        Q.split_rows(bad)


def test_qmax_checked():
    with pytest.raises(ValueError, match="qmax"):
        Q.quantize_rows(np.ones((1, 2)), qmax=200)
