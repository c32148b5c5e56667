"""cocotb tests of ``ActivationUnit``: every output bit-exact against ``activation_model``.

Run through ``hetaccel.verify.cocotb_runner.run_cocotb`` (see
tests/test_activation_cocotb.py) with ``HETACCEL_CONFIG`` (config JSON) in the
environment.  Optional: ``HETACCEL_ACT_SCALE`` multiplies the number of random
rows (default 1), ``HETACCEL_ACT_SEED`` seeds the data, ``HETACCEL_ACT_BENCH_OUT``
names a JSON file the throughput test writes its measurement to (used by
``hetaccel bench activations``), ``HETACCEL_ACT_THROUGHPUT_ROWS`` the length of
that stream.

Stimulus is driven on the falling edge and sampled in the ReadOnly phase
before the next rising edge, so a transfer is counted exactly when the RTL
sees ``valid & ready`` at that edge.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from ..rtl.activation import input_layout, output_layout, param_layout
from .. import spec
from ..sim import activation_model as am
from .checking import assert_bit_exact
from .cocotb_streams import pump
from ..spec import AcceleratorConfig, ActivationFunction as AF, ActivationPrecision as AP
from ..spec.timing import activation_latency

CONFIG = AcceleratorConfig.from_json(os.environ.get("HETACCEL_CONFIG", "{}"))
LANES = CONFIG.lanes
SCALE = float(os.environ.get("HETACCEL_ACT_SCALE", "1"))
SEED = int(os.environ.get("HETACCEL_ACT_SEED", "2024"))
IN_LAYOUT = input_layout(CONFIG)
OUT_LAYOUT = output_layout(CONFIG)
PARAM_ENTRY_LAYOUT = data.ArrayLayout(param_layout(), LANES)
IDENTITY = (0, 1 << 30, 30)   # bias, multiplier, shift: y = acc exactly
ACC_MIN, ACC_MAX = -(1 << (CONFIG.acc_bits - 1)), (1 << (CONFIG.acc_bits - 1)) - 1


def width(shape) -> int:
    return Shape.cast(shape).width


def pack(shape, value) -> int:
    """Integer bit pattern of ``value`` (nested dicts/lists) in Amaranth ``shape``."""
    if isinstance(shape, data.StructLayout):
        word = 0
        for name, field in shape:
            word |= pack(field.shape, value.get(name, 0)) << field.offset
        return word
    if isinstance(shape, data.ArrayLayout):
        w = width(shape.elem_shape)
        return sum(pack(shape.elem_shape, v) << (i * w) for i, v in enumerate(value))
    return int(value) & ((1 << width(shape)) - 1)


def unpack_row(word: int) -> tuple[list[int], int]:
    """(lane results as signed ints, last) of one ``out`` payload."""
    f_data = OUT_LAYOUT["data"]
    f_last = OUT_LAYOUT["last"]
    w = width(f_data.shape.elem_shape)
    vals = []
    for i in range(LANES):
        v = (word >> (f_data.offset + i * w)) & ((1 << w) - 1)
        vals.append(v - (1 << w) if v >> (w - 1) else v)
    return vals, (word >> f_last.offset) & 1


class Bench:
    """Drives the unit's ports and keeps the model's copy of its memories in step."""

    def __init__(self, dut, rng):
        self.dut = dut
        self.rng = rng
        self.model = am.ActivationUnitModel(CONFIG)
        self.cycles = 0

    async def start(self):
        dut = self.dut
        Clock(dut.clk, 10, unit="ns").start()
        dut.rst.value = 1
        dut.inp__valid.value = 0
        dut.out__ready.value = 0
        dut.param_w_en.value = 0
        dut.param_w_mask.value = (1 << LANES) - 1
        dut.table_w_en.value = 0
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await FallingEdge(dut.clk)
        await ReadOnly()
        assert int(dut.idle.value) == 1, "unit not idle after reset"
        await FallingEdge(dut.clk)

    async def write_params(self, entry, bias, multiplier, shift, mask=None):
        dut = self.dut
        b, mu, s = (np.broadcast_to(np.asarray(x, dtype=np.int64), (LANES,))
                    for x in (bias, multiplier, shift))
        mask = (1 << LANES) - 1 if mask is None else mask
        dut.param_w_en.value = 1
        dut.param_w_addr.value = entry
        dut.param_w_mask.value = mask
        dut.param_w_data.value = pack(PARAM_ENTRY_LAYOUT, [
            {"bias": int(b[i]), "multiplier": int(mu[i]), "shift": int(s[i])}
            for i in range(LANES)])
        await FallingEdge(dut.clk)
        dut.param_w_en.value = 0
        dut.param_w_mask.value = (1 << LANES) - 1
        self.model.write_params(entry, b, mu, s, mask)

    async def write_table(self, slot, table):
        dut = self.dut
        dut.table_w_en.value = 1
        for code, v in enumerate(np.asarray(table)):
            dut.table_w_addr.value = slot * 256 + code
            dut.table_w_data.value = int(v) & 0xFF
            await FallingEdge(dut.clk)
        dut.table_w_en.value = 0
        self.model.write_table(slot, table)

    async def run(self, what, rows, gap=0.0, stall=0.0):
        """Stream ``rows`` = [(acc[lanes], function, precision, entry, table)] and
        compare every output row and ``last`` with the model."""
        dut, rng = self.dut, self.rng
        words, expected = [], []
        for i, (acc, fn, prec, entry, slot) in enumerate(rows):
            last = int(i == len(rows) - 1)
            words.append(pack(IN_LAYOUT, {
                "data": [int(a) for a in acc], "function": int(fn), "precision": int(prec),
                "param_entry": entry, "table": slot, "last": last}))
            expected.append(self.model.process(np.asarray(acc, dtype=np.int64)[None, :],
                                               fn, prec, entry, slot)[0])
        limit = 100 + int(len(words) / max(1e-3, (1 - gap) * (1 - stall))) * 8
        raw, cycles = await pump(dut, words, rng, gap=gap, stall=stall, limit=limit)
        outs, lasts = (list(t) for t in zip(*map(unpack_row, raw)))
        assert_bit_exact(np.array(expected, dtype=np.int64), np.array(outs, dtype=np.int64),
                         f"{what}: results")
        assert lasts == [0] * (len(words) - 1) + [1], f"{what}: last flags"
        await ReadOnly()
        assert int(dut.idle.value) == 1, f"{what}: not idle after the last row"
        await FallingEdge(dut.clk)
        self.cycles += cycles
        dut._log.info("%s: %d rows bit-exact in %d cycles", what, len(rows), cycles)


def rows_of(values, fn, prec, entry=0, slot=0):
    """Pack a flat list of accumulators into rows of LANES (last row padded with 0)."""
    v = list(values)
    v += [0] * (-len(v) % LANES)
    return [(v[i:i + LANES], fn, prec, entry, slot) for i in range(0, len(v), LANES)]


# Scale pairs (in_scale, out_scale, out_zero) per table function: chosen so
# the whole output range is used, plus one that saturates.
SCALE_PAIRS = {
    AF.SIGMOID: [(8 / 128, 1 / 255, -128), (0.02, 1 / 256, -128), (0.2, 1 / 200, -100)],
    AF.TANH: [(4 / 128, 1 / 127, 0), (0.01, 1 / 128, 0), (0.1, 1 / 100, 0)],
    AF.GELU: [(6 / 128, 6 / 127, 0), (0.02, 0.01, 0), (0.1, 0.05, 10)],
}
SLOTS = {AF.SIGMOID: 0, AF.TANH: 1, AF.GELU: 2}


@cocotb.test()
async def test_int8_tables_all_codes(dut):
    """All 256 int8 codes for every function under three scale pairs each."""
    rng = np.random.default_rng(SEED)
    tb = Bench(dut, rng)
    await tb.start()
    await tb.write_params(0, *IDENTITY)
    codes = list(range(-128, 128))
    for fn in (AF.NONE, AF.RELU):
        await tb.run(f"int8 {fn.name} all codes", rows_of(codes, fn, AP.INT8), gap=0.2, stall=0.2)
    for k in range(3):
        for fn, slot in SLOTS.items():
            in_s, out_s, out_z = SCALE_PAIRS[fn][k]
            await tb.write_table(slot, am.build_table(fn, in_s, out_s, 0, out_z))
        rows = []
        for fn, slot in SLOTS.items():
            rows += rows_of(rng.permutation(codes), fn, AP.INT8, 0, slot)
        await tb.run(f"int8 tables, scale pair {k}", rows, gap=0.2, stall=0.2)
    # The spare slot too, with a random table.
    if CONFIG.act_tables > 3:
        slot = CONFIG.act_tables - 1
        await tb.write_table(slot, rng.integers(-128, 128, 256))
        await tb.run("int8 spare table slot", rows_of(codes, AF.GELU, AP.INT8, 0, slot))


@cocotb.test()
async def test_requant_corners(dut):
    """Rounding ties, bias-add saturation at +-2**31, int8/int16 saturation,
    multiplier 0, shift 0 and 63, per-lane parameters and masked writes."""
    rng = np.random.default_rng(SEED + 1)
    tb = Bench(dut, rng)
    await tb.start()
    depth = CONFIG.act_param_depth
    # entry -> (bias, multiplier, shift)
    entries = [
        IDENTITY,
        (0, 1 << 30, 31),                 # y = acc/2: every odd acc is a tie
        (0, 3 << 28, 33),                 # y = 3 acc / 32: ties at acc = 16 (mod 32) ...
        (spec.INT32_MAX, 1 << 30, 30),    # bias add saturates high
        (spec.INT32_MIN, 1 << 30, 30),    # ... and low
        (0, 0, 31),                       # multiplier 0
        (0, spec.MULTIPLIER_MAX, 63),     # largest shift: |y| <= 1/2 rounds to 0 or +-1
        (0, spec.MULTIPLIER_MAX, 0),      # shift 0: no rounding, saturates
        (-5, 1 << 30, 38),                # y = (acc - 5) / 256
        (12345, 1_518_500_250, 45),       # an irregular scale
    ]
    entries = entries[:depth] if depth < len(entries) else entries
    for e, p in enumerate(entries):
        await tb.write_params(e % depth, *p)
    # Per-lane parameters in one entry (the last), then a masked rewrite of lane 0.
    last_e = depth - 1
    await tb.write_params(last_e, rng.integers(-1000, 1000, LANES),
                          rng.integers(1 << 29, 1 << 31, LANES), rng.integers(25, 40, LANES))
    await tb.write_params(last_e, 77, 1 << 30, 31, mask=1)

    corners = [0, 1, -1, 2, -2, 3, -3, 15, 16, 17, -15, -16, -17, 48, -48, 127, 128, -128, -129,
               255, 256, -256, 32767, 32768, -32768, -32769, (1 << 31) - 1, -(1 << 31),
               (1 << 30) + 1, -(1 << 30) - 1, 1 << 20, -(1 << 20) + 7]
    corners += [ACC_MAX, ACC_MIN, ACC_MAX - 1, ACC_MIN + 1]
    corners = [int(np.clip(c, ACC_MIN, ACC_MAX)) for c in corners]
    rows = []
    for e in sorted({e % depth for e in range(len(entries))} | {last_e}):
        for prec in AP:
            rows += rows_of(corners, AF.NONE, prec, e)
            rows += rows_of(rng.integers(ACC_MIN, ACC_MAX, 2 * LANES, endpoint=True),
                            AF.RELU, prec, e)
    await tb.run("requant corners", rows, gap=0.3, stall=0.3)


@cocotb.test()
async def test_fixed16_functions(dut):
    """Random and boundary Q4.12 inputs through every FIXED16 function."""
    rng = np.random.default_rng(SEED + 2)
    tb = Bench(dut, rng)
    await tb.start()
    await tb.write_params(0, *IDENTITY)
    # Half scale: the Q4.12 value is acc/2 rounded, so ties go through both stages.
    await tb.write_params(1, 3, 1 << 30, 31)
    n = max(LANES, int(400 * SCALE))
    bounds = [-32768, -32767, -32769, 32767, 32768, 32766, 0, 1, -1, 2, -2, 4096, -4096,
              8192, -8192, 16383, 16384, -16384, 255, 256, -255, -256, 127, 128, -128,
              (1 << 31) - 1, -(1 << 31)]
    bounds = [int(np.clip(b, ACC_MIN, ACC_MAX)) for b in bounds]
    for fn in AF:
        vals = np.concatenate([bounds, rng.integers(-32768, 32768, n),
                               rng.integers(-70000, 70000, n // 4)])
        vals = np.clip(vals, ACC_MIN, ACC_MAX)
        rows = rows_of(vals, fn, AP.FIXED16, 0)
        rows += rows_of(rng.integers(-65536, 65536, n // 2), fn, AP.FIXED16, 1)
        await tb.run(f"fixed16 {fn.name}", rows, gap=0.25, stall=0.25)


@cocotb.test()
async def test_mixed_rows_flow_control(dut):
    """Random functions, precisions, entries and slots per row under input gaps
    and output back-pressure (including long stalls)."""
    rng = np.random.default_rng(SEED + 3)
    tb = Bench(dut, rng)
    await tb.start()
    depth = CONFIG.act_param_depth
    for e in range(depth):
        await tb.write_params(e, rng.integers(-(1 << 20), 1 << 20, LANES),
                              rng.integers(0, 1 << 31, LANES), rng.integers(20, 45, LANES))
    for slot in range(CONFIG.act_tables):
        await tb.write_table(slot, rng.integers(-128, 128, 256))
    n = max(8, int(150 * SCALE))
    for gap, stall in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.3, 0.3), (0.1, 0.9)):
        rows = []
        for _ in range(n):
            acc = rng.integers(-(1 << 30), 1 << 30, LANES) >> rng.integers(0, 30)
            rows.append((np.clip(acc, ACC_MIN, ACC_MAX), AF(int(rng.integers(0, 5))),
                         AP(int(rng.integers(0, 2))), int(rng.integers(0, depth)),
                         int(rng.integers(0, CONFIG.act_tables))))
        await tb.run(f"mixed rows gap={gap} stall={stall}", rows, gap=gap, stall=stall)


@cocotb.test()
async def test_full_rate_throughput(dut):
    """With valid and ready held high the unit takes and delivers a row every
    cycle (every ``act_fold`` cycles when folded), back to back.

    Counts cycles (not wall time) from the first accepted row to the last
    result; ``inp.ready`` must be high exactly once per ``act_fold`` cycles and
    each result must come ``act_fold - 1 + activation_latency`` cycles after its
    row.  Writes the measurement to HETACCEL_ACT_BENCH_OUT when set.
    """
    rng = np.random.default_rng(SEED + 4)
    tb = Bench(dut, rng)
    await tb.start()
    await tb.write_params(0, 0, 1 << 30, 36)
    await tb.write_table(0, am.build_table(AF.SIGMOID, 0.05, 1 / 255, 0, -128))
    n = int(os.environ.get("HETACCEL_ACT_THROUGHPUT_ROWS", "64"))
    fold = CONFIG.act_fold
    fns = [AF(int(f)) for f in rng.integers(0, 5, n)]
    precs = [AP(int(p)) for p in rng.integers(0, 2, n)]
    accs = rng.integers(-(1 << 22), 1 << 22, (n, LANES))
    words = [pack(IN_LAYOUT, {"data": [int(a) for a in accs[i]], "function": int(fns[i]),
                              "precision": int(precs[i]), "param_entry": 0, "table": 0,
                              "last": int(i == n - 1)}) for i in range(n)]
    expected = [tb.model.process(accs[i][None, :], fns[i], precs[i], 0, 0)[0] for i in range(n)]
    dut = tb.dut
    dut.out__ready.value = 1
    outs, in_cycles, out_cycles = [], [], []
    sent = cycle = 0
    while len(outs) < n:
        dut.inp__valid.value = int(sent < n)
        if sent < n:
            dut.inp__payload.value = words[sent]
        await ReadOnly()
        if sent < n and int(dut.inp__ready.value):
            in_cycles.append(cycle)
            sent += 1
        if int(dut.out__valid.value):
            outs.append(unpack_row(int(dut.out__payload.value))[0])
            out_cycles.append(cycle)
        await FallingEdge(dut.clk)
        cycle += 1
        assert cycle < 10 * n * fold + 100, "stream stalled"
    dut.inp__valid.value = 0
    assert_bit_exact(np.array(expected, dtype=np.int64), np.array(outs, dtype=np.int64),
                     "full-rate stream")
    assert in_cycles == list(range(0, n * fold, fold)), "inp.ready not high once per row"
    latency = out_cycles[0] - in_cycles[0]
    assert latency == fold - 1 + activation_latency(CONFIG), f"latency {latency}"
    span = out_cycles[-1] - in_cycles[0] + 1
    assert out_cycles == [c + latency for c in in_cycles], "results not back to back"
    steady = out_cycles[-1] - out_cycles[0] + fold
    result = {"rows": n, "lanes": LANES, "act_lanes": CONFIG.act_physical_lanes,
              "cycles": span, "latency_cycles": latency,
              "transfers_per_cycle_steady": n / steady,
              "elements_per_cycle_steady": LANES * n / steady,
              "elements_per_cycle_with_fill": LANES * n / span}
    dut._log.info("throughput: %s", result)
    out = os.environ.get("HETACCEL_ACT_BENCH_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(result, f)
