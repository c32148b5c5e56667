"""cocotb tests of :class:`hetaccel.rtl.engine.MatmulEngine` (Icarus and Verilator).

The structure follows cocotb's matrix_multiplier example: a driver feeds the
``weights`` and ``acts`` streams (with random idle cycles), a monitor reads
finished result blocks back through ``rd_addr`` / ``rd_data`` (with random
back-pressure), the model is :mod:`hetaccel.sim.systolic_model`, and every
block is compared bit for bit against both the tile model and
``a.astype(int64) @ b.astype(int64)`` with
:func:`hetaccel.verify.checking.assert_bit_exact`.

The config comes from ``$HETACCEL_CONFIG`` (JSON).  ``gemm_bench`` runs only
when ``$HETACCEL_BENCH`` holds a JSON request (see :mod:`hetaccel.bench.gemm`).
With ``$HETACCEL_DUT=array`` the toplevel is a bare
:class:`~hetaccel.rtl.systolic.SystolicArray` and only ``array_backpressure``
runs: the engine never back-pressures its array, so that is where the array's
enable (and a vendor DSP's clock enable wired to it) is exercised.

One clock loop drives all ports: at each falling edge the driver and monitor
set their inputs for the coming rising edge; after ``ReadOnly`` they see which
handshakes will complete at that edge.  With no random gaps (the benchmark) all
``ready`` signals depend on registers only (``acts.ready`` is the engine's skid
buffer being empty), so the loop skips ``ReadOnly`` and costs one trigger per
cycle.
"""

from __future__ import annotations

import json
import os
import random
import time

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from ..spec import AcceleratorConfig, min_acc_bits
from .checking import assert_bit_exact
from ..host.planner import gemm_cycles, plan_gemm
from ..sim.systolic_model import EngineModel, gemm_model, gemm_reference, tile_streams
from ..spec.timing import array_latency


def load_config() -> AcceleratorConfig:
    text = os.environ.get("HETACCEL_CONFIG")
    return AcceleratorConfig.from_json(text) if text else AcceleratorConfig()


def _pack_rows(values: np.ndarray, bits: int) -> list[int]:
    """Pack each row of ``values`` as an ArrayLayout vector (element 0 in the LSBs)."""
    values = np.asarray(values, dtype=np.int64)
    mask = (1 << bits) - 1
    if bits == 8:
        return [int.from_bytes(row.astype(np.int8).tobytes(), "little") for row in values]
    out = []
    for row in values:
        word = 0
        for j, v in enumerate(row.tolist()):
            word |= (v & mask) << (j * bits)
        out.append(word)
    return out


def _unpack_row(word: int, bits: int, count: int) -> list[int]:
    mask, half = (1 << bits) - 1, 1 << (bits - 1)
    out = []
    for j in range(count):
        v = (word >> (j * bits)) & mask
        out.append(v - (1 << bits) if v & half else v)
    return out


class MatmulDriver:
    """Feeds a GEMM plan's weight rows and activation rows into the engine.

    Activation rows of output block ``j`` wait until block ``j - 2`` has been
    read back, because block ``j`` reuses its accumulator rows.
    """

    def __init__(self, dut, config: AcceleratorConfig, rng: random.Random, gap: float = 0.0):
        self.dut, self.config, self.rng, self.gap = dut, config, rng, gap
        self.w_words: list[int] = []
        self.a_words: list[int] = []
        self.a_block: list[int] = []
        self.wi = self.ai = 0
        self.first_cycle: int | None = None
        self.block_last_cycle: dict[int, int] = {}
        self._wv = self._av = False
        self._w_shown = self._a_shown = -1
        self._entering = None    # (block, last of block) of a row not yet in the array

    def load(self, a, b, plan) -> None:
        cfg = self.config
        ob = cfg.operand_bits
        a_shift_last = cfg.rows * ob
        block_of_tile = {}
        start = 0
        for bi, blk in enumerate(plan.blocks):
            for t in range(start, blk.last_tile + 1):
                block_of_tile[t] = bi
            start = blk.last_tile + 1
        for t, ts in enumerate(tile_streams(cfg, a, b, plan)):
            self.w_words += _pack_rows(ts.weights, ob)
            data = _pack_rows(ts.acts, ob)
            for r in range(ts.op.m):
                self.a_words.append(data[r] | (int(ts.last[r]) << a_shift_last)
                                    | (int(ts.accumulate[r]) << (a_shift_last + 1))
                                    | (int(ts.acc_addr[r]) << (a_shift_last + 2)))
                self.a_block.append(block_of_tile[t])

    @property
    def done(self) -> bool:
        return self.wi == len(self.w_words) and self.ai == len(self.a_words)

    def drive(self, blocks_read: int) -> None:
        dut = self.dut
        wv = self.wi < len(self.w_words) and (self.gap == 0 or self.rng.random() >= self.gap)
        av = (self.ai < len(self.a_words) and self.a_block[self.ai] < blocks_read + 2
              and (self.gap == 0 or self.rng.random() >= self.gap))
        if wv != self._wv:
            dut.weights__valid.value = int(wv)
        if wv and self._w_shown != self.wi:
            dut.weights__payload.value = self.w_words[self.wi]
            self._w_shown = self.wi
        if av != self._av:
            dut.acts__valid.value = int(av)
        if av and self._a_shown != self.ai:
            dut.acts__payload.value = self.a_words[self.ai]
            self._a_shown = self.ai
        self._wv, self._av = wv, av

    def sample(self, cycle: int) -> None:
        """Record the handshakes that complete at the coming rising edge."""
        dut = self.dut
        if self._wv and dut.weights__ready.value:
            if self.first_cycle is None:
                self.first_cycle = cycle
            self.wi += 1
        ready = dut.acts__ready.value
        # A row the array could not take at once waits in the engine's skid
        # buffer (acts.ready low); it entered the array in the cycle before
        # acts.ready is high again.
        if self._entering is not None and ready:
            if self._entering[1]:
                self.block_last_cycle[self._entering[0]] = cycle - 1
            self._entering = None
        if self._av and ready:
            if self.first_cycle is None:
                self.first_cycle = cycle
            blk = self.a_block[self.ai]
            self.ai += 1
            self._entering = (blk, self.ai == len(self.a_words) or self.a_block[self.ai] != blk)


class ReadoutMonitor:
    """Reads each finished output block back through ``rd_addr``/``rd_data``.

    A block is read once its last activation row has had time to land: a row
    entering the array in cycle ``c`` is written at the edge ending cycle
    ``c + latency + 2``; a read accepted in the next cycle sees it (documented
    timing of :class:`MatmulEngine`).
    """

    def __init__(self, dut, config: AcceleratorConfig, rng: random.Random, stall: float = 0.0):
        self.dut, self.config, self.rng, self.stall = dut, config, rng, stall
        self.blocks = []
        self.out: np.ndarray | None = None
        self.blocks_read = 0
        self._addr_i = 0          # next row of the current block to request
        self._rows: list[list[int]] = []
        self._av = False
        self._rr = True
        self._shown = -1

    def load(self, plan, n: int) -> None:
        self.blocks = list(plan.blocks)
        self.n = n
        self.out = np.zeros((plan.m, n), dtype=np.int64)

    @property
    def done(self) -> bool:
        return self.blocks_read == len(self.blocks)

    def drive(self, cycle: int, block_last_cycle: dict) -> None:
        dut, cfg = self.dut, self.config
        av = False
        if not self.done:
            bi = self.blocks_read
            blk = self.blocks[bi]
            landed = (bi in block_last_cycle
                      and cycle >= block_last_cycle[bi] + array_latency(cfg) + 3)
            av = landed and self._addr_i < blk.m and (self.stall == 0 or self.rng.random() >= self.stall)
            if av and self._shown != (bi, self._addr_i):
                dut.rd_addr__payload.value = blk.acc_addr + self._addr_i
                self._shown = (bi, self._addr_i)
        if av != self._av:
            dut.rd_addr__valid.value = int(av)
        self._av = av
        rr = self.stall == 0 or self.rng.random() >= self.stall
        if rr != self._rr:
            dut.rd_data__ready.value = int(rr)
        self._rr = rr

    def sample(self) -> None:
        dut, cfg = self.dut, self.config
        if self._rr and dut.rd_data__valid.value:
            self._rows.append(_unpack_row(int(dut.rd_data__payload.value), cfg.acc_bits, cfg.cols))
            blk = self.blocks[self.blocks_read]
            if len(self._rows) == blk.m:
                width = min(cfg.cols, self.n - blk.n0)
                self.out[blk.m0:blk.m0 + blk.m, blk.n0:blk.n0 + width] = \
                    np.array(self._rows, dtype=np.int64)[:, :width]
                self._rows = []
                self._addr_i = 0
                self.blocks_read += 1
                self._shown = -1
                return
        if self._av and dut.rd_addr__ready.value:
            self._addr_i += 1


class MatmulTester:
    """Runs GEMMs through the engine and checks every result bit for bit."""

    def __init__(self, dut, config: AcceleratorConfig, *, seed: int = 0, gap: float = 0.0,
                 stall: float = 0.0):
        self.dut, self.config = dut, config
        self.rng = random.Random(seed)
        self.gap, self.stall = gap, stall

    async def reset(self) -> None:
        dut = self.dut
        for name in ("weights__valid", "acts__valid", "rd_addr__valid", "acc_write__valid"):
            getattr(dut, name).value = 0
        dut.rd_data__ready.value = 1
        dut.weights__payload.value = 0
        dut.acts__payload.value = 0
        dut.rd_addr__payload.value = 0
        dut.acc_write__payload.value = 0
        dut.rst.value = 1
        for _ in range(3):
            await FallingEdge(dut.clk)
        dut.rst.value = 0

    async def gemm(self, a, b, *, max_cycles: int = 10_000_000) -> dict:
        """Run ``a @ b``; returns the result and the measured cycle count."""
        cfg, dut = self.config, self.dut
        a, b = np.asarray(a), np.asarray(b)
        plan = plan_gemm(cfg, a.shape[0], a.shape[1], b.shape[1])
        drv = MatmulDriver(dut, cfg, self.rng, self.gap)
        mon = ReadoutMonitor(dut, cfg, self.rng, self.stall)
        drv.load(a, b, plan)
        mon.load(plan, b.shape[1])
        fast = self.gap == 0 and self.stall == 0
        cycle = 0
        end_cycle = None
        while not (drv.done and mon.done and end_cycle is not None):
            await FallingEdge(dut.clk)
            cycle += 1
            if cycle > max_cycles:
                raise AssertionError(f"GEMM {a.shape}x{b.shape} not finished after {max_cycles} "
                                     f"cycles: {drv.wi}/{len(drv.w_words)} weight rows, "
                                     f"{drv.ai}/{len(drv.a_words)} activation rows, "
                                     f"{mon.blocks_read}/{len(mon.blocks)} blocks read")
            if end_cycle is None and drv.done and dut.idle.value:
                end_cycle = cycle
            drv.drive(mon.blocks_read)
            mon.drive(cycle, drv.block_last_cycle)
            if not fast:
                await ReadOnly()
            drv.sample(cycle)
            mon.sample()
        await FallingEdge(dut.clk)
        for name in ("weights__valid", "acts__valid", "rd_addr__valid"):
            getattr(dut, name).value = 0
        dut.rd_data__ready.value = 1
        return {"c": mon.out, "cycles": end_cycle - drv.first_cycle, "plan": plan}

    async def check(self, a, b, what: str) -> dict:
        res = await self.gemm(a, b)
        ref = gemm_reference(a, b)
        assert_bit_exact(gemm_model(self.config, a, b, res["plan"]), res["c"], f"{what}: RTL vs tile model")
        assert_bit_exact(ref, res["c"], f"{what}: RTL vs int64 matmul")
        self.dut._log.info("%s: %s x %s ok in %d cycles", what, a.shape, b.shape, res["cycles"])
        return res


async def _start(dut, **kw) -> MatmulTester:
    Clock(dut.clk, 10, unit="ns").start()
    tester = MatmulTester(dut, load_config(), **kw)
    await tester.reset()
    return tester


def _rand(rng, cfg, shape):
    return rng.integers(cfg.operand_min, cfg.operand_max + 1, size=shape, dtype=np.int64)


def _shapes(cfg):
    # Not multiples of the array size, several K-tiles and N-tiles.
    k = min(cfg.max_k, 2 * cfg.rows + 1)
    return [(2 * cfg.rows + 3, k, 2 * cfg.cols - 1), (1, 1, 1), (3, max(1, k - 2), cfg.cols + 1)]


_BENCH = os.environ.get("HETACCEL_BENCH")
_ARRAY = os.environ.get("HETACCEL_DUT") == "array"


def _small_m_shapes(cfg):
    # K-tiles of 1 and 2 rows accumulating into the same rows: with rows <=
    # RMW_WINDOW the engine's hazard stall inserts bubbles the model predicts.
    k = min(cfg.max_k, 3 * cfg.rows)
    return [(1, k, cfg.cols), (2, k, cfg.cols)]


@cocotb.test(skip=bool(_BENCH) or _ARRAY)
async def random_full_rate(dut):
    """Random operands, inputs at full rate; cycles equal the cycle model exactly."""
    t = await _start(dut)
    rng = np.random.default_rng(1)
    for m, k, n in _shapes(t.config) + _small_m_shapes(t.config):
        a, b = _rand(rng, t.config, (m, k)), _rand(rng, t.config, (k, n))
        res = await t.check(a, b, f"random {m}x{k}x{n}")
        predicted = gemm_cycles(t.config, m, k, n, plan=res["plan"])
        assert res["cycles"] == predicted, f"measured {res['cycles']} cycles, model {predicted}"


@cocotb.test(skip=bool(_BENCH) or _ARRAY)
async def random_gaps_and_backpressure(dut):
    """Random input gaps and random read back-pressure never lose or duplicate rows."""
    t = await _start(dut, seed=7, gap=0.35, stall=0.4)
    rng = np.random.default_rng(2)
    for m, k, n in _shapes(t.config)[::2]:
        a, b = _rand(rng, t.config, (m, k)), _rand(rng, t.config, (k, n))
        await t.check(a, b, f"gaps {m}x{k}x{n}")


@cocotb.test(skip=bool(_BENCH) or _ARRAY)
async def corners(dut):
    """All -128, all 127, alternating signs; K = max_k (the accumulator limit)."""
    t = await _start(dut, seed=3, gap=0.2, stall=0.2)
    cfg = t.config
    k = cfg.max_k
    m, n = 3, cfg.cols + 1
    lo, hi = cfg.operand_min, cfg.operand_max
    alt_a = np.where(np.add.outer(np.arange(m), np.arange(k)) % 2 == 0, lo, hi)
    alt_b = np.where(np.add.outer(np.arange(k), np.arange(n)) % 2 == 0, lo, hi)
    cases = [
        ("all min x all min", np.full((m, k), lo), np.full((k, n), lo)),
        ("all max x all max", np.full((m, k), hi), np.full((k, n), hi)),
        ("all min x all max", np.full((m, k), lo), np.full((k, n), hi)),
        ("alternating signs", alt_a, alt_b),
        ("alternating x all min", alt_a, np.full((k, n), lo)),
    ]
    for what, a, b in cases:
        await t.check(a, b, f"{what} K={k}")
    # The extreme sum really sits near the accumulator's range when acc_bits is minimal.
    if cfg.acc_bits == min_acc_bits(cfg.operand_bits, cfg.max_k):
        assert abs(k * lo * lo) >= 1 << (cfg.acc_bits - 3), "corner does not stress the accumulator"


@cocotb.test(skip=not _BENCH or _ARRAY)
async def gemm_bench(dut):
    """Full-rate GEMM for ``hetaccel bench gemm``; writes its figures to a JSON file."""
    req = json.loads(_BENCH or "{}")
    t = await _start(dut)
    cfg = t.config
    rng = np.random.default_rng(req.get("seed", 0))
    m, k, n = req["m"], req["k"], req["n"]
    a, b = _rand(rng, cfg, (m, k)), _rand(rng, cfg, (k, n))
    t0 = time.perf_counter()
    res = await t.gemm(a, b)
    sim_s = time.perf_counter() - t0
    ref = gemm_reference(a, b)
    correct = bool(np.array_equal(ref, res["c"]) and np.array_equal(gemm_model(cfg, a, b, res["plan"]), res["c"]))
    out = {"cycles": int(res["cycles"]), "correct": correct, "sim_s": sim_s,
           "tiles": len(res["plan"].tiles)}
    with open(req["out"], "w") as f:
        json.dump(out, f)
    assert correct, "GEMM result differs from the int64 reference"


@cocotb.test(skip=not _ARRAY)
async def array_backpressure(dut):
    """SystolicArray alone: random input gaps and random ``results`` back-pressure.

    Every result row (data and control fields) is compared with the tile
    model; nothing may be lost, duplicated or computed with a stale operand
    while the array's enable is low.  A first pass at full rate checks the
    array's cycle count against the cycle model.
    """
    cfg = load_config()
    Clock(dut.clk, 10, unit="ns").start()
    for name in ("weights__valid", "acts__valid"):
        getattr(dut, name).value = 0
    dut.results__ready.value = 1
    dut.rst.value = 1
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    rng = np.random.default_rng(4)
    shift = cfg.rows * cfg.operand_bits
    for what, gap, stall, (m, k, n) in (
            ("full rate", 0.0, 0.0, (2 * cfg.rows + 3, 2 * cfg.rows + 1, cfg.cols + 1)),
            ("gaps and back-pressure", 0.3, 0.5, (2 * cfg.rows + 2, 3 * cfg.rows - 1, cfg.cols + 1))):
        k = min(k, cfg.max_k)
        a, b = _rand(rng, cfg, (m, k)), _rand(rng, cfg, (k, n))
        a[0, :] = cfg.operand_min
        b[:, 0] = cfg.operand_min
        plan = plan_gemm(cfg, m, k, n)
        model = EngineModel(cfg)
        w_words, a_words, expected = [], [], []
        for ts in tile_streams(cfg, a, b, plan):
            w_words += _pack_rows(ts.weights, cfg.operand_bits)
            model.load_weights(ts.weights)
            expected += [(row, int(ts.last[r]), int(ts.accumulate[r]), int(ts.acc_addr[r]))
                         for r, row in enumerate(model.stream(ts.acts, ts.last, ts.accumulate,
                                                              ts.acc_addr).tolist())]
            a_words += [d | (int(ts.last[r]) << shift) | (int(ts.accumulate[r]) << (shift + 1))
                        | (int(ts.acc_addr[r]) << (shift + 2))
                        for r, d in enumerate(_pack_rows(ts.acts, cfg.operand_bits))]
        prng = random.Random(len(expected))
        got, wi, ai, cycle, first, last_out = [], 0, 0, 0, None, None
        data_bits = cfg.cols * cfg.acc_bits
        while len(got) < len(expected):
            await FallingEdge(dut.clk)
            cycle += 1
            assert cycle < 100_000, f"{what}: {len(got)}/{len(expected)} result rows after {cycle} cycles"
            wv = wi < len(w_words) and prng.random() >= gap
            av = ai < len(a_words) and prng.random() >= gap
            rr = prng.random() >= stall
            dut.weights__valid.value = int(wv)
            dut.weights__payload.value = w_words[wi] if wv else 0
            dut.acts__valid.value = int(av)
            dut.acts__payload.value = a_words[ai] if av else 0
            dut.results__ready.value = int(rr)
            await ReadOnly()
            wx, ax = wv and bool(dut.weights__ready.value), av and bool(dut.acts__ready.value)
            if (wx or ax) and first is None:
                first = cycle
            wi, ai = wi + wx, ai + ax
            if rr and dut.results__valid.value:
                word = int(dut.results__payload.value)
                got.append((_unpack_row(word, cfg.acc_bits, cfg.cols), (word >> data_bits) & 1,
                            (word >> (data_bits + 1)) & 1, word >> (data_bits + 2)))
                last_out = cycle
        await FallingEdge(dut.clk)
        dut.weights__valid.value = dut.acts__valid.value = 0
        dut.results__ready.value = 1
        assert_bit_exact(np.array([e[0] for e in expected]), np.array([g[0] for g in got]),
                         f"{what}: result rows")
        assert [g[1:] for g in got] == [e[1:] for e in expected], f"{what}: control fields"
        for _ in range(array_latency(cfg) + 2):
            await ReadOnly()
            assert not dut.results__valid.value, f"{what}: extra result row"
            await FallingEdge(dut.clk)
        if gap == 0 and stall == 0:
            predicted = gemm_cycles(cfg, m, k, n, plan=plan, engine=False)
            assert last_out - first + 1 == predicted, \
                f"{what}: measured {last_out - first + 1} cycles, model {predicted}"
        dut._log.info("%s: %d result rows ok", what, len(got))
