"""Requantisation + activation unit: int32 accumulators -> int8 / 16-bit activations.

The arithmetic is specified by the bit-exact model
:mod:`hetaccel.sim.activation_model` (and in prose in docs/numerics.md), its
number formats and piecewise-linear ROM by the contract
(:mod:`hetaccel.spec.formats`, :mod:`hetaccel.spec.pwl`); this module only maps
it onto a pipeline.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec import (ACTIVATION_FORMAT, INT32_MAX, INT32_MIN, PWL_C0_BITS, PWL_C1_BITS, PWL_FRAC,
                    PWL_SEGMENT_BITS, PWL_SLOPE_FRAC, AcceleratorConfig, ActivationFunction,
                    ActivationPrecision, pwl_rom_words, timing)
from .contract import check_depth

__all__ = ["ActivationUnit", "param_layout", "input_layout", "output_layout"]

F = ACTIVATION_FORMAT

def _bits(n: int) -> int:
    """Address bits for ``n`` entries (at least 1, so no field is zero-width)."""
    return max(1, (n - 1).bit_length())


def param_layout() -> data.StructLayout:
    """One channel's requant parameters, as stored in the parameter memory."""
    return data.StructLayout({
        "bias": signed(F.bias_bits),
        "multiplier": unsigned(F.multiplier_bits),
        "shift": unsigned(F.shift_bits),
    })


def _control_fields(config: AcceleratorConfig) -> dict:
    return {
        "function": unsigned(3),                         # ActivationFunction
        "precision": unsigned(1),                        # ActivationPrecision
        "param_entry": unsigned(_bits(config.act_param_depth)),
        "table": unsigned(_bits(config.act_tables)),     # INT8 table slot
        "last": unsigned(1),
    }


def input_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of ``inp``: one accumulator row plus its control word."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(config.acc_bits), config.lanes),
        **_control_fields(config),
    })


def output_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of ``out``: one result row (int16 lanes, int8 results sign-extended)."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(F.out_bits), config.lanes),
        "last": unsigned(1),
    })


class ActivationUnit(wiring.Component):
    """Pipelined requantisation and activation, one lane per array column.

    Per element (see :mod:`hetaccel.sim.activation_model`): saturating int32
    bias add, multiply by the channel's multiplier, rounding right shift (ties
    away from zero), saturation to int8 or Q4.12 (per row ``precision``), then
    the row's ``function``: identity, ReLU, or sigmoid/tanh/GELU through a
    256-entry int8 table (INT8) or the piecewise-linear fixed-point evaluator
    (FIXED16).  One row (``lanes`` elements) per cycle, latency
    :data:`~hetaccel.spec.timing.ACTIVATION_LATENCY` cycles; the whole pipeline stalls while ``out`` is not
    ready, so ``inp.ready`` follows ``out.ready`` combinationally.

    Folded (``config.act_fold = f > 1``): ``config.act_physical_lanes`` lanes
    process an accepted row in ``f`` consecutive beats (beat ``s``: lane ``j``
    computes channel ``s * act_physical_lanes + j``) behind a row register,
    and the row leaves on ``out`` with its last beat.  One row every ``f``
    cycles, back to back; a row accepted in cycle ``c`` is on ``out`` in cycle
    ``c + f - 1 +`` :func:`~hetaccel.spec.timing.activation_latency`.
    ``inp.ready`` is low during a row's other beats; only a last beat waits
    for ``out.ready``.  The ports are the same as unfolded: parameters stay
    per channel, the tables and the PWL ROM are per physical lane.

    Parameters
    ----------
    config : AcceleratorConfig
        ``lanes = config.cols``; ``acc_bits``, ``act_param_depth`` and
        ``act_tables`` size the ports and memories, ``act_lanes`` folds the
        unit.

    Attributes
    ----------
    inp : In(stream.Signature(input_layout(config)))
        ``data``: ``lanes`` signed ``acc_bits`` accumulators (lane i = channel
        i of the parameter entry); ``function``: :class:`ActivationFunction`;
        ``precision``: :class:`ActivationPrecision`; ``param_entry``: parameter
        memory entry for this row (< ``act_param_depth``); ``table``: table slot
        used by SIGMOID/TANH/GELU in INT8 (< ``act_tables``; ignored otherwise);
        ``last``: rides along to ``out``.  Function codes 5..7 behave as GELU;
        the device rejects them before they get here.
    out : Out(stream.Signature(output_layout(config)))
        ``data``: ``lanes`` x signed(16) results (int8 results sign-extended;
        FIXED16: Q1.14 for sigmoid/tanh, Q4.12 for none/ReLU/GELU); ``last``.
    param_w_en : In(1)
        Write strobe of the parameter memory (one write per cycle).
    param_w_addr : In(unsigned(log2(act_param_depth)))
        Entry written.
    param_w_mask : In(lanes), all ones after reset unless driven
        Lanes (channels) of the entry written; lane i takes ``param_w_data[i]``.
    param_w_data : In(ArrayLayout(param_layout(), lanes))
        Per channel ``bias`` (signed 32), ``multiplier`` (unsigned 31),
        ``shift`` (unsigned 6).
    table_w_en : In(1)
        Write strobe of the table memory (one byte per cycle, all lanes' copies).
    table_w_addr : In(unsigned(8 + log2(act_tables)))
        ``slot * 256 + code``: entry for input code ``code`` (int8 read as a byte).
    table_w_data : In(signed(8))
        Result code for that entry.
    idle : Out(1)
        No row is in flight (every pipeline stage is empty).

    Both memories are zero after configuration.  Writes take effect for rows
    accepted on ``inp`` after the write cycle; writing an entry while a row
    that uses it is in flight is not defined (the device only writes between
    passes).
    """

    def __new__(cls, config: AcceleratorConfig):
        # Checked before the object exists: a refused unit would otherwise be
        # reported as an elaboratable created but never used.
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        if config.acc_bits < 2:
            raise ValueError(f"acc_bits must be >= 2, got {config.acc_bits}")
        return super().__new__(cls, src_loc_at=1)   # unused: reported at the caller's line

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        lanes = config.lanes
        super().__init__({
            "inp": In(stream.Signature(input_layout(config))),
            "out": Out(stream.Signature(output_layout(config))),
            "param_w_en": In(1),
            "param_w_addr": In(unsigned(_bits(config.act_param_depth))),
            "param_w_mask": In(unsigned(lanes), init=(1 << lanes) - 1),
            "param_w_data": In(data.ArrayLayout(param_layout(), lanes)),
            "table_w_en": In(1),
            "table_w_addr": In(unsigned(8 + _bits(config.act_tables) if config.act_tables > 1
                                        else 8)),
            "table_w_data": In(signed(8)),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        lanes = cfg.lanes
        fold, phys = cfg.act_fold, cfg.act_physical_lanes
        ctl_fields = {k: v for k, v in _control_fields(cfg).items() if k != "param_entry"}
        if fold > 1:
            ctl_fields["end"] = unsigned(1)     # the row's last beat
        ctl_layout = data.StructLayout(ctl_fields)
        pl = param_layout()

        def param_memory(ch, read_en):
            """Channel ``ch``'s requant parameters, read with the row's entry."""
            pmem = Memory(shape=pl, depth=cfg.act_param_depth, init=[])
            m.submodules[f"param_mem_{ch}"] = pmem
            pw = pmem.write_port()
            pr = pmem.read_port()
            m.d.comb += [
                pw.en.eq(self.param_w_en & self.param_w_mask[ch]),
                pw.addr.eq(self.param_w_addr),
                pw.data.eq(self.param_w_data[ch]),
                pr.en.eq(read_en),
                # A 1-entry memory still has a 1-bit field: ignore it.
                pr.addr.eq(self.inp.payload.param_entry if cfg.act_param_depth > 1 else 0),
            ]
            return pr.data

        rom_words = pwl_rom_words()
        c0_bits, c1_bits = PWL_C0_BITS, PWL_C1_BITS
        one = 1 << PWL_FRAC
        seg_bits = PWL_SEGMENT_BITS
        out_sh = PWL_FRAC - F.fixed_out_frac
        latency = timing.ACTIVATION_LATENCY if fold == 1 else timing.activation_latency(cfg)
        # Stages 1..13 carry one beat each; a folded unit has the row register
        # (stage 0) in front of them.
        stages = latency if fold == 1 else latency - 1

        # Global stall: every stage moves together when the output can move.
        # That keeps the synchronous memory reads aligned with their stage.
        en = Signal()
        valid = [Signal(name=f"valid_{i}") for i in range(1, stages + 1)]
        ctl = [Signal(ctl_layout, name=f"ctl_{i}") for i in range(1, stages + 1)]
        if fold == 1:
            m.d.comb += [
                en.eq(~valid[-1] | self.out.ready),
                self.inp.ready.eq(en),
                self.out.valid.eq(valid[-1]),
                self.idle.eq(~Cat(*valid).any()),
            ]
            with m.If(en):
                m.d.sync += valid[0].eq(self.inp.valid)
                for a, b in zip(valid[1:], valid[:-1]):
                    m.d.sync += a.eq(b)
            src_ctl = self.inp.payload
        else:
            # The row register holds an accepted row and (in the param
            # memories' read registers) its parameters until stage 1 copies
            # them at the row's first beat; its beats then leave from stage 1,
            # one per cycle, and the next row is accepted with the last beat.
            # Only a row's last beat stalls the pipeline on ``out``: the
            # others complete the output row.
            row_valid = Signal()
            beat = Signal(range(fold))                  # wraps: fold is a power of two
            row_data = Signal(data.ArrayLayout(signed(cfg.acc_bits), lanes))
            src_ctl = Signal(data.StructLayout({k: v for k, v in ctl_fields.items()
                                                if k != "end"}), name="row_ctl")
            last_beat = Signal()
            free = Signal()         # the row register is empty or on its last beat
            take = Signal()
            m.d.comb += [
                en.eq(~(valid[-1] & ctl[-1].end) | self.out.ready),
                last_beat.eq(beat == fold - 1),
                free.eq(~row_valid | last_beat),
                self.inp.ready.eq(en & free),
                take.eq(self.inp.valid & self.inp.ready),
                self.out.valid.eq(valid[-1] & ctl[-1].end),
                self.idle.eq(~(row_valid | Cat(*valid).any())),
            ]
            with m.If(en):
                m.d.sync += [
                    valid[0].eq(row_valid),
                    row_valid.eq(take | (row_valid & ~last_beat)),
                    beat.eq(beat + row_valid),
                    ctl[0].end.eq(last_beat),
                ]
                for a, b in zip(valid[1:], valid[:-1]):
                    m.d.sync += a.eq(b)
            # The data and the parameters are captured whenever the register
            # is free, taken or not (then the register stays empty): the
            # stall chain out.ready -> inp.ready -> take then reaches only a
            # few enables, not the row's and the memories'.
            with m.If(free):
                m.d.sync += row_data.eq(self.inp.payload.data)
            with m.If(take):
                for k in src_ctl.shape().members:
                    m.d.sync += getattr(src_ctl, k).eq(getattr(self.inp.payload, k))
            params = [param_memory(ch, free) for ch in range(lanes)]
            # Stage 1 (``valid[0]``, ``ctl[0]``): the row and its parameters
            # once more, copied at its first beat and held for the others, so
            # that the block RAMs' slow clock-to-output reaches a register,
            # not the beat multiplexer.
            beat1 = Signal(range(fold))
            row_data1 = Signal.like(row_data, name="row_data1")
            params1 = Signal(data.ArrayLayout(pl, lanes), name="params1")
            with m.If(en):
                m.d.sync += beat1.eq(beat)
                with m.If(row_valid & (beat == 0)):
                    m.d.sync += row_data1.eq(row_data)
                    m.d.sync += [params1[ch].eq(params[ch]) for ch in range(lanes)]

        with m.If(en):
            m.d.sync += [
                ctl[0].function.eq(src_ctl.function),
                ctl[0].precision.eq(src_ctl.precision),
                ctl[0].table.eq(src_ctl.table),
                ctl[0].last.eq(src_ctl.last),
            ]
            for a, b in zip(ctl[1:], ctl[:-1]):
                m.d.sync += a.eq(b)

        def is_fn(c, fn):
            return c.function == int(fn)

        out_data = Signal(data.ArrayLayout(signed(F.out_bits), lanes))
        m.d.comb += self.out.payload.data.eq(out_data)

        for lane in range(phys):
            if fold == 1:
                # --- stage 1: parameter memory, read with the row's entry ---
                param = param_memory(lane, en)
                acc1 = Signal(signed(cfg.acc_bits), name=f"acc1_{lane}")
                with m.If(en):
                    m.d.sync += acc1.eq(self.inp.payload.data[lane])
                # --- stage 2: the parameters, registered --------------------
                acc2 = Signal(signed(cfg.acc_bits), name=f"acc2_{lane}")
                par = Signal(pl, name=f"param2_{lane}")
                with m.If(en):
                    m.d.sync += [acc2.eq(acc1), par.eq(param)]
                first = acc1
            else:
                # --- stage 2: the beat's channel and its parameters ---------
                acc2 = Signal(signed(cfg.acc_bits), name=f"acc2_{lane}")
                par = Signal(pl, name=f"param2_{lane}")
                with m.If(en):
                    with m.Switch(beat1):
                        for b in range(fold):
                            with m.Case(b):
                                m.d.sync += [acc2.eq(row_data1[b * phys + lane]),
                                             par.eq(params1[b * phys + lane])]
                first = row_data1

            # Stage k's logic reads the control word that travels with the
            # data in the stage-(k-1) register, ``ctl[k - 2]``.  Each ECP5
            # MULT18X18D (~4 ns combinational) and each block-RAM output (~6 ns
            # clock-to-output) has a stage of its own, without logic around it.
            # --- stage 3: saturating bias add --------------------------------
            x3 = Signal(signed(F.bias_bits), name=f"x3_{lane}")
            mult3 = Signal(unsigned(F.multiplier_bits), name=f"mult3_{lane}")
            shift3 = Signal(unsigned(F.shift_bits), name=f"shift3_{lane}")
            total = Signal(signed(max(cfg.acc_bits, F.bias_bits) + 1), name=f"sum2_{lane}")
            m.d.comb += total.eq(acc2 + par.bias)
            with m.If(en):
                with m.If(total > INT32_MAX):
                    m.d.sync += x3.eq(INT32_MAX)
                with m.Elif(total < INT32_MIN):
                    m.d.sync += x3.eq(INT32_MIN)
                with m.Else():
                    m.d.sync += x3.eq(total)
                m.d.sync += [mult3.eq(par.multiplier), shift3.eq(par.shift)]

            # --- stage 4: the four 18x18 products of x * multiplier ----------
            # Each product alone between registers: an ECP5 MULT18X18D is ~4 ns
            # combinational, with no room for the partial-product sum after it.
            x_lo, x_hi = x3[:17], x3[17:].as_signed()
            m_lo, m_hi = mult3[:17], mult3[17:]
            pll = Signal(unsigned(34), name=f"pll4_{lane}")
            phl = Signal(signed(15 + 18), name=f"phl4_{lane}")
            plh = Signal(unsigned(17 + 14), name=f"plh4_{lane}")
            phh = Signal(signed(15 + 15), name=f"phh4_{lane}")
            shift4 = Signal.like(shift3, name=f"shift4_{lane}")
            with m.If(en):
                m.d.sync += [pll.eq(x_lo * m_lo), phl.eq(x_hi * m_lo), plh.eq(x_lo * m_hi),
                             phh.eq(x_hi * m_hi), shift4.eq(shift3)]

            # --- stage 5: partial-product sum --------------------------------
            # pll < 2**34 and phh << 34 do not overlap: a concatenation.
            p5 = Signal(signed(F.bias_bits + F.multiplier_bits), name=f"p5_{lane}")
            shift5 = Signal.like(shift3, name=f"shift5_{lane}")
            # Bits below the rounding bit (i < shift - 1): their OR decides
            # ties of negative products.
            below5 = Signal(unsigned(p5.shape().width - 1), name=f"below5_{lane}")
            with m.If(en):
                m.d.sync += [
                    p5.eq(Cat(pll, phh).as_signed() + (phl << 17) + (plh << 17)),
                    shift5.eq(shift4),
                    below5.eq(Cat(*[shift4 > i + 1 for i in range(len(below5))])),
                ]

            # --- stage 6: shift, round bit ----------------------------------
            # round(p / 2**s), ties away from zero, is (p >> s) + up: up is the
            # bit just below the result (p[s-1], none for s = 0), and for p < 0
            # also needs a non-zero bit below it.
            q = Signal(signed(p5.shape().width + 1), name=f"q5_{lane}")
            m.d.comb += q.eq(Cat(Const(0, 1), p5).as_signed() >> shift5)
            sticky = Signal(name=f"sticky5_{lane}")
            m.d.comb += sticky.eq((p5[:len(below5)] & below5).any())
            t6 = Signal(signed(p5.shape().width), name=f"t6_{lane}")
            up6 = Signal(name=f"up6_{lane}")
            with m.If(en):
                m.d.sync += [t6.eq(q[1:]), up6.eq(q[0] & (~p5[-1] | sticky))]

            # --- stage 7: saturate ------------------------------------------
            # t + up only passes hi when t == hi already; below lo it stays <= lo.
            fixed6 = ctl[5].precision == int(ActivationPrecision.FIXED16)
            hi = Mux(fixed6, 32767, 127)
            lo = Mux(fixed6, -32768, -128)
            fits = Mux(fixed6, t6[15:].all() | ~t6[15:].any(), t6[7:].all() | ~t6[7:].any())
            y7 = Signal(signed(16), name=f"y7_{lane}")
            with m.If(en):
                with m.If(~fits):
                    m.d.sync += y7.eq(Mux(t6[-1], lo, hi))
                with m.Elif(t6[:16] == hi):
                    m.d.sync += y7.eq(hi)
                with m.Else():
                    m.d.sync += y7.eq(t6[:16] + up6)

            # --- stage 8: table lookup / PWL segment fetch -------------------
            tmem = Memory(shape=signed(8), depth=cfg.act_tables * 256, init=[])
            m.submodules[f"table_mem_{lane}"] = tmem
            tw = tmem.write_port()
            tr = tmem.read_port()
            m.d.comb += [
                tw.en.eq(self.table_w_en),
                tw.addr.eq(self.table_w_addr),
                tw.data.eq(self.table_w_data),
                tr.en.eq(en),
                tr.addr.eq(ctl[6].table * 256 + y7[0:8] if cfg.act_tables > 1 else y7[0:8]),
            ]
            rom = Memory(shape=unsigned(c0_bits + c1_bits), depth=len(rom_words), init=rom_words)
            m.submodules[f"pwl_rom_{lane}"] = rom
            rr = rom.read_port()
            z = Signal(signed(18), name=f"z7_{lane}")
            m.d.comb += z.eq(Mux(is_fn(ctl[6], ActivationFunction.TANH), y7 * 2, y7))
            mag = Signal(unsigned(17), name=f"mag7_{lane}")
            m.d.comb += mag.eq(Mux(z < 0, -z, z))
            a = Signal(unsigned(16), name=f"a7_{lane}")
            m.d.comb += a.eq(Mux(mag > 0xFFFF, 0xFFFF, mag))
            bank = is_fn(ctl[6], ActivationFunction.GELU)
            m.d.comb += [rr.en.eq(en), rr.addr.eq(Mux(bank, 256, 0) + a[seg_bits:16])]
            t8 = Signal(unsigned(seg_bits), name=f"t8_{lane}")
            neg8 = Signal(name=f"neg8_{lane}")
            y8 = Signal(signed(16), name=f"y8_{lane}")
            with m.If(en):
                m.d.sync += [t8.eq(a[:seg_bits]), neg8.eq(z < 0), y8.eq(y7)]

            # --- stage 9: the memories' outputs, registered -----------------
            # A block RAM's clock-to-output leaves no room for a multiply.
            c0_9 = Signal(unsigned(c0_bits), name=f"c0_9_{lane}")
            c1_9 = Signal(unsigned(c1_bits), name=f"c1_9_{lane}")
            t9 = Signal.like(t8, name=f"t9_{lane}")
            neg9 = Signal(name=f"neg9_{lane}")
            y9 = Signal(signed(16), name=f"y9_{lane}")
            tab9 = Signal(signed(8), name=f"tab9_{lane}")
            with m.If(en):
                m.d.sync += [c0_9.eq(rr.data[:c0_bits]), c1_9.eq(rr.data[c0_bits:]),
                             t9.eq(t8), neg9.eq(neg8), y9.eq(y8), tab9.eq(tr.data)]

            # --- stage 10: the segment's slope product -----------------------
            slope10 = Signal(unsigned(c1_bits + seg_bits), name=f"slope10_{lane}")
            c0_10 = Signal.like(c0_9, name=f"c0_10_{lane}")
            neg10 = Signal(name=f"neg10_{lane}")
            y10 = Signal(signed(16), name=f"y10_{lane}")
            tab10 = Signal(signed(8), name=f"tab10_{lane}")
            with m.If(en):
                m.d.sync += [slope10.eq(c1_9 * t9), c0_10.eq(c0_9), neg10.eq(neg9), y10.eq(y9),
                             tab10.eq(tab9)]

            # --- stage 11: evaluate the segment -----------------------------
            # C0 + ((slope + half) >> frac) == (slope + (C0 << frac | half)) >> frac:
            # one adder, the rounding constant and C0 side by side.
            s_sum = Signal(unsigned(c0_bits + PWL_SLOPE_FRAC + 1), name=f"ssum10_{lane}")
            m.d.comb += s_sum.eq(slope10 + Cat(Const(1 << (PWL_SLOPE_FRAC - 1), PWL_SLOPE_FRAC),
                                              c0_10))
            s11 = Signal(unsigned(c0_bits), name=f"s11_{lane}")
            s_signed = Signal(unsigned(c0_bits), name=f"sabs11_{lane}")  # f(z) for z's sign
            neg11 = Signal(name=f"neg11_{lane}")
            y11 = Signal(signed(16), name=f"y11_{lane}")
            tab11 = Signal(signed(8), name=f"tab11_{lane}")
            s10 = s_sum[PWL_SLOPE_FRAC:]
            with m.If(en):
                m.d.sync += [s11.eq(s10), s_signed.eq(Mux(neg10, one - s10, s10)),
                             neg11.eq(neg10), y11.eq(y10), tab11.eq(tab10)]

            # --- stage 12: GELU's products; every other function's result ----
            # y * S as two products (S has 21 bits), summed with the rounding
            # in stage 12.  gp < 0 exactly when y < 0 and S != 0.
            c11 = ctl[10]
            gpl = Signal(signed(16 + 18), name=f"gpl12_{lane}")
            gph = Signal(signed(16 + 5), name=f"gph12_{lane}")
            gneg = Signal(name=f"gneg12_{lane}")
            sig = (s_signed + (1 << (out_sh - 1))) >> out_sh
            th_pos = Signal(unsigned(c0_bits + 1), name=f"tanh11_{lane}")
            m.d.comb += th_pos.eq(((s11 * 2 - one) + (1 << (out_sh - 1))) >> out_sh)
            th = Mux(neg11, -th_pos, th_pos)
            relu = Mux(y11 < 0, 0, y11)
            fixed11 = c11.precision == int(ActivationPrecision.FIXED16)
            other = Signal(signed(16), name=f"other11_{lane}")
            with m.Switch(c11.function):
                with m.Case(int(ActivationFunction.NONE)):
                    m.d.comb += other.eq(y11)
                with m.Case(int(ActivationFunction.RELU)):
                    m.d.comb += other.eq(relu)
                with m.Case(int(ActivationFunction.SIGMOID)):
                    m.d.comb += other.eq(Mux(fixed11, sig, tab11))
                with m.Case(int(ActivationFunction.TANH)):
                    m.d.comb += other.eq(Mux(fixed11, th, tab11))
                with m.Default():   # GELU (codes 5..7 are not issued)
                    m.d.comb += other.eq(tab11)
            other12 = Signal(signed(16), name=f"other12_{lane}")
            gelu12 = Signal(name=f"gelu12_{lane}")
            with m.If(en):
                m.d.sync += [gpl.eq(y11 * s_signed[:17]), gph.eq(y11 * s_signed[17:]),
                             gneg.eq((y11 < 0) & (s_signed != 0)),
                             other12.eq(other),
                             gelu12.eq(fixed11 & (c11.function >= int(ActivationFunction.GELU)))]

            # --- stage 13: GELU's rounding; the result ----------------------
            g = ((gpl + (gph << 17) + Mux(gneg, (1 << (PWL_FRAC - 1)) - 1, 1 << (PWL_FRAC - 1)))
                 >> PWL_FRAC)
            res = Signal(signed(16), name=f"res12_{lane}")
            m.d.comb += res.eq(Mux(gelu12, g, other12))
            with m.If(en):
                if fold == 1:
                    m.d.sync += out_data[lane].eq(res)
                else:
                    # The row shifts down one beat per cycle: after its last
                    # beat, beat b's results are channels b*phys + lane.
                    for b in range(fold - 1):
                        m.d.sync += out_data[b * phys + lane].eq(out_data[(b + 1) * phys + lane])
                    m.d.sync += out_data[(fold - 1) * phys + lane].eq(res)
            # The registers an element passes, one per stage; ``valid`` and
            # ``ctl`` (and the stage each reads its control from) follow them.
            data_path = (first, acc2, x3, pll, p5, t6, y7, y8, c0_9, slope10, s11, gpl,
                         out_data[lane])
            if fold == 1:
                check_depth("ActivationUnit", len(data_path), latency,
                            "hetaccel.spec.timing.ACTIVATION_LATENCY")
            else:
                check_depth("ActivationUnit", len((row_data,) + data_path), latency,
                            "hetaccel.spec.timing.activation_latency(config)")

        m.d.comb += self.out.payload.last.eq(ctl[-1].last)
        return m
