"""Streaming Adam / AdamW optimizer-update unit (IEEE-754 binary32).

One optimizer step for ``config.adam_lanes`` parameters per clock cycle at full
streams, in the structure of ``torch.optim.Adam`` / ``torch.optim.AdamW``::

    g1    = g + weight_decay * p        if mode & L2         else g
    p1    = p - lr_wd * p               if mode & DECOUPLED  else p
    m'    = beta1 * m + one_minus_beta1 * g1
    v'    = beta2 * v + one_minus_beta2 * (g1 * g1)
    denom = sqrt(v') * bc2_rsqrt + eps
    p'    = p1 - (m' / denom) * step_size

Each line is evaluated left to right, one correctly rounded binary32 operation
at a time (``hetaccel.rtl.fp32``), so ``numpy.float32`` in this order is the
bit-exact model (``hetaccel.sim.adam_model.adam_step``); NaN results are the
canonical quiet NaN ``0x7FC00000``.  Subnormals are fully supported (no
flush-to-zero).  See docs/adam.md.

Ports
-----
``inp`` : In stream, payload ``StructLayout({"lanes": ArrayLayout(ADAM_IN, lanes),
"last": 1})`` with ``ADAM_IN = {"param", "grad", "m", "v"}`` (32 bits each, binary32
bit patterns).  In Verilog: ``inp__payload`` (lane ``i`` at bits ``128*i``:
param ``[0:32]``, grad ``[32:64]``, m ``[64:96]``, v ``[96:128]``; ``last`` at bit
``128*lanes``), ``inp__valid``, ``inp__ready``.

``out`` : Out stream, payload ``StructLayout({"lanes": ArrayLayout(ADAM_OUT, lanes),
"last": 1})`` with ``ADAM_OUT = {"param", "m", "v"}``.  Verilog: ``out__payload``
(lane ``i`` at bits ``96*i``: param, m, v; ``last`` at bit ``96*lanes``),
``out__valid``, ``out__ready``.  ``last`` is carried through unchanged.

Hyperparameters, ``In(32)`` binary32 bit patterns named as in
``hetaccel.spec.ADAM_HYPERPARAMETERS``: ``beta1``, ``one_minus_beta1``, ``beta2``,
``one_minus_beta2``, ``eps``, ``weight_decay``, ``lr_wd``, ``bc2_rsqrt``,
``step_size``; and ``mode`` : ``In(2)`` (``hetaccel.spec.AdamMode`` bits: 1 = L2,
2 = DECOUPLED).  The host computes them all from the step number
(``adam_model.hyperparameters``).  They are read at different pipeline depths,
so they must be held stable from the first transfer of a pass until ``idle``.

``idle`` : Out(1), high when no parameter is inside the pipeline (the output
register included), i.e. every accepted parameter has been delivered.

Flow control: the whole pipeline advances on a cycle when its output register
is empty or being read (``~out.valid | out.ready``); ``inp.ready`` is that
condition, so it depends combinationally on ``out.ready``.  Input gaps travel
through the pipeline as bubbles.  Latency from an accepted input to its
output being valid is :attr:`AdamUnit.latency` advancing cycles.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec import ADAM_HYPERPARAMETERS, AcceleratorConfig, AdamMode, timing
from .contract import check_depth
from .fp32 import FPAdd, FPDiv, FPMul, FPSqrt

#: Delays longer than this many cycles (of values at least a byte wide) are
#: block RAM rings rather than register chains.
_RAM_DELAY_MIN = 16

__all__ = ["AdamUnit", "ADAM_IN", "ADAM_OUT", "adam_in_layout", "adam_out_layout"]

ADAM_IN = data.StructLayout({"param": 32, "grad": 32, "m": 32, "v": 32})
ADAM_OUT = data.StructLayout({"param": 32, "m": 32, "v": 32})


def adam_in_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"lanes": data.ArrayLayout(ADAM_IN, lanes), "last": 1})


def adam_out_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"lanes": data.ArrayLayout(ADAM_OUT, lanes), "last": 1})


class AdamUnit(wiring.Component):
    """Pipelined Adam/AdamW update of ``config.adam_lanes`` parameters per cycle.

    Parameters
    ----------
    config : AcceleratorConfig
        Supplies ``adam_lanes``.

    Attributes
    ----------
    latency : int
        Advancing cycles from accepting a parameter to presenting its result:
        :func:`hetaccel.spec.timing.adam_latency`, which the pipeline built
        from the fp32 blocks is checked against when it is elaborated.

    See the module docstring for the exact ports, operation order and
    flow-control rules.
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        self.config = config
        self.lanes = config.adam_lanes
        self.latency = timing.adam_latency()
        members = {
            "inp": In(stream.Signature(adam_in_layout(self.lanes))),
            "out": Out(stream.Signature(adam_out_layout(self.lanes))),
            "mode": In(2),
            "idle": Out(1),
        }
        for name in ADAM_HYPERPARAMETERS:
            members[name] = In(32)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        adv = Signal()
        m.d.comb += [
            adv.eq(~self.out.valid | self.out.ready),
            self.inp.ready.eq(adv),
        ]

        taps = {}

        def delay(value, n, name):
            # ``value`` ``n`` advancing cycles late.  One line per source
            # (``name``): a later tap continues from the latest earlier one.
            # Long, wide stretches are block RAM rings instead of thousands of
            # flip-flops all on the ``adv`` enable.
            line = taps.setdefault(name, {0: value})
            k = max(t for t in line if t <= n)
            cur = line[k]
            if n - k > _RAM_DELAY_MIN and len(value) >= 8:
                cur = ram_delay(cur, n - k - 1, f"{name}_r{n}")
                k = n - 1
            while k < n:
                nxt = Signal(len(value), name=f"{name}_d{k}")
                with m.If(adv):
                    m.d.sync += nxt.eq(cur)
                cur = nxt
                k += 1
                line[k] = cur
            return line[n]

        def ram_delay(value, d, name):
            # A ring of at least ``d`` (>= 2) entries: each advancing edge
            # writes one and reads into the port's register the one written
            # ``d - 1`` edges before, so the read register is ``d`` edges
            # late.  The read pointer starts ``d - 1`` entries behind the
            # write pointer.  The caller's register after it keeps the block
            # RAM's slow clock-to-output off the fp32 blocks' first stage.
            depth = 1 << (d - 1).bit_length()
            mem = Memory(shape=len(value), depth=depth, init=[])
            m.submodules[f"{name}_mem"] = mem
            wr = mem.write_port()
            rd = mem.read_port(transparent_for=())
            wa = Signal(range(depth), name=f"{name}_wa")
            ra = Signal(range(depth), init=(depth - (d - 1)) % depth, name=f"{name}_ra")
            m.d.comb += [
                wr.addr.eq(wa), wr.data.eq(value), wr.en.eq(adv),
                rd.addr.eq(ra), rd.en.eq(adv),
            ]
            with m.If(adv):
                m.d.sync += [wa.eq(wa + 1), ra.eq(ra + 1)]
            return rd.data

        # Each block's depth as the contract times it (the square root and
        # divide at the iterations per stage built here: their defaults).
        contract = {FPMul: "FP_MUL_LATENCY", FPAdd: "FP_ADD_LATENCY",
                    FPSqrt: "FP_SQRT_LATENCY", FPDiv: "FP_DIV_LATENCY"}

        def block(cls, *operands, name):
            blk = cls()
            check_depth(f"AdamUnit's {cls.__name__}", blk.latency,
                        getattr(timing, contract[cls]), f"hetaccel.spec.timing.{contract[cls]}")
            m.submodules[name] = blk
            m.d.comb += blk.en.eq(adv)
            m.d.comb += blk.a.eq(operands[0])
            if len(operands) > 1:
                m.d.comb += blk.b.eq(operands[1])
            return blk.y, blk.latency

        lm, la = FPMul.latency, FPAdd.latency
        hp = {name: getattr(self, name) for name in ADAM_HYPERPARAMETERS}
        l2 = self.mode[0]
        decoupled = self.mode[1]
        assert AdamMode.L2 == 1 and AdamMode.DECOUPLED == 2

        # Valid and last ride along the pipeline, the output register being
        # the last stage.
        last = delay(self.inp.payload.last, self.latency, "last")
        stages = []
        cur = self.inp.valid
        for i in range(self.latency):
            nxt = Signal(name=f"valid_{i}")
            with m.If(adv):
                m.d.sync += nxt.eq(cur)
            stages.append(nxt)
            cur = nxt
        m.d.comb += [
            self.idle.eq(~Cat(*stages).any()),
            self.out.valid.eq(stages[-1]),
            self.out.payload.last.eq(last),
        ]

        for lane in range(self.lanes):
            src = self.inp.payload.lanes[lane]
            dst = self.out.payload.lanes[lane]
            p, g, mom, vel = src.param, src.grad, src.m, src.v
            n = f"l{lane}"
            # t = 0 .. t1: weight-decay terms.
            wdp, _ = block(FPMul, hp["weight_decay"], p, name=f"{n}_wdp")
            gl2, _ = block(FPAdd, delay(g, lm, f"{n}_g"), wdp, name=f"{n}_gl2")
            t1 = lm + la
            g1 = Signal(32, name=f"{n}_g1")
            m.d.comb += g1.eq(Mux(l2, gl2, delay(g, t1, f"{n}_g")))
            # Decoupled decay as p - (lr*wd)*p: a precomputed 1 - lr*wd would be
            # rounded next to 1.0 (relative error up to 3e-8 per step, the same
            # sign every step) and drift from the float64 trajectory.
            lwp, _ = block(FPMul, hp["lr_wd"], p, name=f"{n}_lwp")
            pdec, _ = block(FPAdd, delay(p, lm, f"{n}_p"), lwp ^ 0x80000000, name=f"{n}_pdec")
            p1 = Signal(32, name=f"{n}_p1")
            m.d.comb += p1.eq(Mux(decoupled, pdec, delay(p, t1, f"{n}_p")))
            # t1 .. : moments.
            bm, _ = block(FPMul, hp["beta1"], delay(mom, t1, f"{n}_m"), name=f"{n}_bm")
            og, _ = block(FPMul, hp["one_minus_beta1"], g1, name=f"{n}_og")
            m2, _ = block(FPAdd, bm, og, name=f"{n}_m2")
            t_m2 = t1 + lm + la
            gg, _ = block(FPMul, g1, g1, name=f"{n}_gg")
            ogg, _ = block(FPMul, hp["one_minus_beta2"], gg, name=f"{n}_ogg")
            bv, _ = block(FPMul, hp["beta2"], delay(vel, t1, f"{n}_v"), name=f"{n}_bv")
            v2, _ = block(FPAdd, delay(bv, lm, f"{n}_bv"), ogg, name=f"{n}_v2")
            t2 = t1 + 2 * lm + la
            # t2 .. t3: denominator.
            sq, ls = block(FPSqrt, v2, name=f"{n}_sqrt")
            sqc, _ = block(FPMul, sq, hp["bc2_rsqrt"], name=f"{n}_sqc")
            den, _ = block(FPAdd, sqc, hp["eps"], name=f"{n}_den")
            t3 = t2 + ls + lm + la
            # t3 .. t4: update.
            q, ld = block(FPDiv, delay(m2, t3 - t_m2, f"{n}_m2"), den, name=f"{n}_q")
            upd, _ = block(FPMul, q, hp["step_size"], name=f"{n}_upd")
            t4 = t3 + ld + lm
            neg = Signal(32, name=f"{n}_neg")
            m.d.comb += neg.eq(upd ^ 0x80000000)
            p2, _ = block(FPAdd, delay(p1, t4 - t1, f"{n}_p1"), neg, name=f"{n}_p2")
            check_depth("AdamUnit", t4 + la, self.latency, "hetaccel.spec.timing.adam_latency()")
            m.d.comb += [
                dst.param.eq(p2),
                dst.m.eq(delay(m2, self.latency - t_m2, f"{n}_m2")),
                dst.v.eq(delay(v2, self.latency - t2, f"{n}_v2")),
            ]
        return m
