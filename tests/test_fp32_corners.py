"""rtl/fp32.py's FPAdd and FPMul at their rounding corners, bit for bit against numpy.float32.

Operands are built to hit each decision of the rounding, not left to chance:
for every exponent gap from 0 to past the significand (and far beyond), the
bits of the smaller operand that fall below the larger one's last place are
set to nothing, exactly one half (a tie, ties to even), a half with nonzero
bits below it (guard and sticky: must round up), less than a half, or random,
against a larger operand that is random, a power of two (a difference leaves
its binade) or all ones (a sum carries into the exponent).  Products are
swept over every result exponent from far below the subnormal range to past
overflow, with significands of few bits whose products are exact ties.  Then
subnormal operands and results, cancellation, overflow to infinity, signed
zeros and NaNs (canonical whatever the payloads).  The pairs stream through
the pipeline one per cycle in one Amaranth simulation per block.
"""

from fractions import Fraction

import numpy as np
import pytest
from amaranth.sim import Simulator

from hetaccel.rtl.fp32 import CANONICAL_NAN, FPAdd, FPMul
from hetaccel.sim.adam_model import canonical_nan


def _bits(sign, efield, frac):
    return ((np.asarray(sign, np.uint64) << 31) | (np.asarray(efield, np.uint64) << 23) |
            np.asarray(frac, np.uint64)).astype(np.uint32)


def stream(block, a, b):
    """``block``'s result bits for each pair, one pair entering per cycle."""
    a, b = np.asarray(a, np.uint32), np.asarray(b, np.uint32)
    n, lat = len(a), block.latency
    out = []
    sim = Simulator(block)
    sim.add_clock(1e-6)

    async def tb(ctx):
        for i in range(n + lat):
            if i < n:
                ctx.set(block.a, int(a[i]))
                ctx.set(block.b, int(b[i]))
            await ctx.tick()
            if i + 1 >= lat:
                out.append(ctx.get(block.y))

    sim.add_testbench(tb)
    sim.run()
    return np.array(out[:n], np.uint32)


def expect(fn, a, b):
    with np.errstate(all="ignore"):
        res = fn(a.view(np.float32), b.view(np.float32)).astype(np.float32)
    return canonical_nan(res).view(np.uint32)


def check(block, fn, a, b, what):
    got = stream(block, a, b)
    want = expect(fn, a, b)
    bad = np.nonzero(got != want)[0]
    assert len(bad) == 0, (
        f"{what}: {len(bad)} of {len(a)} results differ from numpy.float32, first: " +
        ", ".join(f"{a[i]:08x} {b[i]:08x} -> {got[i]:08x} (expected {want[i]:08x})"
                  for i in bad[:4]))


# --- operands ----------------------------------------------------------------------

#: exponent gaps: every one through the significand and its guard, round and
#: sticky positions, and far beyond (everything lost but the sticky bit)
GAPS = list(range(0, 36)) + [40, 48, 64, 100, 150, 200, 253]


def _low_bits(rng, pattern, d):
    """The smaller significand's bits below the larger one's last place
    (the low ``d`` of its 24) for one pattern, None where it cannot exist:
    a half and one lost bit under it is the guard with the sticky bit set."""
    d = min(d, 24)
    if pattern == "exact":
        return 0
    if d == 0:
        return None
    half = 1 << (d - 1)
    one = 1 << int(rng.integers(0, d - 1)) if d > 1 else 0    # one lost bit under the guard
    if pattern == "tie":
        return half
    if pattern == "tie+sticky":
        return half | one if one else None
    if pattern == "under a tie":
        return half - one if one else None
    if pattern == "sticky":
        return one or None
    return int(rng.integers(0, 1 << d))      # random


def add_operands(rng, reps=2):
    """(a, b, labels): the gap x lost-bits x larger-operand grid, then the
    subnormal, cancellation, overflow and special corners."""
    a, b = [], []
    for d in GAPS:
        for sub in (0, 1):
            for big in ("random", "pow2", "ones"):
                for pattern in ("exact", "tie", "tie+sticky", "under a tie", "sticky",
                                "random"):
                    for _ in range(reps):
                        low = _low_bits(rng, pattern, d)
                        if low is None:
                            continue
                        ea = int(rng.integers(max(1, min(d, 254)), 255))
                        eb = max(0, ea - d)
                        fa = {"random": int(rng.integers(0, 1 << 23)), "pow2": 0,
                              "ones": (1 << 23) - 1}[big]
                        # the smaller significand: its top bits random, its lost bits the pattern
                        mb = (int(rng.integers(0, 1 << 24)) | (1 << 23)) if eb else \
                            int(rng.integers(0, 1 << 23))
                        k = min(d, 24)
                        mb = (mb >> k << k) | low if k < 24 else low | (1 << 23 if eb else 0)
                        if k == 24 and not eb:
                            mb &= (1 << 23) - 1
                        fb = mb & ((1 << 23) - 1)
                        sa = int(rng.integers(0, 2))
                        x, y = _bits(sa, ea, fa), _bits(sa ^ sub, eb, fb)
                        if rng.integers(0, 2):
                            x, y = y, x
                        a.append(x)
                        b.append(y)
    n = 300
    # subnormal operands and results: tiny exponents, either sign
    a += list(_bits(rng.integers(0, 2, n), rng.integers(0, 4, n), rng.integers(0, 1 << 23, n)))
    b += list(_bits(rng.integers(0, 2, n), rng.integers(0, 4, n), rng.integers(0, 1 << 23, n)))
    # cancellation: b = -(a +- a few units in the last place), at every scale
    x = _bits(rng.integers(0, 2, n), rng.integers(0, 255, n), rng.integers(0, 1 << 23, n))
    y = (x.astype(np.int64) + rng.integers(-3, 4, n)).clip(0, 0xFFFFFFFF).astype(np.uint32)
    a += list(x)
    b += list(y ^ np.uint32(0x80000000))
    # overflow: the top binade plus something of the same sign
    s = rng.integers(0, 2, n)
    a += list(_bits(s, 254, rng.integers(1 << 22, 1 << 23, n)))
    b += list(_bits(s, rng.integers(225, 255, n), rng.integers(0, 1 << 23, n)))
    # the largest finite number plus exactly half, and just under half, its last place
    a += [0x7F7FFFFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7FFFFE, 0x7F7FFFFF]
    b += [0x73000000, 0x72FFFFFF, 0xF3000000, 0x73000000, 0x73000001]
    sp_a, sp_b = _special_pairs()
    return np.array(a + sp_a, np.uint32), np.array(b + sp_b, np.uint32)


#: zeros, infinities, NaNs (quiet, signalling, with payloads, both signs),
#: the smallest and largest subnormal and normal numbers, one
SPECIALS = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
            0x7F800001, 0xFFBFFFFF, 0x7FC12345, 0x00000001, 0x80000001, 0x007FFFFF,
            0x00800000, 0x80800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x3F800000, 0xBF800000]


def _special_pairs():
    return ([x for x in SPECIALS for _ in SPECIALS], [y for _ in SPECIALS for y in SPECIALS])


def _odd_with_bits(rng, k, n):
    """``n`` odd integers of exactly ``k`` bits (1 for k = 1)."""
    if k == 1:
        return np.ones(n, np.int64)
    return rng.integers(1 << (k - 2), 1 << (k - 1), n) * 2 + 1


def mul_operands(rng):
    a, b = [], []
    # every biased result exponent from far below the subnormals to past overflow
    for e in range(-30, 290):
        n = 4
        ea = rng.integers(max(1, e - 126), min(254, e + 126) + 1, n)
        eb = e + 127 - ea
        ok = (eb >= 1) & (eb <= 254)
        s = rng.integers(0, 2, (2, n))
        a += list(_bits(s[0], ea, rng.integers(0, 1 << 23, n))[ok])
        b += list(_bits(s[1], eb.clip(0, 255), rng.integers(0, 1 << 23, n))[ok])
    # exact ties and near-ties: odd significands of k1 and k2 bits make an odd
    # product of k1 + k2 - 1 or k1 + k2 bits, a tie when that is 25, with a
    # sticky bit when more; scaled so the result is normal, subnormal (the
    # rounding place moves) or at the overflow threshold
    for k1 in range(1, 25):
        for k2 in range(max(1, 24 - k1), min(24, 27 - k1) + 1):
            n = 6
            m1 = _odd_with_bits(rng, k1, n).astype(np.float64)
            m2 = _odd_with_bits(rng, k2, n).astype(np.float64)
            # x = m1 * 2**(e1 - k1 + 1) has exponent e1, y exponent t - e1, so
            # the product's is t or t + 1
            t = rng.choice([-150, -140, -130, -127, -126, -100, 0, 60, 126, 127, 128], n)
            e1 = t // 2 + rng.integers(-20, 21, n)
            x = np.ldexp(m1, e1 - (k1 - 1))
            y = np.ldexp(m2, t - e1 - (k2 - 1))
            sign = rng.integers(0, 2, (2, n))
            x = np.where(sign[0], -x, x).astype(np.float32)
            y = np.where(sign[1], -y, y).astype(np.float32)
            fine = np.isfinite(x) & np.isfinite(y) & (x != 0) & (y != 0)
            a += list(x[fine].view(np.uint32))
            b += list(y[fine].view(np.uint32))
    # m * (2**j + 1) = (m << j) + m: the bits lost are m's low j bits, set to a
    # half, a half and one, a half less one (ties, guard with sticky, just
    # under a tie), at normal and subnormal results
    for j in range(2, 24):
        for low in ((1 << (j - 1)), (1 << (j - 1)) + 1, (1 << (j - 1)) - 1):
            n = 6
            m1 = (1 << 23) | (rng.integers(0, 1 << (23 - j), n) << j) | low
            t = rng.choice([-135, -126, -20, 0, 40, 127], n)
            e1 = t // 2 + rng.integers(-20, 21, n)
            x = np.ldexp(m1.astype(np.float64), e1 - 23)
            y = np.ldexp(np.float64((1 << j) + 1), t - e1 - j)
            sign = rng.integers(0, 2, (2, n))
            x = np.where(sign[0], -x, x).astype(np.float32)
            y = np.where(sign[1], -y, y).astype(np.float32)
            a += list(x.view(np.uint32))
            b += list(y.view(np.uint32))
    n = 300
    # subnormal operands (every number of leading zeros) times larger numbers
    frac = rng.integers(1, 1 << 23, n) >> rng.integers(0, 23, n)
    a += list(_bits(rng.integers(0, 2, n), 0, np.maximum(frac, 1)))
    b += list(_bits(rng.integers(0, 2, n), rng.integers(1, 255, n), rng.integers(0, 1 << 23, n)))
    # rounding that carries into the exponent: significands near all ones
    a += list(_bits(rng.integers(0, 2, n), rng.integers(64, 190, n),
                    rng.integers((1 << 23) - 512, 1 << 23, n)))
    b += list(_bits(rng.integers(0, 2, n), rng.integers(64, 190, n), rng.integers(0, 512, n)))
    sp_a, sp_b = _special_pairs()
    return np.array(a + sp_a, np.uint32), np.array(b + sp_b, np.uint32)


# --- tests -------------------------------------------------------------------------

def _rounding_kinds(a, b, op):
    """How far past the truncated result each exact result lies, in units of
    the result's last place (0 exact, 0.5 a tie), for finite results."""
    x, y = a.view(np.float32), b.view(np.float32)
    with np.errstate(all="ignore"):
        r = op(x, y)
    out = []
    for xi, yi, ri in zip(x, y, r):
        if not (np.isfinite(xi) and np.isfinite(yi) and np.isfinite(ri)):
            continue
        exact = op(Fraction(float(xi)), Fraction(float(yi)))
        toward0 = np.float32(ri)
        if abs(Fraction(float(toward0))) > abs(exact):
            toward0 = np.nextafter(toward0, np.float32(0))
        e = np.frexp(np.float64(toward0))[1] - 1 if toward0 else -126
        ulp = Fraction(2) ** (max(int(e), -126) - 23)
        out.append(abs(exact - Fraction(float(toward0))) / ulp)
    return out


@pytest.mark.parametrize("make,op", [("add", lambda x, y: x + y),
                                     ("mul", lambda x, y: x * y)])
def test_operands_reach_every_rounding_case(make, op):
    """The operands hit what they are for (by exact arithmetic, not the RTL):
    exact results, ties, a half with sticky bits just above it, just below a
    half, carries, subnormal and infinite results, NaNs."""
    rng = np.random.default_rng(1)
    a, b = add_operands(rng) if make == "add" else mul_operands(rng)
    t = _rounding_kinds(a, b, op)
    half = Fraction(1, 2)
    assert sum(f == 0 for f in t) > 100, "exact"
    assert sum(f == half for f in t) > 100, "ties"
    assert sum(half < f < half + Fraction(1, 1 << 10) for f in t) > 30, "guard and sticky"
    assert sum(half - Fraction(1, 1 << 10) < f < half for f in t) > 30, "just below a tie"
    with np.errstate(all="ignore"):
        r = op(a.view(np.float32), b.view(np.float32))
    fin = np.isfinite(a.view(np.float32)) & np.isfinite(b.view(np.float32))
    assert np.sum(np.isinf(r) & fin) > 20, "overflow"
    assert np.sum((np.abs(r) < np.float32(2.0 ** -126)) & (r != 0)) > 100, "subnormal results"
    assert np.sum(np.isnan(r)) > 20, "NaNs"
    assert len(a) >= 2500


@pytest.mark.parametrize("seed", [2, 12])
def test_fpadd_at_every_gap_and_rounding_corner(seed):
    a, b = add_operands(np.random.default_rng(seed))
    check(FPAdd(), np.add, a, b, f"FPAdd (seed {seed})")


@pytest.mark.parametrize("seed", [3, 13])
def test_fpmul_at_every_exponent_and_tie(seed):
    a, b = mul_operands(np.random.default_rng(seed))
    check(FPMul(), np.multiply, a, b, f"FPMul (seed {seed})")


def test_nan_results_are_canonical():
    a, b = np.array(SPECIALS * 2, np.uint32), np.array(SPECIALS[::-1] * 2, np.uint32)
    for block, fn in ((FPAdd(), np.add), (FPMul(), np.multiply)):
        got = stream(block, a, b)
        with np.errstate(all="ignore"):
            nan = np.isnan(fn(a.view(np.float32), b.view(np.float32)))
        assert nan.any() and np.all(got[nan] == CANONICAL_NAN), [hex(g) for g in got[nan]]
