"""Requantisation at every rounding corner: the RTL activation unit (Amaranth
simulator), the model (sim/activation_model.py) and a Python-integer
reference written here, all three equal.

The corners: the saturating int32 bias add (sums one below, at and one past
both bounds, accumulators wider than 32 bits, extreme biases); the
multiplier at 0, 1, powers of two and its maximum; the rounding shift at
every shift from 0 to 63 with exact ties of both signs (away from zero),
one below and one above them, where the shift allows; ties that round onto
and past the int8 and int16 bounds; shift 0 (the product itself) and 63
(everything rounds to 0).  Each corner row runs in both precisions, through
NONE and RELU, with gaps on the input and back-pressure on the output.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hetaccel.rtl.activation import ActivationUnit
from hetaccel.sim import activation_model as am
from hetaccel.spec import (MULTIPLIER_MAX, SHIFT_MAX, AcceleratorConfig,
                           ActivationFunction as AF, ActivationPrecision as AP)

LANES = 4
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
BOUNDS = {AP.INT8: (-128, 127), AP.FIXED16: (-32768, 32767)}


def reference(acc: int, bias: int, mult: int, shift: int, precision, function) -> int:
    """Requantise one element with Python integers: clamp the sum to int32,
    multiply, divide by 2**shift rounding half away from zero, clamp."""
    x = min(max(acc + bias, I32_MIN), I32_MAX)
    p = x * mult
    q, r = divmod(abs(p), 1 << shift)
    if shift and 2 * r >= 1 << shift:
        q += 1
    y = q if p >= 0 else -q
    lo, hi = BOUNDS[precision]
    y = min(max(y, lo), hi)
    return max(y, 0) if function == AF.RELU else y


def _tie_channel(shift: int, acc_lo: int, acc_hi: int):
    """(multiplier, accumulators) for one channel at ``shift``: products
    that are exact ties odd * 2**(shift-1), of both signs, and one below and
    above them, with odd values whose halves straddle the int8 and int16
    bounds where they fit; the multiplier a power of two."""
    if shift == 0:
        values = [v for odd in (1, 3, 255, 257, 65535, 65537) for v in (odd, -odd)]
        return 1, values
    if shift == 62:
        # the one tie left: -2**31 * 2**30 = -2**61; the largest products round to 0
        return 1 << 30, [I32_MIN, I32_MIN + 1, I32_MAX, -(1 << 30), 1 << 30, 1, -1, 0]
    if shift == 63:
        # |x * multiplier| < 2**62: every product rounds to 0
        return MULTIPLIER_MAX, [I32_MAX, I32_MIN, I32_MAX - 1, I32_MIN + 1, 1, -1, 0]
    # x * 2**m = odd * 2**(shift-1): x = odd * 2**ex with ex + m = shift - 1
    m = min(max(shift - 1 - 14, 0), 30)
    ex = shift - 1 - m
    values = []
    for odd in (1, 3, 5, 255, 257, 1023, 65535, 65537):
        if odd.bit_length() + ex > 31:
            continue
        for sign in (1, -1):
            for delta in (0, -1, 1):
                values.append(min(max(sign * (odd << ex) + delta, acc_lo), acc_hi))
    return 1 << m, values


def corner_entries(acc_bits: int, rng):
    """[(bias[4], mult[4], shift[4], rows of 4 accumulators)] for each
    parameter entry of the corner run."""
    acc_lo, acc_hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    entries = []
    # every shift 0..63, four per entry, bias 0
    for e in range(64 // LANES):
        shifts = [e * LANES + c for c in range(LANES)]
        chans = [_tie_channel(s, acc_lo, acc_hi) for s in shifts]
        n = max(len(v) for _, v in chans)
        rows = [[v[i % len(v)] for _, v in chans] for i in range(n)]
        entries.append(([0] * LANES, [m for m, _ in chans], shifts, rows))
    # the saturating bias add: sums one below, at and one past both int32 bounds
    # (x / 2**17 keeps them apart in Q4.12: +-16384, or a wrapped sum's sign)
    for bias in ([I32_MAX, I32_MIN, 1, -1], [I32_MAX, I32_MIN, 0, 5]):
        rows = []
        for delta in (-2, -1, 0, 1, 2, 1000):
            rows.append([I32_MAX - b + delta if b >= 0 else I32_MIN - b - delta
                         for b in bias])
            rows.append([I32_MIN - b - delta if b >= 0 else I32_MAX - b + delta
                         for b in bias])
        rows += [[acc_hi] * LANES, [acc_lo] * LANES, [0] * LANES]
        rows = [[min(max(v, acc_lo), acc_hi) for v in r] for r in rows]
        entries.append((bias, [1 << 30] * LANES, [47] * LANES, rows))
    # shift 0: the product itself, onto and past the output bounds
    vals = [127, 128, -128, -129, 32767, 32768, -32768, -32769, 0, 1, -1, I32_MAX, I32_MIN,
            63, 64, -64, -65, 16383, 16384, -16384, -16385]
    vals += [0] * (-len(vals) % LANES)
    entries.append(([0] * LANES, [1, 2, 1, 2], [0] * LANES,
                    [vals[i:i + LANES] for i in range(0, len(vals), LANES)]))
    # multiplier 0 and maximum, shift 63 and 62, against the extreme sums
    ext = [I32_MAX, I32_MIN, acc_hi, acc_lo, 1, -1, 12345, -12345]
    entries.append(([0, I32_MIN, I32_MAX, -7], [0, MULTIPLIER_MAX, MULTIPLIER_MAX, 1 << 30],
                    [SHIFT_MAX, SHIFT_MAX, 62, 31],
                    [[ext[(i + c) % len(ext)] for c in range(LANES)] for i in range(len(ext))]))
    # random parameters and accumulators of every magnitude
    for _ in range(6):
        bias = (rng.integers(I32_MIN, I32_MAX, LANES, endpoint=True)
                >> rng.integers(0, 31, LANES)).tolist()
        mult = rng.integers(0, MULTIPLIER_MAX, LANES, endpoint=True).tolist()
        shift = rng.integers(0, SHIFT_MAX + 1, LANES).tolist()
        rows = (rng.integers(acc_lo, acc_hi, (24, LANES), endpoint=True)
                >> rng.integers(0, acc_bits, (24, 1))).tolist()
        entries.append((bias, mult, shift, rows))
    return entries


def run_unit(cfg, entries, rows, seed=0, gap=0.1, stall=0.2):
    """Load ``entries`` into the RTL unit's parameter memory and stream
    ``rows`` = [(accumulators, function, precision, entry)] through it, with
    random input gaps and output back-pressure; the results, in order."""
    dut = ActivationUnit(cfg)
    rnd = random.Random(seed)
    got = []

    async def tb(ctx):
        ctx.set(dut.param_w_en, 1)
        for e, (bias, mult, shift, _) in enumerate(entries):
            ctx.set(dut.param_w_addr, e)
            ctx.set(dut.param_w_data, [{"bias": b, "multiplier": m, "shift": s}
                                       for b, m, s in zip(bias, mult, shift)])
            await ctx.tick()
        ctx.set(dut.param_w_en, 0)
        i = cycles = 0
        while len(got) < len(rows):
            valid = i < len(rows) and rnd.random() >= gap
            if valid:
                data, fn, prec, e = rows[i]
                ctx.set(dut.inp.payload, {"data": data, "function": int(fn),
                                          "precision": int(prec), "param_entry": e,
                                          "table": 0, "last": 0})
            ctx.set(dut.inp.valid, valid)
            ctx.set(dut.out.ready, rnd.random() >= stall)
            if valid and ctx.get(dut.inp.ready):
                i += 1
            if ctx.get(dut.out.valid) and ctx.get(dut.out.ready):
                got.append([int(x) for x in ctx.get(dut.out.payload).data])
            await ctx.tick()
            cycles += 1
            assert cycles < 10 * len(rows) + 100, "the unit stopped"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return np.array(got, np.int64)


def _rows(entries):
    return [(data, fn, prec, e) for e, (*_, rows) in enumerate(entries) for data in rows
            for prec in AP for fn in (AF.NONE, AF.RELU)]


def test_corner_set_reaches_every_corner():
    """The corner rows do reach what they are for (by the reference alone)."""
    entries = corner_entries(40, np.random.default_rng(0))
    ties = {(AP.INT8, s) for s in range(64)}
    sat32 = set()
    hit = {"int8 bound by a tie": 0, "int16 bound by a tie": 0, "negative ties": 0}
    for bias, mult, shift, rows in entries:
        for data in rows:
            for c in range(LANES):
                x = data[c] + bias[c]
                if x > I32_MAX:
                    sat32.add("high")
                if x < I32_MIN:
                    sat32.add("low")
                x = min(max(x, I32_MIN), I32_MAX)
                s = shift[c]
                p = x * mult[c]
                if s and abs(p) % (1 << s) == 1 << (s - 1):
                    ties.discard((AP.INT8, s))
                    hit["negative ties"] += p < 0
                    y = reference(data[c], bias[c], mult[c], s, AP.FIXED16, AF.NONE)
                    hit["int8 bound by a tie"] += y in (128, -129)
                    hit["int16 bound by a tie"] += abs(p) >> s in (32767, 32768)
    assert ties == {(AP.INT8, 0), (AP.INT8, 63)}, sorted(ties)    # (none can exist)
    assert sat32 == {"high", "low"}
    assert all(v > 0 for v in hit.values()), hit
    assert len(entries) <= 32


@pytest.mark.parametrize("acc_bits", [32, 40])
def test_rtl_model_and_reference_agree_at_every_corner(acc_bits):
    cfg = AcceleratorConfig(rows=2, cols=LANES, acc_bits=acc_bits, act_param_depth=32,
                            act_tables=1)
    entries = corner_entries(acc_bits, np.random.default_rng(acc_bits))
    rows = _rows(entries)
    ref = np.array([[reference(d[c], entries[e][0][c], entries[e][1][c], entries[e][2][c],
                               prec, fn) for c in range(LANES)]
                    for d, fn, prec, e in rows], np.int64)
    model = am.ActivationUnitModel(cfg)
    for e, (bias, mult, shift, _) in enumerate(entries):
        model.write_params(e, bias, mult, shift)
    mod = np.array([model.process(np.array([d]), fn, prec, e)[0] for d, fn, prec, e in rows],
                   np.int64)
    got = run_unit(cfg, entries, rows, seed=acc_bits)
    for name, arr in (("model", mod), ("RTL", got)):
        bad = np.argwhere(arr != ref)
        assert len(bad) == 0, (
            f"{name} differs from the integer reference in {len(bad)} elements; first: "
            + "; ".join(f"acc {rows[i][0][c]} entry {rows[i][3]} lane {c} "
                        f"({rows[i][2].name}, {rows[i][1].name}): {arr[i, c]}, "
                        f"expected {ref[i, c]}" for i, c in bad[:3]))
