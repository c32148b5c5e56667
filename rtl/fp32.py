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
Every step that would take longer than a 100 MHz clock on an ECP5 gets a
stage of its own: a leading-zero count (:func:`_lzc`) and the shift it
drives, the exponent's rounding fields (:func:`_exp_fields`) a stage ahead of
the significand they apply to, the denormalising shift (:func:`_denormalize`),
and rounding with packing (:func:`_round_pack`).
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


def _lzc(m: Module, v, name: str):
    """Leading zeros of ``v`` (``len(v)`` when it is zero), as a balanced tree.

    A tree of ``log2`` mux levels instead of a chain of shifts whose every step
    waits for the one before: a normalising shift is then one stage for the
    count and one for the shift.
    """
    n = len(v)
    w = max(2, 1 << (n - 1).bit_length())
    # Ones below the LSB stop the count at n for a zero ``v``, so the tree
    # never sees all zeros and needs no "all zero" case at its root.
    padded = Cat(Const((1 << (w - n)) - 1, w - n), v) if w > n else v

    def count(bits):
        # (all bits zero, leading zeros of the bits if not)
        if len(bits) == 2:
            return ~(bits[1] | bits[0]), ~bits[1]
        half = len(bits) // 2
        zl, cl = count(bits[:half])
        zh, ch = count(bits[half:])
        return zh & zl, Cat(Mux(zh, cl, ch), zh)

    out = Signal(range(w), name=name)
    m.d.comb += out.eq(count(padded)[1])
    return out


def _exp_fields(m: Module, exp, n: int, name: str):
    """What rounding a normalised ``n``-bit significand whose MSB weighs
    ``2**exp`` needs to know of ``exp``, computed a stage ahead of the
    significand: ``(dist, field_m1, ovf)``.

    ``dist`` is the right shift that denormalises a result below the normal
    range (the shift that brings the exponent up to -126; ``n`` or more only
    survives as sticky).  ``field_m1`` is the biased exponent field minus one:
    the hidden bit of the rounded significand adds the one back for normal
    results, and a denormalised significand (hidden bit 0) with field 0 is
    exactly the subnormal encoding.  ``ovf`` says the result is beyond the
    range and becomes infinity, as round-to-nearest requires.
    """
    under = Signal(signed(14), name=f"{name}_under")
    dist = Signal(range(n + 1), name=f"{name}_dist")
    ovf = Signal(name=f"{name}_ovf")
    field_m1 = Signal(8, name=f"{name}_fm1")
    m.d.comb += [
        under.eq(_EMIN - exp),
        dist.eq(Mux(under <= 0, 0, Mux(under >= n, n, under[:8]))),
        ovf.eq(exp >= 255 - _BIAS),
        field_m1.eq(Mux(under > 0, 0, (exp + _BIAS - 1)[:8])),
    ]
    return dist, field_m1, ovf


def _denormalize(m: Module, sig, dist, name: str):
    """``sig >> dist`` cut to a 24-bit significand and a guard bit, and whether
    non-zero bits went below the guard bit (sticky): ``(mant_guard, below)``.

    ``sig`` must be at least 25 bits wide.
    """
    n = len(sig)
    assert n >= 25
    shifted = Signal(n, name=f"{name}_shifted")
    lost = Signal(name=f"{name}_lost")
    # The bits shifted out are the ones under a mask decoded from ``dist``, in
    # parallel with the shift rather than after it.
    m.d.comb += [
        shifted.eq(sig >> dist),
        lost.eq((sig & ~(Const((1 << n) - 1, n) << dist)[:n]) != 0),
    ]
    below = (shifted[:n - 25] != 0) if n > 25 else Const(0)
    return shifted[n - 25:], below | lost


def _round_pack(m: Module, sign, mant_guard, sticky, field_m1, ovf, zero, name: str):
    """binary32 bits of a 24-bit significand with its guard bit (``mant_guard``),
    rounded to nearest, ties to even (``sticky``: non-zero bits below the guard
    bit), with the exponent field and overflow from :func:`_exp_fields`; a
    ``zero`` result is a signed zero.
    """
    mant = mant_guard[1:]
    guard = mant_guard[0]
    st = Signal(name=f"{name}_st")
    rnd = Signal(name=f"{name}_rnd")
    m.d.comb += [
        st.eq(sticky),
        rnd.eq(guard & (st | mant[0])),
    ]
    # A rounding carry out of the significand increments the exponent field,
    # up to infinity's encoding.
    packed = Signal(32, name=f"{name}_packed")
    m.d.comb += packed.eq((field_m1 << 23) + mant + rnd)
    out = Signal(32, name=f"{name}_out")
    with m.If(zero):
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

    def carry(self, stage: int, flags: dict) -> dict:
        """Register each of ``flags`` (name -> 1-bit value) unchanged into
        ``stage`` (``s<stage>_<name>``): flags ride along with their data."""
        return {k: self.reg(f"s{stage}_{k}", v, 1) for k, v in flags.items()}

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
    """``y = a * b`` in binary32, correctly rounded (RNE), latency 6.

    Stages: unpack and count the leading zeros of (subnormal) significands;
    normalise the significands; the 24x24-bit product as four DSP partial
    products; their sum; normalise by one bit and denormalise a result below
    the normal range; round and pack.  ``0 * inf`` and any NaN operand give
    the canonical NaN.
    """

    latency = 6

    def elaborate(self, platform):
        m = Module()
        st = _Stages(m, self.en)
        a = _Unpacked(m, self.a, "a")
        b = _Unpacked(m, self.b, "b")
        s1_am = st.reg("s1_am", a.man, 24)
        s1_bm = st.reg("s1_bm", b.man, 24)
        s1_alz = st.reg("s1_alz", _lzc(m, a.man, "alz"), 5)
        s1_blz = st.reg("s1_blz", _lzc(m, b.man, "blz"), 5)
        s1_exp = st.reg("s1_exp", a.exp + b.exp + 1, _EXP)
        s1_sign = st.reg("s1_sign", a.sign ^ b.sign, 1)
        s1_nan = st.reg("s1_nan", a.nan | b.nan | (a.inf & b.zero) | (a.zero & b.inf), 1)
        s1_inf = st.reg("s1_inf", a.inf | b.inf, 1)
        s1_zero = st.reg("s1_zero", a.zero | b.zero, 1)

        # Normalised significands make the product's MSB one of its top two bits.
        s2_am = st.reg("s2_am", (s1_am << s1_alz)[:24], 24)
        s2_bm = st.reg("s2_bm", (s1_bm << s1_blz)[:24], 24)
        s2_exp = st.reg("s2_exp", s1_exp - s1_alz - s1_blz, _EXP)
        f2 = st.carry(2, dict(sign=s1_sign, nan=s1_nan, inf=s1_inf, zero=s1_zero))

        # The product of the significands is exact in 48 bits; its bit 47 has
        # weight 2**s2_exp.  Split at bit 18 (the DSP width), the outer partial
        # products do not overlap and join without an adder.
        a0, a1, b0, b1 = s2_am[:18], s2_am[18:], s2_bm[:18], s2_bm[18:]
        s3_p00 = st.reg("s3_p00", a0 * b0, 36)
        s3_p01 = st.reg("s3_p01", a0 * b1, 24)
        s3_p10 = st.reg("s3_p10", a1 * b0, 24)
        s3_p11 = st.reg("s3_p11", a1 * b1, 12)
        # Rounding fields for both places the MSB can be in, ahead of the product.
        hi = _exp_fields(m, s2_exp, 48, "hi")
        lo = _exp_fields(m, s2_exp - 1, 48, "lo")
        s3_hi = [st.reg(f"s3_hi{i}", v) for i, v in enumerate(hi)]
        s3_lo = [st.reg(f"s3_lo{i}", v) for i, v in enumerate(lo)]
        f3 = st.carry(3, f2)

        s4_sig = st.reg("s4_sig", Cat(s3_p00, s3_p11) + ((s3_p01 + s3_p10) << 18), 48)
        s4_hi = [st.reg(f"s4_hi{i}", v) for i, v in enumerate(s3_hi)]
        s4_lo = [st.reg(f"s4_lo{i}", v) for i, v in enumerate(s3_lo)]
        f4 = st.carry(4, f3)

        top = s4_sig[47]
        dist = Mux(top, s4_hi[0], s4_lo[0])
        mg, below = _denormalize(m, Mux(top, s4_sig, s4_sig << 1)[:48], dist, "dn")
        s5_mg = st.reg("s5_mg", mg, 25)
        s5_st = st.reg("s5_st", below, 1)
        s5_fm1 = st.reg("s5_fm1", Mux(top, s4_hi[1], s4_lo[1]), 8)
        s5_ovf = st.reg("s5_ovf", Mux(top, s4_hi[2], s4_lo[2]), 1)
        f5 = st.carry(5, f4)

        bits = _round_pack(m, f5["sign"], s5_mg, s5_st, s5_fm1, s5_ovf, f5["zero"], "rnd")
        with m.If(self.en):
            m.d.sync += self.y.eq(_special_result(f5["nan"], f5["inf"], f5["sign"], bits))
        st.check(self)
        return m


class FPAdd(_Binary):
    """``y = a + b`` in binary32, correctly rounded (RNE), latency 6.

    Stages: unpack and order by magnitude; align (guard, round and sticky
    bits); add/subtract; count leading zeros; normalise; round and pack.  A
    result in the subnormal range is exact, so normalising stops at the
    smallest normal exponent and nothing is ever denormalised.  An exact zero
    sum is ``+0`` unless both operands are negative zeros (``-0 + -0 = -0``).
    ``inf - inf`` and any NaN operand give the canonical NaN.  Subtraction is
    addition of the operand with its sign bit flipped, which is exact in
    IEEE-754.
    """

    latency = 6

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
        s1_big = st.reg("s1_big", big_man, 24)
        s1_small = st.reg("s1_small", Mux(swap, a.man, b.man), 24)
        s1_exp = st.reg("s1_exp", big_exp, _EXP)
        # Both differences at once: the order decides which one, not when.
        s1_dist = st.reg("s1_dist", Mux(swap, b.exp - a.exp, a.exp - b.exp)[:9], 9)
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
            lost.eq((small_ext & ~(Const((1 << 27) - 1, 27) << dist)[:27]) != 0),
        ]
        aligned = Cat(al[0] | lost, al[1:])
        s2_small = st.reg("s2_small", aligned, 27)
        s2_big = st.reg("s2_big", Cat(Const(0, 3), s1_big), 27)
        # Bit 27 of the sum (the carry) has weight 2**(exp + 1).  Normalising
        # may shift by at most ``lim``, down to the smallest normal exponent;
        # 31 already exceeds any leading-zero count.
        lim = Signal(_EXP)
        m.d.comb += lim.eq(s1_exp + 1 - _EMIN)
        s2_lim = st.reg("s2_lim", Mux(lim > 31, 31, lim[:5]), 5)
        s2_exp = st.reg("s2_exp", s1_exp + 1, _EXP)
        f2 = st.carry(2, dict(sign=s1_sign, sub=s1_sub, zsign=s1_zsign, nan=s1_nan,
                              inf=s1_inf, isign=s1_isign))

        s3_sig = st.reg("s3_sig", Mux(f2["sub"], s2_big - s2_small, s2_big + s2_small), 28)
        s3_lim = st.reg("s3_lim", s2_lim, 5)
        s3_exp = st.reg("s3_exp", s2_exp, _EXP)
        f3 = st.carry(3, {k: f2[k] for k in ("sign", "zsign", "nan", "inf", "isign")})

        lz = _lzc(m, s3_sig, "lz")
        s4_sh = st.reg("s4_sh", Mux(lz > s3_lim, s3_lim, lz), 5)
        s4_sig = st.reg("s4_sig", s3_sig, 28)
        s4_exp = st.reg("s4_exp", s3_exp, _EXP)
        s4_zero = st.reg("s4_zero", s3_sig == 0, 1)
        s4_sign = st.reg("s4_sign", Mux(s3_sig == 0, f3["zsign"], f3["sign"]), 1)
        f4 = st.carry(4, {k: f3[k] for k in ("nan", "inf", "isign")})

        # No bit leaves the top (the shift is at most the leading zeros) and
        # the exponent stays normal, so the 28 bits round as they are.
        n_sig = Signal(28)
        n_exp = Signal(_EXP)
        m.d.comb += [
            n_sig.eq(s4_sig << s4_sh),
            n_exp.eq(s4_exp - s4_sh),
        ]
        _, fm1, ovf = _exp_fields(m, n_exp, 28, "ne")
        s5_mg = st.reg("s5_mg", n_sig[3:], 25)
        s5_st = st.reg("s5_st", n_sig[:3] != 0, 1)
        s5_fm1 = st.reg("s5_fm1", fm1, 8)
        s5_ovf = st.reg("s5_ovf", ovf, 1)
        f5 = st.carry(5, dict(zero=s4_zero, sign=s4_sign, **f4))

        bits = _round_pack(m, f5["sign"], s5_mg, s5_st, s5_fm1, s5_ovf, f5["zero"], "rnd")
        with m.If(self.en):
            m.d.sync += self.y.eq(_special_result(f5["nan"], f5["inf"], f5["isign"], bits))
        st.check(self)
        return m


class FPSqrt(wiring.Component):
    """``y = sqrt(a)`` in binary32, correctly rounded (RNE).

    Digit-by-digit (restoring) integer square root of the significand, scaled
    so the root has 25 bits (24 and a guard bit); the remainder gives the
    sticky bit.  ``sqrt(-0) = -0``, ``sqrt(+inf) = +inf``; a negative non-zero
    operand or a NaN gives the canonical NaN.

    Stages: unpack and count the leading zeros of a subnormal significand;
    normalise it and halve the exponent; the root bits, ``iters_per_stage``
    per stage; round and pack.  The root of any binary32 is normal, so
    nothing is denormalised and nothing overflows.

    Parameters
    ----------
    iters_per_stage : int
        Root bits resolved per pipeline stage (1..25); fewer means a shorter
        clock path and a longer latency.

    Attributes
    ----------
    latency : int
        ``3 + ceil(25 / iters_per_stage)``.
    """

    ROOT_BITS = 25

    @classmethod
    def latency_for(cls, iters_per_stage: int = 1) -> int:
        return 3 + -(-cls.ROOT_BITS // iters_per_stage)

    def __init__(self, iters_per_stage: int = 1):
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
        s0_man = st.reg("s0_man", a.man, 24)
        s0_lz = st.reg("s0_lz", _lzc(m, a.man, "alz"), 5)
        s0_exp = st.reg("s0_exp", a.exp, _EXP)
        s_sign = st.reg("s0_sign", a.sign, 1)
        s_nan = st.reg("s0_nan", a.nan | (a.sign & ~a.zero), 1)
        s_zero = st.reg("s0_zero", a.zero, 1)
        s_inf = st.reg("s0_inf", a.inf, 1)
        man = Signal(24)
        exp = Signal(_EXP)
        m.d.comb += [
            man.eq(s0_man << s0_lz),
            exp.eq(s0_exp - s0_lz),
        ]
        # sqrt(man * 2**(exp-23)): make the exponent even, then the radicand
        # man << 25 (or << 26 for an odd exponent) has a 25-bit root whose
        # MSB weighs 2**(exp // 2), the arithmetic shift's floor.
        odd = exp[0]
        rad = Signal(50)
        m.d.comb += rad.eq(Mux(odd, man << 26, man << 25))
        s_rad = st.reg("s1_rad", rad, 50)
        s_fm1 = st.reg("s1_fm1", ((exp >> 1) + _BIAS - 1)[:8], 8)
        s_sign = st.reg("s1_sign", s_sign, 1)
        s_nan = st.reg("s1_nan", s_nan, 1)
        s_zero = st.reg("s1_zero", s_zero, 1)
        s_inf = st.reg("s1_inf", s_inf, 1)
        rem, root = Const(0, 27), Const(0, 25)
        done = 0
        stage = 2
        while done < self.ROOT_BITS:
            for _ in range(min(self.iters_per_stage, self.ROOT_BITS - done)):
                # The radicand's bit pairs are consumed from the top.
                top = s_rad[-2:]
                s_rad = s_rad[:-2]
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
            if len(s_rad):
                s_rad = st.reg(f"s{stage}_rad", s_rad, len(s_rad))
            s_fm1 = st.reg(f"s{stage}_fm1", s_fm1, 8)
            s_sign = st.reg(f"s{stage}_sign", s_sign, 1)
            s_nan = st.reg(f"s{stage}_nan", s_nan, 1)
            s_zero = st.reg(f"s{stage}_zero", s_zero, 1)
            s_inf = st.reg(f"s{stage}_inf", s_inf, 1)
            stage += 1
        bits = _round_pack(m, Const(0), root, rem != 0, s_fm1, Const(0), Const(0), "rnd")
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

    Stages: unpack and count the leading zeros of subnormal significands;
    normalise them; the quotient bits, ``iters_per_stage`` per stage;
    normalise by one bit and denormalise a result below the normal range;
    round and pack.

    Parameters
    ----------
    iters_per_stage : int
        Quotient bits resolved per pipeline stage (1..26).

    Attributes
    ----------
    latency : int
        ``4 + ceil(26 / iters_per_stage)``.
    """

    QUOTIENT_BITS = 26

    @classmethod
    def latency_for(cls, iters_per_stage: int = 1) -> int:
        return 4 + -(-cls.QUOTIENT_BITS // iters_per_stage)

    def __init__(self, iters_per_stage: int = 1):
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
        s0_am = st.reg("s0_am", a.man, 24)
        s0_bm = st.reg("s0_bm", b.man, 24)
        s0_alz = st.reg("s0_alz", _lzc(m, a.man, "alz"), 5)
        s0_blz = st.reg("s0_blz", _lzc(m, b.man, "blz"), 5)
        s0_exp = st.reg("s0_exp", a.exp - b.exp, _EXP)
        s_sign = st.reg("s0_sign", a.sign ^ b.sign, 1)
        # Each operand's class is registered on its own and the special cases
        # are combined a stage later: the operand's bits already fan out to
        # the leading-zero counts, and at 100 MHz on the ECP5 the classes
        # cannot also be combined behind that fan-out in one stage.
        ac = st.carry(0, {"a_nan": a.nan, "a_inf": a.inf, "a_zero": a.zero})
        bc = st.carry(0, {"b_nan": b.nan, "b_inf": b.inf, "b_zero": b.zero})
        rem = st.reg("s1_rem", (s0_am << s0_alz)[:24], 26)
        div = st.reg("s1_div", (s0_bm << s0_blz)[:24], 24)
        s_exp = st.reg("s1_exp", s0_exp - s0_alz + s0_blz, _EXP)
        s_sign = st.reg("s1_sign", s_sign, 1)
        s_nan = st.reg("s1_nan", ac["a_nan"] | bc["b_nan"] | (ac["a_zero"] & bc["b_zero"])
                       | (ac["a_inf"] & bc["b_inf"]), 1)
        s_inf = st.reg("s1_inf", ac["a_inf"] | bc["b_zero"], 1)
        s_zero = st.reg("s1_zero", ac["a_zero"] | bc["b_inf"], 1)
        quo = Const(0, 26)
        done = 0
        stage = 2
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
            if stage == 2:
                # Rounding fields for both places the quotient's MSB can be in
                # (it is in (1/2, 2): at most one leading zero), from the
                # exponent while the quotient is still being built.
                s_hi = _exp_fields(m, s_exp, 26, "hi")
                s_lo = _exp_fields(m, s_exp - 1, 26, "lo")
            s_hi = [st.reg(f"s{stage}_hi{i}", v, len(v)) for i, v in enumerate(s_hi)]
            s_lo = [st.reg(f"s{stage}_lo{i}", v, len(v)) for i, v in enumerate(s_lo)]
            rem = st.reg(f"s{stage}_rem", rem, 26)
            quo = st.reg(f"s{stage}_quo", quo, 26)
            div = st.reg(f"s{stage}_div", div, 24)
            s_sign = st.reg(f"s{stage}_sign", s_sign, 1)
            s_nan = st.reg(f"s{stage}_nan", s_nan, 1)
            s_inf = st.reg(f"s{stage}_inf", s_inf, 1)
            s_zero = st.reg(f"s{stage}_zero", s_zero, 1)
            stage += 1
        top = quo[25]
        mg, below = _denormalize(m, Mux(top, quo, quo << 1)[:26],
                                 Mux(top, s_hi[0], s_lo[0]), "dn")
        s_mg = st.reg(f"s{stage}_mg", mg, 25)
        s_st = st.reg(f"s{stage}_st", below | (rem != 0), 1)
        s_fm1 = st.reg(f"s{stage}_fm1", Mux(top, s_hi[1], s_lo[1]), 8)
        s_ovf = st.reg(f"s{stage}_ovf", Mux(top, s_hi[2], s_lo[2]), 1)
        s_sign = st.reg(f"s{stage}_sign", s_sign, 1)
        s_nan = st.reg(f"s{stage}_nan", s_nan, 1)
        s_inf = st.reg(f"s{stage}_inf", s_inf, 1)
        s_zero = st.reg(f"s{stage}_zero", s_zero, 1)
        # The quotient of normalised significands is never zero.
        bits = _round_pack(m, s_sign, s_mg, s_st, s_fm1, s_ovf, Const(0), "rnd")
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
