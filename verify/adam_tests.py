"""cocotb tests of ``AdamUnit``: every output bit-exact against ``adam_model``.

Run through ``hetaccel.verify.cocotb_runner.run_cocotb`` (see tests/test_adam_cocotb.py)
with ``HETACCEL_CONFIG`` (config JSON) in the environment.  Optional:
``HETACCEL_ADAM_SCALE`` multiplies the tensor sizes (default 1),
``HETACCEL_ADAM_SEED`` seeds the data, ``HETACCEL_ADAM_BENCH_OUT`` names a JSON
file the throughput test writes its measurement to (used by ``bench_adam``).
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from ..sim.adam_model import adam_step, hyperparameters
from .checking import assert_bit_exact
from .cocotb_streams import pump
from ..spec import ADAM_HYPERPARAMETERS, AcceleratorConfig, AdamMode

CONFIG = AcceleratorConfig.from_json(os.environ.get("HETACCEL_CONFIG", "{}"))
LANES = CONFIG.adam_lanes
SCALE = float(os.environ.get("HETACCEL_ADAM_SCALE", "1"))
SEED = int(os.environ.get("HETACCEL_ADAM_SEED", "1234"))
IN_BITS, OUT_BITS = 128, 96
MASK32 = 0xFFFFFFFF


def n_of(base: int) -> int:
    """Tensor length scaled by HETACCEL_ADAM_SCALE, a whole number of lane groups."""
    n = max(LANES, int(base * SCALE))
    return n - n % LANES


async def start(dut):
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.inp__valid.value = 0
    dut.out__ready.value = 0
    dut.mode.value = 0
    for name in ADAM_HYPERPARAMETERS:
        getattr(dut, name).value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)
    assert int(dut.idle.value) == 1, "unit not idle after reset"


def set_hp(dut, hp: dict) -> None:
    for name in ADAM_HYPERPARAMETERS:
        getattr(dut, name).value = int(hp[name])
    dut.mode.value = int(hp["mode"])


def pack_inputs(param, grad, m, v) -> list[int]:
    """One payload integer per transfer (LANES parameters), ``last`` on the final one."""
    bits = [np.asarray(t, np.float32).view(np.uint32).astype(object) for t in (param, grad, m, v)]
    words = []
    n = len(param)
    for start_ in range(0, n, LANES):
        word = 0
        for lane in range(LANES):
            i = start_ + lane
            lane_word = bits[0][i] | (bits[1][i] << 32) | (bits[2][i] << 64) | (bits[3][i] << 96)
            word |= lane_word << (IN_BITS * lane)
        if start_ + LANES >= n:
            word |= 1 << (IN_BITS * LANES)
        words.append(word)
    return words


def unpack_outputs(words: list[int]):
    p, m, v, last = [], [], [], []
    for word in words:
        for lane in range(LANES):
            lw = word >> (OUT_BITS * lane)
            p.append(lw & MASK32)
            m.append((lw >> 32) & MASK32)
            v.append((lw >> 64) & MASK32)
        last.append((word >> (OUT_BITS * LANES)) & 1)
    as_f = [np.array(x, dtype=np.uint32).view(np.float32) for x in (p, m, v)]
    return (*as_f, last)


async def stream(dut, words: list[int], rng, gap: float = 0.0, stall: float = 0.0):
    """Drive ``words`` into ``inp`` and collect ``out`` transfers; returns (outputs, cycles).

    ``gap``: probability that the source withholds ``valid`` on a cycle;
    ``stall``: probability that the sink withholds ``ready``.  Starts and ends
    on a falling edge.
    """
    limit = 200 + 40 * len(words) + int(len(words) / max(1e-3, (1 - gap) * (1 - stall)) * 4)

    def idle_matches_flight(sent, received):
        in_flight = sent - received
        assert int(dut.idle.value) == (in_flight == 0), \
            f"idle={int(dut.idle.value)} with {in_flight} parameters in flight"

    return await pump(dut, words, rng, gap=gap, stall=stall, limit=limit,
                      each_cycle=idle_matches_flight)


async def check_pass(dut, what: str, param, grad, m, v, hp, rng, gap=0.0, stall=0.0):
    """Stream one tensor through the unit and compare all three outputs bit-exactly."""
    param, grad, m, v = (np.asarray(t, np.float32) for t in (param, grad, m, v))
    set_hp(dut, hp)
    words = pack_inputs(param, grad, m, v)
    outs, cycles = await stream(dut, words, rng, gap, stall)
    p2, m2, v2, last = unpack_outputs(outs)
    ep, em, ev = adam_step(param, grad, m, v, hp)
    assert_bit_exact(ep, p2, f"{what}: param")
    assert_bit_exact(em, m2, f"{what}: m")
    assert_bit_exact(ev, v2, f"{what}: v")
    assert last == [0] * (len(words) - 1) + [1], f"{what}: last flags {last}"
    await ReadOnly()
    assert int(dut.idle.value) == 1, f"{what}: not idle after the last output"
    await FallingEdge(dut.clk)
    dut._log.info("%s: %d params bit-exact in %d cycles", what, len(param), cycles)
    return cycles


# --- data ------------------------------------------------------------------

def wide(rng, n, lo, hi, signed=True):
    """float32 values with log2-magnitudes uniform in [lo, hi)."""
    mag = np.exp2(rng.uniform(lo, hi, n)) * rng.uniform(1, 2, n)
    if signed:
        mag *= rng.choice([-1.0, 1.0], n)
    with np.errstate(over="ignore"):
        return mag.astype(np.float32)


SPECIALS = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000,
                     0xFFC00001, 0x7F800001, 0x00000001, 0x80000001, 0x007FFFFF,
                     0x00800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x3F800000, 0xBF800000,
                     0x00400000], dtype=np.uint32).view(np.float32)


def with_specials(rng, x, frac=0.25):
    x = x.copy()
    pick = rng.random(len(x)) < frac
    x[pick] = rng.choice(SPECIALS, int(pick.sum()))
    return x


def random_bits(rng, n):
    return rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)


def random_hp(rng, mode=None):
    lr = float(10 ** rng.uniform(-5, -0.5))
    decoupled = bool(rng.integers(0, 2)) if mode is None else mode == AdamMode.DECOUPLED
    wd = 0.0 if mode == AdamMode.NONE else float(10 ** rng.uniform(-4, 0))
    hp = hyperparameters(lr, (float(rng.uniform(0, 0.99)), float(rng.uniform(0, 0.9999))),
                         float(10 ** rng.uniform(-12, -4)), wd, int(rng.integers(1, 100000)),
                         decoupled)
    return hp


# --- tests -------------------------------------------------------------------

@cocotb.test()
async def test_adam_bit_exact(dut):
    """Every data class and mode, then gaps and back-pressure, against the model."""
    await start(dut)
    rng = np.random.default_rng(SEED)
    n = n_of(64)

    modes = [AdamMode.NONE, AdamMode.L2, AdamMode.DECOUPLED]
    for mode in modes:
        hp = random_hp(rng, mode)
        await check_pass(dut, f"wide exponents mode={mode.name}", wide(rng, n, -40, 40),
                         wide(rng, n, -60, 60), wide(rng, n, -60, 60),
                         wide(rng, n, -130, 120, signed=False), hp, rng)
    # Both mode bits at once: L2 on the gradient and decoupled scaling.
    hp = dict(random_hp(rng, AdamMode.L2))
    hp["lr_wd"] = hyperparameters(0.01, weight_decay=0.5, decoupled=True)["lr_wd"]
    hp["mode"] = int(AdamMode.L2 | AdamMode.DECOUPLED)
    await check_pass(dut, "mode=L2|DECOUPLED", wide(rng, n, -10, 10), wide(rng, n, -20, 10),
                     wide(rng, n, -20, 10), wide(rng, n, -40, 20, signed=False), hp, rng)

    hp = random_hp(rng)
    zeros = np.zeros(n, np.float32)
    await check_pass(dut, "zero gradients", wide(rng, n, -10, 10), zeros,
                     wide(rng, n, -20, 0), wide(rng, n, -40, 0, signed=False), hp, rng)
    await check_pass(dut, "zero gradients and state", wide(rng, n, -10, 10), -zeros,
                     zeros, zeros, hp, rng)
    # eps-dominated denominators: v far below eps**2.
    hp = hyperparameters(1e-3, (0.9, 0.999), 1e-6, 0.0, 3, False)
    await check_pass(dut, "tiny v (eps-dominated)", wide(rng, n, -5, 5), wide(rng, n, -40, -20),
                     wide(rng, n, -40, -20), wide(rng, n, -149, -60, signed=False), hp, rng)
    # Huge gradients: squares overflow to inf, moments saturate.
    hp = hyperparameters(1e-3, (0.9, 0.999), 1e-8, 0.01, 10, False)
    await check_pass(dut, "huge gradients", wide(rng, n, -5, 5), wide(rng, n, 60, 128),
                     wide(rng, n, 60, 127), wide(rng, n, 100, 128, signed=False), hp, rng)
    # Special values in every operand and subnormals everywhere.
    for mode in modes:
        hp = random_hp(rng, mode)
        await check_pass(dut, f"special values mode={mode.name}",
                         with_specials(rng, wide(rng, n, -149, 0)),
                         with_specials(rng, wide(rng, n, -149, 20)),
                         with_specials(rng, wide(rng, n, -149, 20)),
                         with_specials(rng, wide(rng, n, -149, 40, signed=False)), hp, rng)
    await check_pass(dut, "random bit patterns", random_bits(rng, n), random_bits(rng, n),
                     random_bits(rng, n), random_bits(rng, n), random_hp(rng), rng)
    # Flow control: input gaps, output back-pressure, both; hyperparameters
    # changed between passes while idle.
    for gap, stall in ((0.5, 0.0), (0.0, 0.5), (0.3, 0.3), (0.0, 0.9)):
        await check_pass(dut, f"gap={gap} stall={stall}", wide(rng, n, -20, 20),
                         wide(rng, n, -30, 10), wide(rng, n, -30, 10),
                         wide(rng, n, -60, 20, signed=False), random_hp(rng), rng,
                         gap=gap, stall=stall)


@cocotb.test()
async def test_adam_full_stream_throughput(dut):
    """With full streams the unit accepts and retires one transfer every cycle.

    Cycle counts, not wall time: after the pipeline fills, consecutive output
    transfers must be on consecutive cycles, and inp.ready must never drop.
    Writes the measurement to HETACCEL_ADAM_BENCH_OUT when set.
    """
    await start(dut)
    rng = np.random.default_rng(SEED + 1)
    n = n_of(int(os.environ.get("HETACCEL_ADAM_THROUGHPUT_N", "256")))
    hp = hyperparameters(1e-3, (0.9, 0.999), 1e-8, 0.01, 7, True)
    param, grad = wide(rng, n, -8, 2), wide(rng, n, -20, 0)
    m, v = wide(rng, n, -20, 0), wide(rng, n, -40, 0, signed=False)
    set_hp(dut, hp)
    words = pack_inputs(param, grad, m, v)
    outs, in_cycles, out_cycles = [], [], []
    sent = cycle = 0
    dut.out__ready.value = 1
    while len(outs) < len(words):
        valid = sent < len(words)
        dut.inp__valid.value = int(valid)
        if valid:
            dut.inp__payload.value = words[sent]
        await ReadOnly()
        if valid and int(dut.inp__ready.value):
            sent += 1
            in_cycles.append(cycle)
        if int(dut.out__valid.value):
            outs.append(int(dut.out__payload.value))
            out_cycles.append(cycle)
        await FallingEdge(dut.clk)
        cycle += 1
        assert cycle < 10 * len(words) + 1000, "no progress at full streams"
    dut.inp__valid.value = 0
    p2, m2, v2, _ = unpack_outputs(outs)
    ep, em, ev = adam_step(param, grad, m, v, hp)
    assert_bit_exact(ep, p2, "throughput pass: param")
    assert_bit_exact(em, m2, "throughput pass: m")
    assert_bit_exact(ev, v2, "throughput pass: v")
    transfers = len(words)
    steady = (transfers - 1) / (out_cycles[-1] - out_cycles[0]) if transfers > 1 else 1.0
    latency = out_cycles[0] - in_cycles[0]
    total_cycles = out_cycles[-1] - in_cycles[0] + 1
    result = {
        "lanes": LANES,
        "params": n,
        "params_per_cycle": steady * LANES,
        "pass_params_per_cycle": n / total_cycles,
        "latency_cycles": latency,
        "pass_cycles": total_cycles,
    }
    dut._log.info("throughput: %s", result)
    assert in_cycles == list(range(in_cycles[0], in_cycles[0] + transfers)), "input stalled"
    assert out_cycles == list(range(out_cycles[0], out_cycles[0] + transfers)), "output bubbles"
    out_path = os.environ.get("HETACCEL_ADAM_BENCH_OUT")
    if out_path:
        with open(out_path, "w") as f:
            json.dump(result, f)
