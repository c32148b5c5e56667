"""cocotb tests of :class:`hetaccel.rtl.sdram.SdramController` against the chip
model and :class:`hetaccel.sim.sdram_model.SdramModel`.

Run through ``tests/test_sdram_cocotb.py``.  :class:`SdramChipBus` plays the
chip (:class:`SdramChipModel` fails the test on any datasheet rule), and one
loop per cycle drives the request streams and the ``rdata`` consumer and
records, from the cycle ``init_done`` rises (cycle 0), every command on the
pins, every request taken and every word delivered.  All of it must equal
``SdramModel.schedule`` of the same requests exactly, and every word read
must be what the model's storage holds.

Environment: ``SDRAM_TIMING`` (the controller's SdramTiming as JSON),
``SDRAM_CHIP`` (the part the chip model plays), ``SDRAM_POWER_UP`` (the
power-up wait both were built with), ``SDRAM_READ_DELAY``,
``SDRAM_RDATA_DEPTH``.
"""

from __future__ import annotations

import itertools
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from ..sim.sdram_model import BURST_BYTES, Request, SdramModel, Strided
from ..spec.sdram import CHIPS, SdramCommand, SdramTiming
from .sdram_chip import SdramChipBus, SdramChipModel

CLOCK_HZ = 100e6
#: the build with the datasheet's power-up wait runs only the power_up test
_FULL_INIT = os.environ.get("SDRAM_FULL_INIT") == "1"
_CMD_NAMES = {c.value: c for c in SdramCommand}


def _setup():
    timing = SdramTiming(**json.loads(os.environ["SDRAM_TIMING"]))
    chip = CHIPS[os.environ["SDRAM_CHIP"]]
    model = SdramModel(chip, timing, read_delay=int(os.environ.get("SDRAM_READ_DELAY", "0")),
                       rdata_depth=int(os.environ.get("SDRAM_RDATA_DEPTH", "4")))
    return timing, chip, model


async def reset_until_initialised(dut, chip_model: SdramChipModel):
    """Idle the request streams, attach the chip, release reset and return in
    the ReadOnly phase of the controller's first ``init_done`` cycle (cycle 0
    of :class:`SdramModel`) with the chip's bus; the clock must be running."""
    dut.cmd__valid.value = 0
    dut.cmd__payload.value = 0
    dut.wdata__valid.value = 0
    dut.wdata__payload.value = 0
    dut.rdata__ready.value = 1
    dut.rst.value = 1
    bus = SdramChipBus(dut, chip_model)
    bus.start()
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        if int(dut.init_done.value):
            return bus


class Bench:
    """Drives ``cmd``/``wdata``/``rdata.ready`` and records what the controller does."""

    def __init__(self, dut, model: SdramModel, chip_model: SdramChipModel, rng):
        self.dut, self.model, self.chip_model, self.rng = dut, model, chip_model, rng
        self.origin = None       # the edge count of cycle 0
        self.edge = 0

    async def start(self):
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        await reset_until_initialised(dut, self.chip_model)
        # cycle 0: LOAD MODE on the pins
        assert self._pins()[0] == SdramCommand.LOAD_MODE, self._pins()

    def _pins(self):
        d = self.dut
        cmd = (int(d.sdram__cs_n.value) << 3 | int(d.sdram__ras_n.value) << 2
               | int(d.sdram__cas_n.value) << 1 | int(d.sdram__we_n.value))
        c = SdramCommand.INHIBIT if cmd & 8 else _CMD_NAMES[cmd]
        return c, int(d.sdram__ba.value), int(d.sdram__a.value)

    async def run(self, requests, data, *, ready=None, extra=0, limit=200_000):
        """Play ``requests`` (``data[i]``: the 128-bit word of write ``i``) from
        cycle 1 on; ``ready(cycle)`` is ``rdata.ready``.  Runs until every
        request is done, then ``extra`` cycles more; returns the record."""
        dut = self.dut
        addr_bits = len(dut.cmd__payload) - 1
        n = len(requests)
        rec = {"commands": [], "taken": [None] * n, "done": [None] * n, "words": [None] * n}
        reads = [i for i, r in enumerate(requests) if not r.write]
        next_read = 0
        k = 0                     # next request to offer
        c = 0
        end = None
        while True:
            await RisingEdge(dut.clk)
            c += 1
            offer = k < n and requests[k].present <= c
            if offer:
                r = requests[k]
                dut.cmd__valid.value = 1
                dut.cmd__payload.value = r.addr | int(r.write) << addr_bits
                dut.wdata__valid.value = int(r.write)
                dut.wdata__payload.value = data[k] if r.write else 0
            else:
                dut.cmd__valid.value = 0
                dut.wdata__valid.value = 0
            rdy = 1 if ready is None else int(bool(ready(c)))
            dut.rdata__ready.value = rdy
            await ReadOnly()
            cmd, ba, a = self._pins()
            if cmd not in (SdramCommand.NOP, SdramCommand.INHIBIT):
                rec["commands"].append((c, cmd, ba, a))
            if offer and int(dut.cmd__ready.value):
                assert int(dut.wdata__ready.value) == int(requests[k].write), \
                    f"cycle {c}: wdata.ready must go with a write command being taken"
                rec["taken"][k] = c
                k += 1
            elif int(dut.wdata__ready.value):
                raise AssertionError(f"cycle {c}: wdata.ready without a write being taken")
            if rdy and int(dut.rdata__valid.value):
                assert next_read < len(reads), f"cycle {c}: a read word nobody asked for"
                i = reads[next_read]
                rec["done"][i] = c
                rec["words"][i] = int(dut.rdata__payload.value)
                next_read += 1
            if end is None and k == n and next_read == len(reads) and int(dut.ready.value):
                end = c + extra
            if end is not None and c >= end:
                break
            if c > limit:
                raise AssertionError(f"no progress: {k}/{n} requests taken, "
                                     f"{next_read}/{len(reads)} read words after {c} cycles")
        await RisingEdge(dut.clk)
        await ReadOnly()
        rec["end"] = c + 1
        rec["counters"] = {name: int(getattr(dut, name).value) for name in
                           ("busy_cycles", "bus_cycles", "refreshes", "row_misses")}
        return rec


def _first_diff(what, expected, got):
    for i, (x, y) in enumerate(zip(expected, got)):
        if x != y:
            return f"{what} #{i} differs: model {x}, RTL {y}"
    return f"{what}: model has {len(expected)}, RTL {len(got)}" + (
        f"; first extra: {(expected if len(expected) > len(got) else got)[min(len(expected), len(got))]}"
        if len(expected) != len(got) else "")


def check_against_model(model: SdramModel, requests, data, rec, ready=None):
    """The RTL record equals the model's schedule; read words equal the storage."""
    sched = model.schedule(requests, rdata_ready=ready, until=rec["end"])
    exp_cmds = [(c, cmd, ba, a) for c, cmd, ba, a in sched.commands if c < rec["end"]]
    # PRECHARGE all and AUTO REFRESH leave BA (and REFRESH A) as they were
    norm = []
    for c, cmd, ba, a in rec["commands"]:
        if cmd == SdramCommand.AUTO_REFRESH:
            norm.append((c, cmd, None, None))
        elif cmd == SdramCommand.PRECHARGE and a & (1 << 10):
            norm.append((c, cmd, None, a & (1 << 10)))
        else:
            norm.append((c, cmd, ba, a))
    assert norm == exp_cmds, _first_diff("command (cycle, command, ba, a)", exp_cmds, norm)
    assert rec["taken"] == sched.taken, _first_diff("request taken at cycle", sched.taken,
                                                    rec["taken"])
    exp_done = [d for d, r in zip(sched.done, requests) if not r.write]
    got_done = [d for d, r in zip(rec["done"], requests) if not r.write]
    assert got_done == exp_done, _first_diff("read word delivered at cycle", exp_done, got_done)
    counters = {"busy_cycles": sched.busy_cycles, "bus_cycles": sched.bus_cycles,
                "refreshes": sched.refreshes, "row_misses": sched.row_misses}
    assert sched.end == rec["end"], f"model done at cycle {sched.end}, RTL at {rec['end']}"
    assert rec["counters"] == counters, f"counters: model {counters}, RTL {rec['counters']}"
    # data: replay the requests in order on the model's storage
    for i, r in enumerate(requests):
        if r.write:
            model.write(r.addr, data[i])
        else:
            want = model.read_int(r.addr)
            assert rec["words"][i] == want, (
                f"read #{i} of word 0x{r.addr:x}: RTL 0x{rec['words'][i]:032x}, "
                f"model 0x{want:032x}")
    return sched


async def _bench(dut, seed):
    timing, chip, model = _setup()
    chip_model = SdramChipModel(chip, CLOCK_HZ, cas_latency=timing.cas_latency,
                                power_up_cycles=int(os.environ["SDRAM_POWER_UP"]))
    b = Bench(dut, model, chip_model, random.Random(seed))
    await b.start()
    return b, model, chip_model


def _words(rng, n):
    return [rng.getrandbits(128) for _ in range(n)]


def _addresses(model, rng):
    """Random, sequential, strided, bank- and row-crossing word addresses."""
    cb = model._col_bursts                 # words per row of one bank (64)
    row_span = cb * 4                      # words per row of all banks (256)
    top = model.words
    addrs = []
    addrs += [rng.randrange(top) for _ in range(24)]                        # random
    addrs += list(range(cb - 6, cb + 6))                                    # bank crossing
    addrs += list(range(5 * row_span - 5, 5 * row_span + 3))                # row crossing
    addrs += list(Strided(7 * row_span + 3, 4, 2 * row_span + 64, 5).addresses())  # strided
    base = rng.randrange(top - 40)
    addrs += list(range(base, base + 30))                                   # sequential
    addrs += [top - 1, 0, top - 2]                                          # the ends
    seen, out = set(), []
    for a in addrs:
        if a not in seen:
            seen.add(a)
            out.append(a)
    return out


@cocotb.test(skip=_FULL_INIT)
async def write_then_read_everywhere(dut):
    """Random data at random/sequential/strided/bank- and row-crossing words,
    written, then read back in a shuffled order, timing exact to the model."""
    b, model, _ = await _bench(dut, 1)
    rng = b.rng
    addrs = _addresses(model, rng)
    wdata = _words(rng, len(addrs))
    order = addrs[:]
    rng.shuffle(order)
    reqs = [Request(a, True, 1) for a in addrs] + [Request(a, False, 1) for a in order]
    data = wdata + [0] * len(order)
    rec = await b.run(reqs, data, extra=20)
    check_against_model(model, reqs, data, rec)


@cocotb.test(skip=_FULL_INIT)
async def interleaved_with_gaps_and_refreshes(dut):
    """Reads and writes mixed, requests presented with random gaps, for
    several refresh intervals; every command and word on its model cycle."""
    b, model, _ = await _bench(dut, 2)
    rng = b.rng
    pool = _addresses(model, rng)
    written = []
    reqs, data = [], []
    c = 1
    while c < 4 * model.timing.refi:
        if written and rng.random() < 0.5:
            reqs.append(Request(rng.choice(written), False, c))
            data.append(0)
        else:
            a = rng.choice(pool) if rng.random() < 0.7 else rng.randrange(model.words)
            reqs.append(Request(a, True, c))
            data.append(rng.getrandbits(128))
            written.append(a)
        c += rng.choice((0, 0, 1, 3, 8, 20))
    rec = await b.run(reqs, data, extra=30)
    sched = check_against_model(model, reqs, data, rec)
    assert sched.refreshes >= 3, sched.refreshes
    dut._log.info("%d requests, %d cycles, %d refreshes, %d row misses", len(reqs), rec["end"],
                  sched.refreshes, sched.row_misses)


@cocotb.test(skip=_FULL_INIT)
async def back_pressure(dut):
    """rdata.ready 1,1,1,0 and then long stalls: nothing lost, timing exact."""
    b, model, _ = await _bench(dut, 3)
    rng = b.rng
    n = 160
    base = 3 * 256 + 40
    reqs = [Request(base + i, True, 1) for i in range(n)]
    data = _words(rng, n)
    reqs += [Request(base + i, False, 1) for i in range(n)]
    data += [0] * n
    # 1,1,1,0 while the writes and the first reads go, then long stalls
    # (ready one cycle in three of every 97)
    pattern = itertools.cycle([1, 1, 1, 0])
    levels = [next(pattern) if c < 2200 else int((c // 97) % 3 == 0) for c in range(60_000)]

    def ready(c):
        return levels[c]

    rec = await b.run(reqs, data, ready=ready, extra=10)
    sched = check_against_model(model, reqs, data, rec, ready=ready)
    reads = sorted(sched.issued[n:])
    # the stalls held READs back (the FIFO was full), and never more than
    # rdata_depth words were outstanding
    assert max(y - x for x, y in zip(reads, reads[1:])) > 97, reads
    for i, issued in enumerate(sched.issued[n:]):
        taken_before = sum(d < issued for d in sched.done[n:])
        assert i - taken_before < model.rdata_depth, (i, issued)


@cocotb.test(skip=_FULL_INIT)
async def bandwidth(dut):
    """Sequential write, sequential read and strided (tile) reads: cycles
    exact to the model; MB/s logged."""
    timing, chip, model = _setup()
    chip_model = SdramChipModel(chip, CLOCK_HZ, cas_latency=timing.cas_latency,
                                power_up_cycles=int(os.environ["SDRAM_POWER_UP"]))
    b = Bench(dut, model, chip_model, random.Random(4))
    await b.start()
    rng = b.rng
    n = int(os.environ.get("SDRAM_BW_BURSTS", "1024"))
    seq = list(range(1000, 1000 + n))
    # 16 bursts (256 bytes) of a tile row, then the next row 4 KB + 256 B on
    tile = list(Strided(40_000, 16, 272, n // 16).addresses())
    phases = [("sequential write", [Request(a, True, 1) for a in seq]),
              ("sequential read", [Request(a, False, 1) for a in seq]),
              ("tile write", [Request(a, True, 1) for a in tile]),
              ("tile read", [Request(a, False, 1) for a in tile])]
    reqs, data = [], []
    for _, rs in phases:
        reqs += rs
        data += [rng.getrandbits(128) if r.write else 0 for r in rs]
    # all presented at cycle 1: the controller keeps the order, so each phase
    # follows the previous one as closely as the bus rules allow
    rec = await b.run(reqs, data, extra=0)
    sched = check_against_model(model, reqs, data, rec)
    i = 0
    for name, rs in phases:
        j = i + len(rs)
        start = sched.issued[i]
        stop = sched.issued[j - 1] + 8      # the last burst's 8 bus cycles
        cyc = stop - start
        mbs = len(rs) * BURST_BYTES / (cyc / CLOCK_HZ) / 1e6
        dut._log.info("%-17s %5d bursts in %6d cycles: %6.1f MB/s = %5.1f %% of 200 MB/s",
                      name, len(rs), cyc, mbs, mbs / 2)
        assert mbs / 2 >= (80 if "sequential" in name else 60), (name, mbs)
        i = j


@cocotb.test(skip=not _FULL_INIT)
async def power_up(dut):
    """The full datasheet power-up wait, then one write and read."""
    b, model, chip_model = await _bench(dut, 5)
    reqs = [Request(77, True, 1), Request(77, False, 1)]
    data = [0x0123456789ABCDEF_FEDCBA9876543210, 0]
    rec = await b.run(reqs, data, extra=5)
    check_against_model(model, reqs, data, rec)
    assert chip_model.initialised
