"""DMA engine: LOAD and STORE between the board SDRAM and the scratchpads.

:class:`DmaEngine` executes one LOAD or STORE at a time (the instruction's
semantics: :data:`hetaccel.spec.INSTRUCTIONS`, docs/device-memory.md; its
golden model: ``DeviceModel._dma`` of :mod:`hetaccel.sim.device_model`).  It
talks to :class:`hetaccel.rtl.sdram.SdramController` in whole 16-byte lines
and to the scratchpads one word a cycle, and it keeps the SDRAM streaming: a
LOAD presents its lines back to back from its first request, a STORE has the
next line and its data ready whenever the controller can take it, so the
memory side takes exactly what :meth:`hetaccel.sim.sdram_model.SdramModel.
transfer_cycles` says and the whole job :func:`hetaccel.spec.timing.
dma_cycles`.

Ports
-----
``job`` : In(stream of :meth:`DmaEngine.job_layout`)
    One decoded LOAD / STORE that :func:`hetaccel.spec.validate_instruction`
    accepted: ``store`` (0 LOAD, 1 STORE), ``space`` (a
    :class:`~hetaccel.spec.MemSpace` of :func:`~hetaccel.spec.dma_spaces`),
    ``addr`` (first scratchpad word), ``dram_addr`` (bytes, line-aligned),
    ``count`` (words, at most the space's depth).  ``ready`` is high while the
    engine is idle; the job is taken in the cycle ``valid`` and ``ready``
    are both high (cycle 0 of :func:`~hetaccel.spec.timing.dma_cycles`).
``done`` : Out(1)
    One-cycle pulse: the job retires.  A LOAD's last scratchpad write is on
    the write port no later than this cycle; a STORE's last line is on the
    SDRAM pins (its last beat two cycles before).
``busy`` : Out(1)
    A job is held, from the cycle after it was taken through ``done``.
``mem_cmd`` : Out(stream of ``{"addr": line address, "write": 1}``)
    To ``SdramController.cmd``: ``addr`` counts 16-byte lines
    (``dram_addr // 16``).
``mem_wdata`` : Out(stream of 128 bits)
    To ``SdramController.wdata``: a STORE's line, byte ``i`` in bits
    ``8*i .. 8*i+7``; valid together with its write command.
``mem_rdata`` : In(stream of 128 bits)
    From ``SdramController.rdata``.  ``ready`` is high during a LOAD except
    while the previous line is still being split into words (words of fewer
    than 4 bytes only: lines come at most one every 8 cycles), so the
    controller's own back-pressure never holds a READ otherwise.
``mem_ready`` : In(1)
    From ``SdramController.ready``: every accepted request has finished.  A
    STORE retires two cycles after its last write burst's last beat, which
    only the controller knows.
``sp_wr_space``, ``sp_wr_addr``, ``sp_wr_data``, ``sp_wr_en`` : Out
    Scratchpad write port (a LOAD): write word ``sp_wr_data`` at
    ``sp_wr_addr`` of ``sp_wr_space`` at the end of a cycle with
    ``sp_wr_en``.  ``sp_wr_data`` is the word in its wire layout
    (:func:`~hetaccel.spec.pack_words`: element ``e`` at bits
    ``8*element_bytes*e`` up, little-endian), as wide as the widest word
    LOAD moves; bits from ``8 * word bytes`` of the space up are not
    defined.  The scratchpad keeps the low ``width`` bits of each element.
``sp_rd_space``, ``sp_rd_addr``, ``sp_rd_en`` : Out; ``sp_rd_data`` : In
    Scratchpad read port (a STORE), registered like
    :class:`~hetaccel.rtl.bram.RegisteredReadPort`: the word read in a cycle
    with ``sp_rd_en`` is on ``sp_rd_data`` in the next cycle, in the wire
    layout (integers sign-extended to their element bytes), as wide as the
    widest word STORE moves; bits above the space's word are ignored.
``busy_cycles``, ``bytes_in``, ``bytes_out`` : Out(32)
    The ``DMA_BUSY``, ``DMA_BYTES_IN`` and ``DMA_BYTES_OUT`` counters
    (:data:`~hetaccel.spec.MEMORY_COUNTERS`): cycles from a job's taking to
    its ``done`` inclusive (:func:`~hetaccel.spec.timing.dma_cycles` for a job
    run on its own), and 16 per line moved.  Wrap at 2**32.
``clear`` : In(1)
    Zero the three counters at the end of this cycle (the ``CONTROL``
    register's counter reset); what the cycle would have counted is lost.

Every output comes straight from a register (``job.ready``, ``mem_rdata.ready``
through one gate).

Schedule
--------
With ``a`` the cycle the job is taken:

LOAD
    ``a + 1``: the job's registers; ``a + 2``: the first line request
    (``DMA_LEAD[LOAD] = 2``), then one request after another as the
    controller takes them.  A line taken from ``mem_rdata`` in cycle ``p`` is
    written in ``p + 1`` (its first word, or the word its last line
    completes) and the next words of a packed line in ``p + 2``, ...  The job
    retires at ``max(p + 2, its last write)`` for its last line's ``p``:
    ``DMA_TAIL = 2`` for words of at least 8 bytes.
STORE
    ``a + 1``: the first scratchpad read, then one read a cycle while the
    line buffers have room: the line on the memory side (``mem_wdata``)
    and the one being assembled (words of 16 bytes and more: the whole
    word, shifted out a line at a time).  The first line is presented in
    ``a + 4`` (``DMA_LEAD[STORE] = 4``): a read, its data, the assembly
    register, the line register -- or, for two words per line, their two
    reads, the second's data going straight into the line register.  The
    job retires two cycles after its last beat on the pins
    (``DMA_TAIL = 2``: ``mem_ready`` rises the cycle after it).

Words of less than half a line are not moved
(:func:`hetaccel.spec.dma_spaces`): read or written one a cycle they could
not keep the SDRAM streaming (the controller takes the first three lines of a
write two cycles apart), and the contract's cycles would not hold.

Logic depth (100 MHz on the ECP5): the widest multiplexers are in front of
registers and select among at most one source per word size plus a hold
(the line register: the assembled line or, per packed word size, the
assembly register with its last word from ``sp_rd_data``); the 128-bit
read word from the controller's LUT-RAM FIFO goes through one such
multiplexer into the write-data register.  Long words are assembled and
emptied by register enables and a fixed 128-bit shift, never by a mux over
their lines.  Counters are compared against registered "last" flags.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import AcceleratorConfig, MemSpace, Opcode, dma_spaces, mem_depth, mem_word
from ..spec.timing import DMA_LEAD, DMA_TAIL
from .contract import check_depth

__all__ = ["DmaEngine", "LINE_BITS"]

#: Bits of one device-memory line (one SdramController word).
LINE_BITS = 128
_LINE_BYTES = LINE_BITS // 8

# Registers between the job being taken and the first request (see the
# module docstring's schedule), and between the last line and retirement.
_LEAD_STAGES = {
    Opcode.LOAD: ("job registers", "mem_cmd register"),
    Opcode.STORE: ("sp_rd_en register", "scratchpad read register", "assembly register",
                   "line register"),
}
_TAIL_STAGES = {
    Opcode.LOAD: ("sp_wr_data register", "done register"),
    Opcode.STORE: ("controller dq_oe register", "done register"),
}


class _Space:
    """How one space's words sit in lines: ``k`` words per line (packed,
    ``k >= 2``) or ``L`` lines per word."""

    def __init__(self, config, space):
        self.space = MemSpace(space)
        self.word_bytes = mem_word(config, space).bytes
        if self.word_bytes < _LINE_BYTES:
            self.k, self.L = _LINE_BYTES // self.word_bytes, 1
        else:
            self.k, self.L = 1, self.word_bytes // _LINE_BYTES
        self.packed = self.k > 1
        self.shift = self.k.bit_length() - 1        # count -> lines of a packed space


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class DmaEngine(wiring.Component):
    """LOAD / STORE between the SDRAM and the scratchpads (see the module docstring).

    Parameters
    ----------
    config : AcceleratorConfig
        Must have ``device_memory="sdram32m"``.

    Attributes
    ----------
    load_spaces, store_spaces : dict[MemSpace, _Space]
        The spaces each direction moves.
    addr_bits : int
        Width of ``job.addr`` and the scratchpad addresses (the deepest space).
    line_addr_bits : int
        Width of ``mem_cmd.addr``.
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        mem = config.memory
        if mem is None or mem.name != "sdram32m":
            raise ValueError(f"DmaEngine moves words to and from the SDRAM: config.device_memory "
                             f"must be 'sdram32m', not {config.device_memory!r}")
        if mem.line_bytes != _LINE_BYTES:   # pragma: no cover - the contract's SDRAM line
            raise ValueError(f"DmaEngine needs {_LINE_BYTES}-byte lines, not {mem.line_bytes}")
        self.config = config
        self.load_spaces = {s: _Space(config, s) for s in sorted(dma_spaces(config, Opcode.LOAD))}
        self.store_spaces = {s: _Space(config, s)
                             for s in sorted(dma_spaces(config, Opcode.STORE))}
        spaces = {**self.load_spaces, **self.store_spaces}
        depth = max(mem_depth(config, s) for s in spaces)
        self.addr_bits = _bits(depth)
        self.count_bits = depth.bit_length()
        self.line_addr_bits = _bits(mem.lines)
        self.wr_bits = 8 * max(s.word_bytes for s in self.load_spaces.values())
        self.rd_bits = 8 * max(s.word_bytes for s in self.store_spaces.values())
        for op in (Opcode.LOAD, Opcode.STORE):
            check_depth(f"DmaEngine {op.name} lead", len(_LEAD_STAGES[op]), DMA_LEAD[op],
                        f"hetaccel.spec.timing.DMA_LEAD[{op.name}]")
            check_depth(f"DmaEngine {op.name} tail", len(_TAIL_STAGES[op]), DMA_TAIL,
                        "hetaccel.spec.timing.DMA_TAIL")
        super().__init__({
            "job": In(stream.Signature(self.job_layout(config))),
            "done": Out(1),
            "busy": Out(1),
            "mem_cmd": Out(stream.Signature(data.StructLayout(
                {"addr": self.line_addr_bits, "write": 1}))),
            "mem_wdata": Out(stream.Signature(LINE_BITS)),
            "mem_rdata": In(stream.Signature(LINE_BITS)),
            "mem_ready": In(1),
            "sp_wr_space": Out(3),
            "sp_wr_addr": Out(self.addr_bits),
            "sp_wr_data": Out(self.wr_bits),
            "sp_wr_en": Out(1),
            "sp_rd_space": Out(3),
            "sp_rd_addr": Out(self.addr_bits),
            "sp_rd_en": Out(1),
            "sp_rd_data": In(self.rd_bits),
            "busy_cycles": Out(32),
            "bytes_in": Out(32),
            "bytes_out": Out(32),
            "clear": In(1),
        })

    @staticmethod
    def job_layout(config: AcceleratorConfig) -> data.StructLayout:
        """Payload of ``job`` (``addr`` as wide as the deepest DMA space needs)."""
        spaces = dma_spaces(config, Opcode.LOAD) | dma_spaces(config, Opcode.STORE)
        if not spaces:
            raise ValueError(f"config has no device memory to move words to "
                             f"(device_memory={config.device_memory!r})")
        depth = max(mem_depth(config, s) for s in spaces)
        return data.StructLayout({"store": 1, "space": 3, "addr": _bits(depth),
                                  "dram_addr": 32, "count": 32})

    def elaborate(self, platform):
        m = Module()
        job = self.job.payload
        ld_spaces, st_spaces = self.load_spaces, self.store_spaces
        CW = self.count_bits
        # (at least 2, so no counter is zero bits wide)
        max_lines = max(2, *(s.L for s in {**ld_spaces, **st_spaces}.values()))
        max_k = max(2, *(s.k for s in {**ld_spaces, **st_spaces}.values()))

        # --- the job ---------------------------------------------------------
        busy = Signal()
        accept = Signal()
        done = Signal()
        ld = Signal()            # a LOAD is held
        st = Signal()            # a STORE is held
        m.d.comb += [self.job.ready.eq(~busy), accept.eq(self.job.valid & ~busy),
                     self.busy.eq(busy), self.done.eq(done)]
        j_lm1 = Signal(range(max_lines))        # lines per word - 1 (0 when packed)
        j_km1 = Signal(range(max_k))            # words per line - 1 (0 when not packed)
        j_packed = Signal()
        with m.If(accept):
            m.d.sync += [busy.eq(1), ld.eq(~job.store), st.eq(job.store)]
        with m.If(done):
            m.d.sync += [busy.eq(0), ld.eq(0), st.eq(0)]

        def per_space(table, assign):
            """At the job's taking: ``assign(space)`` for its space (of ``table``)."""
            with m.Switch(job.space):
                for code, sp in table.items():
                    with m.Case(int(code)):
                        assign(sp)

        # --- memory side: requests ------------------------------------------
        cv = Signal()            # mem_cmd.valid
        wv = Signal()            # mem_wdata.valid: a STORE's line register is full
        caddr = Signal(self.line_addr_bits)
        cwrite = Signal()
        line = Signal(LINE_BITS)             # a STORE's line register
        cacc = Signal()
        m.d.comb += [
            self.mem_cmd.valid.eq(cv), self.mem_cmd.payload.addr.eq(caddr),
            self.mem_cmd.payload.write.eq(cwrite),
            self.mem_wdata.valid.eq(wv), self.mem_wdata.payload.eq(line),
            cacc.eq(cv & self.mem_cmd.ready),
        ]
        with m.If(cacc):
            m.d.sync += caddr.eq(caddr + 1)
        with m.If(accept):
            m.d.sync += [caddr.eq(job.dram_addr[4:4 + self.line_addr_bits]),
                         cwrite.eq(job.store)]

        # --- LOAD: line requests -----------------------------------------------
        ld_start = Signal()
        rq_units = Signal(CW)                 # lines (packed) or words still to request
        rq_last_unit = Signal()
        rq_sub = Signal(range(max_lines))     # line of the word being requested
        with m.If(accept & ~job.store):
            m.d.sync += [ld_start.eq(1), rq_sub.eq(0)]

            def ld_setup(sp):
                units = job.count[sp.shift:CW]
                m.d.sync += [rq_units.eq(units), rq_last_unit.eq(units == 1),
                             j_lm1.eq(sp.L - 1), j_km1.eq(sp.k - 1), j_packed.eq(sp.packed)]
            per_space(ld_spaces, ld_setup)
        with m.If(ld_start):
            m.d.sync += [ld_start.eq(0), cv.eq(1)]
        with m.If(ld & cacc):
            with m.If(rq_sub == j_lm1):
                m.d.sync += [rq_sub.eq(0), rq_units.eq(rq_units - 1),
                             rq_last_unit.eq(rq_units == 2)]
                with m.If(rq_last_unit):
                    m.d.sync += cv.eq(0)
            with m.Else():
                m.d.sync += rq_sub.eq(rq_sub + 1)

        # --- LOAD: lines into words ---------------------------------------------
        # A packed line is split by shifting it right one word a cycle; a long
        # word's lines go straight into their slot of the write-data register.
        ld_sizes = sorted({sp.word_bytes for sp in ld_spaces.values() if sp.packed})
        ld_size = {b: Signal(name=f"ld_size{b}") for b in ld_sizes}   # one-hot: the job's
        with m.If(accept):
            for b, s in ld_size.items():
                m.d.sync += s.eq(0)

            def ld_size_setup(sp):
                if sp.packed:
                    m.d.sync += ld_size[sp.word_bytes].eq(1)
            per_space(ld_spaces, ld_size_setup)

        rem = Signal(range(max_k))             # words of the popped line not yet written
        line_sr = Signal(LINE_BITS)
        dsub = Signal(range(max_lines))        # line of the word being received
        rdata = self.mem_rdata.payload
        pop = Signal()
        wr_fire = Signal()                     # a complete word goes to the write register
        m.d.comb += [self.mem_rdata.ready.eq(ld & (rem == 0)),
                     pop.eq(self.mem_rdata.valid & self.mem_rdata.ready),
                     wr_fire.eq((pop & (dsub == j_lm1)) | (rem != 0))]
        wdata = self.sp_wr_data
        nslots = -(-self.wr_bits // LINE_BITS)
        slots = [wdata[LINE_BITS * j:min(LINE_BITS * (j + 1), self.wr_bits)]
                 for j in range(nslots)]
        with m.If(pop):
            m.d.sync += [rem.eq(j_km1), dsub.eq(dsub + 1)]
            with m.If(dsub == j_lm1):
                m.d.sync += dsub.eq(0)
            for b, sel in ld_size.items():
                with m.If(sel):
                    m.d.sync += line_sr.eq(rdata[8 * b:])
            for j, slot in enumerate(slots):
                with m.If(dsub == j):
                    m.d.sync += slot.eq(rdata[:len(slot)])
        with m.Elif(rem != 0):
            m.d.sync += [rem.eq(rem - 1), slots[0].eq(line_sr[:len(slots[0])])]
            for b, sel in ld_size.items():
                with m.If(sel):
                    m.d.sync += line_sr.eq(line_sr[8 * b:])
        with m.If(accept):
            m.d.sync += [dsub.eq(0), rem.eq(0)]

        wleft = Signal(CW)                     # words not yet in the write register
        w_last = Signal()
        placed_all = Signal()
        m.d.sync += self.sp_wr_en.eq(wr_fire)
        with m.If(self.sp_wr_en):
            m.d.sync += self.sp_wr_addr.eq(self.sp_wr_addr + 1)
        with m.If(wr_fire):
            m.d.sync += [wleft.eq(wleft - 1), w_last.eq(wleft == 2)]
            with m.If(w_last):
                m.d.sync += placed_all.eq(1)
        count = job.count[:CW]
        with m.If(accept & ~job.store):
            m.d.sync += [self.sp_wr_space.eq(job.space), self.sp_wr_addr.eq(job.addr),
                         wleft.eq(count), w_last.eq(count == 1), placed_all.eq(0)]
        ld_done = Signal()
        m.d.comb += ld_done.eq(ld & ~done & (placed_all | (wr_fire & w_last & ~pop)))

        # --- STORE: scratchpad reads ----------------------------------------------
        # Credits count what the two line buffers (assembly and line register)
        # can still take, in words (packed) or lines: a read costs 1 word or a
        # word's lines, a line taken by the controller gives back its words or
        # 1.  A read arriving therefore always finds room.
        caps = {s: (1, sp.k, 2 * sp.k) if sp.packed else (sp.L, 1, sp.L + 1)
                for s, sp in st_spaces.items()}
        max_cap = max(c[2] for c in caps.values())
        credits = Signal(range(max_cap + 1))
        j_cost = Signal(range(max_cap + 1))
        j_ret = Signal(range(max_cap + 1))
        rd_left = Signal(CW)                   # reads still to issue
        rd_none = Signal()
        rv = Signal()                          # sp_rd_data holds a word read
        issue = Signal()
        ok_now = Signal()
        ok_after = Signal()
        st_acc = Signal()
        m.d.comb += [
            st_acc.eq(st & cacc),
            ok_now.eq(credits >= j_cost),
            ok_after.eq(credits + j_ret >= j_cost),
            issue.eq(st & ~rd_none & (ok_now | (cacc & ok_after))),
        ]
        m.d.sync += [self.sp_rd_en.eq(issue), rv.eq(self.sp_rd_en)]
        with m.If(self.sp_rd_en):
            m.d.sync += self.sp_rd_addr.eq(self.sp_rd_addr + 1)
        with m.If(issue):
            m.d.sync += [rd_left.eq(rd_left - 1), rd_none.eq(rd_left == 1)]
        m.d.sync += credits.eq(credits - Mux(issue, j_cost, 0) + Mux(st_acc, j_ret, 0))
        with m.If(accept & job.store):
            m.d.sync += [self.sp_rd_en.eq(1), self.sp_rd_space.eq(job.space),
                         self.sp_rd_addr.eq(job.addr), rd_left.eq(count - 1),
                         rd_none.eq(count == 1)]

            def st_setup(sp):
                cost, ret, cap = caps[sp.space]
                m.d.sync += [credits.eq(cap - cost), j_cost.eq(cost), j_ret.eq(ret),
                             j_lm1.eq(sp.L - 1), j_km1.eq(sp.k - 1), j_packed.eq(sp.packed)]
            per_space(st_spaces, st_setup)

        # --- STORE: words into lines ------------------------------------------------
        st_sizes = sorted({sp.word_bytes for sp in st_spaces.values() if sp.packed})
        st_size = {b: Signal(name=f"st_size{b}") for b in st_sizes}
        with m.If(accept):
            for s in st_size.values():
                m.d.sync += s.eq(0)

            def st_size_setup(sp):
                if sp.packed:
                    m.d.sync += st_size[sp.word_bytes].eq(1)
            per_space(st_spaces, st_size_setup)

        rd = self.sp_rd_data
        abits = max(LINE_BITS, max(8 * sp.word_bytes for sp in st_spaces.values()))
        asm = Signal(abits)                    # assembly register
        a_lines = Signal(range(max_lines + 1))  # long word: its lines still in asm
        aw = Signal(range(max_k + 1))          # packed: words in asm
        line_free = Signal()
        m.d.comb += line_free.eq(~wv | cacc)
        with m.If(st_acc):
            m.d.sync += [cv.eq(0), wv.eq(0)]

        def line_load(value):
            m.d.sync += [line.eq(value), cv.eq(1), wv.eq(1)]

        with m.If(st & ~j_packed):
            with m.If((a_lines != 0) & line_free):
                line_load(asm[:LINE_BITS])
                m.d.sync += [asm.eq(asm[LINE_BITS:]), a_lines.eq(a_lines - 1)]
            with m.If(rv):
                m.d.sync += [asm.eq(rd[:abits]), a_lines.eq(j_lm1 + 1)]
        with m.If(st & j_packed):
            full_out = Signal()
            aw_eff = Signal.like(aw)
            m.d.comb += [full_out.eq((aw == j_km1 + 1) & line_free),
                         aw_eff.eq(aw)]
            with m.If(full_out):
                line_load(asm[:LINE_BITS])
                m.d.sync += aw.eq(0)
                m.d.comb += aw_eff.eq(0)
            with m.If(rv):
                m.d.sync += aw.eq(aw_eff + 1)
                with m.If((aw_eff == j_km1) & line_free & ~full_out):
                    # the line's last word goes straight into the line register
                    m.d.sync += aw.eq(0)
                    for b, sel in st_size.items():
                        k = _LINE_BYTES // b
                        with m.If(sel):
                            line_load(Cat(asm[:8 * b * (k - 1)], rd[:8 * b]))
                with m.Else():
                    for b, sel in st_size.items():
                        k = _LINE_BYTES // b
                        for j in range(k):
                            with m.If(sel & (aw_eff == j)):
                                m.d.sync += asm[8 * b * j:8 * b * (j + 1)].eq(rd[:8 * b])
        with m.If(accept):
            m.d.sync += [a_lines.eq(0), aw.eq(0)]

        sent = Signal()                        # every line of the STORE was taken
        with m.If(st & rd_none & ~self.sp_rd_en & ~rv & (a_lines == 0) & (aw == 0)
                  & (~wv | cacc)):
            m.d.sync += sent.eq(1)
        st_done = Signal()
        m.d.comb += st_done.eq(st & ~done & sent & self.mem_ready)

        m.d.sync += done.eq(ld_done | st_done)
        with m.If(done):
            m.d.sync += [sent.eq(0), placed_all.eq(0)]

        # --- counters ---------------------------------------------------------------
        with m.If(busy | accept):
            m.d.sync += self.busy_cycles.eq(self.busy_cycles + 1)
        with m.If(pop):
            m.d.sync += self.bytes_in.eq(self.bytes_in + _LINE_BYTES)
        with m.If(st_acc):
            m.d.sync += self.bytes_out.eq(self.bytes_out + _LINE_BYTES)
        with m.If(self.clear):
            m.d.sync += [self.busy_cycles.eq(0), self.bytes_in.eq(0), self.bytes_out.eq(0)]
        return m
