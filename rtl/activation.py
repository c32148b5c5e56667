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
        rom_words = pwl_rom_words()
        c0_bits, c1_bits = PWL_C0_BITS, PWL_C1_BITS
        one = 1 << PWL_FRAC
        seg_bits = PWL_SEGMENT_BITS
        out_sh = PWL_FRAC - F.fixed_out_frac
        latency = timing.ACTIVATION_LATENCY if fold == 1 else timing.activation_latency(cfg)
        # Stages 1..7 carry one beat each; a folded unit has the row register
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
            # memories' read registers, read only when a row is accepted) its
            # parameters while its beats leave, one per cycle; the next row is
            # accepted with the last beat.  Only a row's last beat stalls the
            # pipeline on ``out``: the others complete the output row.
            row_valid = Signal()
            beat = Signal(range(fold))                  # wraps: fold is a power of two
            row_data = Signal(data.ArrayLayout(signed(cfg.acc_bits), lanes))
            src_ctl = Signal(data.StructLayout({k: v for k, v in ctl_fields.items()
                                                if k != "end"}), name="row_ctl")
            last_beat = Signal()
            take = Signal()
            m.d.comb += [
                en.eq(~(valid[-1] & ctl[-1].end) | self.out.ready),
                last_beat.eq(beat == fold - 1),
                self.inp.ready.eq(en & (~row_valid | last_beat)),
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
            with m.If(take):
                m.d.sync += row_data.eq(self.inp.payload.data)
                for k in src_ctl.shape().members:
                    m.d.sync += getattr(src_ctl, k).eq(getattr(self.inp.payload, k))
            params = []
            for ch in range(lanes):
                pmem = Memory(shape=pl, depth=cfg.act_param_depth, init=[])
                m.submodules[f"param_mem_{ch}"] = pmem
                pw = pmem.write_port()
                pr = pmem.read_port()
                m.d.comb += [
                    pw.en.eq(self.param_w_en & self.param_w_mask[ch]),
                    pw.addr.eq(self.param_w_addr),
                    pw.data.eq(self.param_w_data[ch]),
                    pr.en.eq(take),
                    pr.addr.eq(self.inp.payload.param_entry if cfg.act_param_depth > 1 else 0),
                ]
                params.append(pr.data)

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
                # --- parameter memory, read with the row's entry (stage 1) --
                pmem = Memory(shape=pl, depth=cfg.act_param_depth, init=[])
                m.submodules[f"param_mem_{lane}"] = pmem
                pw = pmem.write_port()
                pr = pmem.read_port()
                m.d.comb += [
                    pw.en.eq(self.param_w_en & self.param_w_mask[lane]),
                    pw.addr.eq(self.param_w_addr),
                    pw.data.eq(self.param_w_data[lane]),
                    pr.en.eq(en),
                    # A 1-entry memory still has a 1-bit field: ignore it.
                    pr.addr.eq(self.inp.payload.param_entry if cfg.act_param_depth > 1 else 0),
                ]
                acc1 = Signal(signed(cfg.acc_bits), name=f"acc1_{lane}")
                with m.If(en):
                    m.d.sync += acc1.eq(self.inp.payload.data[lane])
                par = pr.data
            else:
                # --- stage 1: the beat's channel and its parameters ---------
                # Registered, so the block-RAM read and this mux are off the
                # bias add's path.
                acc1 = Signal(signed(cfg.acc_bits), name=f"acc1_{lane}")
                par = Signal(pl, name=f"param1_{lane}")
                with m.If(en):
                    with m.Switch(beat):
                        for b in range(fold):
                            with m.Case(b):
                                m.d.sync += [acc1.eq(row_data[b * phys + lane]),
                                             par.eq(params[b * phys + lane])]

            # --- stage 2: saturating bias add --------------------------------
            x2 = Signal(signed(F.bias_bits), name=f"x2_{lane}")
            mult2 = Signal(unsigned(F.multiplier_bits), name=f"mult2_{lane}")
            shift2 = Signal(unsigned(F.shift_bits), name=f"shift2_{lane}")
            total = Signal(signed(max(cfg.acc_bits, F.bias_bits) + 1), name=f"sum1_{lane}")
            m.d.comb += total.eq(acc1 + par.bias)
            with m.If(en):
                with m.If(total > INT32_MAX):
                    m.d.sync += x2.eq(INT32_MAX)
                with m.Elif(total < INT32_MIN):
                    m.d.sync += x2.eq(INT32_MIN)
                with m.Else():
                    m.d.sync += x2.eq(total)
                m.d.sync += [mult2.eq(par.multiplier), shift2.eq(par.shift)]

            # --- stage 3: multiply -------------------------------------------
            p3 = Signal(signed(F.bias_bits + F.multiplier_bits), name=f"p3_{lane}")
            shift3 = Signal.like(shift2, name=f"shift3_{lane}")
            with m.If(en):
                m.d.sync += [p3.eq(x2 * mult2), shift3.eq(shift2)]

            # --- stage 4: round (ties away from zero), shift, saturate -------
            # 2**(s-1) for s >= 1 and 0 for s = 0, without a subtractor.
            half = Signal(unsigned(64), name=f"half_{lane}")
            m.d.comb += half.eq((Const(1, 1) << shift3)[1:])
            rsum = Signal(signed(p3.shape().width + 2), name=f"rsum_{lane}")
            m.d.comb += rsum.eq(p3 + half - ((p3 < 0) & (shift3 != 0)))
            r = Signal(signed(rsum.shape().width), name=f"r_{lane}")
            m.d.comb += r.eq(rsum >> shift3)
            y4 = Signal(signed(16), name=f"y4_{lane}")
            fixed3 = ctl[2].precision == int(ActivationPrecision.FIXED16)
            hi = Mux(fixed3, 32767, 127)
            lo = Mux(fixed3, -32768, -128)
            with m.If(en):
                with m.If(r > hi):
                    m.d.sync += y4.eq(hi)
                with m.Elif(r < lo):
                    m.d.sync += y4.eq(lo)
                with m.Else():
                    m.d.sync += y4.eq(r)

            # --- stage 5: table lookup / PWL segment fetch -------------------
            tmem = Memory(shape=signed(8), depth=cfg.act_tables * 256, init=[])
            m.submodules[f"table_mem_{lane}"] = tmem
            tw = tmem.write_port()
            tr = tmem.read_port()
            m.d.comb += [
                tw.en.eq(self.table_w_en),
                tw.addr.eq(self.table_w_addr),
                tw.data.eq(self.table_w_data),
                tr.en.eq(en),
                tr.addr.eq(ctl[3].table * 256 + y4[0:8] if cfg.act_tables > 1 else y4[0:8]),
            ]
            rom = Memory(shape=unsigned(c0_bits + c1_bits), depth=len(rom_words), init=rom_words)
            m.submodules[f"pwl_rom_{lane}"] = rom
            rr = rom.read_port()
            z = Signal(signed(18), name=f"z4_{lane}")
            m.d.comb += z.eq(Mux(is_fn(ctl[3], ActivationFunction.TANH), y4 * 2, y4))
            mag = Signal(unsigned(17), name=f"mag4_{lane}")
            m.d.comb += mag.eq(Mux(z < 0, -z, z))
            a = Signal(unsigned(16), name=f"a4_{lane}")
            m.d.comb += a.eq(Mux(mag > 0xFFFF, 0xFFFF, mag))
            bank = is_fn(ctl[3], ActivationFunction.GELU)
            m.d.comb += [rr.en.eq(en), rr.addr.eq(Mux(bank, 256, 0) + a[seg_bits:16])]
            t5 = Signal(unsigned(seg_bits), name=f"t5_{lane}")
            neg5 = Signal(name=f"neg5_{lane}")
            y5 = Signal(signed(16), name=f"y5_{lane}")
            with m.If(en):
                m.d.sync += [t5.eq(a[:seg_bits]), neg5.eq(z < 0), y5.eq(y4)]

            # --- stage 6: evaluate the segment ------------------------------
            c0 = rr.data[:c0_bits]
            c1 = rr.data[c0_bits:]
            s6 = Signal(unsigned(c0_bits), name=f"s6_{lane}")
            neg6 = Signal(name=f"neg6_{lane}")
            y6 = Signal(signed(16), name=f"y6_{lane}")
            tab6 = Signal(signed(8), name=f"tab6_{lane}")
            slope = Signal(unsigned(c1_bits + seg_bits + 1), name=f"slope5_{lane}")
            m.d.comb += slope.eq(c1 * t5 + (1 << (PWL_SLOPE_FRAC - 1)))
            with m.If(en):
                m.d.sync += [
                    s6.eq(c0 + (slope >> PWL_SLOPE_FRAC)),
                    neg6.eq(neg5), y6.eq(y5), tab6.eq(tr.data),
                ]

            # --- stage 7: finish the function -------------------------------
            c6 = ctl[5]
            s_signed = Signal(unsigned(c0_bits), name=f"sabs6_{lane}")  # f(z) for z's sign
            m.d.comb += s_signed.eq(Mux(neg6, one - s6, s6))
            sig = (s_signed + (1 << (out_sh - 1))) >> out_sh
            th_pos = Signal(unsigned(c0_bits + 1), name=f"tanh6_{lane}")
            m.d.comb += th_pos.eq(((s6 * 2 - one) + (1 << (out_sh - 1))) >> out_sh)
            th = Mux(neg6, -th_pos, th_pos)
            gp = Signal(signed(16 + c0_bits + 1), name=f"gelu6_{lane}")
            m.d.comb += gp.eq(y6 * s_signed)
            g = (gp + (1 << (PWL_FRAC - 1)) - (gp < 0)) >> PWL_FRAC
            relu = Mux(y6 < 0, 0, y6)
            res = Signal(signed(16), name=f"res6_{lane}")
            fixed6 = c6.precision == int(ActivationPrecision.FIXED16)
            with m.Switch(c6.function):
                with m.Case(int(ActivationFunction.NONE)):
                    m.d.comb += res.eq(y6)
                with m.Case(int(ActivationFunction.RELU)):
                    m.d.comb += res.eq(relu)
                with m.Case(int(ActivationFunction.SIGMOID)):
                    m.d.comb += res.eq(Mux(fixed6, sig, tab6))
                with m.Case(int(ActivationFunction.TANH)):
                    m.d.comb += res.eq(Mux(fixed6, th, tab6))
                with m.Default():   # GELU (codes 5..7 are not issued)
                    m.d.comb += res.eq(Mux(fixed6, g, tab6))
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
            data_path = (acc1, x2, p3, y4, y5, y6, out_data[lane])
            if fold == 1:
                check_depth("ActivationUnit", len(data_path), latency,
                            "hetaccel.spec.timing.ACTIVATION_LATENCY")
            else:
                check_depth("ActivationUnit", len((row_data,) + data_path), latency,
                            "hetaccel.spec.timing.activation_latency(config)")

        m.d.comb += self.out.payload.last.eq(ctl[-1].last)
        return m
