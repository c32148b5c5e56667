"""A cycle model of the board's SDR SDRAM that fails on every datasheet rule a
controller breaks.

:class:`SdramChipModel` is plain Python: it is stepped once per rising clock
edge with the pins the chip samples at that edge, keeps the memory contents,
returns what the chip drives on DQ and raises :class:`SdramViolation` on the
first broken rule.  Its timings are the cycles of the one chip it models
(``SdramTiming.of(chip, clock_hz, cas_latency)``), not the worst case the
controller is built for, so a testbench can check a controller against each
chip of the board in turn.

:class:`SdramChipBus` connects a model to the ``sdram__*`` ports of a design
in cocotb.

Edges and cycles
----------------
Cycle ``n`` is the ``n``-th rising edge the model is stepped with (the first
step is cycle 0).  The controller drives every pin from a register, so what
the chip samples at edge ``n`` is what the controller's registers took at
edge ``n - 1``.

* A READ sampled at edge ``N`` puts beat ``k`` of its burst on DQ for edge
  ``N + CL + k``: ``step`` at edge ``N + CL - 1 + k`` returns it, the bus
  drives it on ``dq_i`` before edge ``N + CL + k``, and the controller's
  register that samples ``dq_i`` at that edge holds it afterwards.
* A WRITE sampled at edge ``N`` takes beat ``k`` from ``dq_o`` at edge
  ``N + k``, with ``dqm`` of that same edge as byte masks (bit 0 masks
  DQ[7:0], bit 1 masks DQ[15:8]) and ``dq_oe`` high unless both bytes are
  masked.
* Bursts are 8 beats, sequential, wrapping inside the aligned block of 8
  columns the start column is in (start column 13: 13 14 15 8 9 10 11 12).

Rules (the ``rule`` of the violation)
-------------------------------------
``init``        Power-up: only NOP/INHIBIT for ``timing.power_up`` cycles from
                the first step, then PRECHARGE with A10 (all banks) first, then
                at least 2 AUTO REFRESH and a LOAD MODE, in either order,
                before the first ACTIVE/READ/WRITE.
``cke``         CKE high on every edge (no power-down or clock suspend).
``mode``        LOAD MODE must program exactly burst length 8, sequential, the
                model's CAS latency, standard operation, burst writes, BA = 0
                and A[12:10] = 0.
``tMRD``        LOAD MODE to any command.
``tRFC``        AUTO REFRESH to any command.
``tRP``         PRECHARGE (of that bank, or of all) to ACTIVE, AUTO REFRESH or
                LOAD MODE.  A PRECHARGE always restarts tRP for the banks it
                names, even when they were already idle.
``tRCD``        ACTIVE to READ/WRITE of that bank.
``tRAS``        ACTIVE to PRECHARGE of that bank (minimum).
``tRAS_max``    a bank open longer than tRAS max.
``tRC``         ACTIVE to ACTIVE, same bank (checked before tRP).
``tRRD``        ACTIVE to ACTIVE, different banks.
``tWR``         last beat of a WRITE to PRECHARGE of that bank.
``refresh``     with ``strict_refresh``: more than ``timing.refi`` cycles from
                the end of initialisation to the first AUTO REFRESH, or
                between two of them.  Raised at the first edge past the limit,
                whatever command it carries.
``bank_open``   ACTIVE to a bank that has a row open; AUTO REFRESH or LOAD MODE
                while any bank is open.
``bank_not_open``  READ/WRITE to an idle bank.
``auto_precharge`` READ/WRITE with A10 high (the controller never uses it).
``address``     READ/WRITE with address bits above the column set (other than
                A10): the chip ignores them, so the controller lost an address.
``burst_interrupted``  READ, WRITE, BURST TERMINATE, PRECHARGE of the bursting
                bank, or PRECHARGE all, within 8 cycles of a READ/WRITE.
``bus_contention``  ``dq_oe`` at an edge for which the chip drives read data, or
                at the edge after the last beat of a burst (the chip holds DQ
                past that edge and needs tHZ to let go: one turnaround cycle).
``dqm_read``    DQM high two edges before a read beat (DQM's read latency):
                that beat would not be driven.
``write_data``  an unmasked write beat with ``dq_oe`` low.
``unknown_pins``  an X/Z pin (passed as ``None``) where the chip uses it.
``uninitialised_read``  only with ``error_on_uninitialised``: a read of a
                location never written.

A location never written reads as :func:`poison_word` (different for every
address) and is recorded in ``uninitialised_reads``.

The cocotb bus: what each edge sees
-----------------------------------
:class:`SdramChipBus` wakes at every falling edge of the clock, i.e. half a
period after the rising edge ``n - 1`` that updated the controller's
registers and half a period before the rising edge ``n`` at which the chip
samples them:

1. it drives ``dq_i`` with what the model returned for edge ``n`` (from the
   step of edge ``n - 1``), the way the chip's data appears tAC after edge
   ``n - 1``; the value stays until the next falling edge, so it is stable
   around edge ``n`` where the controller samples it;
2. it waits for ReadOnly and samples all pins there: these are settled values
   that do not change until rising edge ``n`` (the controller's outputs are
   registers), i.e. exactly what the chip registers at edge ``n`` --
   independent of the simulator's ordering at the rising edge itself, where
   Icarus shows pre-edge and Verilator post-edge register values;
3. it calls ``model.step`` for edge ``n``.

So the model's cycle 0 is the first rising edge after the bus started.  A
violation is kept in ``bus.violation`` and raised from the bus task, which
fails the running cocotb test with the model's message; ``bus.check()``
raises it again for a test that wants to check at a point of its choosing.
"""

from __future__ import annotations

import collections
import dataclasses

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, ReadOnly

from ..spec.sdram import (A10_ALL_BANKS, MODE_BURST_LENGTH, SdramChip, SdramCommand,
                          SdramTiming, join_address, mode_register, split_address)

__all__ = ["SdramViolation", "SdramChipModel", "SdramChipBus", "poison_word"]

_C = SdramCommand
# The 4-bit {cs_n, ras_n, cas_n, we_n}: cs_n high ignores the other three.
_DECODE = tuple(_C.INHIBIT if i & 0b1000 else _C(i) for i in range(16))
_NOPS = (_C.NOP, _C.INHIBIT)
_NAMES = {
    _C.LOAD_MODE: "LOAD MODE", _C.AUTO_REFRESH: "AUTO REFRESH", _C.PRECHARGE: "PRECHARGE",
    _C.ACTIVE: "ACTIVE", _C.WRITE: "WRITE", _C.READ: "READ",
    _C.BURST_TERMINATE: "BURST TERMINATE", _C.NOP: "NOP", _C.INHIBIT: "COMMAND INHIBIT",
}
#: datasheet field behind each timing rule (for the messages)
_NS = {"tRCD": "t_rcd", "tRP": "t_rp", "tRAS": "t_ras", "tRC": "t_rc", "tRRD": "t_rrd",
       "tRFC": "t_rfc", "tWR": "t_wr"}
_FAR = 1 << 62
_LOG_LENGTH = 16


class SdramViolation(AssertionError):
    """A datasheet rule the controller broke.  ``rule`` names it (see the
    module docstring), ``cycle`` is the edge of the offending command."""

    def __init__(self, rule: str, cycle: int, message: str):
        super().__init__(message)
        self.rule = rule
        self.cycle = cycle


def poison_word(chip: SdramChip, bank: int, row: int, col: int) -> int:
    """What a never-written location reads as: fixed, and different for
    neighbouring addresses so a read of the wrong location shows."""
    addr = join_address(chip, bank, row, col)
    return ((addr * 0x9E3779B1) >> 13 ^ 0xA5A5) & 0xFFFF


@dataclasses.dataclass(frozen=True)
class _Event:
    cycle: int
    text: str

    def __str__(self):
        return f"{self.text} at cycle {self.cycle}"


class SdramChipModel:
    """One SDR SDRAM chip, stepped once per rising clock edge.

    Parameters
    ----------
    chip : SdramChip
        The part modelled; its own timings apply.
    clock_hz : float
        The clock the controller runs the chip at.
    cas_latency : int
        The CAS latency the controller must program (2 or 3, and one the
        chip supports at ``clock_hz``).
    strict_refresh : bool
        Check that AUTO REFRESH comes at least every ``timing.refi`` cycles.
    error_on_uninitialised : bool
        Make a read of a never-written location a violation.
    power_up_cycles : int, optional
        Replaces the datasheet's power-up wait, for a simulation in which the
        controller was built with the same shortened wait.
    """

    def __init__(self, chip: SdramChip, clock_hz: float, *, cas_latency: int = 3,
                 strict_refresh: bool = True, error_on_uninitialised: bool = False,
                 power_up_cycles: int | None = None):
        if not isinstance(chip, SdramChip):
            raise TypeError(f"chip must be an SdramChip, not {chip!r}")
        timing = SdramTiming.of(chip, clock_hz, cas_latency)
        if power_up_cycles is not None:
            timing = timing.with_power_up(power_up_cycles, "power_up_cycles")
        self.chip = chip
        self.timing = timing
        self.strict_refresh = strict_refresh
        self.error_on_uninitialised = error_on_uninitialised
        self.burst_length = MODE_BURST_LENGTH
        self.expected_mode = mode_register(cas_latency, MODE_BURST_LENGTH)
        #: the next edge to be stepped (= edges stepped so far)
        self.cycle = 0
        #: how many times each SdramCommand was sampled (NOPs included)
        self.counts: collections.Counter = collections.Counter()
        #: the last commands other than NOP/INHIBIT, as "cycle N: TEXT"
        self.log: collections.deque = collections.deque(maxlen=_LOG_LENGTH)
        #: (cycle of the READ, bank, row, col) of every read of a never-written location
        self.uninitialised_reads: list[tuple] = []
        #: the mode register as last loaded (None before the first LOAD MODE)
        self.mode: int | None = None
        self.initialised = False      # PRECHARGE all, 2 AUTO REFRESH and LOAD MODE done
        self._mem: dict[tuple, tuple] = {}   # (bank, row, col) -> (value, written bits)
        self._precharged = False       # the initial PRECHARGE all was seen
        self._init_refreshes = 0
        nb = chip.banks
        self._open: list = [None] * nb         # open row per bank
        self._act: list = [None] * nb          # last ACTIVE per bank
        self._pre: list = [None] * nb          # last PRECHARGE naming the bank
        self._wbeat: list = [None] * nb        # (edge of the last write beat, WRITE event)
        self._last_act: tuple | None = None    # (bank, event) of the last ACTIVE
        self._last_ref: _Event | None = None
        self._last_lmr: _Event | None = None
        self._refresh_anchor: _Event | None = None
        self._burst: tuple | None = None       # (first free edge, bank, event)
        self._deadline = _FAR
        # per edge: write beats, read beats (by the edge they are valid for),
        # edges on which the chip owns DQ, edges at which DQM must be low
        self._write_beats: dict[int, tuple] = {}
        self._read_beats: dict[int, tuple] = {}
        self._chip_drives: dict[int, _Event] = {}
        self._dqm_low: dict[int, _Event] = {}

    # -- memory access for testbenches -------------------------------------------------

    def read_word(self, bank: int, row: int, col: int) -> int:
        """The stored word (never-written bytes read as :func:`poison_word`)."""
        value, written = self._mem.get((bank, row, col), (0, 0))
        if written != 0xFFFF:
            value |= poison_word(self.chip, bank, row, col) & ~written
        return value

    def write_word(self, bank: int, row: int, col: int, value: int) -> None:
        join_address(self.chip, bank, row, col)       # range check
        if not 0 <= value < 1 << self.chip.width:
            raise ValueError(f"SDRAM word must be in [0, {1 << self.chip.width}), "
                             f"not {value!r}")
        self._mem[(bank, row, col)] = (value, 0xFFFF)

    def read_words(self, addr: int, n: int) -> list[int]:
        """``n`` words from linear word address ``addr`` (see ``split_address``)."""
        return [self.read_word(*split_address(self.chip, addr + i)) for i in range(n)]

    def write_words(self, addr: int, values) -> None:
        for i, v in enumerate(values):
            self.write_word(*split_address(self.chip, addr + i), v)

    # -- stepping ----------------------------------------------------------------------

    def step(self, cmd: int | None, ba: int | None, a: int | None, dqm: int | None,
             dq_o: int | None, dq_oe: bool | None, cke: bool | None = True) -> int | None:
        """Sample the pins at the next rising edge.

        ``cmd`` is ``{cs_n, ras_n, cas_n, we_n}`` (an SdramCommand value); a pin
        that is X/Z is passed as None.  Returns what the chip drives on DQ for
        the edge after this one, or None when it does not drive DQ.
        """
        c = self.cycle
        if cke is None or cmd is None or dq_oe is None:
            self._fail("unknown_pins", c, f"CKE, the command pins and dq_oe must be 0 or 1 at "
                       f"every edge; got cke={cke!r} cmd={cmd!r} dq_oe={dq_oe!r}")
        if not cke:
            self._fail("cke", c, "CKE low: the controller must hold CKE high from the first "
                       "edge (the chip would suspend its clock or power down)")
        if c > self._deadline:
            self._deadline_passed(c)
        if not 0 <= cmd < 16:
            raise ValueError(f"cmd must be the 4-bit {{cs_n, ras_n, cas_n, we_n}}, not {cmd!r}")
        command = _DECODE[cmd]
        self.counts[command] += 1
        if command is not _C.NOP and command is not _C.INHIBIT:
            self._command(c, command, ba, a)
        elif not self._precharged and not self._burst and c < self.timing.power_up:
            # power-up NOPs: nothing on the bus can be pending yet
            self.cycle = c + 1
            return None
        self._bus(c, dqm, dq_o, dq_oe)
        self.cycle = c + 1
        beat = self._read_beats.pop(c + 1, None)
        return None if beat is None else self._drive(beat)

    # -- the data bus ------------------------------------------------------------------

    def _bus(self, c, dqm, dq_o, dq_oe):
        owner = self._chip_drives.pop(c, None)
        if owner is not None and dq_oe:
            self._fail("bus_contention", c,
                       f"dq_oe high while the chip drives DQ for the {owner}: its beats are "
                       f"valid for edges {owner.cycle + self.timing.cas_latency}.."
                       f"{owner.cycle + self.timing.cas_latency + self.burst_length - 1} and "
                       f"it releases DQ only after the edge after the last one, so dq_oe may "
                       f"rise at edge {owner.cycle + self.timing.cas_latency + self.burst_length + 1} "
                       f"at the earliest")
        must_be_low = self._dqm_low.pop(c, None)
        if must_be_low is not None and dqm != 0:
            beat = c + 2 - must_be_low.cycle - self.timing.cas_latency
            self._fail("dqm_read", c,
                       f"DQM={dqm!r}: DQM masks read data two edges later, so it hides beat "
                       f"{beat} of the {must_be_low}; DQM must be 0 at edges "
                       f"{must_be_low.cycle + self.timing.cas_latency - 2}.."
                       f"{must_be_low.cycle + self.timing.cas_latency + self.burst_length - 3}")
        wb = self._write_beats.pop(c, None)
        if wb is not None:
            bank, row, col, event, k = wb
            if dqm is None:
                self._fail("unknown_pins", c, f"DQM is X/Z at beat {k} of the {event}")
            bits = (0 if dqm & 1 else 0x00FF) | (0 if dqm & 2 else 0xFF00)
            if bits:
                if not dq_oe:
                    self._fail("write_data", c,
                               f"dq_oe low at beat {k} of the {event} with DQM={dqm} "
                               f"(bytes not masked): the chip would store a floating bus")
                if dq_o is None:
                    self._fail("unknown_pins", c, f"dq_o is X/Z at beat {k} of the {event}")
                value, written = self._mem.get((bank, row, col), (0, 0))
                self._mem[(bank, row, col)] = ((value & ~bits) | (dq_o & bits), written | bits)

    def _drive(self, beat):
        bank, row, col, event, k = beat
        value, written = self._mem.get((bank, row, col), (0, 0))
        if written != 0xFFFF:
            self.uninitialised_reads.append((event.cycle, bank, row, col))
            if self.error_on_uninitialised:
                self._fail("uninitialised_read", self.cycle - 1,
                           f"beat {k} of the {event} reads bank {bank} row 0x{row:04x} col "
                           f"0x{col:03x}, which was never written"
                           + (" (only partly, with DQM)" if written else ""))
            value |= poison_word(self.chip, bank, row, col) & ~written
        return value

    # -- commands ----------------------------------------------------------------------

    def _command(self, c, command, ba, a):
        T = self.timing
        if ba is None or a is None:
            self._fail("unknown_pins", c, f"{_NAMES[command]} with BA={ba!r} A={a!r}")
        ev = _Event(c, self._describe(command, ba, a))
        self.log.append(f"cycle {c}: {ev.text}")
        if not self._precharged:
            if c < T.power_up:
                self._fail("init", c,
                           f"{ev.text} during power-up: only NOP/COMMAND INHIBIT may come for "
                           f"the first {T.power_up} cycles (the {self.chip.name}'s "
                           f"{self.chip.t_power_up * 1e6:g} us); it comes {c} cycles after the "
                           f"first edge, needs at least {T.power_up}")
            if command is not _C.PRECHARGE or not a & A10_ALL_BANKS:
                self._fail("init", c, f"{ev.text}: the first command after power-up must be "
                           f"PRECHARGE with A10 high (all banks)")
        self._at_least("tRFC", c, ev, self._last_ref, T.rfc)
        self._at_least("tMRD", c, ev, self._last_lmr, T.mrd)
        if command is _C.ACTIVE:
            self._active(c, ev, ba, a)
        elif command is _C.READ or command is _C.WRITE:
            self._read_write(c, ev, command, ba, a)
        elif command is _C.PRECHARGE:
            self._precharge(c, ev, ba, a)
        elif command is _C.AUTO_REFRESH:
            self._all_idle(c, ev)
            self._last_ref = ev
            if self.initialised:
                self._refresh_anchor = ev
                self._update_deadline()
            else:
                self._init_refreshes += 1
                self._maybe_initialised(ev)
        elif command is _C.LOAD_MODE:
            self._all_idle(c, ev)
            self._check_mode(c, ev, ba, a)
            self.mode = a
            self._last_lmr = ev
            self._maybe_initialised(ev)
        elif command is _C.BURST_TERMINATE:
            self._not_in_burst(c, ev, None)

    def _describe(self, command, ba, a):
        name = _NAMES[command]
        if command is _C.ACTIVE:
            return f"{name} bank {ba} row 0x{a:04x}"
        if command is _C.READ or command is _C.WRITE:
            row = self._open[ba]
            where = "no row open" if row is None else f"row 0x{row:04x}"
            return f"{name} bank {ba} col 0x{a & (self.chip.cols - 1):03x} ({where})"
        if command is _C.PRECHARGE:
            return f"{name} all banks" if a & A10_ALL_BANKS else f"{name} bank {ba}"
        if command is _C.LOAD_MODE:
            return f"{name} A=0x{a:04x} BA={ba}"
        return name

    def _active(self, c, ev, ba, a):
        T = self.timing
        if not self.initialised:
            self._fail("init", c, f"{ev.text} before initialisation finished: it needs the "
                       f"PRECHARGE all, at least 2 AUTO REFRESH (seen {self._init_refreshes}) "
                       f"and a LOAD MODE ({'seen' if self.mode is not None else 'not seen'}) "
                       f"first")
        if a >= self.chip.rows:
            self._fail("address", c, f"{ev.text}: the chip has {self.chip.rows} rows")
        if self._open[ba] is not None:
            self._fail("bank_open", c, f"{ev.text} while bank {ba} has row "
                       f"0x{self._open[ba]:04x} open since the {self._act[ba]}: PRECHARGE "
                       f"it first")
        self._at_least("tRC", c, ev, self._act[ba], T.rc)
        self._at_least("tRP", c, ev, self._pre[ba], T.rp)
        if self._last_act is not None and self._last_act[0] != ba:
            self._at_least("tRRD", c, ev, self._last_act[1], T.rrd)
        self._open[ba] = a
        self._act[ba] = ev
        self._last_act = (ba, ev)
        self._update_deadline()

    def _read_write(self, c, ev, command, ba, a):
        T, BL = self.timing, self.burst_length
        if not self.initialised:
            self._fail("init", c, f"{ev.text} before initialisation finished")
        if a & A10_ALL_BANKS:
            self._fail("auto_precharge", c, f"{ev.text} with A10 high asks for auto "
                       f"precharge, which the controller must not use")
        if a & ~(self.chip.cols - 1) & ~A10_ALL_BANKS:
            self._fail("address", c, f"{ev.text} with A=0x{a:04x}: bits above the "
                       f"{self.chip.cols} columns are ignored by the chip, so an address bit "
                       f"was lost")
        row = self._open[ba]
        if row is None:
            last = self._pre[ba]
            self._fail("bank_not_open", c, f"{ev.text}: bank {ba} is idle"
                       + (f" since the {last}" if last is not None else "")
                       + "; it needs an ACTIVE first")
        self._at_least("tRCD", c, ev, self._act[ba], T.rcd)
        self._not_in_burst(c, ev, None)
        col = a & (self.chip.cols - 1)
        base, off = col & ~(BL - 1), col & (BL - 1)
        beats = [(ba, row, base | ((off + k) & (BL - 1)), ev, k) for k in range(BL)]
        self._burst = (c + BL, ba, ev)
        if command is _C.WRITE:
            for k, beat in enumerate(beats):
                self._write_beats[c + k] = beat
            self._wbeat[ba] = (c + BL - 1, ev)
        else:
            first = c + T.cas_latency
            for k, beat in enumerate(beats):
                self._read_beats[first + k] = beat
                self._dqm_low[first + k - 2] = ev
            # the beats' edges and the turnaround edge after them
            for e in range(first, first + BL + 1):
                self._chip_drives[e] = ev

    def _precharge(self, c, ev, ba, a):
        T = self.timing
        banks = range(self.chip.banks) if a & A10_ALL_BANKS else (ba,)
        self._not_in_burst(c, ev, banks)
        for b in banks:
            if self._open[b] is not None:
                self._at_least("tRAS", c, ev, self._act[b], T.ras)
                if self._wbeat[b] is not None:
                    edge, wev = self._wbeat[b]
                    if c - edge < T.wr:
                        self._fail("tWR", c,
                                   f"{ev.text} is {c - edge} cycles after the last data beat "
                                   f"at cycle {edge} of the {wev}; tWR needs at least "
                                   f"{T.wr} cycles ({self.chip.t_wr:g} ns)")
        for b in banks:
            self._open[b] = None
            self._pre[b] = ev
            self._wbeat[b] = None
        self._precharged = True
        self._update_deadline()

    def _all_idle(self, c, ev):
        for b, row in enumerate(self._open):
            if row is not None:
                self._fail("bank_open", c, f"{ev.text} needs every bank idle, but bank {b} has "
                           f"row 0x{row:04x} open since the {self._act[b]}")
        for b in range(self.chip.banks):
            self._at_least("tRP", c, ev, self._pre[b], self.timing.rp)

    def _not_in_burst(self, c, ev, banks):
        if self._burst is None:
            return
        end, bank, bev = self._burst
        if c >= end:
            self._burst = None
            return
        if banks is not None and bank not in banks:
            return
        self._fail("burst_interrupted", c,
                   f"{ev.text} interrupts the {bev}, whose {self.burst_length} beats run "
                   f"until cycle {end - 1}: it is {c - bev.cycle} cycles after it, needs at "
                   f"least {self.burst_length} (the controller never interrupts a burst)")

    def _check_mode(self, c, ev, ba, a):
        problems = []
        bl = {0: 1, 1: 2, 2: 4, 3: 8, 7: "full page"}.get(a & 0b111, "reserved")
        if bl != self.burst_length:
            problems.append(f"burst length {bl} (A[2:0]={a & 0b111}), needs "
                            f"{self.burst_length}")
        if a & 0b1000:
            problems.append("interleaved bursts (A3=1), needs sequential")
        cl = (a >> 4) & 0b111
        if cl != self.timing.cas_latency:
            problems.append(f"CAS latency {cl} (A[6:4]), needs {self.timing.cas_latency}")
        if (a >> 7) & 0b11:
            problems.append(f"operating mode {(a >> 7) & 0b11} (A[8:7]), needs 0 (standard)")
        if a & (1 << 9):
            problems.append("single-location writes (A9=1), needs burst writes")
        if a >> 10:
            problems.append(f"reserved A[12:10]={a >> 10}, needs 0")
        if ba:
            problems.append(f"BA={ba}, needs 0")
        if problems:
            self._fail("mode", c, f"{ev.text} programs " + "; ".join(problems)
                       + f": the controller must load 0x{self.expected_mode:03x} (burst length "
                       f"{self.burst_length}, sequential, CAS latency "
                       f"{self.timing.cas_latency}, standard operation, burst writes)")

    def _maybe_initialised(self, ev):
        if not self.initialised and self._init_refreshes >= 2 and self.mode is not None:
            self.initialised = True
            self._refresh_anchor = _Event(ev.cycle, f"end of initialisation ({ev.text})")
            self._update_deadline()

    # -- deadlines (refresh, tRAS max) ---------------------------------------------------

    def _update_deadline(self):
        d = _FAR
        if self.strict_refresh and self._refresh_anchor is not None:
            d = self._refresh_anchor.cycle + self.timing.refi
        for b, row in enumerate(self._open):
            if row is not None:
                d = min(d, self._act[b].cycle + self.timing.ras_max)
        self._deadline = d

    def _deadline_passed(self, c):
        T = self.timing
        anchor = self._refresh_anchor
        if self.strict_refresh and anchor is not None and c > anchor.cycle + T.refi:
            self._fail("refresh", c,
                       f"no AUTO REFRESH for {c - anchor.cycle} cycles since the {anchor}; "
                       f"the {self.chip.name} needs one at least every {T.refi} cycles "
                       f"(tREFI {self.chip.t_refi:g} ns)")
        for b, row in enumerate(self._open):
            if row is not None and c > self._act[b].cycle + T.ras_max:
                self._fail("tRAS_max", c,
                           f"bank {b} has row 0x{row:04x} open for {c - self._act[b].cycle} "
                           f"cycles since the {self._act[b]}; tRAS max allows at most "
                           f"{T.ras_max} cycles ({self.chip.t_ras_max:g} ns)")

    # -- reporting ---------------------------------------------------------------------

    def _at_least(self, rule, c, ev, earlier, need):
        if earlier is not None and c - earlier.cycle < need:
            ns = _NS.get(rule)
            why = f" ({getattr(self.chip, ns):g} ns)" if ns else ""
            self._fail(rule, c, f"{ev.text} is {c - earlier.cycle} cycles after the "
                       f"{earlier}; {rule} needs at least {need} cycles{why}")

    def _fail(self, rule, c, text):
        T = self.timing
        recent = "\n".join(f"  {line}" for line in self.log) or "  (none)"
        raise SdramViolation(rule, c, (
            f"SDRAM rule {rule} broken at cycle {c} ({self.chip.name} at "
            f"{T.clock_hz / 1e6:g} MHz, CL{T.cas_latency}): {text}\n"
            f"last commands:\n{recent}"))


def _sample(handle):
    try:
        return int(handle.value)
    except ValueError:
        return None


class SdramChipBus:
    """Connects an :class:`SdramChipModel` to a design's SDRAM pins in cocotb.

    ``dut`` must have ``<prefix>cke``, ``cs_n``, ``ras_n``, ``cas_n``,
    ``we_n``, ``ba``, ``a``, ``dqm``, ``dq_o``, ``dq_oe`` (outputs) and
    ``dq_i`` (input).  While the chip does not drive DQ, ``dq_i`` carries
    ``undriven``, so a controller sampling at the wrong edge reads a value that
    is no data.  See the module docstring for which edge sees what.
    """

    def __init__(self, dut, model: SdramChipModel, prefix: str = "sdram__", clock=None,
                 undriven: int = 0xDEAD):
        self.dut = dut
        self.model = model
        self.clock = dut.clk if clock is None else clock
        self.undriven = undriven
        self.violation: SdramViolation | None = None
        self._pins = [getattr(dut, prefix + n) for n in
                      ("cke", "cs_n", "ras_n", "cas_n", "we_n", "ba", "a", "dqm", "dq_o",
                       "dq_oe")]
        self._dq_i = getattr(dut, prefix + "dq_i")
        self._task = None

    def start(self):
        """Run the chip from the next falling edge on; returns the cocotb Task."""
        if self._task is not None:
            raise RuntimeError("SdramChipBus already started")
        self._task = cocotb.start_soon(self._run())
        return self._task

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def check(self) -> None:
        """Raise the violation the bus saw, if any."""
        if self.violation is not None:
            raise self.violation

    async def _run(self):
        model, dq_i, clock = self.model, self._dq_i, self.clock
        cke, cs_n, ras_n, cas_n, we_n, ba, a, dqm, dq_o, dq_oe = self._pins
        dq_i.value = self.undriven
        nxt = None
        while True:
            await FallingEdge(clock)
            dq_i.value = self.undriven if nxt is None else nxt
            await ReadOnly()
            bits = [_sample(p) for p in (cs_n, ras_n, cas_n, we_n)]
            cmd = None if None in bits else bits[0] << 3 | bits[1] << 2 | bits[2] << 1 | bits[3]
            try:
                nxt = model.step(cmd, _sample(ba), _sample(a), _sample(dqm), _sample(dq_o),
                                 _sample(dq_oe), _sample(cke))
            except SdramViolation as e:
                e.add_note(f"(simulation time {get_sim_time('ns'):g} ns, the rising edge "
                           f"after it is the model's cycle {e.cycle})")
                self.violation = e
                raise
