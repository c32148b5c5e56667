"""Command processor: decodes link frames, owns the scratchpads, runs the units.

:class:`CommandProcessor` sits behind :class:`hetaccel.rtl.link.HostLink`.  It
takes one checked frame at a time from the link's ``frame`` stream, validates
it exactly as :func:`hetaccel.spec.check_instruction` specifies (the fuzz
tests hold both to identical replies), executes it and answers on
``reply`` / ``reply_data``.  Instruction layouts, memory word formats and the
register map are all generated from :mod:`hetaccel.spec` (docs/isa.md).

Structure
---------
*Front end* (one FSM, ``decoder_idle`` high in its idle state): fetches the
fixed fields, checks opcode / length / space / ranges / registers, then

- WRITE_MEM streams the payload into the scratchpad one byte per cycle,
  READ_MEM streams words out, WRITE_REG / READ_REG walk their records,
  NOP answers the ID and VERSION registers, SYNC waits for an empty queue;
- GEMM / ACTIVATE / ADAM are pushed into the *command queue*
  (``config.cmd_queue_depth`` entries) and answered OK at once.

*Executor*: runs the oldest queued instruction (strictly in order) while the
front end keeps taking frames, so loads and stores overlap compute.  A GEMM
streams ``m`` INPUT rows into the :class:`~hetaccel.rtl.engine.MatmulEngine`;
a separate *weight feeder* streams each queued GEMM's weight tile ahead (the
engine double-buffers it), so consecutive GEMMs run back to back.  ACTIVATE
waits for the engine to be idle (all GEMM results landed), streams ACC rows
through the :class:`~hetaccel.rtl.activation.ActivationUnit` into OUTPUT;
ADAM streams OPT words through the :class:`~hetaccel.rtl.adam.AdamUnit` and
writes param, m and v back (grad is kept).  An entry leaves the queue when its
last result is written (a GEMM: when its last row was read from INPUT; until
the engine takes that row, ``acts.valid`` counts as the engine being busy and
the WEIGHT scratchpad waits; reads of the ACC also wait for ``engine.idle``).

*Hazards* (checked in hardware before a load/store touches a scratchpad): a
front-end access waits while a queued or running instruction

- GEMM: reads INPUT/WEIGHT rows it writes, or writes ACC rows it reads; any
  READ_MEM of INPUT/WEIGHT and any WRITE_MEM of ACC also waits (shared ports);
- ACTIVATE: any access to ACC, TABLE, ACT_PARAM or a write to OUTPUT, and a
  read of OUTPUT rows it writes;
- ADAM: any access to OPT;

and every ACC access waits for ``engine.idle``.  WRITE_REG waits for an empty
queue (the Adam hyperparameters stay stable during a pass); SYNC replies once
the queue is empty and the engine idle.

Counters (``hetaccel.spec.COUNTERS``) count here, in a :class:`CounterBank`
(one block RAM swept one counter per cycle, small pending registers taking the
events); a READ_REG of a counter waits for the sweep (at most one cycle per
counter).  ``rx_byte`` is the Device's rx handshake.

Timing and area
---------------
The decoder spends cycles rather than logic: every transition and register
enable depends on a few flip-flops (the iCE40 leaves about four LUT levels per
cycle at 50 MHz).  The static checks are computed from the header and
registered (states PRE and PRE2: the range checks are two stages, sum then
compare, with each range term a flip-flop of its own); CHECK registers the
verdict (an error status and the next state as a code), DISPATCH acts on it;
parts of the verdict that are known early (opcode, length, space) are combined
in PRE2 already.  Fields are decoded as their bytes arrive on the payload
port rather than from the shift register afterwards: the space of WRITE_MEM /
READ_MEM (one flip-flop per space) and each register record's address (one
flip-flop per register); the length's compares are flip-flops of their own.
The states with several ways out (DISPATCH, SEND, REPLY, REC_DONE) decide on a
next-state code kept in a flip-flop, computed while its inputs are stable;
REPLY and SEND also decide on flags kept beside the byte counts (bleft == 0)
and on the opcode decoded into flip-flops (op_is); MEM_CHECK on one flip-flop
(range and remainder); SYNC on a registered "queue empty, engine idle".
Registers that the next step needs are loaded in every cycle of a state whose
inputs are stable (HAZARD, REC_DONE), so their enables are state bits.  The
range checks compare a short sum with the depth instead of full-width
addresses; WRITE_MEM's word count is a shift and a mask (power-of-two word
sizes) or a repeated subtraction; register lookups and payload-pointer
comparisons are registered, the pointer moves by a precomputed p + rec_len;
the hazard check runs in two registered stages, with each queue entry's
verdict one LUT of registered flags and a registered overlap compare; memory
addresses come from pointers, never from base + index sums; read requests,
WRITE_MEM writes, the payload address and the reply bytes all leave from
flip-flops (reply bytes at one per two cycles).  One shift register holds the
fixed fields, then the WRITE_MEM word being assembled or the reply word being
sent; its loads are one strobe each, flip-flops set a cycle ahead, merged as a
parallel AND-OR; a READ_MEM word reaches it through a register (rd_word,
state RM_LOAD), and an accumulator word is awaited on a flip-flop (acc_done).
Scratchpad read ports are an asynchronous port plus a register
(:class:`~hetaccel.rtl.bram.RegisteredReadPort`), which Yosys folds into the
block RAM and then honours ``no_rw_check`` (no read-first emulation logic on
the read data).  The engine's ``acts.ready`` reaches only
the acts register, the INPUT read enable and the issue pointers (a GEMM
retires when its last row is issued); each row loaded there is announced to
the engine (``acts_next``), which decides its hazard stall a cycle ahead.  The
decoder is synthesised one-hot (see :func:`one_hot`); the
frame's opcode and length are copied into registers before they are decoded.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import (ACT_PRECISION_MASK, ACT_TABLE_SHIFT, ACTIVATION_FORMAT, ADAM_HYPERPARAMETERS,
                    COUNTERS, GEMM_ACCUMULATE, INSTRUCTIONS, MEMORY_COUNTERS, AcceleratorConfig,
                    ActivationFunction, MemSpace, Opcode, Status, dma_spaces, identity_words,
                    mem_depth, mem_present, mem_readable, mem_word, opcode_present, register_map)
from .activation import ActivationUnit
from .adam import AdamUnit
from .bram import RegisteredReadPort
from .contract import check_generated
from .dma import LINE_BITS, DmaEngine
from .engine import MatmulEngine
from .link import FRAME_INFO, REPLY_HEADER

__all__ = ["CommandProcessor"]

# Queue entry operation codes.
_OP_GEMM, _OP_ACT, _OP_ADAM, _OP_DMA = 0, 1, 2, 3
#: Bytes of the fixed-field prefix fetched for every frame (the longest layout).
_HDR_BYTES = max(f.fixed_bytes for f in INSTRUCTIONS.values())
#: Bytes of a WRITE_REG and of a READ_REG record.
_REC_W = INSTRUCTIONS[Opcode.WRITE_REG].fixed_bytes
_REC_R = INSTRUCTIONS[Opcode.READ_REG].fixed_bytes


def one_hot(fsm) -> None:
    """Have synthesis encode ``fsm`` (an Amaranth ``m.FSM``, after its block) one-hot.

    Yosys re-encodes an FSM only if its state register has no initial value
    (every Amaranth register has one) or carries ``fsm_encoding``.  One-hot,
    a state test is a flip-flop rather than a compare of the state code
    (two LUT levels on the iCE40 beyond 16 states, in front of every enable
    the FSM drives).  Only synthesis sees it: simulation and the formal
    checks (Yosys ``prep``, no FSM pass) keep the binary code.  The encoding's
    unused codes are unreachable from reset, which the boards assert at power-up.
    """
    fsm.state.attrs["fsm_encoding"] = "one-hot"


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _times(value, const: int):
    """``value * const`` as a sum of shifted copies (one per set bit of
    ``const``): never a multiplier cell, which synthesis may put on a DSP
    block (an ECP5 MULT18X18D for 52-byte ACC words)."""
    if const < 1:
        raise ValueError(f"const must be >= 1, not {const!r}")
    terms = [value << i for i in range(const.bit_length()) if const >> i & 1]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _or_all(values, width: int):
    """The OR of ``values`` (0 when there are none), ``width`` bits."""
    out = Const(0, width)
    for v in values:
        out = out | v
    return out


def _sext(value, width: int, to: int):
    value = value[:width]
    if to <= width:
        return value[:to]
    return Cat(value, value[width - 1].replicate(to - width))


class CounterBank(wiring.Component):
    """``n`` 32-bit event counters kept in one block RAM.

    Each counter ``i`` owns a small *pending* register that takes its
    increments (``add[i]`` per cycle, at most ``max_add[i]``).  A sweep pointer
    visits one counter per cycle: in one cycle it reads the RAM word and takes
    the pending count (the pending register restarts from that cycle's
    increment), in the next the word is registered, in the one after it
    writes back word + pending, so no event is lost and a counter costs a few
    flip-flops instead of 32 flip-flops, a 32-bit incrementer and a 32-bit
    read multiplexer.  (The register between the block RAM's output and the
    adder: both in one cycle were the iCE40's critical path.)  The sweep never
    stops, so pending stays below ``n * max_add[i]``.

    ``value`` is the exact count of counter ``index`` before the cycle three
    cycles ago, or 0 if that cycle or the next cleared the counters (both
    registered);
    ``index`` steps through all counters, so a reader waits at most ``n``
    cycles for ``index == wanted``; ``next_index`` is ``index`` after the
    next clock edge (a flip-flop: a reader can register its match).

    ``clear`` zeroes every counter at once: pending registers restart and each
    RAM word is taken as 0 until the sweep has rewritten it (so reset needs no
    RAM initialisation either).

    Parameters
    ----------
    max_add : list of int
        Largest increment of each counter in one cycle (>= 1); at least
        three counters (a word is written back two cycles after it is read,
        before the sweep reads it again).
    """

    def __init__(self, max_add):
        max_add = list(max_add)
        if len(max_add) < 3 or any(not isinstance(a, int) or a < 1 for a in max_add):
            raise ValueError(f"max_add must list >= 3 positive ints, not {max_add!r}")
        self.max_add = max_add
        n = len(max_add)
        super().__init__({
            "add": In(data.ArrayLayout(max(a.bit_length() for a in max_add), n)),
            "clear": In(1),
            "index": Out(range(n)),
            "next_index": Out(range(n)),
            "value": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        n = len(self.max_add)
        m.submodules.mem = mem = memory.Memory(shape=32, depth=n, init=[])
        wp = mem.write_port()
        rp = mem.read_port(transparent_for=())
        pend = [Signal((n * a).bit_length(), name=f"pend{i}") for i, a in enumerate(self.max_add)]
        stale = Signal(n, init=(1 << n) - 1)     # RAM word counts as 0 (cleared)
        rd = Signal(range(n))                     # word being read
        rd1 = Signal(range(n))                    # word read last cycle (now registered)
        wr = Signal(range(n))                     # word being written (read two cycles ago)
        m.d.sync += [rd.eq(Mux(rd == n - 1, 0, rd + 1)), rd1.eq(rd), wr.eq(rd1)]
        m.d.comb += [rp.addr.eq(rd), rp.en.eq(1)]

        # taken with the read (registered: the adder starts from flip-flops)
        pend_cap = Signal(max(len(p) for p in pend))
        stale_cap = Signal(init=1)
        with m.Switch(rd):
            for i, pi in enumerate(pend):
                with m.Case(i):
                    m.d.sync += pend_cap.eq(Mux(self.clear, 0, pi))
        m.d.sync += stale_cap.eq(stale.bit_select(rd, 1) | self.clear)
        # the word registered, with the pending count and staleness (a clear
        # in this cycle makes the word about to be written count as 0 too)
        base = Signal(32, reset_less=True)
        pend_cap2 = Signal.like(pend_cap)
        stale_cap2 = Signal(init=1)
        m.d.sync += [base.eq(rp.data), pend_cap2.eq(Mux(self.clear, 0, pend_cap)),
                     stale_cap2.eq(stale_cap | self.clear)]
        # carry select: the pending count only reaches the low half, whose
        # carry picks the high half or its increment (two short chains); a
        # stale word counts as 0 (chosen after the adders)
        half = max(16, len(pend_cap) + 1)
        lo = Signal(half + 1)
        m.d.comb += lo.eq(base[:half] + pend_cap2)
        hi = Mux(lo[half], base[half:] + 1, base[half:])
        m.d.comb += [wp.addr.eq(wr), wp.en.eq(1),
                     wp.data.eq(Mux(stale_cap2, pend_cap2, Cat(lo[:half], hi)))]
        m.d.sync += [self.index.eq(wr), self.value.eq(wp.data)]
        m.d.comb += self.next_index.eq(wr)
        for i, pi in enumerate(pend):
            a = self.add[i][:len(pi)]
            with m.If(self.clear):
                m.d.sync += pi.eq(0)
            with m.Elif(rd == i):
                m.d.sync += pi.eq(a)
            with m.Else():
                m.d.sync += pi.eq(pi + a)
        with m.If(self.clear):
            m.d.sync += stale.eq((1 << n) - 1)
        with m.Else():
            m.d.sync += stale.bit_select(wr, 1).eq(0)
        return m


def memory_members(config: AcceleratorConfig) -> dict:
    """The device-memory ports of :class:`CommandProcessor` (the SDRAM
    controller's consumer side: lines of :data:`~hetaccel.rtl.dma.LINE_BITS`)."""
    line_addr = _bits(config.memory.lines)
    return {
        "mem_cmd": Out(stream.Signature(data.StructLayout({"addr": line_addr, "write": 1}))),
        "mem_wdata": Out(stream.Signature(LINE_BITS)),
        "mem_rdata": In(stream.Signature(LINE_BITS)),
        "mem_ready": In(1),
    }


class CommandProcessor(wiring.Component):
    """Frame decoder, command queue, executor, scratchpads and units (see module doc).

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    frame, payload_addr, payload_data, reply, reply_data
        The consumer side of :class:`hetaccel.rtl.link.HostLink` (same names,
        flipped directions); connect them one to one.
    rx_byte : In(1)
        A request byte was accepted this cycle (BYTES_IN counter).
    decoder_idle : Out(1)
        The front end is in its idle state (waiting for a frame); it returns
        there after every frame.
    queue_empty : Out(1)
        No compute instruction queued or running.
    mem_cmd, mem_wdata, mem_rdata, mem_ready
        With a device memory only: the consumer side of
        :class:`hetaccel.rtl.sdram.SdramController` (``cmd``, ``wdata``,
        ``rdata``, ``ready``; ``mem_cmd.addr`` counts lines), shared by the DMA
        engine (LOAD / STORE) and the front end (WRITE_MEM / READ_MEM of DEVICE).
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        check_generated(config)
        self.config = config
        members = {
            "frame": In(stream.Signature(FRAME_INFO)),
            "payload_addr": Out(range(config.max_payload)),
            "payload_data": In(8),
            "reply": Out(stream.Signature(REPLY_HEADER)),
            "reply_data": Out(stream.Signature(8)),
            "rx_byte": In(1),
            "decoder_idle": Out(1),
            "queue_empty": Out(1),
        }
        if config.memory is not None:
            members.update(memory_members(config))
        super().__init__(members)

    # ------------------------------------------------------------------ helpers

    def _spaces(self):
        return [s for s in MemSpace if mem_present(self.config, s)]

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        QD = cfg.cmd_queue_depth
        spaces = self._spaces()
        depth = {s: mem_depth(cfg, s) for s in spaces}
        word = {s: mem_word(cfg, s) for s in spaces}
        wbytes = {s: word[s].bytes for s in spaces}
        # Row addresses of any scratchpad fit RA bits, row counts and address +
        # count sums (after the range checks: at most the depth) CW bits.
        # Address pointers are RA bits: one that steps past the last row wraps,
        # and is not used again.  The device memory's lines have pointers of
        # their own (LA bits), and its frames at most max_payload // line words.
        mem = cfg.memory
        scratch = [s for s in spaces if s != MemSpace.DEVICE]
        RA = _bits(max(depth[s] for s in scratch))
        CW = max(depth[s] for s in scratch).bit_length()
        if mem is not None:
            CW = max(CW, (cfg.max_payload // mem.line_bytes).bit_length())
            LA = _bits(mem.lines)
        #: bits of a range check's sum (the deepest space, DEVICE included)
        CWD = max(depth.values()).bit_length()
        #: the spaces LOAD or STORE move
        dma_all = sorted(dma_spaces(cfg, Opcode.LOAD) | dma_spaces(cfg, Opcode.STORE))
        max_wb = max(wbytes.values())
        rd_spaces = [s for s in spaces if mem_readable(cfg, s)]
        max_rb = max(max(wbytes[s] for s in rd_spaces), 8)

        # ------------------------------------------------------------ units
        m.submodules.engine = engine = MatmulEngine(cfg, lookahead=True)
        act = adam = None
        if cfg.has_activation:
            m.submodules.act = act = ActivationUnit(cfg)
        if cfg.has_adam:
            m.submodules.adam = adam = AdamUnit(cfg)
        dma = None
        if mem is not None:
            m.submodules.dma = dma = DmaEngine(cfg)

        # ------------------------------------------------------- scratchpads
        # `no_rw_check`: no read of a scratchpad row meets a write to that row
        # in the same cycle (the front end reads or writes, never both; a
        # write waits while any queued or running instruction reads or writes
        # its rows, see the hazard check, so a same-cycle collision would be a
        # hazard a cycle later too), so Yosys adds no read-first emulation
        # around the block RAMs (iCE40: a delayed write port, an address
        # compare and a bypass multiplexer in front of the read data, which
        # sat on the READ_MEM and GEMM row paths).  Yosys honours it when it
        # folds a register into an asynchronous read port (see
        # MatmulEngine), not on a synchronous port: the read ports are built
        # that way (RegisteredReadPort).
        ob = cfg.operand_bits
        nrw = {"no_rw_check": 1}
        m.submodules.mem_input = mem_in = memory.Memory(
            shape=data.ArrayLayout(signed(ob), cfg.rows), depth=cfg.input_depth, init=[],
            attrs=nrw)
        m.submodules.mem_weight = mem_w = memory.Memory(
            shape=data.ArrayLayout(signed(ob), cfg.cols), depth=cfg.weight_depth, init=[],
            attrs=nrw)
        def read_port(mem, name):
            port = RegisteredReadPort(m, mem, f"{name}_rdata", en=f"{name}_ren")
            return port

        in_wp, in_rp = mem_in.write_port(), read_port(mem_in, "in")
        w_wp, w_rp = mem_w.write_port(), read_port(mem_w, "w")
        out_wp = out_rp = opt_wp = opt_rp = None
        if cfg.has_activation:
            m.submodules.mem_output = mem_out = memory.Memory(
                shape=data.ArrayLayout(signed(16), cfg.cols), depth=cfg.output_depth, init=[],
                attrs=nrw)
            out_wp, out_rp = mem_out.write_port(), read_port(mem_out, "out")
        if cfg.has_adam:
            m.submodules.mem_opt = mem_opt = memory.Memory(
                shape=unsigned(128 * cfg.adam_lanes), depth=depth[MemSpace.OPT], init=[],
                attrs=nrw)
            opt_wp, opt_rp = mem_opt.write_port(granularity=32), read_port(mem_opt, "opt")

        # ------------------------------------------------------------ registers
        regs = list(register_map(cfg).values())
        ident = identity_words(cfg)
        rw_regs = {r.name: Signal(r.bits, name=f"reg_{r.name.lower()}")
                   for r in regs if r.access == "rw"}
        # Counters of an absent unit read as a constant 0 (no flip-flops).
        absent = set()
        if not cfg.has_activation:
            absent |= {"ACT_BUSY", "ACT_STALL"}
        if not cfg.has_adam:
            absent |= {"ADAM_BUSY", "ADAM_STALL"}
        # Present counters live in a CounterBank (block RAM); BYTES_OUT adds a
        # whole reply (payload + 7 framing bytes) when a frame is done.
        # The DMA counters count 16 bytes per line moved.
        all_counters = COUNTERS + (MEMORY_COUNTERS if mem is not None else ())
        wide_add = {"BYTES_OUT": cfg.max_payload + 7, "DMA_BYTES_IN": LINE_BITS // 8,
                    "DMA_BYTES_OUT": LINE_BITS // 8}
        cnt_names = [name for name, _ in all_counters if name not in absent]
        cnt_index = {name: i for i, name in enumerate(cnt_names)}
        m.submodules.counters = bank = CounterBank([wide_add.get(name, 1) for name in cnt_names])
        cnt_inc = {name: Signal(name=f"inc_{name.lower()}") for name, _ in all_counters}
        cnt_clear = Signal()
        m.d.sync += bank.clear.eq(cnt_clear)       # (see the counters below)
        if adam is not None:
            for name in ADAM_HYPERPARAMETERS:
                m.d.comb += getattr(adam, name).eq(rw_regs[f"ADAM_{name.upper()}"])
            m.d.comb += adam.mode.eq(rw_regs["ADAM_MODE"])

        # A register record's address is decoded as its two bytes arrive on
        # payload_data (REC, cnt == 1 and 2: every record starts with it; each
        # a cycle later from pbyte, below), into one flip-flop per register
        # (its low byte) and one per distinct high byte; the lookup is an
        # AND-OR of those flip-flops, registered
        # (REC_DONE takes it).  From buf, through the record-size multiplexer
        # and the compares, it was 6 LUT levels on the iCE40.
        for o in (Opcode.WRITE_REG, Opcode.READ_REG):
            assert INSTRUCTIONS[o].offsets()["reg"] == (0, 2)
        reg_lo = {r.name: Signal(name=f"reg_lo_{r.name.lower()}") for r in regs}
        reg_hi = {v: Signal(name=f"reg_hi_{v}") for v in sorted({r.addr >> 8 for r in regs})}

        # Every field decode reads the payload byte a cycle late, from pbyte,
        # under a strobe that is a flip-flop (cap_*, set by the decoder the
        # cycle the byte is on payload_data): the link's frame buffer is a
        # block RAM read without an output register (5.8 ns clock-to-out on
        # the ECP5), which left no room for an 8-bit compare at 100 MHz.
        pbyte = Signal(8)
        cap_space, cap_reg = Signal(), [Signal(name=f"cap_reg{k}") for k in (0, 1)]
        m.d.sync += [pbyte.eq(self.payload_data), cap_space.eq(0),
                     *(c.eq(0) for c in cap_reg)]
        with m.If(cap_reg[0]):
            m.d.sync += [reg_lo[r.name].eq(pbyte == (r.addr & 0xFF)) for r in regs]
        with m.If(cap_reg[1]):
            m.d.sync += [h.eq(pbyte == v) for v, h in reg_hi.items()]

        def reg_lookup():
            """(hit per register, exists, writable, value, is_counter, counter
            index) of the record's register; a present counter's value comes
            from the bank instead.  With one high byte for all registers (the
            usual map) only ``exists`` tests it: a frame's records are all
            checked to exist before any value is read or written."""
            if len(reg_hi) == 1:
                hi_ok = next(iter(reg_hi.values()))
                hit = dict(reg_lo)
            else:
                hi_ok = Const(1)
                hit = {r.name: reg_lo[r.name] & reg_hi[r.addr >> 8] for r in regs}
            exists, writable, value = Signal(), Signal(), Signal(32)
            is_cnt, cidx = Signal(), Signal(range(len(cnt_names)))
            vals = [Mux(hit[r.name], ident[r.name], 0) for r in regs if r.name in ident]
            vals += [Mux(hit[r.name], rw_regs[r.name], 0) for r in regs
                     if r.name not in ident and r.name in rw_regs]
            cnts = [r.name for r in regs if r.name not in ident and r.name in cnt_index]
            m.d.comb += [
                exists.eq(hi_ok & Cat(*hit.values()).any()),
                writable.eq(Cat(*(hit[r.name] for r in regs if "w" in r.access)).any()),
                is_cnt.eq(Cat(*(hit[n] for n in cnts)).any()),
                value.eq(_or_all(vals, 32)),
                cidx.eq(_or_all([Mux(hit[n], cnt_index[n], 0) for n in cnts], len(cidx))),
            ]
            return hit, exists, writable, value, is_cnt, cidx

        # -------------------------------------------------------- command queue
        # Entry fields start all-ones, so the first enqueue changes them (belt
        # and braces for Icarus, which evaluates an always @* block only once
        # an input changes; verify/device_tests.py kicks all of them at time 0).
        q_valid = Signal(QD)

        def entry(width, name):
            return Array(Signal(width, name=f"{name}{i}", init=(1 << width) - 1)
                         for i in range(QD))
        q_op = entry(2, "q_op")
        q_x = entry(RA, "q_x")          # a / acc / addr
        q_y = entry(RA, "q_y")          # w / out
        q_z = entry(RA, "q_z")          # acc (GEMM)
        q_n = entry(CW, "q_n")          # m / count
        q_flags = entry(8, "q_flags")
        fn_bits = max(int(f) for f in ActivationFunction).bit_length()
        q_func = entry(fn_bits if cfg.has_activation else 1, "q_func")
        q_pe = entry(_bits(cfg.act_param_depth) if cfg.has_activation else 1, "q_pe")
        # LOAD / STORE: q_x addr, q_n count, q_flags store | space << 1, q_d
        # the first device-memory line
        q_d = entry(LA, "q_d") if mem is not None else None
        head = Signal(range(QD))
        tail = Signal(range(QD))
        q_full = Signal()
        m.d.comb += [q_full.eq(q_valid.bit_select(tail, 1)),
                     self.queue_empty.eq((q_valid == 0) & ~engine.acts.valid)]
        # the engine is busy, or a retired GEMM's last row still waits for it
        eng_busy = Signal()
        run_gemm = Signal()     # the executor runs a GEMM (set below)
        m.d.comb += eng_busy.eq(~engine.idle | engine.acts.valid)

        def wrap_inc(ptr):
            return Mux(ptr == QD - 1, 0, ptr + 1)

        # weight jobs: one per queued GEMM, consumed by the weight feeder in order;
        # with a device memory, a LOAD / STORE of WEIGHT queues a barrier (bit
        # RA) that the feeder keeps at its head until that transfer retires, so
        # it reads no weight tile of a later GEMM before the LOAD wrote it, and
        # leaves the read port to the STORE
        m.submodules.wjobs = wjobs = fifo.SyncFIFOBuffered(
            width=RA + (1 if mem is not None else 0), depth=QD)

        # ---------------------------------------------------------- front end
        # One byte shift register serves as the fixed-field header (its top
        # _HDR_BYTES bytes, shifted in from the top while fetching), as the word
        # being assembled by WRITE_MEM (shifted in the same way) and as the word
        # being sent by READ_MEM / READ_REG / NOP (loaded at the bottom, shifted
        # out at the bottom): the three uses never overlap in time.
        buf_bytes = max(_HDR_BYTES, max_wb, max_rb)
        buf = Signal(8 * buf_bytes)
        hdr = buf[8 * (buf_bytes - _HDR_BYTES):]
        # The frame's opcode and length come from the link's frame stream,
        # which holds them until the decoder releases the frame (DONE),
        # through a register: the first use (PRE) is more than _HDR_BYTES
        # cycles after the frame is offered, and the link's frame-buffer
        # multiplexer then does not sit in front of the opcode decode (an
        # iCE40 critical path).  The sequence number is copied: it is reply
        # payload, which must not depend on the frame stream (k-induction of
        # the stream rules).
        op = Signal(8)
        seq = Signal(8)
        # the link delivers frames of at most max_payload bytes (it answers
        # longer ones BAD_LENGTH itself), so the length needs only these bits
        length = Signal((cfg.max_payload).bit_length())
        m.d.sync += [op.eq(self.frame.payload.opcode),
                     length.eq(self.frame.payload.length[:len(length)])]
        status = Signal(8)
        rlen = Signal(range(max(cfg.max_payload, 8) + 1))
        cnt = Signal(range(_HDR_BYTES + 2))
        cnt_nz = Signal()       # cnt != 0, kept beside it (it gates buf's shift strobe)
        # FETCH's and REC's last cycle (cnt at its end value), a flip-flop set
        # the cycle before (cnt counts up from 0 in both); 0 in other states
        cnt_end = Signal()
        m.d.sync += cnt_end.eq(0)
        # the payload byte address always comes straight from this register
        # (the link's frame buffer address): p's updates are mirrored into it
        paddr = Signal(range(cfg.max_payload))
        m.d.comb += self.payload_addr.eq(paddr)

        def set_p(value):
            m.d.sync += [p.eq(value), paddr.eq(value)]

        def field(opcode, name):
            off, nbytes = INSTRUCTIONS[opcode].offsets()[name]
            return hdr[8 * off: 8 * (off + nbytes)]

        f_addr = field(Opcode.WRITE_MEM, "addr")
        f_count = field(Opcode.READ_MEM, "count")

        # memory access being prepared/performed by the front end
        acc_base = Signal(RA)
        acc_end = Signal(CW)    # acc_base + acc_n
        acc_n = Signal(CW)
        acc_write = Signal()
        k_left = Signal(CW)  # words still to go in a READ_MEM / WRITE_MEM
        k_last = Signal()        # k_left == 1
        fe_ptr = Signal(RA)     # its address (acc_base + k, kept as a pointer)
        p = Signal(range(cfg.max_payload + 16))     # payload byte pointer
        # bytes of the word still to come after this one (counts down from
        # wlast: the last byte is bleft == 0, one LUT)
        bleft = Signal(range(max(max_rb, max_wb, 8)))
        wlast = Signal(range(max(max_rb, max_wb, 8)))   # bytes per word - 1 (sent or received)
        # bleft == 0 and wlast == 0, kept beside them (the decisions at a
        # word's last byte then start from one flip-flop)
        bleft_z, wlast_z = Signal(), Signal()

        def set_bleft(value, zero):
            m.d.sync += [bleft.eq(value), bleft_z.eq(zero)]
        err = Signal()
        rec_len = Signal(3)
        rec_w = Signal()        # rec_len is WRITE_REG's (else READ_REG's), set with it
        rec_mode = Signal(2)    # 0 scan, 1 write, 2 read
        _SCAN, _WRITE, _READ = 0, 1, 2

        # --- static checks (combinational on the fetched header)
        def inside(addr, n, dep, w=None, staged=False):
            """n >= 1 and addr + n <= dep, for any widths of addr and n.

            With 2**w > dep: bits of addr or n at w and above fail at once, so
            only a w-bit sum is compared (no full-width comparators).
            ``staged``: the sum and the other terms are registered, the
            compare with ``dep`` follows (for the header checks, which have
            states PRE and PRE2 before CHECK reads their registered verdicts)."""
            if w is None:
                w = dep.bit_length()
            # (the terms are separate flip-flops, at most 8 bits each, so
            # synthesis shares no logic between them: one AND over the
            # address's and the count's high bits, 48 bits for a GEMM, was
            # 5 LUT levels on the iCE40)
            terms = [n[:w] != 0 if len(n) <= w else n != 0]
            for v in (addr, n):
                terms += [v[i:i + 8] == 0 for i in range(w, len(v), 8)]
            total = Signal(w + 1)
            pre = [Signal(name=f"pre{k}") for k in range(len(terms))]
            dom = m.d.sync if staged else m.d.comb
            dom += [total.eq(addr[:w] + n[:w])] + [p_.eq(t) for p_, t in zip(pre, terms)]
            return [Cat(*pre).all(), total <= dep]

        def verdict(name, *checks):
            """The AND of ``checks`` (``inside`` results, or single terms),
            registered as two flip-flops, the range terms' AND and the
            compares' AND (one AND of all was 5 LUT levels; one flip-flop
            per part put too many inputs on CHECK's decision)."""
            terms, cmps = [], []
            for c in checks:
                if isinstance(c, list):
                    terms.append(c[0])
                    cmps.append(c[1])
                else:
                    cmps.append(c)
            t_r, c_r = Signal(name=f"{name}_terms"), Signal(name=f"{name}_cmps")
            m.d.sync += [t_r.eq(Cat(*terms).all()), c_r.eq(Cat(*cmps).all())]
            return t_r & c_r

        present_ops = [o for o in Opcode if opcode_present(cfg, o)]
        op_known = Signal()
        len_ok = Signal()
        # opcode decoded into flip-flops (from the registered copy; read from CHECK on)
        op_is = {o: Signal(name=f"op_is_{o.name.lower()}") for o in present_ops}
        for o in present_ops:
            m.d.sync += op_is[o].eq(op == int(o))
        m.d.comb += op_known.eq(Cat(*op_is.values()).any())
        # and into a small index for the decoder's own decisions
        # (LOAD and STORE only with a device memory; a device without one
        # tells them apart from no other unknown opcode)
        known = [o for o in Opcode
                 if o not in (Opcode.LOAD, Opcode.STORE) or opcode_present(cfg, o)]
        OPK = {o: k for k, o in enumerate(known)}
        op_k = Signal(range(len(OPK) + 1), init=len(OPK))
        with m.Switch(op):
            for o, k in OPK.items():
                with m.Case(int(o)):
                    m.d.sync += op_k.eq(k)
            with m.Default():
                m.d.sync += op_k.eq(len(OPK))
        # The length compares of each format are flip-flops (length is stable
        # from the first FETCH cycle on), so len_ok is an AND-OR of flip-flops
        # (the compares behind the opcode decode were 7 LUT levels on the iCE40).
        len_cmp = {}

        len_nz = Signal()
        m.d.sync += len_nz.eq(length != 0)

        def len_test(kind, value):
            if (kind, value) not in len_cmp:
                r = Signal(name=f"len_{kind}{value}")
                # (repeat: from len_nz, a stage of its own; Yosys otherwise
                # shares the zero test with the other compares, 5 levels)
                cond = {"eq": length == value, "gt": length > value,
                        "rep": len_nz & ((length & 1) == 0 if value == 2 else 1)}[kind]
                m.d.sync += r.eq(cond)
                len_cmp[(kind, value)] = r
            return len_cmp[(kind, value)]
        len_terms = []
        for o in present_ops:
            fmt = INSTRUCTIONS[o]
            # repeat: the %6 of WRITE_REG is found by the record scan
            kind = {"none": "eq", "words": "gt"}.get(fmt.tail, "rep")
            len_terms.append(op_is[o] & len_test(kind, fmt.fixed_bytes))
        m.d.comb += len_ok.eq(Cat(*len_terms).any())

        # The space field (payload byte 0 of WRITE_MEM and READ_MEM) decoded
        # into one flip-flop per present space as it is fetched (from pbyte
        # the cycle after FETCH's cnt == 1), not from buf after the header
        # (the decode there, shared with every check on the space, was 5-6
        # LUT levels on the iCE40)
        assert all(INSTRUCTIONS[o].offsets()["space"] == (0, 1)
                   for o in (Opcode.WRITE_MEM, Opcode.READ_MEM))
        sp_hit = {s: Signal(name=f"sp_hit_{s.name.lower()}") for s in spaces}
        with m.If(cap_space):
            m.d.sync += [h.eq(pbyte == int(s_)) for s_, h in sp_hit.items()]
        space_ok_w = Signal()
        space_ok_r = Signal()
        sp_wb = Signal(range(max_wb + 1))
        sp_depth = Signal(CWD)
        sp_maxcount = Signal(range(max(min(0xFFFF, cfg.max_payload // wbytes[s]) for s in spaces) + 1))
        m.d.comb += [
            space_ok_w.eq(Cat(*sp_hit.values()).any()),
            space_ok_r.eq(Cat(*(sp_hit[s] for s in rd_spaces)).any()),
            sp_wb.eq(_or_all([Mux(sp_hit[s], wbytes[s], 0) for s in spaces], len(sp_wb))),
            sp_depth.eq(_or_all([Mux(sp_hit[s], depth[s], 0) for s in spaces], len(sp_depth))),
            sp_maxcount.eq(_or_all([Mux(sp_hit[s], min(0xFFFF, cfg.max_payload // wbytes[s]), 0)
                                    for s in spaces], len(sp_maxcount))),
        ]

        # READ_MEM's count limit in two register stages (PRE: the count's
        # high bits zero, its low bits nonzero and at most the limit, each
        # its own flip-flop so synthesis shares no logic between them; PRE2:
        # their AND, registered for CHECK).  The limit's flip-flops are
        # valid from early in FETCH.
        rm_count_ok = Signal()
        sp_maxcount_r = Signal.like(sp_maxcount)
        m.d.sync += sp_maxcount_r.eq(sp_maxcount)
        cw = max(1, sp_maxcount_r.shape().width)
        cnt_parts = [Signal(name=f"rm_count_{n}") for n in ("hi0", "nz", "le")]
        m.d.sync += [cnt_parts[0].eq(f_count[cw:] == 0 if len(f_count) > cw else 1),
                     cnt_parts[1].eq(f_count[:cw] != 0),
                     cnt_parts[2].eq(f_count[:cw] <= sp_maxcount_r)]
        m.d.comb += rm_count_ok.eq(Cat(*cnt_parts).all())

        # (the compute instructions' range checks: sums and terms registered
        # in PRE, each verdict part registered in PRE2, ANDed in CHECK)
        g_ok = verdict(
            "g_ok",
            inside(field(Opcode.GEMM, "a_addr"), field(Opcode.GEMM, "m"), cfg.input_depth,
                   staged=True),
            inside(field(Opcode.GEMM, "w_addr"), Const(cfg.rows, 8), cfg.weight_depth,
                   staged=True),
            inside(field(Opcode.GEMM, "acc_addr"), field(Opcode.GEMM, "m"), cfg.acc_depth,
                   staged=True))
        a_ok = Const(0)
        if cfg.has_activation:
            fn = field(Opcode.ACTIVATE, "function")
            fl = field(Opcode.ACTIVATE, "flags")
            fn_ok = Signal()
            with m.Switch(fn):
                for f_ in ActivationFunction:
                    with m.Case(int(f_)):
                        m.d.comb += fn_ok.eq(1)
            a_ok = verdict(
                "a_ok",
                inside(field(Opcode.ACTIVATE, "acc_addr"), field(Opcode.ACTIVATE, "m"),
                       cfg.acc_depth, staged=True),
                inside(field(Opcode.ACTIVATE, "out_addr"), field(Opcode.ACTIVATE, "m"),
                       cfg.output_depth, staged=True),
                (field(Opcode.ACTIVATE, "param_entry") < cfg.act_param_depth) & fn_ok &
                ((fl >> ACT_TABLE_SHIFT) < cfg.act_tables))
        d_ok = Const(0)
        if cfg.has_adam:
            d_ok = verdict("d_ok", inside(field(Opcode.ADAM, "addr"),
                                          field(Opcode.ADAM, "count"), depth[MemSpace.OPT],
                                          staged=True))

        # --- divider for WRITE_MEM: words = (length - 5) / wb by repeated
        # subtraction (one word per cycle: a few cycles per frame, few LUTs)
        div_q = Signal(range(cfg.max_payload + 1))
        div_r = Signal(range(cfg.max_payload + 1))
        div_ge = Signal()       # div_r >= sp_wb, kept one step ahead as a flip-flop
        # with every word size a power of two, CHECK finds the word count and
        # whether a remainder is left (div_r = 1) by a shift and a mask instead
        pow2 = all(wb & (wb - 1) == 0 for wb in wbytes.values())

        # READ_MEM and WRITE_MEM share one range check (state MEM_CHECK, on the
        # word count), in two register stages: the sum, then the compare with
        # the space's depth (both in series were 7 LUT levels on the iCE40).
        # With every word size a power of two the count is v_words (CHECK's
        # verdict, copied into div_q in DISPATCH): the sum is taken in
        # DISPATCH, the compare in DIV.  Otherwise the count is div_q after
        # the division, and DIV_WAIT gives the compare its cycle.
        v_words = Signal.like(div_r)

        # Every verdict above is registered (the header, length and div_q are
        # stable for a cycle before CHECK / MEM_CHECK read them: states PRE and
        # MEM_PRE), so the decisions start from flip-flops.
        def registered(*sigs):
            out = []
            for sig in sigs:
                r = Signal.like(sig, name=f"{sig.name}_r")
                m.d.sync += r.eq(sig)
                out.append(r)
            return out
        (op_known, len_ok, space_ok_w, space_ok_r, rm_count_ok, sp_wb, sp_depth) = registered(
            op_known, len_ok, space_ok_w, space_ok_r, rm_count_ok, sp_wb, sp_depth)
        # (with the WRITE_MEM remainder test: MEM_CHECK's way out is then one
        # flip-flop; div_r is final in DIV, or DIV_WAIT)
        mem_ok = Signal()
        m.d.comb += mem_ok.eq(Cat(*inside(f_addr, v_words if pow2 else div_q, sp_depth,
                                          w=max(depth.values()).bit_length(), staged=True),
                                  div_r == 0).all())
        (mem_ok,) = registered(mem_ok)
        rr_len_bad = Signal()
        m.d.sync += rr_len_bad.eq(length > cfg.max_payload // 2)

        # LOAD / STORE (same layout): the space moves in this direction, its
        # words in range, and the device-memory bytes whole lines inside the
        # store.  The lines the transfer covers are a flip-flop (PRE: a
        # constant multiple of the count per space, or half of it for
        # words of half a line), their end is compared with the store's size
        # in PRE2 (verdict).
        m_ok = Const(0)
        if mem is not None:
            for name in ("space", "addr", "dram_addr", "count"):
                assert (INSTRUCTIONS[Opcode.LOAD].offsets()[name]
                        == INSTRUCTIONS[Opcode.STORE].offsets()[name])
            line_b = mem.line_bytes
            ld_sp, st_sp = dma_spaces(cfg, Opcode.LOAD), dma_spaces(cfg, Opcode.STORE)
            f_dcount = field(Opcode.LOAD, "count")
            f_dram = field(Opcode.LOAD, "dram_addr")
            lb = line_b.bit_length() - 1
            max_l = max(max(1, wbytes[s_] // line_b) for s_ in dma_all)
            d_lines = Signal(CW + max_l.bit_length(), name="dma_lines")
            d_odd = Signal(name="dma_odd")      # an odd count of half-line words
            d_hi0 = Signal(name="dma_hi0")      # dram_addr's bits above the store's zero
            d_al = Signal(name="dma_aligned")   # dram_addr on a line boundary
            per_space = []
            for s_ in dma_all:
                wb_ = wbytes[s_]
                n_ = f_dcount[:CW]
                per_space.append(Mux(sp_hit[s_], n_ >> 1 if 2 * wb_ == line_b
                                     else _times(n_, wb_ // line_b), 0))
            m.d.sync += [
                d_lines.eq(_or_all(per_space, len(d_lines))),
                d_odd.eq(Cat(*(sp_hit[s_] & f_dcount[0] for s_ in dma_all
                               if 2 * wbytes[s_] == line_b)).any()),
                d_hi0.eq(f_dram[lb + LA:] == 0),
                d_al.eq(f_dram[:lb] == 0),
            ]
            d_sp_ok = Signal(name="dma_space_ok")
            m.d.sync += d_sp_ok.eq(
                (op_is[Opcode.LOAD] & Cat(*(sp_hit[s_] for s_ in sorted(ld_sp))).any()) |
                (op_is[Opcode.STORE] & Cat(*(sp_hit[s_] for s_ in sorted(st_sp))).any()))
            m_ok = verdict(
                "m_ok",
                inside(field(Opcode.LOAD, "addr"), f_dcount, sp_depth, w=CW, staged=True),
                d_sp_ok & ~d_odd & d_hi0 & d_al,
                (f_dram[lb:lb + LA] + d_lines) <= mem.lines)

        # The verdict's parts that are known in PRE2 (opcode, length, space,
        # READ_REG's length) are combined there into flip-flops; CHECK then
        # adds only the checks registered in PRE2 (READ_MEM's count, the
        # compute instructions' ranges).  The whole tree in CHECK was 5 LUT
        # levels on the iCE40.
        def _op(o):
            return op_is.get(o, Const(0))
        e_err_c = (~op_known | ~len_ok |
                   (_op(Opcode.WRITE_MEM) & ~space_ok_w) | (_op(Opcode.READ_MEM) & ~space_ok_r) |
                   (_op(Opcode.READ_REG) & rr_len_bad))
        e_err, e_nop, e_sync, e_div, e_rec, e_rm, e_enq = (
            Signal(name=f"e_{n}") for n in ("err", "nop", "sync", "div", "rec", "rm", "enq"))
        e_status = Signal(8)
        e_gemm, e_act, e_adam = Signal(), Signal(), Signal()
        e_dma = Signal()
        m.d.sync += [
            e_err.eq(e_err_c),
            e_status.eq(Mux(~op_known, Status.UNKNOWN_OPCODE,
                            Mux(~len_ok | (_op(Opcode.READ_REG) & rr_len_bad), Status.BAD_LENGTH,
                                Status.ADDR_RANGE))),
            e_nop.eq(~e_err_c & _op(Opcode.NOP)),
            e_sync.eq(~e_err_c & _op(Opcode.SYNC)),
            e_div.eq(~e_err_c & (_op(Opcode.WRITE_MEM) | _op(Opcode.READ_MEM))),
            e_rm.eq(~e_err_c & _op(Opcode.READ_MEM)),
            e_rec.eq(~e_err_c & (_op(Opcode.WRITE_REG) | _op(Opcode.READ_REG))),
            e_gemm.eq(~e_err_c & _op(Opcode.GEMM)),
            e_act.eq(~e_err_c & _op(Opcode.ACTIVATE)),
            e_adam.eq(~e_err_c & _op(Opcode.ADAM)),
        ]
        if mem is not None:
            m.d.sync += e_dma.eq(~e_err_c & (_op(Opcode.LOAD) | _op(Opcode.STORE)))

        # The accessed space: one flip-flop per present space, copied from
        # sp_hit in DISPATCH (READ_MEM's read data, WRITE_MEM's write enables,
        # the reply length and the hazard check below)
        rd_sel = {s_: Signal(name=f"rd_sel_{s_.name.lower()}") for s_ in spaces}

        def sp_is(space):
            return rd_sel.get(space, Const(0))

        # --- hazard check of the prepared access against the queue
        conflict = Signal()
        in_port_busy = Signal()     # the executor owns the INPUT read port
        w_port_busy = Signal()      # the weight feeder owns the WEIGHT read port
        terms = []
        for i in range(QD):
            v = q_valid[i]
            opi, xi, yi, zi, ni = q_op[i], q_x[i], q_y[i], q_z[i], q_n[i]
            # the rows of this entry in the accessed space (one overlap test
            # per entry: the space picks the field)
            # (registered: a pipeline stage of the hazard check)
            lo = Signal(RA, name=f"haz_lo{i}")
            end = Signal(CW + 1, name=f"haz_end{i}")
            lo_c = Mux(sp_is(MemSpace.INPUT), xi, Mux(sp_is(MemSpace.ACC), zi, yi))
            m.d.sync += [lo.eq(lo_c), end.eq(lo_c + Mux(sp_is(MemSpace.WEIGHT), cfg.rows, ni))]
            # the overlap compares, registered too: lo and end are valid from
            # MEM_CHECK on, acc_base and acc_end from HAZARD's first cycle, so
            # ov is valid in its second, when conflict_r takes its inputs
            ov = Signal(name=f"haz_ov{i}")
            m.d.sync += ov.eq((acc_base < end) & (lo < acc_end))
            gemm = (opi == _OP_GEMM)
            actv = (opi == _OP_ACT)
            adm = (opi == _OP_ADAM)
            # The entry's verdict is v & (always | (if_ov & ov)): which kind
            # of entry and access conflict whatever the rows, and which only
            # if they overlap.  Both are flip-flops (the entry's kind, the
            # space and acc_write are stable from DIV on), so the live
            # verdict is one LUT per entry (from the decode it was 5 levels).
            always, if_ov = Signal(name=f"haz_always{i}"), Signal(name=f"haz_ifov{i}")
            always_c = ((gemm & sp_is(MemSpace.INPUT) & ~acc_write) |
                        (gemm & sp_is(MemSpace.WEIGHT) & ~acc_write) |
                        (gemm & sp_is(MemSpace.ACC) & acc_write) |
                        (actv & (sp_is(MemSpace.ACC) | sp_is(MemSpace.TABLE) |
                                 sp_is(MemSpace.ACT_PARAM))) |
                        (actv & sp_is(MemSpace.OUTPUT) & acc_write) |
                        (adm & sp_is(MemSpace.OPT)))
            if mem is not None:
                # a LOAD / STORE: any access to its space (it owns the
                # space's ports while it runs), and any DEVICE access
                q_sp = q_flags[i][1:4]
                same = Cat(*(sp_is(s_) & (q_sp == int(s_)) for s_ in dma_all)).any()
                always_c = always_c | ((opi == _OP_DMA) & (same | sp_is(MemSpace.DEVICE)))
            m.d.sync += [
                always.eq(always_c),
                if_ov.eq((gemm & (sp_is(MemSpace.INPUT) | sp_is(MemSpace.WEIGHT) |
                                  sp_is(MemSpace.ACC))) |
                         (actv & sp_is(MemSpace.OUTPUT)))]
            terms.append(v & (always | (if_ov & ov)))
        # (a GEMM retired with its last row not yet taken: its weight rows
        # may still be on their way to the engine)
        gemm_tail = engine.acts.valid & ~run_gemm
        # the access's own terms, flip-flops likewise
        rd_in_own, rd_w_own = Signal(), Signal()
        m.d.sync += [rd_in_own.eq(sp_is(MemSpace.INPUT) & ~acc_write),
                     rd_w_own.eq(sp_is(MemSpace.WEIGHT) & ~acc_write)]
        conflict_c = (Cat(*terms).any() | (sp_is(MemSpace.ACC) & eng_busy) |
                      (sp_is(MemSpace.WEIGHT) & gemm_tail) |
                      (rd_in_own & in_port_busy) | (rd_w_own & w_port_busy))
        # a DEVICE access also waits until the front end's earlier DEVICE
        # writes have all gone to the controller (its requests keep their order)
        dev_pending = Signal()
        if mem is not None:
            conflict_c = conflict_c | (sp_is(MemSpace.DEVICE) & dev_pending)
        m.d.comb += conflict.eq(conflict_c)
        # Registered (two stages): entries only leave the queue while the front
        # end waits in HAZARD (it is the only producer), so a conflict-free
        # verdict two cycles old is still true.  haz_armed comes after the
        # first two cycles in HAZARD (stale inputs before).
        # (haz_armed: a flip-flop, shifted in from haz_h1)
        conflict_r = Signal()
        haz_h1 = Signal()
        haz_armed = Signal()
        m.d.sync += conflict_r.eq(conflict)

        # --- front-end memory port requests (muxed with the executor below)
        fe_in_raddr = Signal(RA); fe_in_ren = Signal()
        fe_w_raddr = Signal(RA); fe_w_ren = Signal()
        fe_out_raddr = Signal(RA); fe_out_ren = Signal()
        fe_opt_raddr = Signal(RA); fe_opt_ren = Signal()
        # WRITE_MEM word writes are registered (the word is then the top of buf),
        # so no decoder logic reaches the memories' and the engine's inputs
        fe_we = Signal()                  # write the assembled word this cycle
        fe_waddr = Signal(RA)
        fe_we_sp = {sp_: Signal(name=f"fe_we_{sp_.name.lower()}") for sp_ in spaces}
        m.d.sync += [fe_we.eq(0)] + [w.eq(0) for w in fe_we_sp.values()]
        buf_in = Signal.like(buf)        # buf with the payload byte shifted in at the top
        m.d.comb += buf_in.eq(Cat(buf[8:], self.payload_data))
        # buf's loads, one strobe each (at most one per cycle), merged as a
        # parallel AND-OR after the decoder: shifting a byte in (header,
        # WRITE_MEM) and out (replies: the byte shifted in at the top is never
        # sent) is one move; register values fill the low 32 bits only (a
        # READ_REG sends 4 bytes), the NOP reply the low 64.
        b_shift, b_rd, b_ident, b_reg, b_cnt = Signal(), Signal(), Signal(), Signal(), Signal()

        obyte = Signal(8)       # (see the reply byte register below)
        # reply defaults
        m.d.comb += [self.reply.payload.status.eq(status), self.reply.payload.seq.eq(seq),
                     self.reply.payload.length.eq(rlen), self.reply_data.payload.eq(obyte)]

        # Reply bytes leave through a register: the decoder moves on when it is
        # empty, never on the link's ready in the same cycle (that path crossed
        # both modules).  One byte per two cycles, far above any UART's rate.
        ovalid = Signal()
        m.d.comb += self.reply_data.valid.eq(ovalid)
        with m.If(self.reply_data.ready):
            m.d.sync += ovalid.eq(0)

        # (READ_MEM: buf takes the word from rd_word, see below)

        is_rd_acc = Signal()    # the space is ACC, as a flip-flop (set in DISPATCH)
        # the decoder's verdict on a frame (state CHECK, see there)
        v_err, v_nop = Signal(name="v_err"), Signal(name="v_nop")
        v_status = Signal(8)
        _V_REPLY, _V_SYNC, _V_DIV, _V_REC, _V_ENQ = range(5)
        v_next = Signal(range(5))     # DISPATCH's next state
        _S_DONE, _S_RM, _S_REC = range(3)
        send_next = Signal(range(3))  # SEND's, after a word's last byte
        v_ge = Signal()
        op_is_wm = op_is[Opcode.WRITE_MEM]
        op_is_rm = op_is[Opcode.READ_MEM]
        op_is_wr = op_is[Opcode.WRITE_REG]
        op_is_rr = op_is[Opcode.READ_REG]
        _R_DONE, _R_RM, _R_REC, _R_SEND = range(4)
        reply_next = Signal(range(4))     # REPLY's next state, set with rlen

        def set_rlen(value, zero):
            """The reply's payload length, and REPLY's next state with it (a
            code in a flip-flop: no payload, READ_MEM's words, READ_REG's reply
            pass, or the bytes in buf)."""
            m.d.sync += [rlen.eq(value),
                         reply_next.eq(Mux(zero, _R_DONE, Mux(op_is_rm, _R_RM,
                                                              Mux(op_is_rr, _R_REC, _R_SEND))))]
        # READ_MEM's read requests come from flip-flops (set as RM_ADDR is
        # entered), so no decoder state logic reaches a memory enable
        rm_go = Signal()        # the RM_ADDR cycle of a scratchpad read
        acc_req = Signal()      # ACC read address offered to the engine
        acc_take = Signal()     # ACC read data awaited from the engine
        acc_done = Signal()     # ACC read data taken (into rd_word)
        m.d.sync += rm_go.eq(0)
        m.d.comb += [fe_in_raddr.eq(fe_ptr), fe_in_ren.eq(rm_go),
                     fe_w_raddr.eq(fe_ptr), fe_w_ren.eq(rm_go),
                     fe_out_raddr.eq(fe_ptr), fe_out_ren.eq(rm_go),
                     fe_opt_raddr.eq(fe_ptr), fe_opt_ren.eq(rm_go),
                     engine.rd_addr.valid.eq(acc_req), engine.rd_addr.payload.eq(fe_ptr),
                     engine.rd_data.ready.eq(acc_take)]
        with m.If(acc_req & engine.rd_addr.ready):
            m.d.sync += [acc_req.eq(0), acc_take.eq(1)]
        with m.If(acc_take & engine.rd_data.valid):
            m.d.sync += [acc_take.eq(0), acc_done.eq(1)]

        # DEVICE (device memory lines): a READ_MEM word is requested from the
        # controller (dev_req, then dev_take until the line comes back, like
        # an ACC word); WRITE_MEM words go into dev_wr, a FIFO that holds a
        # whole frame's lines (so WRITE_MEM never waits for the controller)
        # and drains into the controller.  dev_pending: a DEVICE request is
        # still outstanding; a DEVICE access (HAZARD) and a LOAD / STORE
        # (the executor) wait for it, so the controller sees the requests in
        # order.
        is_rd_dev = Signal()    # the space is DEVICE, as a flip-flop (set in DISPATCH)
        dev_ptr = Signal(LA if mem is not None else 1)   # the line being read or written
        dev_req, dev_take, dev_done = Signal(), Signal(), Signal()
        fe_dwaddr = Signal.like(dev_ptr)    # the line of the word being written
        if mem is not None:
            m.submodules.dev_wr = dev_wr = fifo.SyncFIFOBuffered(
                width=LA + LINE_BITS, depth=max(2, cfg.max_payload // mem.line_bytes))
            m.d.comb += dev_pending.eq(dev_wr.r_rdy | dev_req | dev_take)
            with m.If(dev_req & self.mem_cmd.ready & ~dev_wr.r_rdy & ~dma.busy):
                m.d.sync += [dev_req.eq(0), dev_take.eq(1)]
            with m.If(dev_take & self.mem_rdata.valid):
                m.d.sync += [dev_take.eq(0), dev_done.eq(1)]

        def rm_start():
            if mem is None:
                m.d.sync += [rm_go.eq(~is_rd_acc), acc_req.eq(is_rd_acc), acc_done.eq(0)]
            else:
                m.d.sync += [rm_go.eq(~is_rd_acc & ~is_rd_dev), acc_req.eq(is_rd_acc),
                             acc_done.eq(0), dev_req.eq(is_rd_dev), dev_done.eq(0)]

        def next_word():
            m.d.sync += [k_left.eq(k_left - 1), k_last.eq(k_left == 2)]
        # a register record is shifted into the top of buf like the header
        rec = buf[-48:]
        # the lookup registered (valid in REC_DONE, which reads it and where
        # buf takes the value; the value's lookup in front of buf was 6 LUT
        # levels on the iCE40)
        reg_hit, exists, writable, regval, is_cnt_now, reg_cidx = reg_lookup()
        exists, writable, regval, reg_is_cnt, reg_cidx = registered(
            exists, writable, regval, is_cnt_now, reg_cidx)
        # buf's loads of a reply value are strobes kept in flip-flops, set the
        # cycle before (buf's data AND-OR is a critical path): the NOP reply
        # (ld_ident, DISPATCH), a register value (ld_reg, REC_DONE in a reply
        # pass) and a counter value (ld_cnt: the bank's sweep is at the
        # counter, REG_CNT; its index after this edge is next_index, reg_cidx
        # is valid from REC_DONE)
        ld_ident, ld_reg, ld_cnt = Signal(), Signal(), Signal()
        m.d.sync += [ld_ident.eq(0), ld_reg.eq(0), ld_cnt.eq(0)]
        m.d.comb += [b_ident.eq(ld_ident), b_reg.eq(ld_reg), b_cnt.eq(ld_cnt)]
        cnt_match = bank.next_index == reg_cidx
        # The payload pointer's next record position pn = p + rec_len, and the
        # comparisons, registered: p is stable for at least two cycles before
        # each use (a record is fetched in rec_len + 1 cycles, then REC_WAIT,
        # REC_WAIT2; SCAN_WAIT; a READ_REG reply value takes 8 cycles), so p
        # only ever loads 0, the WRITE_MEM payload start or pn, and no adder
        # sits in front of it.
        pn = Signal.like(p)
        m.d.sync += pn.eq(p + rec_len)
        p_scan_end, p_rec_end, p_not_len = Signal(), Signal(), Signal()
        # p_scan_end: no room for another record after this one, p + 2 *
        # rec_len > length, as pn >= length - rec_len + 1, a threshold kept
        # in a flip-flop (rec_len is WRITE_REG's or READ_REG's record size,
        # fixed from DISPATCH on; two stages: the differences, then the
        # choice; length is stable from FETCH on, the scan starts after
        # DISPATCH)
        scan_thr = Signal(signed(len(length) + 2))
        thr_w, thr_r = Signal.like(scan_thr), Signal.like(scan_thr)
        m.d.sync += [thr_w.eq(length - _REC_W + 1), thr_r.eq(length - _REC_R + 1),
                     scan_thr.eq(Mux(op_is[Opcode.WRITE_REG], thr_w, thr_r))]
        m.d.sync += [p_scan_end.eq(pn >= scan_thr), p_rec_end.eq(pn == length),
                     p_not_len.eq(p != length)]
        rec_value = rec[16:48]

        # ENQUEUE's go, registered: only ENQUEUE fills the queue and the weight
        # job FIFO, so while the decoder heads there or waits in it they can
        # only free up, and a verdict a cycle old still holds (a push then
        # waits one cycle more after a full queue frees a slot)
        enq_go = Signal()
        if mem is None:
            m.d.sync += enq_go.eq(~q_full & (wjobs.w_rdy | ~op_is[Opcode.GEMM]))
        else:
            w_barrier = ((op_is[Opcode.LOAD] | op_is[Opcode.STORE]) & sp_hit[MemSpace.WEIGHT])
            m.d.sync += enq_go.eq(~q_full & (wjobs.w_rdy | ~(op_is[Opcode.GEMM] | w_barrier)))
        # SYNC's verdict likewise: while the decoder waits in SYNC_WAIT nothing
        # enters the queue, so an empty queue and an idle engine stay so
        sync_ok = Signal()
        m.d.sync += sync_ok.eq(self.queue_empty & ~eng_busy)

        # SEND's next state after a word's last byte, as a code in a
        # flip-flop: READ_MEM's next word or DONE after the last, READ_REG's
        # next record (p has moved past this one in REC_DONE) or DONE, NOP
        # DONE.  Its inputs are stable for at least two cycles before it is
        # used (k_last changes at a word's last byte, then RM_ADDR,
        # RM_DATA and RM_LOAD; p changes in REC_DONE, a reply value takes
        # eight cycles).
        m.d.sync += send_next.eq(Mux(op_is_rm, Mux(k_last, _S_DONE, _S_RM),
                                     Mux(op_is_rr & p_not_len, _S_REC, _S_DONE)))

        # REC_DONE's next state likewise: the scan ends or fetches the next
        # record, a write pass replies after its last record, a reply pass
        # waits for a counter or sends.  Its inputs are valid in REC_WAIT2
        # (p is stable from REC on; the record's register bytes arrive in
        # REC's second and third cycles and are decoded a cycle later).
        _D_SCAN_WAIT, _D_REC, _D_REPLY, _D_REG_CNT, _D_SEND = range(5)
        rdone_next = Signal(range(5))
        with m.Switch(rec_mode):
            with m.Case(_SCAN):
                m.d.sync += rdone_next.eq(Mux(p_scan_end, _D_SCAN_WAIT, _D_REC))
            with m.Case(_WRITE):
                m.d.sync += rdone_next.eq(Mux(p_rec_end, _D_REPLY, _D_REC))
            with m.Default():
                # (from the lookup itself: a READ_REG record's high byte is
                # decoded in REC_WAIT, so its flip-flop is valid from REC_WAIT2)
                m.d.sync += rdone_next.eq(Mux(is_cnt_now, _D_REG_CNT, _D_SEND))

        words = length - INSTRUCTIONS[Opcode.WRITE_MEM].fixed_bytes
        wm_words, wm_ge = Signal.like(div_q), Signal()
        if pow2:
            # every word size a power of two: a shift and a mask per
            # space, no division (wm_ge: a remainder is left)
            m.d.sync += [
                wm_words.eq(_or_all([Mux(sp_hit[s_], words >> (wbytes[s_].bit_length() - 1), 0)
                                     for s_ in spaces], len(wm_words))),
                wm_ge.eq(Cat(*(sp_hit[s_] & ((words & (wbytes[s_] - 1)) != 0)
                               for s_ in spaces)).any())]
        else:
            m.d.sync += [wm_words.eq(words), wm_ge.eq(words >= sp_wb)]

        with m.FSM(name="decoder") as fsm:
            with m.State("IDLE"):
                m.d.sync += [cnt.eq(0), cnt_nz.eq(0), paddr.eq(0)]
                with m.If(self.frame.valid):
                    m.d.sync += [seq.eq(self.frame.payload.seq), err.eq(0)]
                    m.next = "FETCH"

            with m.State("FETCH"):
                # payload_data is the byte at the previous cycle's address
                m.d.sync += [cnt.eq(cnt + 1), cnt_nz.eq(1), paddr.eq(paddr + 1)]
                with m.If(cnt_nz):
                    m.d.comb += b_shift.eq(1)
                with m.If(cnt == 1):
                    m.d.sync += cap_space.eq(1)
                m.d.sync += cnt_end.eq(cnt == _HDR_BYTES - 1)
                with m.If(cnt_end):         # (cnt == _HDR_BYTES)
                    m.next = "PRE"

            with m.State("PRE"):
                m.next = "PRE2"
            with m.State("PRE2"):
                # (the compute instructions' range checks are two register
                # stages: sum, then compare -- the iCE40's critical path)
                m.next = "CHECK"

            def error(st):
                m.d.sync += status.eq(st)
                set_rlen(0, zero=1)
                m.next = "REPLY"

            # CHECK takes the verdict on the registered checks into flip-flops
            # (an error status, or the one next step); DISPATCH acts on them
            # and sets the registers the next steps start from, whatever the
            # opcode (unused ones are don't-care), so no register's enable
            # and no state bit sits behind the whole decision tree.
            with m.State("CHECK"):
                # (buf takes the NOP reply in DISPATCH, under a strobe that is
                # a flip-flop of its own: buf's data AND-OR is a critical path)
                m.d.sync += ld_ident.eq(e_nop)
                l_len = e_rm & ~rm_count_ok           # READ_MEM count: BAD_LENGTH
                l_range = ((e_gemm & ~g_ok) | (e_act & ~a_ok if cfg.has_activation else 0) |
                           (e_adam & ~d_ok if cfg.has_adam else 0))
                if mem is not None:
                    l_range = l_range | (e_dma & ~m_ok)
                bad = e_err | l_len | l_range
                m.d.sync += [v_err.eq(bad), v_nop.eq(e_nop),
                             v_status.eq(Mux(e_err, e_status,
                                             Mux(l_len, Status.BAD_LENGTH, Status.ADDR_RANGE))),
                             v_next.eq(Mux(bad | e_nop, _V_REPLY,
                                           Mux(e_sync, _V_SYNC, Mux(e_div, _V_DIV,
                                               Mux(e_rec, _V_REC, _V_ENQ)))))]
                # WRITE_MEM's word count starts from the payload length
                # (len_ok: fixed_bytes < length <= max_payload); READ_MEM's
                # count is the field itself (f_count <= max_payload // wb fits
                # div_q; DIV passes at once with div_r = 0: the cycle
                # mem_range_ok needs to see this div_q).  The word count's
                # parts are flip-flops taken in PRE2 (header and length are
                # stable from PRE on; from buf through the space decode and a
                # subtraction they were 5 LUT levels on the iCE40).
                m.d.sync += [v_words.eq(Mux(op_is_wm, wm_words, f_count if pow2 else 0)),
                             v_ge.eq(op_is_wm & wm_ge)]
                m.next = "DISPATCH"

            with m.State("DISPATCH"):
                m.d.sync += [status.eq(Mux(v_err, v_status, Status.OK)), wlast.eq(7),
                             wlast_z.eq(0),
                             acc_write.eq(op_is_wm), is_rd_acc.eq(sp_hit[MemSpace.ACC]),
                             *(sel.eq(sp_hit[s_]) for s_, sel in rd_sel.items()),
                             rec_mode.eq(_SCAN), cnt.eq(0), cnt_nz.eq(0),
                             rec_len.eq(Mux(op_is_wr, _REC_W, _REC_R)), rec_w.eq(op_is_wr)]
                if mem is not None:
                    m.d.sync += is_rd_dev.eq(sp_hit[MemSpace.DEVICE])
                if pow2:
                    m.d.sync += [div_q.eq(v_words), div_r.eq(v_ge), div_ge.eq(0)]
                else:
                    m.d.sync += [div_r.eq(v_words), div_ge.eq(v_ge),
                                 div_q.eq(Mux(op_is_wm, 0, f_count))]
                set_p(0)
                set_rlen(Mux(v_nop, 8, 0), zero=~v_nop)
                # (the next state as a code: each way out is one LUT of the
                # state bit and the code's bits, not behind the negations of
                # a chain of flags)
                for code, state in ((_V_REPLY, "REPLY"), (_V_SYNC, "SYNC_WAIT"),
                                    (_V_DIV, "DIV"), (_V_REC, "REC"), (_V_ENQ, "ENQUEUE")):
                    with m.If(v_next == code):
                        m.next = state

            with m.State("DIV"):
                # (MEM_CHECK follows the cycle after the last change of div_q)
                if pow2:
                    m.next = "MEM_CHECK"
                else:
                    with m.If(div_ge):
                        m.d.sync += [div_r.eq(div_r - sp_wb), div_q.eq(div_q + 1),
                                     div_ge.eq(div_r >= (sp_wb << 1))]
                    with m.Else():
                        m.next = "DIV_WAIT"
            if not pow2:
                with m.State("DIV_WAIT"):
                    # (the range check's compare, on the sum with the final div_q)
                    m.next = "MEM_CHECK"

            with m.State("MEM_CHECK"):
                # words in div_q; a WRITE_MEM remainder in div_r
                with m.If(~mem_ok):
                    error(Mux(div_r != 0, Status.BAD_LENGTH, Status.ADDR_RANGE))
                with m.Else():
                    m.next = "HAZARD"
                # (whatever the verdict: used from HAZARD on)
                m.d.sync += [acc_base.eq(f_addr), acc_n.eq(div_q),
                             acc_end.eq(f_addr + div_q), haz_h1.eq(0), haz_armed.eq(0)]

            with m.State("HAZARD"):
                m.d.sync += [haz_h1.eq(1), haz_armed.eq(haz_h1)]
                m.d.comb += cnt_inc["HAZARD_WAIT"].eq(haz_armed & conflict_r)
                # The next steps' registers are loaded in every HAZARD cycle
                # (their inputs are stable here, and nothing uses them before
                # HAZARD is left): their enables are then state bits, not
                # behind the verdict.  The header in buf is not needed from
                # here on.
                m.d.sync += [k_left.eq(acc_n), k_last.eq(acc_n == 1),
                             bleft.eq(sp_wb - 1), bleft_z.eq(sp_wb == 1),
                             fe_ptr.eq(acc_base), wlast.eq(sp_wb - 1), wlast_z.eq(sp_wb == 1),
                             cnt.eq(0), cnt_nz.eq(0)]
                if mem is not None:
                    m.d.sync += dev_ptr.eq(f_addr[:LA])
                set_p(INSTRUCTIONS[Opcode.WRITE_MEM].fixed_bytes)
                with m.If(~acc_write):
                    for s_ in rd_spaces:
                        with m.If(rd_sel[s_]):
                            # (acc_n >= 1: the range check)
                            set_rlen(_times(acc_n, wbytes[s_]), zero=0)
                with m.If(haz_armed & ~conflict_r):
                    with m.If(acc_write):
                        m.next = "WM_STREAM"
                    with m.Else():
                        m.next = "REPLY"

            # ---- WRITE_MEM: one payload byte per cycle, a word written as it completes
            with m.State("WM_STREAM"):
                # (p is not used again before REPLY restarts it: only the
                # payload address steps)
                m.d.sync += [cnt.eq(1), cnt_nz.eq(1), paddr.eq(paddr + 1)]
                with m.If(cnt_nz):
                    m.d.comb += b_shift.eq(1)
                    set_bleft(bleft - 1, zero=bleft == 1)
                    with m.If(bleft_z):
                        m.d.sync += [fe_we.eq(1), fe_waddr.eq(fe_ptr)]
                        m.d.sync += [w.eq(rd_sel[sp_]) for sp_, w in fe_we_sp.items()]
                        m.d.sync += fe_ptr.eq(fe_ptr + 1)
                        if mem is not None:
                            m.d.sync += [fe_dwaddr.eq(dev_ptr), dev_ptr.eq(dev_ptr + 1)]
                        set_bleft(wlast, zero=wlast_z)
                        next_word()
                        with m.If(k_last):
                            m.next = "REPLY"

            # ---- READ_MEM: read a word, send its bytes
            with m.State("RM_ADDR"):
                # (a scratchpad's read enable is rm_go, now; an ACC word is
                # fetched from the engine by acc_req / acc_take on their own)
                m.next = "RM_DATA"
            with m.State("RM_DATA"):
                # A scratchpad's word is taken into rd_word at this edge; an
                # ACC word when the engine hands it over, and the decoder
                # moves on once that is done (acc_done, a flip-flop: the
                # engine's rd_data.valid then reaches only rd_word's enable
                # and acc_take, not the state register; one cycle more per
                # ACC word)
                if mem is None:
                    with m.If(~is_rd_acc | acc_done):
                        m.next = "RM_LOAD"
                else:
                    with m.If((~is_rd_acc & ~is_rd_dev) | acc_done | dev_done):
                        m.next = "RM_LOAD"
            with m.State("RM_LOAD"):
                # buf takes the word from rd_word, a register: the read
                # strobe, the spaces' AND-OR and the block RAMs' output
                # multiplexers in one cycle in front of buf were the iCE40's
                # critical path (one cycle more per READ_MEM word)
                m.d.comb += b_rd.eq(1)
                set_bleft(wlast, zero=wlast_z)
                m.next = "SEND"

            with m.State("SEND"):
                with m.If(~ovalid):
                    m.d.comb += b_shift.eq(1)
                    m.d.sync += [obyte.eq(buf[:8]), ovalid.eq(1)]
                    set_bleft(bleft - 1, zero=bleft == 1)
                    with m.If(bleft_z):
                        set_bleft(wlast, zero=wlast_z)
                        with m.If(op_is_rm):
                            m.d.sync += fe_ptr.eq(fe_ptr + 1)
                            if mem is not None:
                                m.d.sync += dev_ptr.eq(dev_ptr + 1)
                            next_word()
                            with m.If(~k_last):
                                rm_start()
                        for code, state in ((_S_DONE, "DONE"), (_S_RM, "RM_ADDR"),
                                            (_S_REC, "REC")):
                            with m.If(send_next == code):
                                m.next = state

            # ---- register records: fetch rec_len bytes at p
            with m.State("REC"):
                m.d.sync += paddr.eq(paddr + 1)      # paddr = p + cnt
                m.d.sync += [cnt.eq(cnt + 1), cnt_nz.eq(1)]
                with m.If(cnt_nz):
                    m.d.comb += b_shift.eq(1)
                for k in (0, 1):
                    with m.If(cnt == k + 1):
                        m.d.sync += cap_reg[k].eq(1)
                m.d.sync += cnt_end.eq(Mux(rec_w, cnt == _REC_W - 1, cnt == _REC_R - 1))
                with m.If(cnt_end):         # (cnt == rec_len)
                    m.next = "REC_WAIT"
            with m.State("REC_WAIT"):
                m.next = "REC_WAIT2"
            with m.State("REC_WAIT2"):
                m.d.sync += ld_reg.eq(rec_mode == _READ)
                m.next = "REC_DONE"
            with m.State("REC_DONE"):
                # p moves past the record in every mode (pn = p + rec_len);
                # wlast and bleft are a READ_REG reply value's (unused in the
                # other modes): loaded whatever the mode, their enables are
                # state bits
                m.d.sync += [cnt.eq(0), cnt_nz.eq(0), wlast.eq(3), wlast_z.eq(0)]
                set_bleft(3, zero=0)
                set_p(pn)
                with m.Switch(rec_mode):
                    with m.Case(_SCAN):
                        bad = ~exists | (op_is_wr & ~writable)
                        m.d.sync += err.eq(err | bad)
                    with m.Case(_WRITE):
                        with m.If(reg_hit["CONTROL"]):
                            m.d.comb += cnt_clear.eq(rec_value[0])
                        for r in regs:
                            if r.name in rw_regs:
                                with m.If(reg_hit[r.name]):
                                    m.d.sync += rw_regs[r.name].eq(rec_value[:r.bits])
                    with m.Case(_READ):
                        m.d.sync += ld_cnt.eq(reg_is_cnt & cnt_match)
                for code, state in ((_D_SCAN_WAIT, "SCAN_WAIT"), (_D_REC, "REC"),
                                    (_D_REPLY, "REPLY"), (_D_REG_CNT, "REG_CNT"),
                                    (_D_SEND, "SEND")):
                    with m.If(rdone_next == code):
                        m.next = state
            with m.State("REG_CNT"):
                # the bank's sweep reaches every counter within len(cnt_names) cycles
                m.d.sync += ld_cnt.eq(~ld_cnt & cnt_match)
                with m.If(ld_cnt):
                    m.next = "SEND"
            with m.State("SCAN_WAIT"):
                m.next = "SCAN_END"
            with m.State("SCAN_END"):
                m.d.sync += [cnt.eq(0), cnt_nz.eq(0)]
                set_p(0)
                with m.If(p_not_len):
                    error(Status.BAD_LENGTH)
                with m.Elif(err):
                    error(Status.ADDR_RANGE)
                with m.Elif(op_is_wr):
                    m.next = "REG_WAIT"
                with m.Else():
                    set_rlen(length << 1, zero=0)     # (len_ok: length != 0)
                    m.next = "REPLY"
            with m.State("REG_WAIT"):
                m.d.comb += cnt_inc["HAZARD_WAIT"].eq(~self.queue_empty)
                m.d.sync += [rec_mode.eq(_WRITE), cnt.eq(0), cnt_nz.eq(0)]
                with m.If(self.queue_empty):
                    m.next = "REC"

            with m.State("SYNC_WAIT"):
                with m.If(sync_ok):
                    m.next = "REPLY"

            with m.State("ENQUEUE"):
                m.d.comb += cnt_inc["QUEUE_FULL"].eq(q_full)
                with m.If(enq_go):
                    m.d.sync += q_valid.bit_select(tail, 1).eq(1)
                    m.d.sync += tail.eq(wrap_inc(tail))
                    with m.Switch(op_k):
                        with m.Case(OPK[Opcode.GEMM]):
                            m.d.comb += [wjobs.w_en.eq(1),
                                         wjobs.w_data.eq(field(Opcode.GEMM, "w_addr"))]
                            m.d.sync += [q_op[tail].eq(_OP_GEMM),
                                         q_x[tail].eq(field(Opcode.GEMM, "a_addr")),
                                         q_y[tail].eq(field(Opcode.GEMM, "w_addr")),
                                         q_z[tail].eq(field(Opcode.GEMM, "acc_addr")),
                                         q_n[tail].eq(field(Opcode.GEMM, "m")),
                                         q_flags[tail].eq(field(Opcode.GEMM, "flags"))]
                        if cfg.has_activation:
                            with m.Case(OPK[Opcode.ACTIVATE]):
                                m.d.sync += [q_op[tail].eq(_OP_ACT),
                                             q_x[tail].eq(field(Opcode.ACTIVATE, "acc_addr")),
                                             q_y[tail].eq(field(Opcode.ACTIVATE, "out_addr")),
                                             q_n[tail].eq(field(Opcode.ACTIVATE, "m")),
                                             q_pe[tail].eq(field(Opcode.ACTIVATE, "param_entry")),
                                             q_func[tail].eq(field(Opcode.ACTIVATE, "function")),
                                             q_flags[tail].eq(field(Opcode.ACTIVATE, "flags"))]
                        if cfg.has_adam:
                            with m.Case(OPK[Opcode.ADAM]):
                                m.d.sync += [q_op[tail].eq(_OP_ADAM),
                                             q_x[tail].eq(field(Opcode.ADAM, "addr")),
                                             q_n[tail].eq(field(Opcode.ADAM, "count"))]
                        if mem is not None:
                            for o in (Opcode.LOAD, Opcode.STORE):
                                with m.Case(OPK[o]):
                                    m.d.sync += [
                                        q_op[tail].eq(_OP_DMA),
                                        q_x[tail].eq(field(o, "addr")),
                                        q_n[tail].eq(field(o, "count")),
                                        q_flags[tail].eq(Cat(Const(o == Opcode.STORE, 1),
                                                             field(o, "space")[:3])),
                                        q_d[tail].eq(field(o, "dram_addr")[lb:lb + LA])]
                                    with m.If(sp_hit[MemSpace.WEIGHT]):
                                        m.d.comb += [wjobs.w_en.eq(1),
                                                     wjobs.w_data.eq(1 << RA)]
                    m.next = "REPLY"

            with m.State("REPLY"):
                m.d.comb += self.reply.valid.eq(1)
                # for the next step, whichever it is (READ_REG: its reply pass)
                m.d.sync += [rec_mode.eq(_READ), cnt.eq(0), cnt_nz.eq(0)]
                set_bleft(wlast, zero=wlast_z)
                set_p(0)
                with m.If(self.reply.ready):
                    with m.If(reply_next == _R_RM):
                        rm_start()
                    for code, state in ((_R_DONE, "DONE"), (_R_RM, "RM_ADDR"),
                                        (_R_REC, "REC"), (_R_SEND, "SEND")):
                        with m.If(reply_next == code):
                            m.next = state

            with m.State("DONE"):
                m.d.comb += [self.frame.ready.eq(1), cnt_inc["FRAMES"].eq(1)]
                m.next = "IDLE"

        # --- formatted word for READ_MEM (sign-extended elements, LE bytes)
        def fmt_word(space, raw):
            w = word[space]
            eb = 8 * w.element_bytes
            if w.kind == "float":
                return raw
            elems = [raw[i * w.width:(i + 1) * w.width] for i in range(w.elements)]
            return Cat(*(_sext(e, w.width, eb) for e in elems))

        rd_src = {MemSpace.INPUT: fmt_word(MemSpace.INPUT, in_rp.data.as_value()),
                  MemSpace.WEIGHT: fmt_word(MemSpace.WEIGHT, w_rp.data.as_value()),
                  MemSpace.ACC: fmt_word(MemSpace.ACC, engine.rd_data.payload.as_value())}
        if out_rp is not None:
            rd_src[MemSpace.OUTPUT] = fmt_word(MemSpace.OUTPUT, out_rp.data.as_value())
        if opt_rp is not None:
            rd_src[MemSpace.OPT] = opt_rp.data
        if mem is not None:
            rd_src[MemSpace.DEVICE] = self.mem_rdata.payload
        # Each space's read data enters buf's AND-OR under its own strobe (a
        # flip-flop per space, set in DISPATCH): no multiplexer between the
        # block RAM outputs (slow on the ECP5) and buf.  Only the word's own
        # bytes are sent (wlast), so the widest word's bits above every other
        # word need no space gating.
        # They meet in rd_word, a register loaded in every cycle (RM_DATA's
        # edge takes the word; RM_LOAD moves it into buf).
        widest = max(rd_src, key=lambda s_: len(rd_src[s_]))
        narrow = max([len(v) for s_, v in rd_src.items() if s_ != widest], default=0)
        rd_word = Signal(len(rd_src[widest]))
        rd_any = Const(0, len(rd_word))
        for s_, v in rd_src.items():
            v = Value.cast(v)
            if s_ == widest:
                v = Cat(Mux(rd_sel[s_], v[:narrow], 0), v[narrow:])
            else:
                v = Mux(rd_sel[s_], v, 0)
            rd_any = rd_any | v
        if mem is None:
            rd_load = ~is_rd_acc | (acc_take & engine.rd_data.valid)
        else:
            rd_load = ((~is_rd_acc & ~is_rd_dev) | (acc_take & engine.rd_data.valid) |
                       (dev_take & self.mem_rdata.valid))
        with m.If(rd_load):
            m.d.sync += rd_word.eq(rd_any)
        rd_terms = [(b_rd, rd_word)]

        # The register and NOP replies load only the low 64 bits, which hold
        # no register record (a READ_REG's record address must survive its
        # reply value being loaded: the counter it names is looked up from it
        # while REG_CNT waits).
        lo = 64
        assert len(buf) - 48 >= lo, "a register record must sit above the reply bits"

        def _load(strobe, value, part):
            value = Value.cast(value)
            value = Cat(value, Const(0, max(0, len(buf) - len(value))))[part]
            return Mux(strobe, value, 0)

        def rd_or(part):
            out = Const(0, len(buf[part]))
            for st, v in rd_terms:
                out = out | _load(st, v, part)
            return out
        # The shift is the default value: the strobes belong to different
        # states, so at most one is high, and the shift strobe (behind cnt_nz
        # and the reply byte register) only reaches the enable, not the data
        # (an iCE40 critical path).
        for part, others in ((slice(0, lo), (b_rd, b_ident, b_reg, b_cnt)),
                             (slice(lo, len(buf)), (b_rd,))):
            loaded = rd_or(part)
            if len(others) > 1:
                loaded = (loaded |
                          _load(b_ident, Const(ident["ID"] | ident["VERSION"] << 32, 64), part) |
                          _load(b_reg, regval, part) | _load(b_cnt, bank.value, part))
            with m.If(b_shift | Cat(*others).any()):
                m.d.sync += buf[part].eq(Mux(Cat(*others).any(), loaded, buf_in[part]))

        m.d.comb += self.decoder_idle.eq(fsm.ongoing("IDLE"))
        # (26 states: a binary state compare is two LUT levels on the iCE40,
        # in front of every register enable the decoder drives)
        one_hot(fsm)


        # --- assembled word for WRITE_MEM (top wb bytes of buf, the cycle after
        # its last byte was shifted in)
        def wire_bits(space, raw):
            """A word of ``space`` as the scratchpad keeps it, from its wire
            layout ``raw`` (each element's low ``width`` bits)."""
            w = word[space]
            eb = 8 * w.element_bytes
            raw = raw[:8 * w.bytes]
            if w.kind == "float":
                return raw
            return Cat(*(raw[i * eb:i * eb + w.width] for i in range(w.elements)))

        def word_bits(space):
            base = 8 * (buf_bytes - word[space].bytes)
            return wire_bits(space, buf[base:])

        # (per-space write enables are flip-flops)
        with m.If(fe_we_sp[MemSpace.INPUT]):
            m.d.comb += [in_wp.en.eq(1), in_wp.addr.eq(fe_waddr),
                         in_wp.data.eq(word_bits(MemSpace.INPUT))]
        with m.If(fe_we_sp[MemSpace.WEIGHT]):
            m.d.comb += [w_wp.en.eq(1), w_wp.addr.eq(fe_waddr),
                         w_wp.data.eq(word_bits(MemSpace.WEIGHT))]
        with m.If(fe_we_sp[MemSpace.ACC]):
            # The hazard rules keep the engine idle, so acc_write is ready.
            m.d.comb += [engine.acc_write.valid.eq(1),
                         engine.acc_write.payload.addr.eq(fe_waddr),
                         engine.acc_write.payload.data.eq(word_bits(MemSpace.ACC))]
        if act is not None:
            with m.If(fe_we_sp[MemSpace.TABLE]):
                m.d.comb += [act.table_w_en.eq(1), act.table_w_addr.eq(fe_waddr),
                             act.table_w_data.eq(word_bits(MemSpace.TABLE))]
            def write_param(addr, bits):
                F = ACTIVATION_FORMAT
                m.d.comb += [act.param_w_en.eq(1), act.param_w_addr.eq(addr)]
                for j in range(cfg.cols):
                    def elem(row):
                        i = row * cfg.cols + j
                        return bits[32 * i:32 * i + 32]
                    m.d.comb += [act.param_w_data[j].bias.eq(elem(0)[:F.bias_bits]),
                                 act.param_w_data[j].multiplier.eq(elem(1)[:F.multiplier_bits]),
                                 act.param_w_data[j].shift.eq(elem(2)[:F.shift_bits])]
            with m.If(fe_we_sp[MemSpace.ACT_PARAM]):
                write_param(fe_waddr, word_bits(MemSpace.ACT_PARAM))

        # ----------------------------------------------------------- executor
        # The head entry is copied into address pointers and down-counters when
        # the executor takes it (one cycle), so no memory address is a sum.
        ex_ld = Signal()        # head entry loaded into the pointers below
        ex_p = Signal(RA)       # next source row (INPUT / ACC / OPT)
        ex_q = Signal(RA)       # next destination row (ACC / OUTPUT / OPT)
        ex_left = Signal(CW)    # rows still to issue
        ex_wleft = Signal(CW)   # results still to write (ACTIVATE / ADAM)
        ex_run = Signal()
        h_op, h_x, h_y, h_z, h_n = q_op[head], q_x[head], q_y[head], q_z[head], q_n[head]
        h_flags, h_func, h_pe = q_flags[head], q_func[head], q_pe[head]
        h_valid = q_valid.bit_select(head, 1)
        retire = Signal()
        # the kind of the loaded entry, and ex_left != 0, as flip-flops
        ex_gemm, ex_act, ex_adam, ex_more = Signal(), Signal(), Signal(), Signal()
        # a GEMM's accumulate flag, taken with the entry (the head entry's
        # fields are a multiplexer on head, which sat in front of the engine's
        # lookahead hazard logic through acts_next)
        ex_accum = Signal()
        # a LOAD / STORE taken: its direction, space (one flip-flop each),
        # first device-memory line, and the job offered to the DMA engine
        ex_dma, ex_st = Signal(), Signal()
        ex_sp = {s_: Signal(name=f"ex_dma_{s_.name.lower()}") for s_ in dma_all}
        ex_space = Signal(3)
        ex_dram = Signal(LA if mem is not None else 1)
        if mem is not None:
            with m.If(h_valid & ~ex_ld):
                m.d.sync += [ex_dma.eq(h_op == _OP_DMA), ex_st.eq(h_flags[0]),
                             ex_space.eq(h_flags[1:4]), ex_dram.eq(q_d[head]),
                             *(f_.eq((h_op == _OP_DMA) & (h_flags[1:4] == int(s_)))
                               for s_, f_ in ex_sp.items())]
        with m.If(h_valid & ~ex_ld):
            # (every queued entry has n >= 1: the decoder's range checks)
            m.d.sync += [ex_ld.eq(1), ex_p.eq(h_x), ex_left.eq(h_n), ex_wleft.eq(h_n),
                         ex_more.eq(1),
                         ex_gemm.eq(h_op == _OP_GEMM), ex_act.eq(h_op == _OP_ACT),
                         ex_accum.eq((h_flags & GEMM_ACCUMULATE) != 0),
                         ex_adam.eq(h_op == _OP_ADAM),
                         ex_q.eq(Mux(h_op == _OP_GEMM, h_z, Mux(h_op == _OP_ACT, h_y, h_x)))]

        def issue_next():
            m.d.sync += [ex_p.eq(ex_p + 1), ex_left.eq(ex_left - 1), ex_more.eq(ex_left != 1)]

        run_act = Signal()
        run_adam = Signal()
        m.d.comb += [run_gemm.eq(ex_gemm),
                     run_act.eq(ex_act & ex_run),
                     run_adam.eq(ex_adam)]

        # GEMM: INPUT rows -> engine.acts (read port data held under back-pressure)
        acts = engine.acts
        acts_last = Signal()
        acts_addr = Signal(range(cfg.acc_depth))
        acts_accum = Signal()
        adv = ~acts.valid | acts.ready
        ex_in_ren = Signal()
        ex_in_raddr = ex_p
        m.d.comb += [acts.payload.data.eq(in_rp.data), acts.payload.last.eq(acts_last),
                     acts.payload.acc_addr.eq(acts_addr), acts.payload.accumulate.eq(acts_accum)]
        # The engine decides the next row's hazard stall a cycle ahead from
        # what this edge loads (acts_next), off its accept path.
        acts_accum_next = ex_accum
        m.d.comb += [engine.acts_next.valid.eq(ex_in_ren),
                     engine.acts_next.acc_addr.eq(ex_q),
                     engine.acts_next.accumulate.eq(acts_accum_next)]
        with m.If(adv):
            m.d.sync += acts.valid.eq(0)
            with m.If(run_gemm & ex_more):
                m.d.comb += ex_in_ren.eq(1)
                m.d.sync += [acts.valid.eq(1), acts_last.eq(ex_left == 1),
                             acts_addr.eq(ex_q),
                             acts_accum.eq(acts_accum_next),
                             ex_q.eq(ex_q + 1)]
                issue_next()
        # A GEMM retires once its last row is issued, not once the engine took
        # it: acts.ready (from the engine's hazard and array logic) then only
        # reaches the acts register, the issue pointers and the read enable,
        # not the queue.  Until that row is taken (acts.valid) the engine
        # counts as busy for the hazards (eng_busy) and its weight rows stay
        # protected (see the hazard check).
        with m.If(run_gemm & ~ex_more):
            m.d.comb += retire.eq(1)
        m.d.comb += [cnt_inc["GEMM_BUSY"].eq(run_gemm),
                     cnt_inc["GEMM_STALL"].eq(acts.valid & ~acts.ready)]
        gemm_port = run_gemm | acts.valid
        m.d.comb += in_port_busy.eq(gemm_port)
        m.d.comb += [in_rp.addr.eq(Mux(gemm_port, ex_in_raddr, fe_in_raddr)),
                     in_rp.en.eq(Mux(gemm_port, ex_in_ren, fe_in_ren))]

        # weight feeder
        wts = engine.weights
        wf_ptr = Signal(RA)
        wf_r = Signal(range(cfg.rows + 1))
        wf_busy = Signal()
        wadv = ~wts.valid | wts.ready
        wf_ren = Signal()
        wf_raddr = Signal(RA)
        m.d.comb += wts.payload.eq(w_rp.data)
        w_barrier_head = Signal()   # a LOAD / STORE of WEIGHT waits at the feeder's head
        w_barrier_done = Signal()   # ... and retires now
        if mem is None:
            with m.If(~wf_busy):
                m.d.comb += wjobs.r_en.eq(1)
                with m.If(wjobs.r_rdy):
                    m.d.sync += [wf_busy.eq(1), wf_ptr.eq(wjobs.r_data), wf_r.eq(0)]
        else:
            m.d.comb += w_barrier_head.eq(wjobs.r_rdy & wjobs.r_data[RA])
            with m.If(~wf_busy):
                m.d.comb += wjobs.r_en.eq(~wjobs.r_data[RA] | w_barrier_done)
                with m.If(wjobs.r_rdy & ~wjobs.r_data[RA]):
                    m.d.sync += [wf_busy.eq(1), wf_ptr.eq(wjobs.r_data[:RA]), wf_r.eq(0)]
        with m.If(wadv):
            m.d.sync += wts.valid.eq(0)
            with m.If(wf_busy):
                with m.If(wf_r < cfg.rows):
                    m.d.comb += [wf_ren.eq(1), wf_raddr.eq(wf_ptr)]
                    m.d.sync += [wts.valid.eq(1), wf_r.eq(wf_r + 1), wf_ptr.eq(wf_ptr + 1)]
                with m.Else():
                    m.d.sync += wf_busy.eq(0)
        w_port = wf_busy | wts.valid
        m.d.comb += w_port_busy.eq(w_port | wjobs.r_rdy)
        m.d.comb += [w_rp.addr.eq(Mux(w_port, wf_raddr, fe_w_raddr)),
                     w_rp.en.eq(Mux(w_port, wf_ren, fe_w_ren))]

        # ACTIVATE: wait for the engine to drain, ACC rows -> unit -> OUTPUT
        if act is not None:
            with m.If(ex_act & ~ex_run & ~eng_busy):
                m.d.sync += ex_run.eq(1)
            with m.If(run_act):
                m.d.comb += [engine.rd_addr.valid.eq(ex_more),
                             engine.rd_addr.payload.eq(ex_p)]
                with m.If(engine.rd_addr.valid & engine.rd_addr.ready):
                    issue_next()
                m.d.comb += [act.inp.valid.eq(engine.rd_data.valid),
                             engine.rd_data.ready.eq(act.inp.ready)]
            a_in_cnt = Signal(CW)
            m.d.comb += [act.inp.payload.data.eq(engine.rd_data.payload),
                         act.inp.payload.function.eq(h_func),
                         act.inp.payload.precision.eq(h_flags & ACT_PRECISION_MASK),
                         act.inp.payload.param_entry.eq(h_pe),
                         act.inp.payload.table.eq(h_flags >> ACT_TABLE_SHIFT),
                         act.inp.payload.last.eq(a_in_cnt == h_n - 1),
                         act.out.ready.eq(1)]
            with m.If(act.inp.valid & act.inp.ready):
                m.d.sync += a_in_cnt.eq(a_in_cnt + 1)
            with m.If(retire):
                m.d.sync += a_in_cnt.eq(0)
            ex_out_we = Signal()
            with m.If(run_act & act.out.valid):
                m.d.comb += ex_out_we.eq(1)
                m.d.sync += [ex_q.eq(ex_q + 1), ex_wleft.eq(ex_wleft - 1)]
                with m.If(ex_wleft == 1):
                    m.d.comb += retire.eq(1)
            m.d.comb += [out_wp.en.eq(Mux(run_act, ex_out_we, fe_we_sp[MemSpace.OUTPUT])),
                         out_wp.addr.eq(Mux(run_act, ex_q, fe_waddr)),
                         out_wp.data.eq(Mux(run_act, act.out.payload.data.as_value(),
                                            word_bits(MemSpace.OUTPUT))),
                         out_rp.addr.eq(fe_out_raddr), out_rp.en.eq(fe_out_ren)]
            m.d.comb += [cnt_inc["ACT_BUSY"].eq(h_valid & (h_op == _OP_ACT)),
                         cnt_inc["ACT_STALL"].eq(act.inp.valid & ~act.inp.ready)]

        # ADAM: OPT words -> unit -> param, m, v written back
        if adam is not None:
            ain = adam.inp
            aadv = ~ain.valid | ain.ready
            ex_opt_ren = Signal()
            ex_opt_raddr = Signal(RA)
            a_last = Signal()
            m.d.comb += [ain.payload.lanes.eq(opt_rp.data), ain.payload.last.eq(a_last),
                         adam.out.ready.eq(1)]
            with m.If(aadv):
                m.d.sync += ain.valid.eq(0)
                with m.If(run_adam & ex_more):
                    m.d.comb += [ex_opt_ren.eq(1), ex_opt_raddr.eq(ex_p)]
                    m.d.sync += [ain.valid.eq(1), a_last.eq(ex_left == 1)]
                    issue_next()
            ex_opt_we = Signal()
            with m.If(run_adam & adam.out.valid):
                m.d.comb += ex_opt_we.eq(1)
                m.d.sync += [ex_q.eq(ex_q + 1), ex_wleft.eq(ex_wleft - 1)]
                with m.If(ex_wleft == 1):
                    m.d.comb += retire.eq(1)
            adam_word = Cat(*(Cat(adam.out.payload.lanes[i].param, Const(0, 32),
                                  adam.out.payload.lanes[i].m, adam.out.payload.lanes[i].v)
                              for i in range(cfg.adam_lanes)))
            adam_en = Cat(*(Const(0b1101, 4) for _ in range(cfg.adam_lanes)))
            adam_port = run_adam | ain.valid
            m.d.comb += [
                opt_rp.addr.eq(Mux(adam_port, ex_opt_raddr, fe_opt_raddr)),
                opt_rp.en.eq(Mux(adam_port, ex_opt_ren, fe_opt_ren)),
                opt_wp.addr.eq(Mux(run_adam, ex_q, fe_waddr)),
                opt_wp.data.eq(Mux(run_adam, adam_word, word_bits(MemSpace.OPT))),
                opt_wp.en.eq(Mux(run_adam, Mux(ex_opt_we, adam_en, 0),
                                 Mux(fe_we_sp[MemSpace.OPT],
                                     (1 << (4 * cfg.adam_lanes)) - 1, 0))),
                cnt_inc["ADAM_BUSY"].eq(run_adam),
                cnt_inc["ADAM_STALL"].eq(ain.valid & ~ain.ready),
            ]

        # LOAD / STORE: the DMA engine takes the job once the rows it touches
        # are free (in queue order, everything before it has retired): WEIGHT
        # once the feeder has fed every earlier tile and waits at this
        # transfer's barrier, INPUT once the last GEMM row left the read
        # port, ACC once the engine is idle; and once the front end's DEVICE
        # requests are done.  While it runs it owns its space's ports.
        if dma is not None:
            job = dma.job
            go_c = ex_dma & ~ex_run & ~job.valid & ~dev_pending
            if MemSpace.WEIGHT in ex_sp:
                go_c = go_c & (~ex_sp[MemSpace.WEIGHT] |
                               (~wf_busy & ~wts.valid & w_barrier_head))
            if MemSpace.INPUT in ex_sp:
                go_c = go_c & (~ex_sp[MemSpace.INPUT] | ~acts.valid)
            if MemSpace.ACC in ex_sp:
                go_c = go_c & (~ex_sp[MemSpace.ACC] | ~eng_busy)
            with m.If(go_c):
                m.d.sync += job.valid.eq(1)
            taken = job.valid & job.ready
            with m.If(taken):
                m.d.sync += [job.valid.eq(0), ex_run.eq(1)]
            # the spaces whose read ports a running STORE holds (ex_run: the
            # DMA engine has taken the head entry)
            d_rd = {s_: ex_sp[s_] & ex_st & ex_run for s_ in dma_spaces(cfg, Opcode.STORE)}
            m.d.comb += [job.payload.store.eq(ex_st), job.payload.space.eq(ex_space),
                         job.payload.addr.eq(ex_p), job.payload.count.eq(ex_left),
                         job.payload.dram_addr.eq(Cat(Const(0, lb), ex_dram))]
            with m.If(ex_dma & dma.done):
                m.d.comb += retire.eq(1)
                if MemSpace.WEIGHT in ex_sp:
                    m.d.comb += w_barrier_done.eq(ex_sp[MemSpace.WEIGHT])

            # LOAD: a word a cycle into the scratchpad (the other writers of
            # the space wait: the hazard rules and the queue order)
            write_ports = {MemSpace.INPUT: in_wp, MemSpace.WEIGHT: w_wp}
            for s_ in dma_spaces(cfg, Opcode.LOAD):
                bits = wire_bits(s_, dma.sp_wr_data)
                with m.If(dma.sp_wr_en & (dma.sp_wr_space == int(s_))):
                    if s_ in write_ports:
                        wp = write_ports[s_]
                        m.d.comb += [wp.en.eq(1), wp.addr.eq(dma.sp_wr_addr), wp.data.eq(bits)]
                    elif s_ == MemSpace.ACC:
                        # (the engine is idle: acc_write is ready)
                        m.d.comb += [engine.acc_write.valid.eq(1),
                                     engine.acc_write.payload.addr.eq(dma.sp_wr_addr),
                                     engine.acc_write.payload.data.eq(bits)]
                    elif s_ == MemSpace.OPT:
                        m.d.comb += [opt_wp.en.eq((1 << (4 * cfg.adam_lanes)) - 1),
                                     opt_wp.addr.eq(dma.sp_wr_addr), opt_wp.data.eq(bits)]
                    elif s_ == MemSpace.ACT_PARAM:
                        write_param(dma.sp_wr_addr, bits)
                    else:   # pragma: no cover - DMA_LOAD_SPACES
                        raise AssertionError(f"no LOAD port for {s_!r}")

            # STORE: a word a cycle from the scratchpad's read port, in the
            # wire layout, the cycle after its read
            read_ports = {MemSpace.INPUT: in_rp, MemSpace.WEIGHT: w_rp, MemSpace.OUTPUT: out_rp,
                          MemSpace.OPT: opt_rp}
            rd_data = []
            for s_, sel in d_rd.items():
                with m.If(sel):
                    if s_ in read_ports:
                        rp = read_ports[s_]
                        m.d.comb += [rp.addr.eq(dma.sp_rd_addr), rp.en.eq(dma.sp_rd_en)]
                        raw = Value.cast(rp.data)
                    elif s_ == MemSpace.ACC:
                        # (rd_data is always taken, so a read is answered
                        # the next cycle, like a block RAM's)
                        m.d.comb += [engine.rd_addr.valid.eq(dma.sp_rd_en),
                                     engine.rd_addr.payload.eq(dma.sp_rd_addr),
                                     engine.rd_data.ready.eq(1)]
                        raw = Value.cast(engine.rd_data.payload)
                    else:   # pragma: no cover - DMA_STORE_SPACES
                        raise AssertionError(f"no STORE port for {s_!r}")
                rd_data.append(Mux(sel, fmt_word(s_, raw), 0))
            m.d.comb += dma.sp_rd_data.eq(_or_all(rd_data, len(dma.sp_rd_data)))

            # the controller: the DMA engine while it holds a job, else the
            # front end's DEVICE writes (dev_wr) and reads (dev_req); never
            # both (a LOAD / STORE waits for dev_pending, a DEVICE access for
            # every queued LOAD / STORE)
            mc, mw, mr = self.mem_cmd, self.mem_wdata, self.mem_rdata
            fe_cmd = dev_wr.r_rdy | dev_req
            m.d.comb += [
                dev_wr.w_en.eq(fe_we_sp[MemSpace.DEVICE]),
                dev_wr.w_data.eq(Cat(fe_dwaddr, word_bits(MemSpace.DEVICE))),
                mc.valid.eq(Mux(dma.busy, dma.mem_cmd.valid, fe_cmd)),
                mc.payload.addr.eq(Mux(dma.busy, dma.mem_cmd.payload.addr,
                                       Mux(dev_wr.r_rdy, dev_wr.r_data[:LA], dev_ptr))),
                mc.payload.write.eq(Mux(dma.busy, dma.mem_cmd.payload.write, dev_wr.r_rdy)),
                mw.valid.eq(Mux(dma.busy, dma.mem_wdata.valid, dev_wr.r_rdy)),
                mw.payload.eq(Mux(dma.busy, dma.mem_wdata.payload, dev_wr.r_data[LA:])),
                dma.mem_cmd.ready.eq(mc.ready & dma.busy),
                dma.mem_wdata.ready.eq(mw.ready & dma.busy),
                dev_wr.r_en.eq(mw.ready & ~dma.busy),
                dma.mem_rdata.valid.eq(mr.valid & dma.busy),
                dma.mem_rdata.payload.eq(mr.payload),
                mr.ready.eq(Mux(dma.busy, dma.mem_rdata.ready, dev_take)),
                dma.mem_ready.eq(self.mem_ready),
                cnt_inc["DMA_BUSY"].eq(taken | dma.busy),
                cnt_inc["DMA_BYTES_IN"].eq(dma.mem_rdata.valid & dma.mem_rdata.ready),
                cnt_inc["DMA_BYTES_OUT"].eq(dma.mem_wdata.valid & dma.mem_wdata.ready),
            ]

        # retiring resets the executor (after the unit blocks, so it wins)
        with m.If(retire):
            m.d.sync += [q_valid.bit_select(head, 1).eq(0), head.eq(wrap_inc(head)),
                         ex_run.eq(0), ex_ld.eq(0), ex_gemm.eq(0), ex_act.eq(0), ex_adam.eq(0)]
            if dma is not None:
                m.d.sync += [ex_dma.eq(0), *(f_.eq(0) for f_ in ex_sp.values())]

        # ----------------------------------------------------------- counters
        m.d.comb += [cnt_inc["CYCLES"].eq(1), cnt_inc["BYTES_IN"].eq(self.rx_byte)]
        # The events and the clear reach the bank through flip-flops (all one
        # cycle late, so a clear still drops exactly the events of its own
        # cycle): the decoder's and the executor's conditions then stop at
        # these flip-flops instead of running on into the bank's adders.
        for name, i in cnt_index.items():
            if name == "BYTES_OUT":
                m.d.sync += bank.add[i].eq(Mux(fsm.ongoing("DONE"), rlen + 7, 0))
            elif name in ("DMA_BYTES_IN", "DMA_BYTES_OUT"):
                m.d.sync += bank.add[i].eq(Mux(cnt_inc[name], LINE_BITS // 8, 0))
            else:
                m.d.sync += bank.add[i].eq(cnt_inc[name])
        return m
