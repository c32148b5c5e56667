"""Correctly rounded IEEE-754 binary32 arithmetic blocks.

Every block here rounds to nearest, ties to even, handles subnormal inputs and
outputs exactly (no flush-to-zero), and therefore returns the same bits as the
corresponding ``numpy.float32`` operation on any non-NaN result.  That is the
point of building them this way: NumPy evaluated in the same operation order
*is* the golden model of anything assembled from them (see
``hetaccel.sim.adam_model``).

The one place the blocks deliberately differ from an x86 NumPy is NaN: every
NaN result is the canonical quiet NaN ``0x7FC00000`` (positive sign, no
payload), whatever NaN(s) went in.  Models canonicalise NaNs the same way.

Each block is a pipeline with a fixed :attr:`latency` and a clock enable ``en``:
on every clock edge with ``en`` high each stage takes the value of the stage
before it, so a result appears on ``y`` exactly ``latency`` enabled edges after
its operands were presented on the inputs.  With ``en`` low everything holds,
which is how a streaming unit built from them stalls for back-pressure.

Internally a result travels as ``(sign, exp, sig, sticky)`` where ``sig`` is an
unsigned integer whose most significant bit has weight ``2**exp`` and ``sticky``
says whether non-zero bits were lost below ``sig``'s least significant bit.
:func:`_normalize` and :func:`_round_pack` turn that into a binary32 pattern.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .contract import check_depth

__all__ = ["FPMul", "FPAdd", "FPSqrt", "FPDiv", "CANONICAL_NAN", "POS_INF"]

#: The one NaN the blocks produce.
CANONICAL_NAN = 0x7FC00000
POS_INF = 0x7F800000

# Internal exponents (unbiased) of products and quotients of subnormals reach
# about -300 before normalisation; 12 signed bits leave margin.
_EXP = signed(12)
_EMIN = -126          # exponent of the smallest normal number
_BIAS = 127


class _Unpacked:
    """Combinational fields of one binary32 operand."""

    def __init__(self, m: Module, x, name: str):
        self.sign = x[31]
        efield = x[23:31]
        frac = x[:23]
        self.zero = Signal(name=f"{name}_zero")
        self.inf = Signal(name=f"{name}_inf")
        self.nan = Signal(name=f"{name}_nan")
        self.sub = Signal(name=f"{name}_sub")
        # Significand with the hidden bit (0 for zeros/subnormals), value
        # man * 2**(exp - 23).  Subnormals use exponent -126 with no hidden bit.
        self.man = Signal(24, name=f"{name}_man")
        self.exp = Signal(_EXP, name=f"{name}_exp")
        m.d.comb += [
            self.zero.eq((efield == 0) & (frac == 0)),
            self.sub.eq((efield == 0) & (frac != 0)),
            self.inf.eq((efield == 0xFF) & (frac == 0)),
            self.nan.eq((efield == 0xFF) & (frac != 0)),
            self.man.eq(Cat(frac, efield != 0)),
            self.exp.eq(Mux(efield == 0, _EMIN, efield - _BIAS)),
        ]


def _normalize(m: Module, sig, exp, name: str):
    """Shift ``sig`` left until its MSB is set, adjusting ``exp`` (log shifter).

    A zero ``sig`` stays zero (and ``exp`` becomes meaningless).
    """
    n = len(sig)
    cur_s, cur_e = sig, exp
    for i in reversed(range((n - 1).bit_length())):
        k = 1 << i
        ns = Signal(n, name=f"{name}_s{k}")
        ne = Signal(_EXP, name=f"{name}_e{k}")
        top_zero = cur_s[n - k:] == 0
        m.d.comb += [
            ns.eq(Mux(top_zero, cur_s << k, cur_s)),
            ne.eq(Mux(top_zero, cur_e - k, cur_e)),
        ]
        cur_s, cur_e = ns, ne
    return cur_s, cur_e


def _round_pack(m: Module, sign, sig, exp, sticky, name: str):
    """binary32 bits of ``(-1)**sign * sig * 2**(exp - len(sig) + 1)``, RNE.

    ``sig`` must be normalised (MSB set) or zero, and at least 25 bits wide
    (24 significand bits and a guard bit).  Results below the normal range are
    denormalised first (the shifted-out bits join the sticky bit), so the
    rounding of subnormals is exact; results beyond the range become infinity
    as round-to-nearest requires.
    """
    n = len(sig)
    assert n >= 25
    # Distance below the normal range: the shift that brings the exponent up
    # to -126.  Anything shifted by n or more only survives as sticky.
    under = Signal(signed(14), name=f"{name}_under")
    dist = Signal(range(n + 1), name=f"{name}_dist")
    m.d.comb += [
        under.eq(_EMIN - exp),
        dist.eq(Mux(under <= 0, 0, Mux(under >= n, n, under[:8]))),
    ]
    shifted = Signal(n, name=f"{name}_shifted")
    lost = Signal(name=f"{name}_lost")
    m.d.comb += [
        shifted.eq(sig >> dist),
        lost.eq((shifted << dist)[:n] != sig),
    ]
    mant = shifted[n - 24:]
    guard = shifted[n - 25]
    below = (shifted[:n - 25] != 0) if n > 25 else Const(0)
    st = Signal(name=f"{name}_st")
    rnd = Signal(name=f"{name}_rnd")
    m.d.comb += [
        st.eq(below | lost | sticky),
        rnd.eq(guard & (st | mant[0])),
    ]
    # Biased exponent field minus one: the hidden bit of ``mant`` adds the one
    # back for normal results, and a denormalised ``mant`` (hidden bit 0) with
    # field 0 is exactly the subnormal encoding.  A rounding carry out of the
    # significand increments the exponent field, up to infinity's encoding.
    ovf = Signal(name=f"{name}_ovf")
    field_m1 = Signal(8, name=f"{name}_fm1")
    packed = Signal(32, name=f"{name}_packed")
    m.d.comb += [
        ovf.eq(exp >= 255 - _BIAS),
        field_m1.eq(Mux(under > 0, 0, (exp + _BIAS - 1)[:8])),
        packed.eq((field_m1 << 23) + mant + rnd),
    ]
    out = Signal(32, name=f"{name}_out")
    with m.If(sig == 0):
        m.d.comb += out.eq(Cat(Const(0, 31), sign))
    with m.Elif(ovf):
        m.d.comb += out.eq(Cat(Const(POS_INF, 31), sign))
    with m.Else():
        m.d.comb += out.eq(Cat(packed[:31], sign))
    return out


class _Stages:
    """Helper that registers a dict of values into the next pipeline stage.

    Register names start with their stage (``s1_sig``, ``s1_exp``, ...), which
    is how :meth:`check` counts the stages built.
    """

    def __init__(self, m: Module, en):
        self.m = m
        self.en = en
        self._stages = set()

    def reg(self, name: str, value, shape=None):
        self._stages.add(name.split("_", 1)[0])
        sig = Signal(shape if shape is not None else len(value), name=name)
        with self.m.If(self.en):
            self.m.d.sync += sig.eq(value)
        return sig

    def check(self, block) -> None:
        """``block``'s stages registered here plus its output register ``y``
        must be the ``latency`` it promises (the units built from it delay
        their other operands by that much)."""
        check_depth(type(block).__name__, len(self._stages) + 1, block.latency,
                    "its latency")


def _special_result(nan, inf, inf_sign, normal_bits):
    """Override ``normal_bits`` with NaN / signed infinity when flagged."""
    return Mux(nan, CANONICAL_NAN,
               Mux(inf, Cat(Const(POS_INF, 31), inf_sign), normal_bits))


class _Binary(wiring.Component):
    """Common signature of two-operand blocks."""

    latency: int

    def __init__(self):
        super().__init__({"a": In(32), "b": In(32), "en": In(1, init=1), "y": Out(32)})


class FPMul(_Binary):
    """``y = a * b`` in binary32, correctly rounded (RNE), latency 3.

    Stages: unpack and 24x24-bit product; normalise; round and pack.
    ``0 * inf`` and any NaN operand give the canonical NaN.
    """

    latency = 3

    def elaborate(self, platform):
        m = Module()
        st = _Stages(m, self.en)
        a = _Unpacked(m, self.a, "a")
        b = _Unpacked(m, self.b, "b")
        # The product of (possibly subnormal) significands is exact in 48 bits;
        # its MSB (bit 47) has weight 2**(ea + eb + 1).
        s1_sig = st.reg("s1_sig", a.man * b.man, 48)
        s1_exp = st.reg("s1_exp", a.exp + b.exp + 1, _EXP)
        s1_sign = st.reg("s1_sign", a.sign ^ b.sign, 1)
        s1_nan = st.reg("s1_nan", a.nan | b.nan | (a.inf & b.zero) | (a.zero & b.inf), 1)
        s1_inf = st.reg("s1_inf", a.inf | b.inf, 1)

        n_sig, n_exp = _normalize(m, s1_sig, s1_exp, "norm")
        s2_sig = st.reg("s2_sig", n_sig, 48)
        s2_exp = st.reg("s2_exp", n_exp, _EXP)
        s2_sign = st.reg("s2_sign", s1_sign, 1)
        s2_nan = st.reg("s2_nan", s1_nan, 1)
        s2_inf = st.reg("s2_inf", s1_inf, 1)

        bits = _round_pack(m, s2_sign, s2_sig, s2_exp, Const(0), "rnd")
        with m.If(self.en):
            m.d.sync += self.y.eq(_special_result(s2_nan, s2_inf, s2_sign, bits))
        st.check(self)
        return m


class FPAdd(_Binary):
    """``y = a + b`` in binary32, correctly rounded (RNE), latency 4.

    Stages: unpack and order by magnitude; align (guard, round and sticky bits)
    and add/subtract; normalise; round and pack.  An exact zero sum is ``+0``
    unless both operands are negative zeros (``-0 + -0 = -0``).  ``inf - inf``
    and any NaN operand give the canonical NaN.  Subtraction is addition of the
    operand with its sign bit flipped, which is exact in IEEE-754.
    """

    latency = 4

    def elaborate(self, platform):
        m = Module()
        st = _Stages(m, self.en)
        a = _Unpacked(m, self.a, "a")
        b = _Unpacked(m, self.b, "b")
        # Magnitude order by bit pattern (exponent then fraction) is numeric order.
        swap = Signal()
        m.d.comb += swap.eq(self.b[:31] > self.a[:31])
        big_man = Mux(swap, b.man, a.man)
        big_exp = Mux(swap, b.exp, a.exp)
        small_man = Mux(swap, a.man, b.man)
        small_exp = Mux(swap, a.exp, b.exp)
        s1_big = st.reg("s1_big", big_man, 24)
        s1_small = st.reg("s1_small", small_man, 24)
        s1_exp = st.reg("s1_exp", big_exp, _EXP)
        s1_dist = st.reg("s1_dist", (big_exp - small_exp)[:9], 9)
        s1_sign = st.reg("s1_sign", Mux(swap, b.sign, a.sign), 1)
        s1_sub = st.reg("s1_sub", a.sign ^ b.sign, 1)
        s1_zsign = st.reg("s1_zsign", a.sign & b.sign, 1)
        s1_nan = st.reg("s1_nan", a.nan | b.nan | (a.inf & b.inf & (a.sign != b.sign)), 1)
        s1_inf = st.reg("s1_inf", a.inf | b.inf, 1)
        s1_isign = st.reg("s1_isign", Mux(a.inf, a.sign, b.sign), 1)

        # Align the smaller operand with three extra bits (guard, round, sticky);
        # everything shifted past the sticky position is ORed into it.
        small_ext = Cat(Const(0, 3), s1_small)            # 27 bits
        dist = Signal(range(28))
        m.d.comb += dist.eq(Mux(s1_dist >= 27, 27, s1_dist[:5]))
        al = Signal(27)
        lost = Signal()
        m.d.comb += [
            al.eq(small_ext >> dist),
            lost.eq((al << dist)[:27] != small_ext),
        ]
        aligned = Cat(al[0] | lost, al[1:])
        big_ext = Cat(Const(0, 3), s1_big)
        total = Signal(28)
        m.d.comb += total.eq(Mux(s1_sub, big_ext - aligned, big_ext + aligned))
        s2_sig = st.reg("s2_sig", total, 28)
        # Bit 27 (the carry) has weight 2**(exp + 1).
        s2_exp = st.reg("s2_exp", s1_exp + 1, _EXP)
        s2_sign = st.reg("s2_sign", Mux(total == 0, s1_zsign, s1_sign), 1)
        s2_nan = st.reg("s2_nan", s1_nan, 1)
        s2_inf = st.reg("s2_inf", s1_inf, 1)
        s2_isign = st.reg("s2_isign", s1_isign, 1)

        n_sig, n_exp = _normalize(m, s2_sig, s2_exp, "norm")
        s3_sig = st.reg("s3_sig", n_sig, 28)
        s3_exp = st.reg("s3_exp", n_exp, _EXP)
        s3_sign = st.reg("s3_sign", s2_sign, 1)
        s3_nan = st.reg("s3_nan", s2_nan, 1)
        s3_inf = st.reg("s3_inf", s2_inf, 1)
        s3_isign = st.reg("s3_isign", s2_isign, 1)

        bits = _round_pack(m, s3_sign, s3_sig, s3_exp, Const(0), "rnd")
        with m.If(self.en):
            m.d.sync += self.y.eq(_special_result(s3_nan, s3_inf, s3_isign, bits))
        st.check(self)
        return m


def _normalize_operand(m: Module, u: _Unpacked, name: str):
    """Significand with its MSB set and the matching exponent (subnormals shifted up)."""
    return _normalize(m, u.man, u.exp, name)


class FPSqrt(wiring.Component):
    """``y = sqrt(a)`` in binary32, correctly rounded (RNE).

    Digit-by-digit (restoring) integer square root of the significand, scaled
    so the root has 25 bits (24 and a guard bit); the remainder gives the
    sticky bit.  ``sqrt(-0) = -0``, ``sqrt(+inf) = +inf``; a negative non-zero
    operand or a NaN gives the canonical NaN.

    Parameters
    ----------
    iters_per_stage : int
        Root bits resolved per pipeline stage (1..25); fewer means a shorter
        clock path and a longer latency.

    Attributes
    ----------
    latency : int
        ``2 + ceil(25 / iters_per_stage)``.
    """

    ROOT_BITS = 25

    @classmethod
    def latency_for(cls, iters_per_stage: int = 5) -> int:
        return 2 + -(-cls.ROOT_BITS // iters_per_stage)

    def __init__(self, iters_per_stage: int = 5):
        if isinstance(iters_per_stage, bool) or not isinstance(iters_per_stage, int) \
                or not 1 <= iters_per_stage <= self.ROOT_BITS:
            raise ValueError(f"iters_per_stage must be an integer in [1, {self.ROOT_BITS}], "
                             f"got {iters_per_stage!r}")
        self.iters_per_stage = iters_per_stage
        self.latency = self.latency_for(iters_per_stage)
        super().__init__({"a": In(32), "en": In(1, init=1), "y": Out(32)})

    def elaborate(self, platform):
        m = Module()
        st = _Stages(m, self.en)
        a = _Unpacked(m, self.a, "a")
        man, exp = _normalize_operand(m, a, "an")
        # sqrt(man * 2**(exp-23)): make the exponent even, then the radicand
        # man << 25 (or << 26 for an odd exponent) has a 25-bit root whose
        # MSB weighs 2**(exp // 2).
        odd = exp[0]
        rad = Signal(50)
        m.d.comb += rad.eq(Mux(odd, man << 26, man << 25))
        s_rad = st.reg("s0_rad", rad, 50)
        s_hexp = st.reg("s0_hexp", (exp - odd) >> 1, _EXP)
        s_sign = st.reg("s0_sign", a.sign, 1)
        s_nan = st.reg("s0_nan", a.nan | (a.sign & ~a.zero), 1)
        s_zero = st.reg("s0_zero", a.zero, 1)
        s_inf = st.reg("s0_inf", a.inf, 1)
        rem, root = Const(0, 27), Const(0, 25)
        done = 0
        stage = 1
        while done < self.ROOT_BITS:
            for _ in range(min(self.iters_per_stage, self.ROOT_BITS - done)):
                top = s_rad[48 - 2 * done: 50 - 2 * done] if done else s_rad[48:50]
                r2 = Signal(28, name=f"r2_{done}")
                trial = Signal(28, name=f"trial_{done}")
                ge = Signal(name=f"ge_{done}")
                nrem = Signal(27, name=f"rem_{done}")
                nroot = Signal(25, name=f"root_{done}")
                m.d.comb += [
                    r2.eq(Cat(top, rem)),
                    trial.eq(Cat(Const(1, 2), root)),
                    ge.eq(r2 >= trial),
                    nrem.eq(Mux(ge, r2 - trial, r2)),
                    nroot.eq(Cat(ge, root)),
                ]
                rem, root = nrem, nroot
                done += 1
            rem = st.reg(f"s{stage}_rem", rem, 27)
            root = st.reg(f"s{stage}_root", root, 25)
            s_rad = st.reg(f"s{stage}_rad", s_rad, 50)
            s_hexp = st.reg(f"s{stage}_hexp", s_hexp, _EXP)
            s_sign = st.reg(f"s{stage}_sign", s_sign, 1)
            s_nan = st.reg(f"s{stage}_nan", s_nan, 1)
            s_zero = st.reg(f"s{stage}_zero", s_zero, 1)
            s_inf = st.reg(f"s{stage}_inf", s_inf, 1)
            stage += 1
        bits = _round_pack(m, Const(0), root, s_hexp, rem != 0, "rnd")
        with m.If(self.en):
            with m.If(s_nan):
                m.d.sync += self.y.eq(CANONICAL_NAN)
            with m.Elif(s_zero):
                m.d.sync += self.y.eq(Cat(Const(0, 31), s_sign))
            with m.Elif(s_inf):
                m.d.sync += self.y.eq(POS_INF)
            with m.Else():
                m.d.sync += self.y.eq(bits)
        st.check(self)
        return m


class FPDiv(wiring.Component):
    """``y = a / b`` in binary32, correctly rounded (RNE).

    Restoring division of the normalised significands to a 26-bit quotient
    (at least 24 significant bits and a guard bit); the remainder gives the
    sticky bit.  ``x/0 = ±inf`` for non-zero ``x``, ``x/inf = ±0``; ``0/0``,
    ``inf/inf`` and any NaN operand give the canonical NaN.

    Parameters
    ----------
    iters_per_stage : int
        Quotient bits resolved per pipeline stage (1..26).

    Attributes
    ----------
    latency : int
        ``2 + ceil(26 / iters_per_stage)``.
    """

    QUOTIENT_BITS = 26

    @classmethod
    def latency_for(cls, iters_per_stage: int = 6) -> int:
        return 2 + -(-cls.QUOTIENT_BITS // iters_per_stage)

    def __init__(self, iters_per_stage: int = 6):
        if isinstance(iters_per_stage, bool) or not isinstance(iters_per_stage, int) \
                or not 1 <= iters_per_stage <= self.QUOTIENT_BITS:
            raise ValueError(f"iters_per_stage must be an integer in [1, {self.QUOTIENT_BITS}], "
                             f"got {iters_per_stage!r}")
        self.iters_per_stage = iters_per_stage
        self.latency = self.latency_for(iters_per_stage)
        super().__init__({"a": In(32), "b": In(32), "en": In(1, init=1), "y": Out(32)})

    def elaborate(self, platform):
        m = Module()
        st = _Stages(m, self.en)
        a = _Unpacked(m, self.a, "a")
        b = _Unpacked(m, self.b, "b")
        am, ae = _normalize_operand(m, a, "an")
        bm, be = _normalize_operand(m, b, "bn")
        rem = st.reg("s0_rem", am, 26)
        div = st.reg("s0_div", bm, 24)
        s_exp = st.reg("s0_exp", ae - be, _EXP)
        s_sign = st.reg("s0_sign", a.sign ^ b.sign, 1)
        s_nan = st.reg("s0_nan", a.nan | b.nan | (a.zero & b.zero) | (a.inf & b.inf), 1)
        s_inf = st.reg("s0_inf", a.inf | b.zero, 1)
        s_zero = st.reg("s0_zero", a.zero | b.inf, 1)
        quo = Const(0, 26)
        done = 0
        stage = 1
        # quo = floor(am * 2**25 / bm): bit 25 weighs 2**(ae - be).
        while done < self.QUOTIENT_BITS:
            for _ in range(min(self.iters_per_stage, self.QUOTIENT_BITS - done)):
                ge = Signal(name=f"ge_{done}")
                nrem = Signal(26, name=f"rem_{done}")
                nquo = Signal(26, name=f"quo_{done}")
                m.d.comb += [
                    ge.eq(rem >= div),
                    nrem.eq(Mux(ge, rem - div, rem) << 1),
                    nquo.eq(Cat(ge, quo)),
                ]
                rem, quo = nrem, nquo
                done += 1
            rem = st.reg(f"s{stage}_rem", rem, 26)
            quo = st.reg(f"s{stage}_quo", quo, 26)
            div = st.reg(f"s{stage}_div", div, 24)
            s_exp = st.reg(f"s{stage}_exp", s_exp, _EXP)
            s_sign = st.reg(f"s{stage}_sign", s_sign, 1)
            s_nan = st.reg(f"s{stage}_nan", s_nan, 1)
            s_inf = st.reg(f"s{stage}_inf", s_inf, 1)
            s_zero = st.reg(f"s{stage}_zero", s_zero, 1)
            stage += 1
        # The quotient of two normalised significands is in (1/2, 2): at most
        # one leading zero.
        lead0 = ~quo[25]
        sig = Signal(26)
        exp = Signal(_EXP)
        m.d.comb += [
            sig.eq(Mux(lead0, quo << 1, quo)),
            exp.eq(Mux(lead0, s_exp - 1, s_exp)),
        ]
        bits = _round_pack(m, s_sign, sig, exp, rem != 0, "rnd")
        with m.If(self.en):
            with m.If(s_nan):
                m.d.sync += self.y.eq(CANONICAL_NAN)
            with m.Elif(s_inf):
                m.d.sync += self.y.eq(Cat(Const(POS_INF, 31), s_sign))
            with m.Elif(s_zero):
                m.d.sync += self.y.eq(Cat(Const(0, 31), s_sign))
            with m.Else():
                m.d.sync += self.y.eq(bits)
        st.check(self)
        return m
