"""cocotb tests of :class:`hetaccel.rtl.spram_store.SpramStore` (the UP5K's SPRAM
as the device memory) with Yosys's ``SB_SPRAM256KA`` model.

Run through ``tests/test_spram_cocotb.py``.  A :class:`TB` drives the request
streams and the ``rdata`` consumer, with gaps and back-pressure from
generators, and keeps the golden store
(:class:`hetaccel.sim.device_memory_model.DeviceMemoryModel`): every line read
must be the golden one (the first differing byte named), and streams offered
back to back take exactly :func:`hetaccel.spec.timing.spram_cycles`.

Environment: ``HETACCEL_CONFIG`` (the config as JSON).
"""

from __future__ import annotations

import itertools
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from ..sim.device_memory_model import DeviceMemoryModel
from ..spec import AcceleratorConfig
from ..spec.timing import spram_cycles

LINE = 8
#: The golden store, shared by the tests: they run one after another on the
#: same simulated blocks, whose contents carry over.
_GOLD: dict = {}


class TB:
    """The store, its golden twin, and request / consumer drivers."""

    def __init__(self, dut, seed: int):
        self.dut = dut
        self.config = AcceleratorConfig.from_json(os.environ["HETACCEL_CONFIG"])
        if "store" not in _GOLD:
            _GOLD["store"] = DeviceMemoryModel(self.config)
        self.gold = _GOLD["store"]
        self.rng = random.Random(seed)
        self.lines = self.config.memory.lines

    async def start(self):
        cocotb.start_soon(Clock(self.dut.clk, 10, unit="ns").start())
        self.dut.cmd__valid.value = 0
        self.dut.wdata__valid.value = 0
        self.dut.rdata__ready.value = 1
        self.dut.rst.value = 1
        for _ in range(2):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def run(self, requests, *, gaps=None, ready=None, limit=100_000):
        """Offer ``requests`` (``(line, data or None)``: a write with its 8
        bytes, or a read) in order, a gap cycle wherever ``gaps`` yields 0,
        ``rdata.ready`` from ``ready``; return (cycle each was taken, cycle and
        line of each read delivered), cycles counted from the first offer."""
        dut = self.dut
        gaps = gaps or itertools.repeat(1)
        ready = ready or itertools.repeat(1)
        taken, reads = [], []
        i, cycle, pending = 0, 0, 0
        offer = None
        while (i < len(requests) or pending) and cycle < limit:
            if offer is None and i < len(requests) and next(gaps):
                offer = requests[i]
            if offer is not None:
                line, payload = offer
                dut.cmd__valid.value = 1
                dut.cmd__payload.value = line | (payload is not None) << 14
                dut.wdata__valid.value = int(payload is not None)
                dut.wdata__payload.value = int.from_bytes(payload, "little") if payload else 0
            else:
                dut.cmd__valid.value = 0
                dut.wdata__valid.value = 0
            dut.rdata__ready.value = next(ready)
            await ReadOnly()
            if offer is not None and int(dut.cmd__ready.value):
                taken.append(cycle)
                if offer[1] is None:
                    pending += 1
                offer, i = None, i + 1
            if int(dut.rdata__valid.value) and int(dut.rdata__ready.value):
                reads.append((cycle, int(dut.rdata__payload.value).to_bytes(LINE, "little")))
                pending -= 1
            await RisingEdge(dut.clk)
            cycle += 1
        dut.cmd__valid.value = 0
        dut.wdata__valid.value = 0
        assert i == len(requests) and not pending, f"stalled after {cycle} cycles"
        self.check(requests, reads)
        return taken, reads

    def check(self, requests, reads):
        """Replay ``requests`` on the golden store; each read must match."""
        got = iter(reads)
        for n, (line, payload) in enumerate(requests):
            if payload is not None:
                self.gold.write(line * LINE, payload)
                continue
            cycle, data = next(got)
            want = self.gold.read(line * LINE, LINE)
            if data != want:
                k = next(j for j in range(LINE) if data[j] != want[j])
                raise AssertionError(f"request {n}: line {line:#06x} read in cycle {cycle} "
                                     f"differs first in byte {k}: RTL {data[k]:#04x}, "
                                     f"expected {want[k]:#04x}")

    def write(self, line):
        return (line, bytes(self.rng.randrange(256) for _ in range(LINE)))


@cocotb.test()
async def streams_take_spram_cycles(dut):
    """Back-to-back writes then reads of a run of lines, nothing held back:
    exactly spram_cycles, the reads returning what was written."""
    tb = TB(dut, 1)
    await tb.start()
    for n, first in ((1, 0), (37, 100), (256, tb.lines - 256)):
        writes = [tb.write(first + k) for k in range(n)]
        taken, _ = await tb.run(writes)
        assert taken[-1] + 1 == spram_cycles(n, True), (n, taken[-1])
        assert taken == list(range(n)), taken
        taken, reads = await tb.run([(first + k, None) for k in range(n)])
        assert reads[-1][0] + 1 == spram_cycles(n, False), (n, reads[-1][0])
        assert [c for c, _ in reads] == list(range(1, n + 1))


@cocotb.test()
async def random_traffic_with_back_pressure(dut):
    """Reads and writes interleaved at random addresses (some repeated), with
    gaps in the requests and a consumer that stalls; every line read is the
    golden store's."""
    tb = TB(dut, 2)
    await tb.start()
    hot = [tb.rng.randrange(tb.lines) for _ in range(8)]
    reqs = [tb.write(line) for line in hot]
    written = set(hot) | set(range(100, 137)) | set(range(tb.lines - 256, tb.lines))
    for _ in range(600):
        if tb.rng.random() < 0.45:
            line = tb.rng.choice(hot) if tb.rng.random() < 0.5 else tb.rng.randrange(tb.lines)
            reqs.append(tb.write(line))
            written.add(line)
        else:
            reqs.append((tb.rng.choice(sorted(written)), None))
    await tb.run(reqs, gaps=itertools.cycle([1, 1, 1, 0]),
                 ready=itertools.cycle([1, 1, 0, 1, 0, 0, 1]))
    # and the whole store's first and last lines after it
    await tb.run([(0, None), (tb.lines - 1, None)])


@cocotb.test()
async def a_waiting_read_holds_back_a_write(dut):
    """A write offered while a read result waits is not taken until the
    result is: the read still returns the old line."""
    tb = TB(dut, 3)
    await tb.start()
    old = tb.write(42)
    await tb.run([old])
    new = tb.write(42)
    taken, reads = await tb.run([(42, None), new, (42, None)],
                                ready=iter([0, 0, 0, 1] + [1] * 20))
    assert reads[0][1] == old[1] and reads[1][1] == new[1]
    assert taken[1] >= reads[0][0], (taken, reads)
