"""The whole AdamUnit (rtl/adam.py) in the Amaranth simulator against
sim/adam_model.py, bit for bit: Adam (L2 decay), AdamW (decoupled decay) and
no decay, several steps each (the unit's param, m and v fed back with new
gradients and the next step's hyperparameters), special values in every
operand, two lanes, gaps on the input and back-pressure on the output.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hetaccel.rtl.adam import AdamUnit
from hetaccel.rtl.fp32 import CANONICAL_NAN
from hetaccel.sim.adam_model import adam_step, hyperparameters
from hetaccel.spec import ADAM_HYPERPARAMETERS, AcceleratorConfig, AdamMode, timing

LANES = 2

#: every kind of binary32 an operand can be: zeros, infinities, NaNs (with
#: payloads, both signs), subnormals, the extremes of the normal range, one
SPECIAL = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001,
                    0x7F800001, 0x00000001, 0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF,
                    0x3F800000, 0xBF800000, 0x1E3CE508, 0x5F000000], np.uint32)


def _state(rng, n):
    """(param, grad, m, v) float32 arrays of ``n`` values: ordinary values of
    every scale, then rows with one special value in one operand."""
    p = (rng.standard_normal(n) * np.exp2(rng.integers(-20, 20, n))).astype(np.float32)
    g = (rng.standard_normal(n) * np.exp2(rng.integers(-30, 10, n))).astype(np.float32)
    m = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    v = np.abs(rng.standard_normal(n) * 1e-3).astype(np.float32)
    ops = [p, g, m, v]
    # the last rows: no gradient, subnormal moments (and param), so the
    # results stay subnormal step after step (see _grad)
    g[-4:] = 0
    m[-4:] = np.array([0x00000100, 0x80000101, 0x007FFFFF, 0x00000001], np.uint32).view(np.float32)
    v[-4:] = np.array([0x00000200, 0x00400000, 0x00000003, 0x00000000], np.uint32).view(np.float32)
    p[-2:] = np.array([0x00012345, 0x80000007], np.uint32).view(np.float32)
    k = 0
    for which in range(4):
        for bits in SPECIAL:
            if k < n:
                ops[which][k] = bits.view(np.float32)
                k += 1
    return ops


def _grad(rng, n):
    g = (rng.standard_normal(n) * np.exp2(rng.integers(-30, 10, n))).astype(np.float32)
    g[rng.integers(0, n - 4, 4)] = SPECIAL[rng.integers(0, len(SPECIAL), 4)].view(np.float32)
    g[-4:] = 0
    return g


def run_passes(passes, *, lanes=LANES, seed=0, gap=0.25, stall=0.3):
    """Run each (hyperparameters, param, grad, m, v) pass through one AdamUnit,
    holding the hyperparameters until it is idle; its outputs as float32
    arrays [(param, m, v)], the ``last`` flags and the cycle of the first
    result, for each pass."""
    dut = AdamUnit(AcceleratorConfig(adam_lanes=lanes))
    rnd = random.Random(seed)
    results = []

    async def tb(ctx):
        for hp, p, g, m, v in passes:
            for name in ADAM_HYPERPARAMETERS:
                ctx.set(getattr(dut, name), hp[name])
            ctx.set(dut.mode, hp["mode"])
            bits = [x.view(np.uint32).reshape(-1, lanes) for x in (p, g, m, v)]
            words = len(bits[0])
            got, lasts = [], []
            i = cycles = 0
            first = None
            while len(got) < words:
                valid = i < words and rnd.random() >= gap
                if valid:
                    ctx.set(dut.inp.payload, {
                        "lanes": [{"param": int(bits[0][i, j]), "grad": int(bits[1][i, j]),
                                   "m": int(bits[2][i, j]), "v": int(bits[3][i, j])}
                                  for j in range(lanes)],
                        "last": int(i == words - 1)})
                ctx.set(dut.inp.valid, valid)
                ready = rnd.random() >= stall
                ctx.set(dut.out.ready, ready)
                if valid and ctx.get(dut.inp.ready):
                    i += 1
                if ready and ctx.get(dut.out.valid):
                    first = cycles if first is None else first
                    out = ctx.get(dut.out.payload)
                    got.append([[int(lane.param), int(lane.m), int(lane.v)]
                                for lane in out.lanes])
                    lasts.append(int(out.last))
                await ctx.tick()
                cycles += 1
                assert cycles < 20 * words + 200, "the unit stopped"
            ctx.set(dut.inp.valid, 0)
            ctx.set(dut.out.ready, 1)
            await ctx.tick()
            assert ctx.get(dut.idle) and not ctx.get(dut.out.valid)
            arr = np.array(got, np.uint32).reshape(-1, 3)
            results.append(([arr[:, k].copy().view(np.float32) for k in range(3)], lasts, first))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return results


def _assert_same(want, got, what):
    w, g = want.view(np.uint32), got.view(np.uint32)
    bad = np.nonzero(w != g)[0]
    assert len(bad) == 0, (f"{what}: {len(bad)} of {len(w)} differ, first at {bad[0]}: "
                           f"expected {w[bad[0]]:08x}, got {g[bad[0]]:08x}")


@pytest.mark.parametrize("decoupled,weight_decay", [(False, 0.01), (True, 0.05), (False, 0.0)],
                         ids=["adam-l2", "adamw", "no-decay"])
def test_adam_unit_matches_the_model_over_several_steps(decoupled, weight_decay):
    rng = np.random.default_rng(int(decoupled) * 2 + (weight_decay > 0))
    n = 64 * LANES
    p, g, m, v = _state(rng, n)
    steps = 3
    # The model's trajectory; the unit runs the same passes (its own outputs
    # are fed back below, and compared step by step).
    passes, want = [], []
    for t in range(1, steps + 1):
        hp = hyperparameters(1e-2, (0.9, 0.999), 1e-8, weight_decay, t, decoupled)
        passes.append((hp, p, g, m, v))
        p, m, v = adam_step(p, g, m, v, hp)
        want.append((p, m, v))
        g = _grad(rng, n)
    mode = passes[0][0]["mode"]
    assert mode == (AdamMode.DECOUPLED if decoupled and weight_decay else
                    AdamMode.L2 if weight_decay else AdamMode.NONE)
    got = run_passes(passes, seed=n + steps)
    for t, ((wp, wm, wv), ((gp, gm, gv), lasts, _)) in enumerate(zip(want, got), 1):
        for name, w, o in (("param", wp, gp), ("m", wm, gm), ("v", wv, gv)):
            _assert_same(w, o, f"step {t} {name}")
        assert lasts == [0] * (n // LANES - 1) + [1]
    # the special values did make it through: NaNs, canonical, infinities, subnormals
    out = np.concatenate([x.view(np.uint32) for step in want for x in step])
    assert np.any(out == CANONICAL_NAN) and np.any((out & 0x7FFFFFFF) == 0x7F800000)
    assert np.any(((out & 0x7F800000) == 0) & ((out & 0x7FFFFF) != 0)), "no subnormal result"


def test_adam_unit_full_rate_and_one_lane():
    """No gaps, no back-pressure: one parameter per cycle, latency as the
    contract says; and a one-lane unit gives the same bits."""
    rng = np.random.default_rng(9)
    n = 40
    p, g, m, v = _state(rng, n)
    hp = hyperparameters(3e-3, (0.8, 0.99), 1e-6, 0.1, 7, True)
    want = adam_step(p, g, m, v, hp)
    for lanes in (1, 2):
        (got, _, first), = run_passes([(hp, p, g, m, v)], lanes=lanes, gap=0, stall=0)
        for name, w, o in zip(("param", "m", "v"), want, got):
            _assert_same(w, o, f"{lanes} lane(s) {name}")
        assert first == timing.adam_latency(), first
