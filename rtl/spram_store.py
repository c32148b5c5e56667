"""The iCE40UP5K's four SPRAM blocks as one 64-bit device memory.

:class:`SpramStore` is the ``"spram128k"`` store of
:mod:`hetaccel.spec.device_memory`: four ``SB_SPRAM256KA`` (16K x 16 bits
each) side by side, so a line is 64 bits (8 bytes) and the store 128 KB.  It
speaks the SDRAM controller's stream interface with 64-bit lines, so the DMA
side sees the same handshakes whichever store a board has.

Ports
-----
``cmd`` : In(stream of ``{"addr": 14, "write": 1}``)
    One line per request.  A write is taken together with its ``wdata``.
``wdata`` : In(stream of 64 bits)
    The line of the write request being taken (little-endian: byte ``i`` at
    bits ``8 * i``; block ``k`` holds bits ``16 * k .. 16 * k + 15``).
``rdata`` : Out(stream of 64 bits)
    Read lines, in request order, the cycle after their request is taken.
``idle`` : Out(1)
    No read result waits on ``rdata``.

Timing (:func:`hetaccel.spec.timing.spram_cycles`): a request is taken in
the cycle it is offered whenever no read result is waiting to be taken, so
``n`` reads offered back to back from cycle 0 with ``rdata`` always ready
deliver their last line in cycle ``n`` (``n + 1`` cycles), ``n`` writes take
``n`` cycles.  A read result not taken holds the blocks (chip select low, the
SPRAM keeps its output) and holds back the next request, a write included:
the SPRAM's output is undefined after a write, so one is taken only when no
read result waits or the waiting one is taken in the same cycle.
"""

from __future__ import annotations

from amaranth import ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec import AcceleratorConfig

__all__ = ["SpramStore", "SPRAM_BLOCKS", "SPRAM_WORDS"]

#: SB_SPRAM256KA blocks on the UP5K, and 16-bit words in each.
SPRAM_BLOCKS = 4
SPRAM_WORDS = 16384
_LINE_BITS = 16 * SPRAM_BLOCKS


class SpramStore(wiring.Component):
    """The UP5K's SPRAM as the device memory (see the module docstring).

    Parameters
    ----------
    config : AcceleratorConfig
        Must have ``device_memory="spram128k"``.
    primitive : bool
        Instantiate ``SB_SPRAM256KA`` (default: the board and its simulation
        with Yosys's cell model).  ``False`` builds the same behaviour from an
        Amaranth memory, for the Amaranth simulator.
    """

    def __init__(self, config: AcceleratorConfig, *, primitive: bool = True):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        if config.device_memory != "spram128k":
            raise ValueError(f"SpramStore is the 'spram128k' device memory; config.device_memory "
                             f"must be 'spram128k', not {config.device_memory!r}")
        assert config.memory.line_bytes * 8 == _LINE_BITS
        assert config.memory.lines == SPRAM_WORDS
        self.config = config
        self.primitive = bool(primitive)
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({"addr": 14, "write": 1}))),
            "wdata": In(stream.Signature(_LINE_BITS)),
            "rdata": Out(stream.Signature(_LINE_BITS)),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        waiting = Signal()          # a read result is on the blocks' outputs
        free = ~waiting | self.rdata.ready
        take = Signal()
        m.d.comb += [
            self.cmd.ready.eq(free & (~self.cmd.payload.write | self.wdata.valid)),
            self.wdata.ready.eq(self.cmd.valid & self.cmd.payload.write & free),
            take.eq(self.cmd.valid & self.cmd.ready),
        ]
        read = take & ~self.cmd.payload.write
        write = take & self.cmd.payload.write
        with m.If(read):
            m.d.sync += waiting.eq(1)
        with m.Elif(self.rdata.ready):
            m.d.sync += waiting.eq(0)
        out = Signal(_LINE_BITS)
        m.d.comb += [self.rdata.valid.eq(waiting), self.rdata.payload.eq(out),
                     self.idle.eq(~waiting)]
        addr = self.cmd.payload.addr
        for k in range(SPRAM_BLOCKS):
            word_in = self.wdata.payload[16 * k:16 * (k + 1)]
            word_out = out[16 * k:16 * (k + 1)]
            if self.primitive:
                m.submodules[f"spram{k}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=addr, i_DATAIN=word_in, i_MASKWREN=Const(0b1111, 4),
                    i_WREN=write, i_CHIPSELECT=take, i_CLOCK=ClockSignal(),
                    i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1, o_DATAOUT=word_out)
            else:
                mem = Memory(shape=16, depth=SPRAM_WORDS, init=[])
                m.submodules[f"spram{k}"] = mem
                wr = mem.write_port()
                rd = mem.read_port(transparent_for=())
                m.d.comb += [wr.addr.eq(addr), wr.data.eq(word_in), wr.en.eq(write),
                             rd.addr.eq(addr), rd.en.eq(read), word_out.eq(rd.data)]
        return m
