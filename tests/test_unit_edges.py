"""Behaviour at edges the other tests did not reach, each found by a mutant of
tests/mutants.toml that survived them: the activation unit's lane mask, BYTES_IN
while the link holds a byte back, the accumulator write port beside a running
read-modify-write, the performance counters past 2**16, and the systolic
array's partial sums at full-scale operands.  Amaranth simulator, small designs.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from hetaccel.rtl.activation import ActivationUnit
from hetaccel.rtl.command import CounterBank
from hetaccel.rtl.device import Device
from hetaccel.rtl.engine import MatmulEngine
from hetaccel.rtl.systolic import SystolicArray
from hetaccel.sim.activation_model import ActivationUnitModel
from hetaccel.sim.device_model import DeviceModel
from hetaccel.spec import (AcceleratorConfig, ActivationFunction, ActivationPrecision, Opcode,
                           encode_instruction, register_map)
from hetaccel.spec.link import encode_request
from hetaccel.spec.timing import array_latency


def _simulate(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_param_write_changes_only_the_masked_lanes():
    cfg = AcceleratorConfig(rows=2, cols=3, act_param_depth=2, act_tables=1)
    dut = ActivationUnit(cfg)
    model = ActivationUnitModel(cfg)
    writes = [(0b111, [10, 20, 30], [1 << 30] * 3, [30, 31, 29]),
              (0b010, [-7, -8, -9], [3 << 28] * 3, [28, 27, 26]),
              (0b101, [5, 6, 7], [(1 << 31) - 1] * 3, [31, 31, 31])]
    for mask, b, mu, s in writes:
        model.write_params(1, b, mu, s, mask=mask)
    rows = [[1000, -2000, 123456], [-1, 0, 1 << 20]]
    expected = model.process(np.array(rows), ActivationFunction.NONE,
                             ActivationPrecision.FIXED16, 1)
    got = []

    async def tb(ctx):
        for mask, b, mu, s in writes:
            ctx.set(dut.param_w_en, 1)
            ctx.set(dut.param_w_addr, 1)
            ctx.set(dut.param_w_mask, mask)
            ctx.set(dut.param_w_data, [{"bias": b[i], "multiplier": mu[i], "shift": s[i]}
                                       for i in range(3)])
            await ctx.tick()
        ctx.set(dut.param_w_en, 0)
        ctx.set(dut.out.ready, 1)
        for i, row in enumerate(rows):
            ctx.set(dut.inp.valid, 1)
            ctx.set(dut.inp.payload, {"data": row, "function": int(ActivationFunction.NONE),
                                      "precision": int(ActivationPrecision.FIXED16),
                                      "param_entry": 1, "table": 0,
                                      "last": int(i == len(rows) - 1)})
            await ctx.tick()
        ctx.set(dut.inp.valid, 0)
        for _ in range(20):
            if ctx.get(dut.out.valid):
                got.append([int(x) for x in ctx.get(dut.out.payload.data)])
            await ctx.tick()

    _simulate(dut, tb)
    assert got == expected.tolist()


def test_bytes_in_counts_bytes_taken_not_bytes_offered():
    # Frames sent back to back: the next frame's first byte waits on rx while
    # the link checks the previous frame's CRC (rx.ready low), and counts once.
    cfg = AcceleratorConfig(rows=2, cols=2, max_k=16, acc_bits=20, input_depth=4,
                            weight_depth=4, acc_depth=4, output_depth=4, opt_depth=2,
                            has_activation=False, has_adam=False, max_payload=32)
    regs = register_map(cfg)
    read = encode_instruction(Opcode.READ_REG, {"reg": regs["BYTES_IN"].addr},
                              {"reg": regs["FRAMES"].addr})
    # (two frames: the link's two buffers hold both, so no BUSY however long the
    # first takes)
    parts = [encode_request(Opcode.NOP, 1) + encode_request(Opcode.NOP, 2),
             encode_request(Opcode.READ_REG, 3, read)]
    model = DeviceModel(cfg)
    replies = [model.feed(p) for p in parts]
    dut = Device(cfg)
    got = bytearray()
    waited = []

    async def tb(ctx):
        ctx.set(dut.tx.ready, 1)
        want = 0
        for part, reply in zip(parts, replies):
            pending = list(part)
            want += len(reply)
            for _ in range(3000):
                if not pending and len(got) >= want:
                    break
                ctx.set(dut.rx.valid, bool(pending))
                if pending:
                    ctx.set(dut.rx.payload, pending[0])
                    if ctx.get(dut.rx.ready):
                        pending.pop(0)
                    else:
                        waited.append(len(pending))
                if ctx.get(dut.tx.valid):
                    got.append(ctx.get(dut.tx.payload))
                await ctx.tick()

    _simulate(dut, tb)
    assert waited, "no byte was held back: the test no longer covers the case"
    assert bytes(got) == b"".join(replies)


def test_acc_write_is_never_ready_inside_a_read_modify_write():
    # An acc_write offered in every cycle while accumulating rows pass: ready
    # must be low from the cycle a row's accumulator row is read (two cycles
    # before it is on the array's results) to the cycle its sum is written.
    cfg = AcceleratorConfig(rows=2, cols=2, max_k=16, acc_bits=20, acc_depth=8)
    dut = MatmulEngine(cfg)
    L = array_latency(cfg)
    rng = np.random.default_rng(5)
    rows = [([int(x) for x in rng.integers(-128, 128, 2)], i % 3 == 2, bool(i % 2), i % 4)
            for i in range(24)]
    accepted, ready_at = [], {}

    async def tb(ctx):
        ctx.set(dut.weights.valid, 1)
        ctx.set(dut.weights.payload, [3, -5])
        ctx.set(dut.rd_data.ready, 1)
        ai, cycle = 0, 0
        while cycle < 400 and (ai < len(rows) or not ctx.get(dut.idle)):
            ctx.set(dut.acts.valid, ai < len(rows))
            if ai < len(rows):
                data, last, acc, addr = rows[ai]
                ctx.set(dut.acts.payload, {"data": data, "last": last, "accumulate": acc,
                                           "acc_addr": addr})
            ctx.set(dut.acc_write.valid, 1)
            ctx.set(dut.acc_write.payload, {"addr": 4 + cycle % 4, "data": [cycle, -cycle]})
            if ctx.get(dut.active):
                accepted.append(cycle)
            ready_at[cycle] = ctx.get(dut.acc_write.ready)
            if ai < len(rows) and ctx.get(dut.acts.ready):
                ai += 1
            await ctx.tick()
            cycle += 1

    _simulate(dut, tb)
    assert len(accepted) == len(rows)
    inside = sorted({c + k for a in accepted for c in [a] for k in range(L - 1, L + 3)})
    bad = [c for c in inside if ready_at.get(c)]
    assert not bad, f"acc_write ready in cycles {bad} (rows entered in {accepted})"


def test_counters_carry_past_16_bits():
    # BYTES_OUT takes up to max_payload + 7 per cycle: at the maximum every
    # cycle, its count passes 2**16 within a few hundred cycles.
    max_add = [263, 1, 7]
    dut = CounterBank(max_add)
    n = len(max_add)
    errors, top = [], [0]

    async def tb(ctx):
        counts = [0] * n
        hist = []
        for t in range(900):
            for i, a in enumerate(max_add):
                ctx.set(dut.add[i], a)
            hist.append(list(counts))
            counts = [c + a for c, a in zip(counts, max_add)]
            await ctx.tick()
            if t >= 3:
                i, v = ctx.get(dut.index), ctx.get(dut.value)
                top[0] = max(top[0], v)
                if v != hist[t - 2][i] and len(errors) < 5:
                    errors.append((t, i, hist[t - 2][i], v))

    _simulate(dut, tb)
    assert top[0] > 1 << 17
    assert not errors, f"(cycle, counter, expected, got): {errors}"


@pytest.mark.parametrize("rows", [2, 3, 4, 5])
def test_array_partial_sums_at_full_scale(rows):
    # (-128) * (-128) in every PE: every column sum is rows * 2**14, the largest
    # an int8 array makes, which the narrowest partial-sum register must hold.
    cfg = AcceleratorConfig(rows=rows, cols=2, max_k=64, acc_bits=32, acc_depth=4)
    dut = SystolicArray(cfg)
    acts = [[-128] * rows, [127] * rows, [-128, 127] * (rows // 2) + [-128] * (rows % 2)]
    weights = [[-128, 127] for _ in range(rows)]
    w = np.array(weights, dtype=np.int64)
    expected = [(np.array(a, dtype=np.int64) @ w).tolist() for a in acts]
    got = []

    async def tb(ctx):
        ctx.set(dut.results.ready, 1)
        for row in weights:
            ctx.set(dut.weights.valid, 1)
            ctx.set(dut.weights.payload, row)
            assert ctx.get(dut.weights.ready)
            await ctx.tick()
        ctx.set(dut.weights.valid, 0)
        ai = 0
        for _ in range(60):
            ctx.set(dut.acts.valid, ai < len(acts))
            if ai < len(acts):
                ctx.set(dut.acts.payload, {"data": acts[ai], "last": ai == len(acts) - 1,
                                           "accumulate": 0, "acc_addr": 0})
                if ctx.get(dut.acts.ready):
                    ai += 1
            if ctx.get(dut.results.valid):
                got.append([int(x) for x in ctx.get(dut.results.payload.data)])
            await ctx.tick()

    _simulate(dut, tb)
    assert got == expected
