"""Adam unit: host register values, bit-exact model, fidelity, and the fp32 blocks.

The fp32 blocks run in the Amaranth simulator against ``numpy.float32`` on
rounding, subnormal and special-value corners; the whole unit is checked on
Icarus and Verilator in tests/test_adam_cocotb.py.
"""

import gc
import math

import numpy as np
import pytest
from amaranth.sim import Simulator

from hetaccel.rtl.adam import AdamUnit
from hetaccel.rtl.fp32 import CANONICAL_NAN, FPAdd, FPDiv, FPMul, FPSqrt
from hetaccel.sim.adam_model import (adam_reference, adam_step, canonical_nan,
                                     hyperparameters, l1_gradient)
from hetaccel.bench.adam import fidelity, trajectory
from hetaccel.spec import ADAM_HYPERPARAMETERS, AcceleratorConfig, AdamMode


def f32(x):
    return np.float32(x)


def bits_of(x) -> int:
    return int(np.array([x], np.float32).view(np.uint32)[0])


def float_of(bits: int) -> np.float32:
    return np.array([bits], np.uint32).view(np.float32)[0]


# --- hyperparameters ----------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=0.0), "lr"), (dict(lr=-1e-3), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(lr=1e-3, betas=(1.0, 0.999)), "beta1"), (dict(lr=1e-3, betas=(-0.1, 0.999)), "beta1"),
    (dict(lr=1e-3, betas=(0.9, 1.0)), "beta2"), (dict(lr=1e-3, betas=(0.9, 1.5)), "beta2"),
    (dict(lr=1e-3, betas=(0.9,)), "betas"),
    (dict(lr=1e-3, eps=0.0), "eps"), (dict(lr=1e-3, eps=-1e-8), "eps"),
    (dict(lr=1e-3, weight_decay=-0.1), "weight_decay"),
    (dict(lr=1e-3, step=0), "step"), (dict(lr=1e-3, step=-3), "step"), (dict(lr=1e-3, step=1.5), "step"),
    (dict(lr=1e-3, decoupled="yes"), "decoupled"),
    (dict(lr=1e38, betas=(0.99, 0.999)), "step_size"),
])
def test_bad_hyperparameters_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hyperparameters(**kwargs)


def test_hyperparameters_are_fp32_roundings_of_the_float64_constants():
    lr, b1, b2, eps, wd, t = 3e-4, 0.9, 0.98, 1e-6, 0.05, 17
    hp = hyperparameters(lr, (b1, b2), eps, wd, t, decoupled=True)
    assert set(hp) == set(ADAM_HYPERPARAMETERS) | {"mode"}
    assert hp["mode"] == AdamMode.DECOUPLED
    assert hp["step_size"] == bits_of(lr / (1 - b1 ** t))
    assert hp["bc2_rsqrt"] == bits_of(1 / math.sqrt(1 - b2 ** t))
    assert hp["one_minus_beta1"] == bits_of(1 - b1)
    assert hp["lr_wd"] == bits_of(lr * wd)
    assert hp["eps"] == bits_of(eps)
    assert hyperparameters(lr, (b1, b2), eps, wd, t, decoupled=False)["mode"] == AdamMode.L2
    assert hyperparameters(lr, (b1, b2), eps, 0.0, t, decoupled=True)["mode"] == AdamMode.NONE
    # beta = 0 is allowed: no averaging, bias correction 1.
    hp0 = hyperparameters(1e-3, (0.0, 0.0), 1e-8, 0.0, 1)
    assert float_of(hp0["step_size"]) == f32(1e-3) and float_of(hp0["bc2_rsqrt"]) == 1.0


# --- model ------------------------------------------------------------------------

def _state(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) for _ in range(3)] + \
        [np.abs(rng.standard_normal(n)).astype(np.float32)]


def test_adam_step_rejects_mismatched_shapes_and_dtypes():
    p, g, m, v = _state()
    hp = hyperparameters(1e-3)
    with pytest.raises(ValueError, match="same shape"):
        adam_step(p, g[:-1], m, v, hp)
    with pytest.raises(ValueError, match="grad must have dtype float32"):
        adam_step(p, g.astype(np.float64), m, v, hp)
    with pytest.raises(ValueError, match="v must have dtype float32"):
        adam_step(p, g, m, v.astype(np.float16), hp)
    with pytest.raises(ValueError, match="param must be a numpy.ndarray"):
        adam_step(list(p), g, m, v, hp)
    with pytest.raises(ValueError, match="lacks"):
        adam_step(p, g, m, v, {"mode": 0})
    with pytest.raises(ValueError, match="mode"):
        adam_step(p, g, m, v, {**hp, "mode": 4})


def test_adam_step_follows_the_documented_fp32_operation_order():
    p, g, m, v = _state(64, seed=3)
    for decoupled in (False, True):
        hp = hyperparameters(1e-2, (0.8, 0.99), 1e-7, 0.1, 5, decoupled)
        h = {k: float_of(hp[k]) for k in ADAM_HYPERPARAMETERS}
        gg = g if decoupled else g + h["weight_decay"] * p
        pp = p - h["lr_wd"] * p if decoupled else p
        m2 = h["beta1"] * m + h["one_minus_beta1"] * gg
        v2 = h["beta2"] * v + h["one_minus_beta2"] * (gg * gg)
        den = np.sqrt(v2) * h["bc2_rsqrt"] + h["eps"]
        p2 = pp - (m2 / den) * h["step_size"]
        got = adam_step(p, g, m, v, hp)
        for e, o in zip((p2, m2, v2), got):
            assert e.dtype == np.float32 and np.array_equal(e.view(np.uint32), o.view(np.uint32))
    # Inputs untouched.
    assert np.array_equal(_state(64, seed=3)[0], p)


def test_special_values_give_canonical_nan_and_documented_signs():
    hp = hyperparameters(1e-3, weight_decay=0.0)
    inf, nan = np.float32(np.inf), np.float32(np.nan)
    p = np.array([1, 1, 1, inf, 1, 0, -0.0, 1], np.float32)
    g = np.array([nan, inf, 0, 1, -0.0, 0, 0, 1e-40], np.float32)
    m = np.array([0, 0, 0, 0, 0, 0, 0, 0], np.float32)
    v = np.array([0, 0, 0, 0, 0, 0, 0, 0], np.float32)
    p2, m2, v2 = adam_step(p, g, m, v, hp)
    bits = p2.view(np.uint32)
    # NaN gradient -> NaN everywhere; inf gradient -> m inf, v inf, p NaN (inf/inf).
    assert bits[0] == CANONICAL_NAN and m2.view(np.uint32)[0] == CANONICAL_NAN
    assert np.isinf(m2[1]) and np.isinf(v2[1]) and bits[1] == CANONICAL_NAN
    # Zero gradient and state: p unchanged (p - 0), m, v +0.
    assert p2[2] == 1 and m2.view(np.uint32)[2] == 0 and v2.view(np.uint32)[2] == 0
    assert p2[3] == inf
    # -0 gradient: b1*0 + c*(-0) = +0.
    assert m2.view(np.uint32)[4] == 0
    # Signed zero parameters survive a zero update: -0 - (+0) = -0.
    assert p2.view(np.uint32)[5] == 0 and p2.view(np.uint32)[6] == 0x80000000
    # A subnormal gradient is not flushed: m picks up (1-b1)*g, a subnormal.
    expected_m = np.float32(0.1) * np.float32(1e-40)
    assert 0 < expected_m < np.finfo(np.float32).tiny and m2[7] == expected_m
    assert np.array_equal(canonical_nan(np.array([np.nan, -np.nan], np.float32)).view(np.uint32),
                          [CANONICAL_NAN, CANONICAL_NAN])


# --- fidelity against float64 --------------------------------------------------------

def test_per_step_fidelity_against_float64():
    r = fidelity(n=40_000, seed=1)
    assert r["rel_err_median"] <= 1e-6, r
    assert r["rel_err_max"] <= 1e-5, r


@pytest.mark.parametrize("decoupled", [False, True])
def test_1000_step_quadratic_trajectory_tracks_float64(decoupled):
    r = trajectory(steps=1000, seed=2, decoupled=decoupled)
    assert r["trajectory_rel_err_worst"] <= 1e-5, r
    assert r["trajectory_loss_end"] < 0.01 * r["trajectory_loss_start"], r


def test_reference_is_torch_formula():
    # One hand-computed step (t=1, no decay): m=0.1g, v=0.001g^2, update = lr*sign(g).
    p, g = np.array([1.0]), np.array([0.5])
    p2, m2, v2 = adam_reference(p, g, np.zeros(1), np.zeros(1), lr=0.1, eps=0.0)
    assert np.allclose(m2, 0.05) and np.allclose(v2, 0.00025) and np.allclose(p2, 0.9)


# --- L1 as a host-side gradient term ---------------------------------------------------

def test_l1_gradient_is_sign_times_lambda():
    p = np.array([2.0, -3.0, 0.0, -0.0, 1e-40, np.nan], np.float32)
    l1 = l1_gradient(p, 0.25)
    assert l1.dtype == np.float32
    assert np.array_equal(l1[:5], np.array([0.25, -0.25, 0, 0, 0.25], np.float32))
    assert np.isnan(l1[5])
    with pytest.raises(ValueError, match="lam"):
        l1_gradient(p, -1.0)
    with pytest.raises(ValueError, match="param"):
        l1_gradient(p.astype(np.float64), 0.1)


def test_l1_through_the_unit_drives_weak_coordinates_to_zero():
    # Loss 0.5*||p - c||^2 + lam*||p||_1: the minimiser soft-thresholds c.
    c = np.array([2.0, -2.0, 0.05, -0.05], np.float32)
    lam = 0.2
    p = np.ones(4, np.float32)
    m = np.zeros(4, np.float32)
    v = np.zeros(4, np.float32)
    for t in range(1, 1501):
        hp = hyperparameters(1e-2, (0.9, 0.999), 1e-8, 0.0, t)
        g = (p - c) + l1_gradient(p, lam)
        p, m, v = adam_step(p, g.astype(np.float32), m, v, hp)
    assert np.allclose(p[:2], [1.8, -1.8], atol=2e-2), p
    assert np.all(np.abs(p[2:]) < 2e-2), p


# --- fp32 blocks in the Amaranth simulator ----------------------------------------------

def _run_block(dut, operands):
    n = len(operands[0])
    ports = [dut.a] + ([dut.b] if len(operands) == 2 else [])
    out = []
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def tb(ctx):
        for i in range(n + dut.latency):
            if i < n:
                for port, ops in zip(ports, operands):
                    ctx.set(port, int(ops[i]))
            await ctx.tick()
            if i + 1 >= dut.latency:
                out.append(ctx.get(dut.y))

    sim.add_testbench(tb)
    sim.run()
    return np.array(out[:n], np.uint32)


_EDGE = np.array([
    0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFF812345, 0x7F800001,
    0x00000001, 0x80000001, 0x00000002, 0x00000003, 0x007FFFFF, 0x807FFFFF, 0x00400000,
    0x00800000, 0x00800001, 0x80800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F000000, 0x3F800000,
    0xBF800000, 0x3F800001, 0x3FFFFFFF, 0x40000000, 0x33800000, 0x33C00000, 0x34000000,
    0x1F800000, 0x1F000000, 0x20000000, 0x1FC00000, 0x5F800000, 0x3F7FFFFF, 0x4B000001,
], dtype=np.uint32)


def _operands(seed, n_random=200):
    rng = np.random.default_rng(seed)
    a = np.repeat(_EDGE, len(_EDGE))
    b = np.tile(_EDGE, len(_EDGE))
    # Random operands biased to small exponents (subnormal results) and to
    # near-cancelling pairs.
    ra = rng.integers(0, 1 << 32, n_random, dtype=np.uint64).astype(np.uint32)
    rb = rng.integers(0, 1 << 32, n_random, dtype=np.uint64).astype(np.uint32)
    low = rng.random(n_random) < 0.5
    ra[low] = (ra[low] & 0x807FFFFF) | (rng.integers(0, 40, low.sum()).astype(np.uint32) << 23)
    rb[low] = (rb[low] & 0x807FFFFF) | (rng.integers(60, 110, low.sum()).astype(np.uint32) << 23)
    near = rng.random(n_random) < 0.3
    rb[near] = (ra[near] ^ 0x80000000) + rng.integers(0, 3, near.sum()).astype(np.uint32)
    # Exact ties in the subnormal range: small odd integers times powers of two.
    k = rng.integers(1, 64, 60).astype(np.float64)
    ta = (k * 2.0 ** -75).astype(np.float32).view(np.uint32)
    tb_ = (2.0 ** rng.integers(-76, -70, 60)).astype(np.float32).view(np.uint32)
    return np.concatenate([a, ra, ta]), np.concatenate([b, rb, tb_])


def _expect(fn, *ops):
    with np.errstate(all="ignore"):
        res = fn(*(o.view(np.float32) for o in ops)).astype(np.float32)
    return canonical_nan(res).view(np.uint32)


@pytest.mark.parametrize("block,fn", [
    (FPMul, np.multiply), (FPAdd, np.add), (FPDiv, np.divide),
], ids=["mul", "add", "div"])
def test_fp_binary_block_matches_numpy_float32(block, fn):
    a, b = _operands(seed=7)
    got = _run_block(block(), (a, b))
    exp = _expect(fn, a, b)
    bad = np.nonzero(got != exp)[0]
    assert len(bad) == 0, [(hex(a[i]), hex(b[i]), hex(exp[i]), hex(got[i])) for i in bad[:5]]


def test_fp_sqrt_matches_numpy_float32():
    a, b = _operands(seed=8)
    ops = np.concatenate([a[:len(_EDGE) ** 2:len(_EDGE)], b, a & 0x7FFFFFFF])
    ops = np.unique(ops)
    got = _run_block(FPSqrt(), (ops,))
    exp = _expect(np.sqrt, ops)
    bad = np.nonzero(got != exp)[0]
    assert len(bad) == 0, [(hex(ops[i]), hex(exp[i]), hex(got[i])) for i in bad[:5]]


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_fp_blocks_check_their_arguments():
    with pytest.raises(ValueError, match="iters_per_stage"):
        FPSqrt(iters_per_stage=0)
    with pytest.raises(ValueError, match="iters_per_stage"):
        FPDiv(iters_per_stage=27)
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        AdamUnit({"adam_lanes": 1})
    gc.collect()  # the half-built components warn when collected: do it under the filter


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_adam_unit_ports_follow_the_spec():
    unit = AdamUnit(AcceleratorConfig(adam_lanes=2))    # inspected, never elaborated
    members = dict(unit.signature.members)
    for name in ADAM_HYPERPARAMETERS:
        assert members[name].flow.name == "In" and members[name].shape == 32
    assert members["mode"].shape == 2
    assert unit.inp.payload.shape().size == 2 * 128 + 1
    assert unit.out.payload.shape().size == 2 * 96 + 1
    del unit
    gc.collect()  # collected under the filter
