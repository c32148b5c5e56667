"""cocotb tests of :class:`hetaccel.rtl.dma.DmaEngine` with the SDRAM controller
and the chip model, against the golden models.

Run through ``tests/test_dma_cocotb.py``.  The design under test is a small top
(``DmaTop`` there): the engine, an :class:`~hetaccel.rtl.sdram.SdramController`
built for the config's SDRAM (with a short power-up wait) behind one board
input register on ``dq_i``, and its pins, which :class:`SdramChipBus` connects to
:class:`SdramChipModel` (any datasheet rule broken fails the test).  The
scratchpads are Python: :class:`TB` serves ``sp_rd_data`` the cycle after
``sp_rd_en`` and records every ``sp_wr``, in a :class:`DeviceModel`'s memories
(one array per space, with the device's element semantics).

What is checked, for every job:

* data: every word a LOAD writes is the DEVICE bytes at ``dram_addr + i *
  word`` (the raw wire word, every byte), and after the job the scratchpads
  equal the golden :class:`~hetaccel.sim.device_model.DeviceModel`'s after its
  ``_dma``; after a STORE every SDRAM line of the range (and the lines either
  side) equals the golden device memory's bytes.  A failure names the first
  differing word and element or byte;
* the request stream: lines ``dram_addr // 16`` on, in order, the first
  ``DMA_LEAD`` cycles after the job was taken; the scratchpad reads and
  writes one per word, in address order;
* cycles: every command on the SDRAM pins, every request taken and every
  line read equal :meth:`SdramModel.schedule` replayed on all the test's
  requests since the controller's ``init_done`` (a job's lines presented from
  its first request, ``rdata.ready`` as the engine drove it), so the engine
  kept the stream back to back; ``done`` comes ``DMA_TAIL`` cycles after the
  last line in that schedule.  A job run on its own that starts right after
  a refresh (the test waits for AUTO REFRESH on the pins and presents the
  first request ``rfc - 1`` cycles after its decision, when the controller is
  in the state its model starts from) or as the first thing after
  initialisation takes exactly :func:`~hetaccel.spec.timing.dma_cycles` with
  :meth:`DeviceMemoryModel.transfer_cycles` from job taken to ``done``; one
  that meets the next refresh after it is checked against the schedule only
  (the model's transfer starts from initialisation, whose next refresh comes
  ``mrd`` cycles sooner than after a refresh);
* counters: ``bytes_in`` / ``bytes_out`` equal the golden model's
  ``DMA_BYTES_IN`` / ``DMA_BYTES_OUT``, ``busy_cycles`` the sum of the jobs'
  cycles (and the golden ``DMA_BUSY`` when every job ran on its own).

Environment: ``DMA_CONFIG`` (the AcceleratorConfig as JSON), ``SDRAM_TIMING``
(the controller's SdramTiming as JSON), ``SDRAM_CHIP`` (the part the chip
model plays), ``SDRAM_POWER_UP``, ``DMA_SUITE`` (``quick`` runs the short
tests only), ``DMA_SEED``.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from ..sim.device_model import DeviceModel
from ..sim.sdram_model import Request, SdramModel
from ..spec import AcceleratorConfig, MemSpace, Opcode, dma_spaces, mem_depth, mem_word, pack_words
from ..spec.sdram import CHIPS, A10_ALL_BANKS, SdramCommand, SdramTiming
from ..spec.timing import DMA_LEAD, DMA_TAIL, dma_cycles, dma_lines
from .checking import assert_bit_exact
from .sdram_chip import SdramChipBus, SdramChipModel

LINE = 16
_QUICK = os.environ.get("DMA_SUITE", "full") == "quick"


def words_per_line(config, space) -> int:
    """Words packed in one line (1 for words of a line or more)."""
    return max(1, LINE // mem_word(config, space).bytes)


@dataclass
class Job:
    op: Opcode
    space: MemSpace
    addr: int
    dram_addr: int
    count: int
    alone: bool = False          # run on its own from a refresh or from init: dma_cycles applies
    at: int | None = None        # TB cycle in which to take it (None: as soon as possible)
    accept: int | None = None
    present: int | None = None
    done: list = field(default_factory=list)
    taken: list = field(default_factory=list)    # (cycle, line, write)
    presents: list = field(default_factory=list) # cycle each request was first offered
    pops: list = field(default_factory=list)
    writes: list = field(default_factory=list)   # (space, addr, data)
    reads: list = field(default_factory=list)    # (space, addr)

    @property
    def fields(self) -> dict:
        return {"space": int(self.space), "addr": self.addr, "dram_addr": self.dram_addr,
                "count": self.count}

    def __str__(self):
        return (f"{self.op.name} {self.space.name}[{self.addr}:+{self.count}] "
                f"<-> DEVICE byte {self.dram_addr:#x}")


class TB:
    """The engine's environment: clock, reset, chip, scratchpads, job driver and
    the golden models.  :meth:`step` advances one cycle; cycle numbers are
    counted from reset release (``c0`` is the first ``init_done`` cycle, cycle 0
    of :class:`SdramModel`)."""

    def __init__(self, dut, seed: int = 1):
        self.dut = dut
        self.config = AcceleratorConfig.from_json(os.environ["DMA_CONFIG"])
        self.timing = SdramTiming(**json.loads(os.environ["SDRAM_TIMING"]))
        mem = self.config.memory
        self.model = SdramModel(CHIPS[mem.chips[0]], self.timing, read_delay=mem.read_delay)
        self.gold = DeviceModel(self.config)
        self.sp = DeviceModel(self.config)       # the scratchpads the engine sees
        self.rng = random.Random(int(os.environ.get("DMA_SEED", "0")) * 1000 + seed)
        self.chip_model = SdramChipModel(CHIPS[os.environ["SDRAM_CHIP"]], self.config.clock_hz,
                                         cas_latency=self.timing.cas_latency,
                                         power_up_cycles=int(os.environ["SDRAM_POWER_UP"]))
        self.pin_cmds: list = []                 # (chip cycle, command, ba, a)
        step = self.chip_model.step

        def recording_step(cmd, ba, a, dqm, dq_o, dq_oe, cke=True):
            n = self.chip_model.cycle
            out = step(cmd, ba, a, dqm, dq_o, dq_oe, cke)
            if cmd is not None and not cmd & 8 and cmd != SdramCommand.NOP:
                self.pin_cmds.append((n, SdramCommand(cmd), ba, a))
            return out
        self.chip_model.step = recording_step
        self.c = 0
        self.c0 = None
        self.chip_off = None                     # chip cycle - TB cycle
        self.queue: list[Job] = []
        self.jobs: list[Job] = []
        self.active: Job | None = None
        self.driving: Job | None = None
        self.pending_rd = None
        self.align = None
        self.clear_counters = self.clearing = False   # pulse ``clear`` in the next cycle
        self.met_refresh: list = []              # alone jobs checked against the schedule only
        self.ready_at: dict[int, int] = {}       # model cycle -> rdata.ready, where rdata.valid
        self.rd_bits = len(dut.sp_rd_data)
        self.words = {s: mem_word(self.config, s) for s in MemSpace
                      if s in dma_spaces(self.config, Opcode.LOAD)
                      | dma_spaces(self.config, Opcode.STORE)}
        self.addr_bits = len(dut.sp_wr_addr)
        self.line_bits = len(dut.mem_cmd__payload) - 1
        assert len(dut.job__payload) == 4 + self.addr_bits + 64, len(dut.job__payload)

    # -- start -------------------------------------------------------------------------

    async def start(self, first: Job | None = None):
        """Reset and initialise; with ``first``, take that job so that its first
        request is presented in the controller's first ``init_done`` cycle (the
        state :meth:`SdramModel.transfer_cycles` starts from)."""
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.job__valid.value = 0
        dut.job__payload.value = 0
        dut.sp_rd_data.value = 0
        dut.clear.value = 0
        dut.rst.value = 1
        # the pins are reset registers: the chip sees them only from reset on
        await RisingEdge(dut.clk)
        self.bus = SdramChipBus(dut, self.chip_model)
        self.bus.start()
        for _ in range(2):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        if first is not None:
            # LOAD MODE is on the pins rfc cycles after the second init AUTO REFRESH
            self._align(first, 2, self.timing.rfc)
        while self.c0 is None:
            await self.step()
        await self.step()                        # the chip sees cycle c0's pins
        cmds = [x for x in self.pin_cmds if x[1] == SdramCommand.LOAD_MODE]
        assert cmds and cmds[0][0] - self.chip_off == self.c0, (cmds, self.chip_off, self.c0)

    # -- per cycle ---------------------------------------------------------------------

    async def step(self):
        dut = self.dut
        await RisingEdge(dut.clk)
        self.c += 1
        c = self.c
        if self.chip_off is None and self.chip_model.cycle:
            self.chip_off = self.chip_model.cycle - 1 - (c - 1)
        if self.align is not None:
            self._check_align()
        if self.clear_counters or self.clearing:
            dut.clear.value = int(self.clear_counters)
            self.clearing, self.clear_counters = self.clear_counters, False
        # read port: the word read last cycle, garbage above the space's word
        garbage = self.rng.getrandbits(self.rd_bits)
        if self.pending_rd is not None:
            space, addr = self.pending_rd
            wb = self.words[space].bytes
            word = int.from_bytes(self.sp.read_words(space, addr, 1), "little")
            dut.sp_rd_data.value = word | (garbage >> (8 * wb) << (8 * wb))
            self.pending_rd = None
        elif c % 8 == 0:
            dut.sp_rd_data.value = garbage
        # job stream
        if self.driving is None and self.queue and (self.queue[0].at is None
                                                    or self.queue[0].at <= c):
            j = self.driving = self.queue.pop(0)
            if j.at is not None:
                assert j.at == c, f"{j}: meant to be taken in cycle {j.at}, driven in {c}"
            payload = (int(j.op == Opcode.STORE) | int(j.space) << 1 | j.addr << 4
                       | j.dram_addr << (4 + self.addr_bits)
                       | j.count << (36 + self.addr_bits))
            dut.job__payload.value = payload
            dut.job__valid.value = 1
        elif self.driving is None:
            dut.job__valid.value = 0
        await ReadOnly()
        if self.c0 is None and int(dut.init_done.value):
            self.c0 = c
        j = self.driving
        if j is not None and int(dut.job__ready.value):
            assert self.active is None, f"cycle {c}: {j} taken while {self.active} runs"
            j.accept = c
            self.active, self.driving = j, None
            self.jobs.append(j)
        a = self.active
        if int(dut.sp_wr_en.value):
            assert a is not None and a.op == Opcode.LOAD, f"cycle {c}: sp_wr_en without a LOAD"
            a.writes.append((int(dut.sp_wr_space.value), int(dut.sp_wr_addr.value),
                             int(dut.sp_wr_data.value)))
            self._scratch_write(a, a.writes[-1])
        if int(dut.done.value):
            assert a is not None and a.accept < c, f"cycle {c}: done without a job"
            a.done.append(c)
            self.active = None
            self._finish(a)
            a = None                             # nothing of it may follow its done
        if int(dut.sp_rd_en.value):
            assert a is not None and a.op == Opcode.STORE, f"cycle {c}: sp_rd_en without a STORE"
            rd = (int(dut.sp_rd_space.value), int(dut.sp_rd_addr.value))
            assert rd[0] == a.space, f"cycle {c}: {a} reads space {rd[0]}"
            a.reads.append(rd)
            self.pending_rd = (MemSpace(rd[0]), rd[1])
        if int(dut.mem_cmd__valid.value):
            assert a is not None, f"cycle {c}: a memory request without a job"
            if a.present is None:
                a.present = c
            if len(a.presents) == len(a.taken):
                a.presents.append(c)
            if int(dut.mem_cmd__ready.value):
                p = int(dut.mem_cmd__payload.value)
                a.taken.append((c, p & ((1 << self.line_bits) - 1), p >> self.line_bits))
        if int(dut.mem_rdata__valid.value):
            rdy = int(dut.mem_rdata__ready.value)
            if self.c0 is not None:
                self.ready_at[c - self.c0] = rdy
            if rdy:
                assert a is not None and a.op == Opcode.LOAD, f"cycle {c}: a line read no LOAD took"
                a.pops.append(c)

    def _scratch_write(self, job, write):
        space, addr, value = write
        i = len(job.writes) - 1
        wb = self.words[job.space].bytes
        assert space == job.space, f"{job}: word {i} written to space {space}"
        assert addr == job.addr + i, f"{job}: word {i} written at {addr}, not {job.addr + i}"
        got = (value & ((1 << 8 * wb) - 1)).to_bytes(wb, "little")
        want = self.gold.dram.read(job.dram_addr + i * wb, wb)
        if got != want:
            word = self.words[job.space]
            eb = word.element_bytes
            e = next(e for e in range(wb // eb) if got[e * eb:(e + 1) * eb] != want[e * eb:(e + 1) * eb])
            raise AssertionError(
                f"{job}: word {i} (scratchpad word {addr}) differs first in element {e}: "
                f"RTL 0x{got[e * eb:(e + 1) * eb][::-1].hex()}, DEVICE bytes "
                f"{job.dram_addr + i * wb + e * eb}.. hold 0x{want[e * eb:(e + 1) * eb][::-1].hex()}")
        self.sp.write_words(space, addr, got)

    # -- jobs --------------------------------------------------------------------------

    def submit(self, job: Job):
        self.queue.append(job)

    async def run(self, *jobs: Job, limit: int = 400_000):
        """Submit ``jobs`` and step until each has retired."""
        for j in jobs:
            self.submit(j)
        start = self.c
        while self.align or self.queue or self.driving or self.active:
            await self.step()
            if self.c - start > limit:
                raise AssertionError(f"no progress after {limit} cycles: active {self.active}, "
                                     f"{len(self.queue)} queued")
        await self.step()                        # the counters count the done cycle
        return jobs

    async def after_refresh(self, job: Job):
        """Run ``job`` on its own right after the next AUTO REFRESH: its first
        request comes ``rfc - 1`` cycles after the refresh's decision (the
        cycle before it is on the pins)."""
        assert not (self.queue or self.driving or self.active)
        self._align(job, 1, self.timing.rfc - 2)
        await self.run()
        return job

    def _align(self, job: Job, nth: int, delta: int):
        """Take ``job`` so that its first request comes ``delta`` cycles after
        the ``nth`` AUTO REFRESH from now is on the pins."""
        self.align = (job, nth, delta, len(self.pin_cmds))

    def _check_align(self):
        job, nth, delta, seen = self.align
        refs = [n for n, cmd, _, _ in self.pin_cmds[seen:] if cmd == SdramCommand.AUTO_REFRESH]
        if len(refs) >= nth:
            pins = refs[nth - 1] - self.chip_off
            job.at = pins + delta - DMA_LEAD[job.op]
            job.alone = True
            if nth == 1:
                # any later start finds the same controller state (banks
                # closed, every timer run out), only the next refresh nearer
                job.at = max(job.at, self.c)
            assert job.at >= self.c, f"{job}: too late to take it in cycle {job.at}"
            self.align = None
            self.submit(job)

    def _finish(self, j: Job):
        """Checks of a retired job that need no schedule: stream order, data."""
        cfg = self.config
        first, lines = dma_lines(cfg, j.fields)
        assert j.at is None or j.accept == j.at, f"{j}: taken in cycle {j.accept}, not {j.at}"
        assert j.present == j.accept + DMA_LEAD[j.op], (
            f"{j}: first request {j.present - j.accept} cycles after the job was taken, "
            f"not {DMA_LEAD[j.op]}")
        want = [(first + i, int(j.op == Opcode.STORE)) for i in range(lines)]
        got = [(line, w) for _, line, w in j.taken]
        assert got == want, _first_diff(f"{j}: request (line, write)", want, got)
        if j.op == Opcode.LOAD:
            assert len(j.writes) == j.count, f"{j}: {len(j.writes)} words written, not {j.count}"
            assert len(j.pops) == lines, f"{j}: {len(j.pops)} lines read, not {lines}"
        else:
            want_rd = [(int(j.space), j.addr + i) for i in range(j.count)]
            assert j.reads == want_rd, _first_diff(f"{j}: scratchpad read", want_rd, j.reads)
        # the golden model does the same job
        self.gold._dma(j.op, j.fields)
        if j.op == Opcode.LOAD:
            self.compare_scratchpads(j)
        else:
            self.compare_lines(j, first - 1, lines + 2)

    def compare_scratchpads(self, j=None):
        what = f"after {j}" if j else "scratchpads"
        for space, mem in self.gold.mem.items():
            assert_bit_exact(mem, self.sp.mem[space], f"{what}: {space.name} (word, element)")
        if self.gold.act is not None:
            for name in ("bias", "multiplier", "shift"):
                assert_bit_exact(getattr(self.gold.act, name), getattr(self.sp.act, name),
                                 f"{what}: ACT_PARAM {name} (entry, channel)")

    def compare_lines(self, j, first, n):
        total = self.config.memory.lines
        for line in range(max(first, 0), min(first + n, total)):
            want = self.gold.dram.read(line * LINE, LINE)
            beats = self.chip_model.read_words(line * 8, 8)
            got = b"".join(b.to_bytes(2, "little") for b in beats)
            if got != want:
                b = next(i for i in range(LINE) if got[i] != want[i])
                raise AssertionError(
                    f"after {j}: SDRAM line {line} (DEVICE byte {line * LINE:#x}) differs first "
                    f"at byte {b}: chip 0x{got.hex()}, model 0x{want.hex()}")

    # -- preloading --------------------------------------------------------------------

    def fill_dram(self, first_line: int, lines: int):
        """Random bytes in lines ``first_line ..`` of the chip and the golden store."""
        first_line = max(first_line, 0)
        lines = min(lines, self.config.memory.lines - first_line)
        data = self.rng.randbytes(lines * LINE)
        self.gold.dram.write(first_line * LINE, data)
        beats = np.frombuffer(data, dtype="<u2")
        self.chip_model.write_words(first_line * 8, [int(b) for b in beats])

    def fill_scratchpad(self, space: MemSpace, addr: int, count: int):
        """Random words (within the element width) in both scratchpads."""
        word = self.words[space]
        if word.kind == "float":
            vals = np.array([self.rng.getrandbits(32) for _ in range(count * word.elements)],
                            dtype=np.uint32)
        else:
            lo, hi = -(1 << word.width - 1), (1 << word.width - 1) - 1
            vals = np.array([self.rng.randint(lo, hi) for _ in range(count * word.elements)],
                            dtype=np.int64)
        data = pack_words(self.config, space, vals)
        self.gold.write_words(space, addr, data)
        self.sp.write_words(space, addr, data)

    def random_job(self, op: Opcode, space: MemSpace, count: int, *, near: str = "random") -> Job:
        """A job of ``count`` words at a random scratchpad address and a
        line-aligned DEVICE address: ``near`` "bank" / "row" starts it a few
        lines before a bank / row boundary."""
        cfg = self.config
        wb = self.words[space].bytes
        count -= count % words_per_line(cfg, space)
        lines = count * wb // LINE
        depth = mem_depth(cfg, space)
        addr = self.rng.randrange(depth - count + 1)
        chip = self.model.chip
        bank_lines = chip.cols // 8                    # lines per row of one bank
        row_lines = bank_lines * chip.banks
        total = cfg.memory.lines
        if near == "bank":
            k = self.rng.randrange(1, total // bank_lines - 1)
            first = k * bank_lines - self.rng.randrange(1, max(2, min(lines, 6)))
        elif near == "row":
            k = self.rng.randrange(1, total // row_lines - 1)
            first = k * row_lines - self.rng.randrange(1, max(2, min(lines, 6)))
        else:
            first = self.rng.randrange(total - lines)
        first = min(max(first, 0), total - lines)
        if op == Opcode.LOAD:
            self.fill_dram(first, lines)
        else:
            self.fill_dram(first - 1, lines + 2)
            self.fill_scratchpad(space, addr, count)
        return Job(op, space, addr, first * LINE, count)

    # -- the schedule ------------------------------------------------------------------

    def check_schedule(self):
        """Replay every request since init on :class:`SdramModel` and compare
        pins, requests taken, lines read and each job's cycles."""
        jobs = self.jobs
        assert all(j.done for j in jobs), [str(j) for j in jobs if not j.done]
        c0 = self.c0
        reqs, owner = [], []
        for j in jobs:
            # the model's stream: every line presented from the first request
            # on (the replay then takes each line when the RTL did only if the
            # engine never made the controller wait)
            for (_, line, w) in j.taken:
                reqs.append(Request(line, bool(w), j.present - c0))
                owner.append(j)
        end = self.c - c0
        sched = self.model.schedule(reqs, rdata_ready=lambda t: self.ready_at.get(t, 0),
                                    until=end)
        exp_cmds = [(c, cmd, ba, a) for c, cmd, ba, a in sched.commands if c < end]
        got_cmds = []
        for n, cmd, ba, a in self.pin_cmds:
            c = n - self.chip_off - c0
            if c <= 0 or c >= end:          # (cycle 0: LOAD MODE, before the model)
                continue
            if cmd == SdramCommand.AUTO_REFRESH:
                got_cmds.append((c, cmd, None, None))
            elif cmd == SdramCommand.PRECHARGE and a & A10_ALL_BANKS:
                got_cmds.append((c, cmd, None, A10_ALL_BANKS))
            else:
                got_cmds.append((c, cmd, ba, a))
        assert got_cmds == exp_cmds, _first_diff("SDRAM command (cycle, command, ba, a)",
                                                 exp_cmds, got_cmds)
        got_taken = [c - c0 for j in jobs for c, _, _ in j.taken]
        assert got_taken == sched.taken, _first_diff("request taken in cycle", sched.taken,
                                                     got_taken)
        got_pops = [c - c0 for j in jobs for c in j.pops]
        exp_pops = [d for d, r in zip(sched.done, reqs) if not r.write]
        assert got_pops == exp_pops, _first_diff("line read in cycle", exp_pops, got_pops)
        refreshes = [c for c, cmd, _, _ in sched.commands if cmd == SdramCommand.AUTO_REFRESH]
        busy = 0
        for j in jobs:
            assert len(j.done) == 1, f"{j}: done pulsed in cycles {j.done}"
            mine = [d for d, o in zip(sched.done, owner) if o is j]
            last = max(mine) + c0
            tail = DMA_TAIL
            assert j.done[0] == last + tail, (
                f"{j}: done in cycle {j.done[0] - c0}, {j.done[0] - last} cycles after its last "
                f"line (model cycle {last - c0}), not {tail}")
            cycles = j.done[0] - j.accept + 1
            busy += cycles
            if j.alone:
                first, lines = dma_lines(self.config, j.fields)
                met = any(j.present - c0 <= r <= last - c0 for r in refreshes)
                spec = dma_cycles(self.config, j.op, j.fields,
                                  self.gold.dram.transfer_cycles(first, lines,
                                                                 j.op == Opcode.STORE))
                if j.present - c0 == 0 or not met:
                    assert cycles == spec, (
                        f"{j}: {cycles} cycles from taken to done, dma_cycles says {spec}")
                else:
                    self.met_refresh.append((j, cycles, spec))
                    cocotb.log.info("%s met a refresh: %d cycles (dma_cycles from init: %d)",
                                    j, cycles, spec)
        counters = {n: int(getattr(self.dut, n).value) for n in
                    ("busy_cycles", "bytes_in", "bytes_out")}
        want = {"busy_cycles": busy, "bytes_in": self.gold.counters["DMA_BYTES_IN"],
                "bytes_out": self.gold.counters["DMA_BYTES_OUT"]}
        assert counters == want, f"counters: RTL {counters}, expected {want}"
        if all(j.alone for j in jobs) and all(
                j.present - c0 == 0 or not any(j.present - c0 <= r <= j.done[0] - c0
                                               for r in refreshes) for j in jobs):
            assert counters["busy_cycles"] == self.gold.counters["DMA_BUSY"], (
                counters, self.gold.counters["DMA_BUSY"])
        return sched


def _first_diff(what, expected, got):
    for i, (x, y) in enumerate(zip(expected, got)):
        if x != y:
            return f"{what} #{i} differs: expected {x}, RTL {y}"
    return f"{what}: expected {len(expected)}, RTL {len(got)}"


def _spaces(config, op):
    return sorted(dma_spaces(config, op))


def _count(tb, space, lines_hint):
    """A word count moving about ``lines_hint`` lines (at least one line)."""
    wb = tb.words[space].bytes
    k = words_per_line(tb.config, space)
    n = max(k, lines_hint * LINE // wb)
    return min(n, mem_depth(tb.config, space))


# --- tests --------------------------------------------------------------------------------

@cocotb.test()
async def every_space_on_its_own(dut):
    """LOAD and STORE of every space it may move, each right after a refresh,
    at random addresses and across a bank and a row boundary."""
    tb = TB(dut, 1)
    await tb.start()
    nears = ("random", "bank", "row") if not _QUICK else ("bank",)
    for near in nears:
        for op in (Opcode.LOAD, Opcode.STORE):
            for space in _spaces(tb.config, op):
                lines = tb.rng.choice((1, 3, 9)) if _QUICK else tb.rng.choice((1, 2, 7, 24))
                job = tb.random_job(op, space, _count(tb, space, lines), near=near)
                await tb.after_refresh(job)
    tb.check_schedule()
    tb.compare_scratchpads()


@cocotb.test()
async def back_to_back(dut):
    """Jobs queued behind each other (taken the cycle after the previous
    retires), LOADs and STOREs of different spaces mixed, one STORE writing
    what the LOAD before it read."""
    tb = TB(dut, 2)
    await tb.start()
    jobs = []
    ops = [Opcode.LOAD, Opcode.STORE] * (3 if _QUICK else 8)
    tb.rng.shuffle(ops)
    for op in ops:
        space = tb.rng.choice(_spaces(tb.config, op))
        jobs.append(tb.random_job(op, space, _count(tb, space, tb.rng.choice((1, 2, 5)))))
    # a round trip: load lines, store the same words elsewhere (INPUT when
    # its words move, else the first space moved both ways)
    both = [s for s in _spaces(tb.config, Opcode.LOAD) if s in _spaces(tb.config, Opcode.STORE)]
    space = MemSpace.INPUT if MemSpace.INPUT in both else both[0]
    ld = tb.random_job(Opcode.LOAD, space, _count(tb, space, 4), near="bank")
    st = Job(Opcode.STORE, space, ld.addr, (ld.dram_addr + 4096 * LINE) % (
        tb.config.memory.bytes - ld.count * tb.words[space].bytes), ld.count)
    st.dram_addr -= st.dram_addr % LINE
    tb.fill_dram(st.dram_addr // LINE - 1, dma_lines(tb.config, st.fields)[1] + 2)
    jobs += [ld, st]
    await tb.run(*jobs)
    for a, b in zip(jobs, jobs[1:]):
        assert b.accept == a.done[0] + 1, f"{b} taken {b.accept - a.done[0]} cycles after {a}"
    tb.check_schedule()
    tb.compare_scratchpads()
    # CONTROL's counter reset
    tb.clear_counters = True
    await tb.step()
    await tb.step()
    counters = [int(getattr(dut, n).value) for n in ("busy_cycles", "bytes_in", "bytes_out")]
    assert counters == [0, 0, 0], f"counters after clear: {counters}"


async def _long_from_init(dut, seed: int, op: Opcode, near: str) -> None:
    """The first job after initialisation, presented in the controller's first
    cycle: ``op`` of every word of the longest space it may move, through
    several refreshes, in exactly dma_cycles."""
    tb = TB(dut, seed)
    cfg = tb.config
    space = max(_spaces(cfg, op), key=lambda s: mem_depth(cfg, s) * tb.words[s].bytes)
    job = tb.random_job(op, space, mem_depth(cfg, space), near=near)
    await tb.start(first=job)
    await tb.run()
    assert job.present == tb.c0, (job.present, tb.c0)
    sched = tb.check_schedule()
    assert sched.refreshes >= 2, sched.refreshes
    tb.compare_scratchpads()


@cocotb.test(skip=_QUICK)
async def long_load_from_init(dut):
    """A LOAD of a whole space as the first job after initialisation."""
    await _long_from_init(dut, 3, Opcode.LOAD, "row")


@cocotb.test(skip=_QUICK)
async def long_store_from_init(dut):
    """A STORE of a whole space as the first job after initialisation."""
    await _long_from_init(dut, 4, Opcode.STORE, "bank")


@cocotb.test(skip=_QUICK)
async def long_after_refresh(dut):
    """Long LOADs and STOREs of packed and multi-line words right after a
    refresh, meeting the next ones: every cycle as the model's schedule."""
    tb = TB(dut, 5)
    await tb.start()
    for op in (Opcode.LOAD, Opcode.STORE):
        for space in _spaces(tb.config, op):
            await tb.after_refresh(tb.random_job(op, space, _count(tb, space, 150),
                                                 near="row"))
    sched = tb.check_schedule()
    assert sched.refreshes >= 4, sched.refreshes
    assert tb.met_refresh, "no job met a refresh"
    tb.compare_scratchpads()
