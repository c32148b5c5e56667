"""SDR SDRAM controller: whole 128-bit bursts with bank look-ahead.

:class:`SdramController` drives one 16-bit SDR SDRAM (the ULX3S's 32 MB part)
with bursts of 8 beats, so one request moves one 128-bit word.  Its cycle-exact
twin is :class:`hetaccel.sim.sdram_model.SdramModel`; the contract (chips,
timings in cycles, command encoding, address mapping) is
:mod:`hetaccel.spec.sdram`.

Ports
-----
``cmd`` : In(stream of ``{"addr": burst address, "write": 1}``)
    ``addr`` counts 128-bit words (16-bit word address // 8).  Verilog:
    ``cmd__payload`` (addr in the low bits, write above), ``cmd__valid``,
    ``cmd__ready``.  A write is taken together with its data: ``cmd.ready``
    of a write waits for ``wdata.valid`` and ``wdata.ready`` is high exactly
    when a write command is taken.
``wdata`` : In(stream of 128 bits)
    The 8 beats of one write burst, beat 0 in bits 0..15.
``rdata`` : Out(stream of 128 bits)
    Read words in request order.  Back-pressure is free: a READ issues only
    when the output FIFO (``rdata_depth`` words) has room for its word, so
    nothing is ever dropped.
``sdram`` : Out(:data:`SdramPins`)
    The chip's pins, every output straight from a register.
``init_done`` : Out(1)
    The power-up sequence is over (from the cycle the LOAD MODE REGISTER
    command is on the pins).
``ready`` : Out(1)
    ``init_done`` and nothing in flight: every accepted request has finished
    (read words taken from ``rdata``, write data on the pins).
``busy_cycles``, ``bus_cycles``, ``refreshes``, ``row_misses`` : Out(32)
    Cycles with a request in flight; cycles the DQ bus carries a beat (each
    burst is 8); AUTO REFRESH commands since ``init_done``; PRECHARGEs of a
    bank open to another row than a request needs.  Wrap at 2**32.

Schedule
--------
One request at a time is the *head*: the controller gives it, in this order
and each as soon as every timing allows, PRECHARGE (its bank is open to
another row), ACTIVE (its bank is closed) and READ/WRITE.  The head is loaded
when the previous head's READ/WRITE issues, so a request's bank is prepared
while the previous burst still transfers: a sequential stream crosses bank and
row boundaries without a gap, and only a row change in the bank just used
costs a few cycles.  Rows stay open (open-row policy; the table of open rows
is per bank).  Every ``refresh_interval`` cycles after an AUTO REFRESH the
next one is due: the controller stops giving the head commands, precharges
all banks as soon as their bursts allow, refreshes and resumes ``rfc`` cycles
later; the interval leaves room for the longest wait, so AUTO REFRESH commands
are never more than ``refi`` cycles apart.

Data-bus rules on top of the chip's timings (``BL`` = 8): READ->READ and
WRITE->WRITE ``BL``; WRITE->READ ``BL`` (a READ would cut the write burst);
READ->WRITE ``CL + BL + 1`` (the chip's last beat plus one idle cycle before
the controller drives DQ); a PRECHARGE waits ``BL`` after a READ to its bank
and ``BL - 1 + wr`` after a WRITE.

Read data: beat ``k`` of a READ on the pins in cycle ``c`` is captured from
``dq_i`` at the end of cycle ``c + CL + read_delay + k`` (``read_delay`` =
input registers a board adds between the pins and ``dq_i``); the word is
offered on ``rdata`` in cycle ``c + CL + read_delay + 8``.

Internals kept shallow for 100 MHz: every timing constraint is a small down
counter with a registered "elapsed" flag, and the head's row hit/miss is
decided when it is loaded (from the request register in front of it), so the
per-cycle choice is a 4:1 select of flags and an AND.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec.sdram import (A10_ALL_BANKS, MODE_BURST_LENGTH, SdramChip, SdramCommand,
                          SdramTiming, check_controller, mode_register)

__all__ = ["SdramController", "SdramPins"]

#: The pins of one 16-bit SDR SDRAM as the controller drives them.
SdramPins = wiring.Signature({
    "cke": Out(1, init=1),
    "cs_n": Out(1, init=1),
    "ras_n": Out(1, init=1),
    "cas_n": Out(1, init=1),
    "we_n": Out(1, init=1),
    "ba": Out(2),
    "a": Out(13),
    "dqm": Out(2, init=3),
    "dq_o": Out(16),
    "dq_oe": Out(1),
    "dq_i": In(16),
})

# head states
_NEED_ACT, _NEED_PRE, _READY = 0, 1, 2
# controller states
_POWERUP, _INIT_REF1, _INIT_REF2, _INIT_MODE, _RUN, _REFRESH = range(6)


class _Timer:
    """"At least ``n`` cycles after a command": a down counter and its
    registered ``ok`` flag.  ``load(cond, n)`` in decision cycle ``t`` makes
    ``ok`` low from ``t + 1`` to ``t + n - 1`` and high again from ``t + n``.
    A load replaces whatever was pending; the bus rules order the commands so
    that no load of a timer ends before the one it replaces."""

    def __init__(self, m, longest: int, name: str, start: int = 0):
        self.m = m
        self.cnt = Signal(range(max(longest, start, 2)), name=f"{name}_cnt",
                          init=max(start - 1, 0))
        self.ok = Signal(name=f"{name}_ok", init=int(start <= 1))
        self.loads = []

    def load(self, cond, n: int):
        self.loads.append((cond, n))

    def build(self):
        m = self.m
        with m.If(self.cnt != 0):
            m.d.sync += self.cnt.eq(self.cnt - 1)
        m.d.sync += self.ok.eq(self.cnt <= 1)
        for cond, n in self.loads:
            with m.If(cond):
                m.d.sync += [self.cnt.eq(max(n - 1, 0)), self.ok.eq(n <= 1)]


class SdramController(wiring.Component):
    """Burst-of-8 SDR SDRAM controller (see the module docstring).

    Parameters
    ----------
    timing : SdramTiming
        Cycle counts, e.g. ``worst_case(ULX3S_CHIPS, 100e6)``.
    chip : SdramChip
        Geometry (16-bit parts only).
    read_delay : int
        Input registers between the DQ pins and ``dq_i`` on the board (0 when
        a chip model drives ``dq_i`` directly).
    rdata_depth : int
        Words the read FIFO holds (a power of two, at least 2): the READs that
        may be outstanding while ``rdata`` stalls.

    Attributes
    ----------
    addr_bits : int
        Width of ``cmd.payload.addr``.
    params : dict
        :func:`schedule_parameters` of ``timing``.
    """

    def __init__(self, timing: SdramTiming, chip: SdramChip, *, read_delay: int = 0,
                 rdata_depth: int = 4):
        params = check_controller(chip, timing, read_delay, rdata_depth)
        self.timing, self.chip = timing, chip
        self.read_delay, self.rdata_depth = read_delay, rdata_depth
        self.params = params
        self.addr_bits = (chip.words // MODE_BURST_LENGTH - 1).bit_length()
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({"addr": self.addr_bits, "write": 1}))),
            "wdata": In(stream.Signature(128)),
            "rdata": Out(stream.Signature(128)),
            "sdram": Out(SdramPins),
            "init_done": Out(1),
            "ready": Out(1),
            "busy_cycles": Out(32),
            "bus_cycles": Out(32),
            "refreshes": Out(32),
            "row_misses": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        t, chip, p = self.timing, self.chip, self.params
        bl, cl = MODE_BURST_LENGTH, t.cas_latency
        nbanks = chip.banks
        col_bits = (chip.cols // bl - 1).bit_length()      # burst index within a row
        bank_bits = (nbanks - 1).bit_length()
        row_bits = (chip.rows - 1).bit_length()
        pins = self.sdram

        # --- command and address pins (registers) --------------------------
        cmd = Signal(4, init=SdramCommand.INHIBIT)
        m.d.comb += [pins.cs_n.eq(cmd[3]), pins.ras_n.eq(cmd[2]), pins.cas_n.eq(cmd[1]),
                     pins.we_n.eq(cmd[0])]
        m.d.sync += [pins.cke.eq(1), cmd.eq(SdramCommand.NOP)]

        state = Signal(range(6), init=_POWERUP)
        init_done = Signal()
        m.d.comb += self.init_done.eq(init_done)

        # --- timers ---------------------------------------------------------
        timers = []

        def timer(longest, name, start=0):
            tm = _Timer(m, longest, name, start)
            timers.append(tm)
            return tm

        # power-up: strictly more than power_up cycles with cke high and NOPs
        pu = timer(t.power_up + 2, "powerup", start=t.power_up + 2)
        gap = timer(max(t.rp, t.rfc, t.mrd), "gap")
        ref_t = timer(p["refresh_interval"], "refresh")
        rrd = timer(t.rrd, "rrd")
        rdbus = timer(p["read_to_read"], "rdbus")
        wrbus = timer(p["read_to_write"], "wrbus")
        rcd = [timer(t.rcd, f"rcd{b}") for b in range(nbanks)]
        ras = [timer(t.ras, f"ras{b}") for b in range(nbanks)]
        rc = [timer(t.rc, f"rc{b}") for b in range(nbanks)]
        rp = [timer(t.rp, f"rp{b}") for b in range(nbanks)]
        dat = [timer(max(p["read_to_precharge"], p["write_to_precharge"]), f"dat{b}")
               for b in range(nbanks)]

        # --- open-row table ---------------------------------------------------
        bank_open = Signal(nbanks)
        rows = Array(Signal(row_bits, name=f"row{b}") for b in range(nbanks))

        # --- request register in front of the head ----------------------------
        in_valid = Signal()
        in_write = Signal()
        in_col = Signal(col_bits)
        in_bank = Signal(bank_bits)
        in_row = Signal(row_bits)
        in_data = Signal(128)
        cmd_addr = self.cmd.payload.addr
        m.d.comb += [
            self.cmd.ready.eq(~in_valid & (~self.cmd.payload.write | self.wdata.valid)),
            self.wdata.ready.eq(~in_valid & self.cmd.valid & self.cmd.payload.write),
        ]
        accept = Signal()
        m.d.comb += accept.eq(self.cmd.valid & self.cmd.ready)
        with m.If(accept):
            m.d.sync += [
                in_write.eq(self.cmd.payload.write),
                in_col.eq(cmd_addr[:col_bits]),
                in_bank.eq(cmd_addr[col_bits:col_bits + bank_bits]),
                in_row.eq(cmd_addr[col_bits + bank_bits:]),
                in_data.eq(self.wdata.payload),
            ]

        # --- the head ---------------------------------------------------------
        head_valid = Signal()
        head_write = Signal()
        head_col = Signal(col_bits)
        head_bank = Signal(bank_bits)
        head_row = Signal(row_bits)
        head_data = Signal(128)
        hstate = Signal(2)

        credits = Signal(range(self.rdata_depth + 1), init=self.rdata_depth)
        credit_ok = Signal()
        m.d.comb += credit_ok.eq(credits != 0)

        hb = head_bank

        def sel(ts):
            return Array(x.ok for x in ts)[hb]

        run = Signal()
        due = ref_t.ok
        m.d.comb += run.eq((state == _RUN) & gap.ok)
        rw_go, pre_go, act_go, prea_go, ref_go = (Signal(name=n) for n in
                                                  ("rw_go", "pre_go", "act_go", "prea_go",
                                                   "ref_go"))
        all_pre_ok = Cat(*(ras[b].ok & dat[b].ok for b in range(nbanks))).all()
        all_act_ok = Cat(*(rc[b].ok & rp[b].ok for b in range(nbanks))).all()
        m.d.comb += [
            rw_go.eq(run & ~due & head_valid & (hstate == _READY) & sel(rcd) &
                     Mux(head_write, wrbus.ok, rdbus.ok & credit_ok)),
            pre_go.eq(run & ~due & head_valid & (hstate == _NEED_PRE) & sel(ras) & sel(dat)),
            act_go.eq(run & ~due & head_valid & (hstate == _NEED_ACT) & sel(rc) & sel(rp) &
                      rrd.ok),
            prea_go.eq(run & due & all_pre_ok),
            ref_go.eq((state == _REFRESH) & all_act_ok),
        ]

        # head loading: the row hit/miss comes from the table now, except that
        # a PRECHARGE all in this very cycle closes every bank
        load_head = Signal()
        m.d.comb += load_head.eq(in_valid & (~head_valid | rw_go))
        in_open = Signal()
        m.d.comb += in_open.eq(bank_open.bit_select(in_bank, 1))
        in_state = Signal(2)
        with m.If(prea_go | ~in_open):
            m.d.comb += in_state.eq(_NEED_ACT)
        with m.Elif(rows[in_bank] == in_row):
            m.d.comb += in_state.eq(_READY)
        with m.Else():
            m.d.comb += in_state.eq(_NEED_PRE)

        with m.If(accept):
            m.d.sync += in_valid.eq(1)
        with m.Elif(load_head):
            m.d.sync += in_valid.eq(0)
        with m.If(load_head):
            m.d.sync += [head_valid.eq(1), head_write.eq(in_write), head_col.eq(in_col),
                         head_bank.eq(in_bank), head_row.eq(in_row), head_data.eq(in_data),
                         hstate.eq(in_state)]
        with m.Else():
            with m.If(rw_go):
                m.d.sync += head_valid.eq(0)
            with m.If(pre_go | prea_go):
                m.d.sync += hstate.eq(_NEED_ACT)
            with m.If(act_go):
                m.d.sync += hstate.eq(_READY)

        # --- commands -------------------------------------------------------
        col_addr = Cat(Const(0, 3), head_col)
        with m.Switch(state):
            with m.Case(_POWERUP):
                with m.If(pu.ok):
                    m.d.sync += [cmd.eq(SdramCommand.PRECHARGE), pins.a.eq(A10_ALL_BANKS),
                                 state.eq(_INIT_REF1)]
            with m.Case(_INIT_REF1, _INIT_REF2):
                with m.If(gap.ok):
                    m.d.sync += [cmd.eq(SdramCommand.AUTO_REFRESH), state.eq(state + 1)]
            with m.Case(_INIT_MODE):
                with m.If(gap.ok):
                    m.d.sync += [cmd.eq(SdramCommand.LOAD_MODE), pins.ba.eq(0),
                                 pins.a.eq(mode_register(cl, bl)), state.eq(_RUN),
                                 init_done.eq(1), pins.dqm.eq(0)]
            with m.Case(_RUN):
                with m.If(rw_go):
                    m.d.sync += [cmd.eq(Mux(head_write, SdramCommand.WRITE, SdramCommand.READ)),
                                 pins.ba.eq(hb), pins.a.eq(col_addr)]
                with m.If(pre_go):
                    m.d.sync += [cmd.eq(SdramCommand.PRECHARGE), pins.ba.eq(hb), pins.a.eq(0)]
                with m.If(act_go):
                    m.d.sync += [cmd.eq(SdramCommand.ACTIVE), pins.ba.eq(hb),
                                 pins.a.eq(head_row)]
                with m.If(prea_go):
                    m.d.sync += [cmd.eq(SdramCommand.PRECHARGE), pins.a.eq(A10_ALL_BANKS),
                                 state.eq(_REFRESH)]
            with m.Case(_REFRESH):
                with m.If(ref_go):
                    m.d.sync += [cmd.eq(SdramCommand.AUTO_REFRESH), state.eq(_RUN)]

        init_pre = (state == _POWERUP) & pu.ok
        init_ref = ((state == _INIT_REF1) | (state == _INIT_REF2)) & gap.ok
        mode_go = (state == _INIT_MODE) & gap.ok
        gap.load(init_pre, t.rp)
        gap.load(init_ref | ref_go, t.rfc)
        gap.load(mode_go, t.mrd)
        ref_t.load(init_ref | ref_go, p["refresh_interval"])
        rrd.load(act_go, t.rrd)
        rdbus.load(rw_go, p["read_to_read"])
        wrbus.load(rw_go & ~head_write, p["read_to_write"])
        wrbus.load(rw_go & head_write, p["write_to_write"])
        for b in range(nbanks):
            here = hb == b
            for tm, n in ((rcd[b], t.rcd), (ras[b], t.ras), (rc[b], t.rc)):
                tm.load(act_go & here, n)
            rp[b].load((pre_go & here) | prea_go, t.rp)
            dat[b].load(rw_go & here & ~head_write, p["read_to_precharge"])
            dat[b].load(rw_go & here & head_write, p["write_to_precharge"])
        for tm in timers:
            tm.build()

        with m.If(act_go):
            m.d.sync += [bank_open.bit_select(hb, 1).eq(1), rows[hb].eq(head_row)]
        with m.If(pre_go):
            m.d.sync += bank_open.bit_select(hb, 1).eq(0)
        with m.If(prea_go):
            m.d.sync += bank_open.eq(0)

        # --- write data -------------------------------------------------------
        wbuf = Signal(128 - 16)
        wcnt = Signal(3)
        with m.If(rw_go & head_write):
            m.d.sync += [pins.dq_o.eq(head_data[:16]), wbuf.eq(head_data[16:]), wcnt.eq(7),
                         pins.dq_oe.eq(1)]
        with m.Elif(wcnt != 0):
            m.d.sync += [pins.dq_o.eq(wbuf[:16]), wbuf.eq(wbuf[16:]), wcnt.eq(wcnt - 1)]
        with m.Else():
            m.d.sync += pins.dq_oe.eq(0)

        # --- read data --------------------------------------------------------
        # rdp[i] is high i + 1 cycles after a READ decision; beat k is on dq_i
        # cl + read_delay + k cycles after the READ is on the pins
        first = cl + self.read_delay
        rdp = Signal(first + bl)
        m.d.sync += rdp.eq(Cat(rw_go & ~head_write, rdp[:-1]))
        cap = Signal()                         # registered: a beat is on dq_i now
        m.d.sync += cap.eq(rdp[first - 1:first + bl - 1].any())
        rbuf = Signal(128 - 16)
        with m.If(cap):
            m.d.sync += rbuf.eq(Cat(rbuf[16:], pins.dq_i))

        depth = self.rdata_depth
        fifo = Memory(shape=128, depth=depth, init=[])
        m.submodules.rfifo = fifo
        wp = fifo.write_port()
        rport = fifo.read_port(domain="comb")
        wptr = Signal(range(depth))
        rptr = Signal(range(depth))
        level = Signal(range(depth + 1))
        push = Signal()
        pop = Signal()
        m.d.comb += [
            push.eq(rdp[-1]),
            wp.addr.eq(wptr), wp.data.eq(Cat(rbuf, pins.dq_i)), wp.en.eq(push),
            rport.addr.eq(rptr),
            self.rdata.payload.eq(rport.data),
            self.rdata.valid.eq(level != 0),
            pop.eq(self.rdata.valid & self.rdata.ready),
        ]
        with m.If(push):
            m.d.sync += wptr.eq(wptr + 1)
        with m.If(pop):
            m.d.sync += rptr.eq(rptr + 1)
        m.d.sync += level.eq(level + push - pop)
        m.d.sync += credits.eq(credits + pop - (rw_go & ~head_write))

        # --- counters ---------------------------------------------------------
        busy = Signal()
        m.d.comb += busy.eq(in_valid | head_valid | rdp.any() | (level != 0) | pins.dq_oe)
        m.d.comb += self.ready.eq(init_done & ~busy)
        with m.If(busy):
            m.d.sync += self.busy_cycles.eq(self.busy_cycles + 1)
        with m.If(cap | pins.dq_oe):
            m.d.sync += self.bus_cycles.eq(self.bus_cycles + 1)
        with m.If(ref_go):
            m.d.sync += self.refreshes.eq(self.refreshes + 1)
        with m.If(pre_go):
            m.d.sync += self.row_misses.eq(self.row_misses + 1)
        return m
