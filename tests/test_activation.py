"""Activation unit: the NumPy model against exact arithmetic, and the RTL in the
Amaranth simulator against the model (the fast loop; cocotb runs are in
test_activation_cocotb.py)."""

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from amaranth.sim import Simulator

from hetaccel.rtl.activation import ActivationUnit
from hetaccel.spec.timing import activation_latency
from hetaccel import spec
from hetaccel.sim import activation_model as am
from hetaccel.verify.checking import assert_bit_exact
from hetaccel.spec import AcceleratorConfig, ActivationFunction as AF, ActivationPrecision as AP

# --- exact references --------------------------------------------------------


def exact_requant(acc, bias, mult, shift, lo, hi):
    """Python-int/Fraction requantisation: sat32, exact scale, ties away, clamp."""
    x = max(min(int(acc) + int(bias), 2**31 - 1), -2**31)
    q = Fraction(x * int(mult), 2 ** int(shift))
    mag = math.floor(abs(q) + Fraction(1, 2))
    y = mag if q >= 0 else -mag
    return max(lo, min(hi, y))


# --- quantize_multiplier -----------------------------------------------------


def test_quantize_multiplier_accuracy_and_ranges():
    rng = np.random.default_rng(0)
    scales = np.exp2(rng.uniform(-33, 30.9, 2000))
    mult, shift = am.quantize_multiplier(scales)
    assert mult.min() >= 1 << 30 and mult.max() <= spec.MULTIPLIER_MAX
    assert shift.min() >= 0 and shift.max() <= spec.SHIFT_MAX
    rel = np.abs(mult * np.exp2(-shift.astype(float)) / scales - 1)
    assert rel.max() <= 2.0 ** -31
    m, s = am.quantize_multiplier(0.25)
    assert (m, s) == (1 << 30, 32) and isinstance(m, int)
    # A mantissa that rounds up to 1.0 renormalises instead of overflowing 31 bits.
    m, s = am.quantize_multiplier(1 - 2.0 ** -40)
    assert (m, s) == (1 << 30, 30)
    assert am.quantize_multiplier(2.0 ** -33) == (1 << 30, 63)
    assert am.quantize_multiplier(2**31 - 1) == (spec.MULTIPLIER_MAX, 0)


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf"), -float("inf"),
                                 2.0 ** -34, 2.0 ** 31, [0.1, 0.0], "x"])
def test_quantize_multiplier_rejects_bad_scales(bad):
    with pytest.raises(ValueError, match="real_scale"):
        am.quantize_multiplier(bad)


# --- requantize --------------------------------------------------------------


def test_requantize_matches_exact_arithmetic_random():
    rng = np.random.default_rng(1)
    n = 3000
    acc = rng.integers(-2**33, 2**33, n) >> rng.integers(0, 33, n)
    bias = rng.integers(-2**31, 2**31, n) >> rng.integers(0, 31, n)
    mult = rng.integers(0, 2**31, n)
    shift = rng.integers(0, 64, n)
    for prec, (lo, hi) in ((AP.INT8, (-128, 127)), (AP.FIXED16, (-32768, 32767))):
        got = am.requantize(acc, bias, mult, shift, precision=prec)
        exp = [exact_requant(*args, lo, hi) for args in zip(acc, bias, mult, shift)]
        assert_bit_exact(np.array(exp), got.astype(np.int64), f"requantize {prec.name}")


def test_requantize_corners():
    r = lambda *a, **k: int(am.requantize(*a, **k))  # noqa: E731
    half = (1 << 30, 31)                     # y = x / 2
    # Ties go away from zero, both signs.
    assert [r(a, 0, *half) for a in (1, 3, 5, -1, -3, -5)] == [1, 2, 3, -1, -2, -3]
    assert [r(a, 0, 1 << 30, 32) for a in (2, 6, -2, -6, 1, -1, 3, -3)] == \
        [1, 2, -1, -2, 0, 0, 1, -1]
    # Bias add saturates at +-2**31 before scaling (x/2 of 2**31-1 is a tie -> 2**30).
    assert r(2**31 - 1, 1, *half, precision=AP.FIXED16) == 32767
    assert r(2**31 - 1, 2**31 - 1, 1 << 30, 47, precision=AP.FIXED16) == 16384
    assert r(-2**31, -2**31, 1 << 30, 47, precision=AP.FIXED16) == -16384
    assert r(2**40, -2**31, 1 << 30, 47, precision=AP.FIXED16) == 16384   # wide acc saturates
    # int8 / int16 saturation edges.
    assert [r(a, 0, 1 << 30, 30) for a in (127, 128, -128, -129)] == [127, 127, -128, -128]
    assert [r(a, 0, 1 << 30, 30, precision=AP.FIXED16) for a in (32767, 32768, -32768, -32769)] \
        == [32767, 32767, -32768, -32768]
    # Multiplier 0 -> 0; shift 63: |x*M| < 2**62, so |x*M / 2**63| < 1/2 rounds to 0.
    assert r(2**31 - 1, 0, 0, 5) == 0
    assert r(2**31 - 1, 0, spec.MULTIPLIER_MAX, 63) == 0
    assert r(-2**31, 0, spec.MULTIPLIER_MAX, 63) == 0
    # shift 0 is an exact product.
    assert r(3, 0, 5, 0, precision=AP.FIXED16) == 15
    # Vectorised over per-channel parameters.
    out = am.requantize(np.full((2, 3), 100), [0, 10, -10], [1 << 30] * 3, [31, 31, 32])
    assert out.tolist() == [[50, 55, 23]] * 2 and out.dtype == np.int8


@pytest.mark.parametrize("kw,match", [
    (dict(multiplier=-1), "multiplier"), (dict(multiplier=2**31), "multiplier"),
    (dict(shift=64), "shift"), (dict(shift=-1), "shift"), (dict(bias=2**31), "bias"),
    (dict(precision="int4"), "precision"),
])
def test_requantize_rejects_bad_parameters(kw, match):
    args = dict(acc=[1, 2], bias=0, multiplier=1 << 30, shift=31)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        am.requantize(**args)


def test_requantize_rejects_float_accumulators():
    with pytest.raises(TypeError, match="acc"):
        am.requantize(np.array([1.5]), 0, 1 << 30, 31)


# --- int8 tables --------------------------------------------------------------

SCALE_PAIRS = [(0.05, 1 / 255, 0, -128), (0.1, 1 / 127, 0, 0), (8 / 127, 8 / 127, 0, 0),
               (0.02, 0.01, 5, -3), (0.5, 0.03, -10, 20), (1e-3, 1e-3, 0, 0)]


@pytest.mark.parametrize("fn", list(AF))
@pytest.mark.parametrize("pair", SCALE_PAIRS)
def test_tables_are_correctly_rounded(fn, pair):
    in_s, out_s, in_z, out_z = pair
    t = am.build_table(fn, in_s, out_s, in_z, out_z)
    assert t.dtype == np.int8 and t.shape == (256,)
    err = am.table_error_lsb(t, fn, in_s, out_s, in_z, out_z)
    assert err.max() <= 0.5 + 1e-9
    # Independent scalar check with math.* and ties away from zero.
    f = {AF.NONE: lambda x: x, AF.RELU: lambda x: max(x, 0.0),
         AF.SIGMOID: lambda x: 1 / (1 + math.exp(-x)), AF.TANH: math.tanh,
         AF.GELU: lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2)))}[fn]
    for i in range(256):
        code = i - 256 if i >= 128 else i
        v = f(in_s * (code - in_z)) / out_s
        q = math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1) + out_z
        assert t[i] == max(-128, min(127, q)), (i, t[i], q)


def test_table_ties_round_away_from_zero():
    # Identity with out_scale = 2*in_scale puts every odd code on a tie.
    t = am.build_table(AF.NONE, 1.0, 2.0)
    codes = np.arange(256).astype(np.uint8).view(np.int8)
    assert t[codes == 3][0] == 2 and t[codes == -3][0] == -2 and t[codes == 1][0] == 1
    assert t[codes == -1][0] == -1


@pytest.mark.parametrize("args,match", [
    ((AF.SIGMOID, 0.0, 0.1), "in_scale"), ((AF.SIGMOID, 0.1, -1.0), "out_scale"),
    ((AF.TANH, float("nan"), 0.1), "in_scale"), ((AF.TANH, 0.1, float("inf")), "out_scale"),
    ((AF.GELU, 0.1, 0.1, 200), "in_zero"), ((AF.GELU, 0.1, 0.1, 0, -129), "out_zero"),
    ((7, 0.1, 0.1), "function"), ((AF.GELU, [0.1, 0.2], 0.1), "in_scale"),
])
def test_build_table_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        am.build_table(*args)


# --- 16-bit fixed point ------------------------------------------------------

ALL_Q412 = np.arange(-32768, 32768)


@pytest.mark.parametrize("fn,limit", [(AF.SIGMOID, 2.0), (AF.TANH, 2.0), (AF.GELU, 2.0)])
def test_fixed16_error_over_whole_input_range(fn, limit):
    got = am.fixed_function(fn, ALL_Q412).astype(np.float64)
    err = np.abs(got - am.fixed_reference(fn, ALL_Q412))
    assert err.max() <= limit, (fn.name, err.max(), ALL_Q412[err.argmax()])


def test_fixed16_shapes_and_symmetry():
    s = am.sigmoid_q(ALL_Q412).astype(np.int64)
    t = am.tanh_q(ALL_Q412).astype(np.int64)
    assert np.all(np.diff(s) >= 0) and np.all(np.diff(t) >= 0)   # monotonic
    assert s.min() >= 0 and s.max() <= 1 << 14 and abs(t).max() <= 1 << 14
    assert s[32768] == 1 << 13 and t[32768] == 0
    assert np.array_equal(t[1:], -t[1:][::-1])                     # odd
    assert np.array_equal(am.fixed_function(AF.NONE, ALL_Q412), ALL_Q412)
    assert np.array_equal(am.fixed_function(AF.RELU, ALL_Q412), np.maximum(ALL_Q412, 0))


def test_pwl_rom_fits_its_fields():
    c0, c1 = spec.pwl_rom()
    assert c0.shape == c1.shape == (2 * spec.PWL_SEGMENTS,)
    assert c0.max() < 1 << spec.PWL_C0_BITS and c1.max() < 1 << spec.PWL_C1_BITS
    words = spec.pwl_rom_words()
    assert all(0 <= w < 1 << (spec.PWL_C0_BITS + spec.PWL_C1_BITS) for w in words)


def test_fixed16_rejects_out_of_range_input():
    with pytest.raises(ValueError, match="Q4.12"):
        am.sigmoid_q([40000])


# --- apply / unit model -------------------------------------------------------


def test_apply_composes_requant_and_function():
    rng = np.random.default_rng(3)
    acc = rng.integers(-2**24, 2**24, (50, 4))
    bias, mult, shift = [5, -7, 0, 1000], [1 << 30, 3 << 29, 1 << 30, 12345678], [40, 41, 36, 30]
    tab = am.build_table(AF.TANH, 0.05, 1 / 127)
    y8 = am.requantize(acc, bias, mult, shift)
    assert np.array_equal(am.apply(acc, bias, mult, shift, AF.TANH, AP.INT8, tab),
                          tab[y8.astype(np.int64) & 0xFF])
    assert np.array_equal(am.apply(acc, bias, mult, shift, AF.RELU), np.maximum(y8, 0))
    y16 = am.requantize(acc, bias, mult, shift, precision=AP.FIXED16)
    assert np.array_equal(am.apply(acc, bias, mult, shift, AF.SIGMOID, AP.FIXED16),
                          am.sigmoid_q(y16))
    with pytest.raises(ValueError, match="table"):
        am.apply(acc, bias, mult, shift, AF.GELU, AP.INT8)


@pytest.mark.parametrize("fn,prec", [(AF.GELU, AP.FIXED16), (AF.TANH, AP.FIXED16),
                                     (AF.SIGMOID, AP.INT8), (AF.RELU, AP.INT8)])
@pytest.mark.parametrize("lo,hi", [(-32768, 0), (2**31 - 3000, 2**31 + 3000), (-7, 7)])
def test_apply_of_a_narrow_span_is_elementwise(fn, prec, lo, hi):
    # a large array whose values span little is evaluated once per value of
    # the span: row by row (small arrays, evaluated directly) must agree
    rng = np.random.default_rng(11)
    acc = rng.integers(lo, hi + 1, (20000, 8))
    mult, shift = am.quantize_multiplier(0.75)
    tab = am.build_table(AF.SIGMOID, 0.05, 1 / 127)
    for bias in (0, -1234):
        whole = am.apply(acc, bias, [mult] * 8, shift, fn, prec, tab)
        rows = np.concatenate([am.apply(acc[i:i + 500], bias, mult, shift, fn, prec, tab)
                               for i in range(0, 20000, 500)])
        assert whole.dtype == rows.dtype and np.array_equal(whole, rows)
    with pytest.raises(ValueError, match="bias"):
        am.apply(acc, 2**31, mult, shift, fn, prec, tab)


def test_unit_model_checks_addresses():
    m = am.ActivationUnitModel(AcceleratorConfig(cols=2, act_param_depth=4, act_tables=2))
    with pytest.raises(ValueError, match="param entry"):
        m.write_params(4, 0, 0, 0)
    with pytest.raises(ValueError, match="table slot"):
        m.write_table(2, np.zeros(256, int))
    with pytest.raises(ValueError, match="shape"):
        m.process(np.zeros((3, 3), int), AF.NONE, AP.INT8, 0)
    m.write_params(1, [1, 2], 1 << 30, 30, mask=0b10)
    assert m.bias[1].tolist() == [0, 2]


# --- RTL in the Amaranth simulator -------------------------------------------


def _pack_params(b, mu, s, lanes):
    return [{"bias": int(b[i]), "multiplier": int(mu[i]), "shift": int(s[i])} for i in range(lanes)]


def run_amaranth(cfg, params, tables, rows, gap=0.3, stall=0.3, seed=0):
    """Write params/tables through the ports, stream rows with random gaps and
    back-pressure; returns (results, lasts, model results)."""
    dut = ActivationUnit(cfg)
    model = am.ActivationUnitModel(cfg)
    lanes = cfg.lanes
    for e, b, mu, s in params:
        model.write_params(e, b, mu, s)
    for slot, t in tables:
        model.write_table(slot, t)
    expected = [model.process(np.asarray(d)[None, :], f, p, e, t)[0] for d, f, p, e, t in rows]
    got, lasts = [], []
    rnd = random.Random(seed)

    async def tb(ctx):
        for e, b, mu, s in params:
            ctx.set(dut.param_w_en, 1)
            ctx.set(dut.param_w_addr, e)
            ctx.set(dut.param_w_data, _pack_params(b, mu, s, lanes))
            await ctx.tick()
        ctx.set(dut.param_w_en, 0)
        for slot, t in tables:
            ctx.set(dut.table_w_en, 1)
            for code in range(256):
                ctx.set(dut.table_w_addr, slot * 256 + code)
                ctx.set(dut.table_w_data, int(t[code]))
                await ctx.tick()
        ctx.set(dut.table_w_en, 0)
        assert ctx.get(dut.idle)
        i = cycles = 0
        while len(got) < len(rows):
            valid = i < len(rows) and rnd.random() >= gap
            if valid:
                d, f, p, e, t = rows[i]
                ctx.set(dut.inp.payload, {"data": [int(x) for x in d], "function": int(f),
                                          "precision": int(p), "param_entry": e, "table": t,
                                          "last": int(i == len(rows) - 1)})
            ctx.set(dut.inp.valid, valid)
            ctx.set(dut.out.ready, rnd.random() >= stall)
            if valid and ctx.get(dut.inp.ready):
                i += 1
            if ctx.get(dut.out.valid) and ctx.get(dut.out.ready):
                p = ctx.get(dut.out.payload)
                got.append([int(x) for x in p.data])
                lasts.append(int(p.last))
            await ctx.tick()
            cycles += 1
            assert cycles < 50 * len(rows) + 100
        ctx.set(dut.inp.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.idle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return np.array(got, dtype=np.int64), lasts, np.array(expected, dtype=np.int64)


@pytest.mark.parametrize("cfg", [
    AcceleratorConfig(rows=2, cols=2, act_param_depth=4, act_tables=3),
    AcceleratorConfig(rows=2, cols=3, acc_bits=40, act_param_depth=2, act_tables=1),
    AcceleratorConfig(rows=2, cols=1, acc_bits=28, max_k=4096, act_param_depth=1, act_tables=4),
    AcceleratorConfig(rows=2, cols=4, act_lanes=2, act_param_depth=4, act_tables=2),
    AcceleratorConfig(rows=2, cols=6, act_lanes=3, acc_bits=40, act_param_depth=2, act_tables=1),
    AcceleratorConfig(rows=2, cols=8, act_lanes=1, act_param_depth=1, act_tables=3),
], ids=["2lanes", "3lanes-acc40", "1lane-acc28", "4ch-on-2lanes", "6ch-on-3lanes-acc40",
        "8ch-on-1lane"])
def test_rtl_amaranth_random_rows(cfg):
    rng = np.random.default_rng(cfg.lanes)
    lanes, depth, slots = cfg.lanes, cfg.act_param_depth, cfg.act_tables
    amin, amax = -(1 << (cfg.acc_bits - 1)), (1 << (cfg.acc_bits - 1)) - 1
    params = [(e, rng.integers(-2**31, 2**31, lanes) >> rng.integers(0, 31),
               rng.integers(0, 2**31, lanes), rng.integers(0, 64, lanes)) for e in range(depth)]
    params[0] = (0, np.full(lanes, 2**31 - 1), np.full(lanes, 1 << 30), np.full(lanes, 31))
    tables = [(s, rng.integers(-128, 128, 256)) for s in range(slots)]
    corners = [amax, amin, 0, 1, -1, 2**31 - 1, -2**31, 3, -3]
    rows = []
    for k in range(160):
        d = rng.integers(amin, amax, lanes, endpoint=True) >> int(rng.integers(0, cfg.acc_bits))
        if k % 7 == 0:
            d = np.clip(rng.choice(corners, lanes), amin, amax)
        rows.append((d, AF(int(rng.integers(0, 5))), AP(int(rng.integers(0, 2))),
                     int(rng.integers(0, depth)), int(rng.integers(0, slots))))
    got, lasts, exp = run_amaranth(cfg, params, tables, rows)
    assert_bit_exact(exp, got, "ActivationUnit (Amaranth sim)")
    assert lasts == [0] * (len(rows) - 1) + [1]


def test_rtl_amaranth_all_int8_codes_and_fixed16_boundaries():
    cfg = AcceleratorConfig(rows=2, cols=4, act_param_depth=2, act_tables=3)
    ident = (0, np.zeros(4, int), np.full(4, 1 << 30), np.full(4, 30))
    tables = [(0, am.build_table(AF.SIGMOID, 0.05, 1 / 255, 0, -128)),
              (1, am.build_table(AF.TANH, 0.03, 1 / 127)),
              (2, am.build_table(AF.GELU, 0.05, 0.05))]
    codes = np.arange(-128, 128).reshape(-1, 4)
    rows = [(c, fn, AP.INT8, 0, fn - 2 if fn >= 2 else 0) for fn in AF for c in codes]
    bounds = np.array([-32768, -32767, 32767, 32768, 0, -1, 1, 4096, -4096, 2**31 - 1,
                       -2**31, 255, 256, -256, 16383, 16384]).reshape(-1, 4)
    rows += [(b, fn, AP.FIXED16, 0, 0) for fn in AF for b in bounds]
    # Entry 1 halves: every odd accumulator is a rounding tie, both signs.
    half = (1, np.zeros(4, int), np.full(4, 1 << 30), np.full(4, 31))
    ties = np.array([1, -1, 3, -3, 5, -5, 255, -255, 257, -257, 65535, -65535]).reshape(-1, 4)
    rows += [(t, AF.NONE, p, 1, 0) for p in AP for t in ties]
    got, _, exp = run_amaranth(cfg, [ident, half], tables, rows, gap=0.1, stall=0.1)
    assert_bit_exact(exp, got, "all codes (Amaranth sim)")


@pytest.mark.parametrize("cols,act_lanes", [(2, 0), (4, 1), (8, 2)])
def test_rtl_full_rate_one_row_per_fold(cols, act_lanes):
    """valid and ready held high: a row enters and a result leaves every cycle,
    or every ``act_fold`` cycles, back to back, ``activation_latency`` + the
    row's other beats after it entered."""
    cfg = AcceleratorConfig(rows=2, cols=cols, act_lanes=act_lanes, act_param_depth=2,
                            act_tables=1)
    fold, latency = cfg.act_fold, activation_latency(cfg)
    dut = ActivationUnit(cfg)
    n = 40
    taken, seen = [], []

    async def tb(ctx):
        ctx.set(dut.out.ready, 1)
        for cycle in range(n * fold + latency + fold + 2):
            k = len(taken)
            ctx.set(dut.inp.payload, {"data": [k * (i + 1) * (-1) ** i for i in range(cols)],
                                      "function": 0, "precision": 1, "param_entry": 0,
                                      "table": 0, "last": 0})
            ctx.set(dut.inp.valid, k < n)
            if k < n and ctx.get(dut.inp.ready):
                taken.append(cycle)
            if ctx.get(dut.out.valid):
                seen.append(cycle)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert taken == list(range(0, n * fold, fold))
    assert seen == [c + fold - 1 + latency for c in taken]


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_constructor_checks_config():
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        ActivationUnit({"cols": 2})
