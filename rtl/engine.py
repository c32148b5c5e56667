"""The GEMM engine: a :class:`~hetaccel.rtl.systolic.SystolicArray` plus its accumulator memory.

Each result row of the array is written (``accumulate=0``) or added
(``accumulate=1``) into the accumulator row ``acc_addr``; a long K is therefore
a sequence of tiles whose rows accumulate into the same rows.  The array and
the layouts of its streams are in :mod:`hetaccel.rtl.systolic`; the cycle model
is :mod:`hetaccel.sim.systolic_model`.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import AcceleratorConfig
from .systolic import (SystolicArray, _check_config, acc_row_layout, acc_write_layout,
                       act_layout, weight_layout)

__all__ = ["MatmulEngine"]


class MatmulEngine(wiring.Component):
    """Systolic array plus accumulator memory: the GEMM engine of the device.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    weights : In(stream.Signature(weight_layout(config)))
        Weight-tile rows, exactly as :attr:`SystolicArray.weights`.
    acts : In(stream.Signature(act_layout(config)))
        Activation rows with ``last`` / ``accumulate`` / ``acc_addr``, exactly as
        :attr:`SystolicArray.acts`.  Each row's result is written
        (``accumulate=0``) or added (``accumulate=1``, wrapping modulo
        ``2**acc_bits``, which a legal K <= max_k never reaches) into
        accumulator row ``acc_addr``.  The engine never back-pressures the
        array: a row accepted in cycle ``c`` lands in the memory at the clock
        edge ending cycle ``c + rows + cols + 1``; a read accepted from cycle
        ``c + rows + cols + 2`` on sees it.
    rd_addr : In(stream.Signature(range(acc_depth)))
        Read request: accumulator row address.  Ready when ``rd_data`` is empty
        or being consumed (``~rd_data.valid | rd_data.ready``), so reads stream
        at one row per cycle.
    rd_data : Out(stream.Signature(acc_row_layout(config)))
        The row read, offered the cycle after its address was accepted, held
        until taken.  Reads see every write that landed before the cycle the
        read's address was accepted (not one landing in that same cycle).
    acc_write : In(stream.Signature(acc_write_layout(config)))
        ``{addr, data}``: overwrite accumulator row ``addr`` (e.g. to preload a
        bias).  Array results have priority: ready only in cycles the engine is
        neither writing a result nor adding one (no result on the array's
        ``results``), which keeps the read-modify-write forwarding to rows
        known a cycle ahead.
    idle : Out(1)
        No activation row in the array and no result waiting to be written:
        every accepted row has landed in the memory.  Wait for it before
        reading rows a GEMM writes.
    active : Out(1)
        An activation row is accepted this cycle (one row = ``rows x cols``
        MACs), for utilisation counters.
    """

    def __init__(self, config: AcceleratorConfig):
        self._config = _check_config(config, "MatmulEngine")
        super().__init__({
            "weights": In(stream.Signature(weight_layout(config))),
            "acts": In(stream.Signature(act_layout(config))),
            "rd_addr": In(stream.Signature(range(config.acc_depth))),
            "rd_data": Out(stream.Signature(acc_row_layout(config))),
            "acc_write": In(stream.Signature(acc_write_layout(config))),
            "idle": Out(1),
            "active": Out(1),
        })

    @property
    def config(self) -> AcceleratorConfig:
        return self._config

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        m.submodules.array = array = SystolicArray(cfg)
        wiring.connect(m, wiring.flipped(self.weights), array.weights)
        wiring.connect(m, wiring.flipped(self.acts), array.acts)

        m.submodules.acc = acc = memory.Memory(shape=acc_row_layout(cfg), depth=cfg.acc_depth,
                                               init=[])
        wp = acc.write_port()
        # The read-modify-write is spread so that no path has more than one
        # of {block RAM read, 32-bit add} (see docs/matmul.md):
        #   R0  row two cycles before `results` (array.ahead): read its row
        #   R1  read data out of the RAM, patched with the writes it missed,
        #       registered
        #   S0  row on `results`: patched again, added, registered
        #   S1  written (the same cycle as before the pipelining, so the
        #       engine's timing and the cycle model are unchanged)
        # The RMW read port is not transparent; every write it cannot see is
        # forwarded explicitly instead.
        rmw_rp = acc.read_port()
        # Readout is only used once the rows it reads have landed (`idle`), so
        # it needs no transparency logic either.
        ext_rp = acc.read_port()
        res = array.results
        ahead = array.ahead
        row = acc_row_layout(cfg)
        m.d.comb += [res.ready.eq(1), rmw_rp.addr.eq(ahead.acc_addr), rmw_rp.en.eq(1)]

        # The write of the previous cycle (R1 of a row read in R0 misses it).
        lw_valid = Signal()
        lw_addr = Signal(range(cfg.acc_depth))
        lw_data = Signal(row)
        m.d.sync += [lw_valid.eq(wp.en), lw_addr.eq(wp.addr), lw_data.eq(wp.data)]

        # R1
        r1_valid = Signal()
        r1_addr = Signal(range(cfg.acc_depth))
        m.d.sync += [r1_valid.eq(ahead.valid), r1_addr.eq(ahead.acc_addr)]
        rd_r = Signal(row)
        with m.If(wp.en & (wp.addr == r1_addr)):
            m.d.sync += rd_r.eq(wp.data)
        with m.Elif(lw_valid & (lw_addr == r1_addr)):
            m.d.sync += rd_r.eq(lw_data)
        with m.Else():
            m.d.sync += rd_r.eq(rmw_rp.data)

        # S0: the only write in this cycle is S1's (acc_write waits while a row
        # is in S0), and whether it hits this row is known a cycle early.
        s1_valid = Signal()
        s1_addr = Signal(range(cfg.acc_depth))
        s1_data = Signal(row)
        fwd = Signal()
        m.d.sync += fwd.eq(res.valid & (res.payload.acc_addr == r1_addr))
        for j in range(cfg.cols):
            old = Mux(res.payload.accumulate, Mux(fwd, s1_data[j], rd_r[j]), 0)
            # Truncation to acc_bits is the documented wrap; unreachable for K <= max_k.
            m.d.sync += s1_data[j].eq(old + res.payload.data[j])
        m.d.sync += [s1_valid.eq(res.valid), s1_addr.eq(res.payload.acc_addr)]

        # S1
        m.d.comb += self.acc_write.ready.eq(~s1_valid & ~res.valid)
        with m.If(s1_valid):
            m.d.comb += [wp.en.eq(1), wp.addr.eq(s1_addr), wp.data.eq(s1_data)]
        with m.Elif(self.acc_write.valid):
            m.d.comb += [wp.en.eq(1), wp.addr.eq(self.acc_write.payload.addr),
                         wp.data.eq(self.acc_write.payload.data)]

        # Readout: a one-deep pipeline that holds its data under back-pressure.
        m.d.comb += [
            self.rd_addr.ready.eq(~self.rd_data.valid | self.rd_data.ready),
            ext_rp.addr.eq(self.rd_addr.payload),
            ext_rp.en.eq(self.rd_addr.ready),
            self.rd_data.payload.eq(ext_rp.data),
        ]
        with m.If(self.rd_addr.ready):
            m.d.sync += self.rd_data.valid.eq(self.rd_addr.valid)

        m.d.comb += [
            self.idle.eq(array.idle & ~s1_valid),
            self.active.eq(array.acts.valid & array.acts.ready),
        ]
        return m
