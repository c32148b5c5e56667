"""PLL divider search for the boards' clock generators.

The dividers are computed here, in Python, from the datasheet limits, so a
requested core clock that the PLL cannot make is refused with the nearest
reachable frequencies instead of being silently rounded by a vendor tool.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Ice40Pll", "Ecp5Pll", "ice40_pll", "ecp5_pll", "PLL_TOLERANCE"]

#: largest accepted relative difference between requested and generated clock
PLL_TOLERANCE = 0.001


@dataclass(frozen=True)
class Ice40Pll:
    """SB_PLL40 settings: ``f_out = f_in * (divf + 1) / ((divr + 1) * 2**divq)``."""

    f_in: float
    divr: int
    divf: int
    divq: int

    @property
    def f_pfd(self) -> float:
        return self.f_in / (self.divr + 1)

    @property
    def f_vco(self) -> float:
        return self.f_pfd * (self.divf + 1)

    @property
    def f_out(self) -> float:
        return self.f_vco / (1 << self.divq)

    @property
    def filter_range(self) -> int:
        # loop-filter setting by PFD frequency (iCE40 sysCLOCK PLL design guide)
        f = self.f_pfd / 1e6
        for limit, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
            if f < limit:
                return value
        return 6


@dataclass(frozen=True)
class Ecp5Pll:
    """EHXPLLL settings with CLKOP feedback:
    ``f_out = f_in * clkfb_div / clki_div``, ``f_vco = f_out * clkop_div``."""

    f_in: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_pfd(self) -> float:
        return self.f_in / self.clki_div

    @property
    def f_out(self) -> float:
        return self.f_in * self.clkfb_div / self.clki_div

    @property
    def f_vco(self) -> float:
        return self.f_out * self.clkop_div


def _check_freq(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive frequency in Hz, got {value!r}")


def _pick(candidates, f_out, what, lo, hi):
    if not lo <= f_out <= hi:
        raise ValueError(f"{what}: clock_hz={f_out:.0f} is outside the PLL output range "
                         f"[{lo / 1e6:.0f}, {hi / 1e6:.0f}] MHz")
    best = min(candidates, key=lambda p: (abs(p.f_out - f_out), -p.f_vco))
    if abs(best.f_out - f_out) > PLL_TOLERANCE * f_out:
        near = sorted({round(p.f_out) for p in candidates}, key=lambda f: abs(f - f_out))[:4]
        raise ValueError(
            f"{what}: clock_hz={f_out:.0f} is not reachable within {100 * PLL_TOLERANCE:.1f}%; "
            f"nearest reachable: {', '.join(f'{f:.0f}' for f in sorted(near))} Hz")
    return best


def ice40_pll(f_in: float, f_out: float) -> Ice40Pll:
    """Closest SB_PLL40 setting (DIVR 0..15, DIVF 0..127, DIVQ 1..6; PFD 10..133 MHz,
    VCO 533..1066 MHz, output 16..275 MHz)."""
    _check_freq("f_in", f_in)
    _check_freq("f_out", f_out)
    cands = []
    for divr in range(16):
        for divq in range(1, 7):
            for divf in range(128):
                p = Ice40Pll(f_in, divr, divf, divq)
                if 10e6 <= p.f_pfd <= 133e6 and 533e6 <= p.f_vco <= 1066e6:
                    cands.append(p)
    return _pick(cands, f_out, "iCE40 SB_PLL40", 16e6, 275e6)


def ecp5_pll(f_in: float, f_out: float) -> Ecp5Pll:
    """Closest EHXPLLL setting (CLKI_DIV 1..128, CLKFB_DIV 1..80, CLKOP_DIV 1..128;
    PFD 3.125..400 MHz, VCO 400..800 MHz, output 3.125..400 MHz)."""
    _check_freq("f_in", f_in)
    _check_freq("f_out", f_out)
    cands = []
    for clki in range(1, 129):
        if not 3.125e6 <= f_in / clki <= 400e6:
            continue
        for fb in range(1, 81):
            fo = f_in * fb / clki
            if not 3.125e6 <= fo <= 400e6:
                continue
            for op in range(1, 129):
                if 400e6 <= fo * op <= 800e6:
                    cands.append(Ecp5Pll(f_in, clki, fb, op))
    return _pick(cands, f_out, "ECP5 EHXPLLL", 3.125e6, 400e6)
