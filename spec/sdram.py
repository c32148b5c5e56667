"""Board SDRAM: the chips, their datasheet timings and what they are in cycles.

The ULX3S carries one 16-bit SDR SDRAM of 32 MB (4 banks x 8192 rows x 512
columns x 16 bits), an ISSI IS42S16160G-7 or a Micron MT48LC16M16A2 (-6A or
-75) depending on the board revision.  One bitstream must work with every
one of them, so the controller is built for :func:`worst_case` of the chips
the board lists: each timing the slowest chip needs, rounded up to whole
cycles of the core clock.

Everything here is data: the controller (:mod:`hetaccel.rtl.sdram`), the chip
model the testbenches check it against and the planner read the same numbers.
Times are in nanoseconds unless named otherwise.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields, replace

__all__ = ["SdramChip", "SdramTiming", "SdramCommand", "CHIPS", "ULX3S_CHIPS", "worst_case",
           "MODE_BURST_LENGTH", "mode_register", "A10_ALL_BANKS", "split_address",
           "join_address", "schedule_parameters", "check_controller"]


class SdramCommand(enum.IntEnum):
    """The command pins ``{cs_n, ras_n, cas_n, we_n}`` (``cs_n`` the MSB), as
    the controller drives them and the chip model decodes them.  With
    ``cs_n`` high the chip ignores the other three (COMMAND INHIBIT)."""

    LOAD_MODE = 0b0000
    AUTO_REFRESH = 0b0001
    PRECHARGE = 0b0010        # A10 high: all banks (A10_ALL_BANKS)
    ACTIVE = 0b0011
    WRITE = 0b0100            # A10 high would auto-precharge: never used here
    READ = 0b0101
    BURST_TERMINATE = 0b0110
    NOP = 0b0111
    INHIBIT = 0b1111


#: Address bit that makes PRECHARGE close every bank (and READ/WRITE
#: auto-precharge, which the controller does not use).
A10_ALL_BANKS = 1 << 10


@dataclass(frozen=True)
class SdramChip:
    """One SDR SDRAM part: geometry and the datasheet's minimum timings."""

    name: str
    banks: int
    rows: int
    cols: int
    width: int               # data bits
    t_rcd: float             # ACTIVE to READ/WRITE, same bank
    t_rp: float              # PRECHARGE to ACTIVE/REFRESH, same bank
    t_ras: float             # ACTIVE to PRECHARGE, same bank (minimum)
    t_ras_max: float         # ACTIVE to PRECHARGE, same bank (maximum)
    t_rc: float              # ACTIVE to ACTIVE, same bank
    t_rrd: float             # ACTIVE to ACTIVE, different banks
    t_rfc: float             # AUTO REFRESH to any command
    t_wr: float              # last write data to PRECHARGE (tDPL)
    t_mrd_cycles: int        # LOAD MODE REGISTER to any command, in clocks
    t_ck_cl2: float          # shortest clock period at CAS latency 2
    t_ck_cl3: float          # shortest clock period at CAS latency 3
    refresh_count: int       # AUTO REFRESH commands per refresh period
    refresh_period: float    # seconds
    t_power_up: float        # stable clock, NOPs only, before the first PRECHARGE

    def __post_init__(self):
        for name in ("banks", "rows", "cols"):
            v = getattr(self, name)
            if v <= 0 or v & (v - 1):
                raise ValueError(f"{self.name}: {name} must be a power of two, not {v!r}")

    @property
    def words(self) -> int:
        return self.banks * self.rows * self.cols

    @property
    def bytes(self) -> int:
        return self.words * self.width // 8

    @property
    def t_refi(self) -> float:
        """Average interval between AUTO REFRESH commands, in ns."""
        return self.refresh_period * 1e9 / self.refresh_count

    def cas_latencies(self, clock_hz: float) -> tuple:
        """CAS latencies this chip supports at ``clock_hz``."""
        t_ck = 1e9 / clock_hz
        return tuple(cl for cl, t in ((2, self.t_ck_cl2), (3, self.t_ck_cl3)) if t_ck >= t)


@dataclass(frozen=True)
class SdramTiming:
    """A chip's (or the worst of several chips') timings in whole clock cycles.

    Each field is the smallest number of cycles from one command to the next
    that the datasheet allows, e.g. ``rcd``: a READ may issue ``rcd`` cycles
    after the ACTIVE to its bank.  ``refi`` is the other way round: the most
    cycles that may pass, on average, between AUTO REFRESH commands.
    """

    clock_hz: float
    cas_latency: int
    rcd: int
    rp: int
    ras: int
    ras_max: int
    rc: int
    rrd: int
    rfc: int
    wr: int
    mrd: int
    refi: int
    power_up: int

    def with_power_up(self, cycles: int, name: str = "power_up") -> "SdramTiming":
        """These timings with another power-up wait (a simulation shortens
        it, and tells its chip model the same); ``name`` is the caller's
        argument in the error."""
        if not isinstance(cycles, int) or cycles < 0:
            raise ValueError(f"{name} must be a non-negative int, not {cycles!r}")
        return replace(self, power_up=cycles)

    @classmethod
    def of(cls, chip: SdramChip, clock_hz: float, cas_latency: int = 3) -> "SdramTiming":
        if clock_hz <= 0:
            raise ValueError(f"clock_hz must be positive, not {clock_hz!r}")
        if cas_latency not in chip.cas_latencies(clock_hz):
            raise ValueError(f"{chip.name} does not run at CAS latency {cas_latency} at "
                             f"{clock_hz / 1e6:g} MHz (supports {chip.cas_latencies(clock_hz)})")
        t_ck = 1e9 / clock_hz

        def up(ns):
            # A hair of slack so that e.g. 60 ns at 100 MHz is 6 cycles, not 7.
            return max(1, math.ceil(ns / t_ck - 1e-9))

        return cls(
            clock_hz=clock_hz, cas_latency=cas_latency,
            rcd=up(chip.t_rcd), rp=up(chip.t_rp), ras=up(chip.t_ras),
            ras_max=int(chip.t_ras_max / t_ck), rc=up(chip.t_rc), rrd=up(chip.t_rrd),
            rfc=up(chip.t_rfc), wr=up(chip.t_wr), mrd=chip.t_mrd_cycles,
            refi=int(chip.t_refi / t_ck), power_up=up(chip.t_power_up * 1e9))


#: The parts the supported boards carry (datasheet minimums at the speed grade).
CHIPS: dict[str, SdramChip] = {c.name: c for c in (
    SdramChip("IS42S16160G-7", banks=4, rows=8192, cols=512, width=16,
              t_rcd=15, t_rp=15, t_ras=37, t_ras_max=100_000, t_rc=60, t_rrd=14,
              t_rfc=60, t_wr=14, t_mrd_cycles=2, t_ck_cl2=10, t_ck_cl3=7,
              refresh_count=8192, refresh_period=64e-3, t_power_up=200e-6),
    SdramChip("MT48LC16M16A2-6A", banks=4, rows=8192, cols=512, width=16,
              t_rcd=18, t_rp=18, t_ras=42, t_ras_max=120_000, t_rc=60, t_rrd=12,
              t_rfc=66, t_wr=12, t_mrd_cycles=2, t_ck_cl2=10, t_ck_cl3=6,
              refresh_count=8192, refresh_period=64e-3, t_power_up=100e-6),
    SdramChip("MT48LC16M16A2-75", banks=4, rows=8192, cols=512, width=16,
              t_rcd=20, t_rp=20, t_ras=44, t_ras_max=120_000, t_rc=66, t_rrd=15,
              t_rfc=66, t_wr=15, t_mrd_cycles=2, t_ck_cl2=10, t_ck_cl3=7.5,
              refresh_count=8192, refresh_period=64e-3, t_power_up=100e-6),
)}

#: Every chip a ULX3S revision may carry: its image is built for all of them.
ULX3S_CHIPS = ("IS42S16160G-7", "MT48LC16M16A2-6A", "MT48LC16M16A2-75")

#: Burst length programmed into the mode register (sequential bursts).  Eight
#: 16-bit beats are one 128-bit word, and a burst of 8 hides a bank's
#: ACTIVE/PRECHARGE behind the transfers of the other banks.
MODE_BURST_LENGTH = 8


def worst_case(chip_names, clock_hz: float, cas_latency: int = 3) -> SdramTiming:
    """Timings that satisfy every chip in ``chip_names`` at ``clock_hz``.

    The chips must share their geometry; the result takes the most cycles of
    every minimum and the fewest of every maximum.
    """
    chips = [CHIPS[n] if n in CHIPS else _unknown(n) for n in chip_names]
    if not chips:
        raise ValueError("worst_case needs at least one chip")
    geometry = {(c.banks, c.rows, c.cols, c.width) for c in chips}
    if len(geometry) != 1:
        raise ValueError(f"chips {list(chip_names)} differ in geometry: {sorted(geometry)}")
    each = [SdramTiming.of(c, clock_hz, cas_latency) for c in chips]
    maxima = {"ras_max", "refi"}
    values = {}
    for f in fields(SdramTiming):
        vals = [getattr(t, f.name) for t in each]
        values[f.name] = min(vals) if f.name in maxima else max(vals)
    return SdramTiming(**values)


def _unknown(name):
    raise ValueError(f"unknown SDRAM chip {name!r}; known: {sorted(CHIPS)}")


def mode_register(cas_latency: int, burst_length: int = MODE_BURST_LENGTH) -> int:
    """The value LOAD MODE REGISTER puts on the address bus: sequential
    bursts of ``burst_length`` for reads and writes, CAS latency
    ``cas_latency``, standard operation."""
    codes = {1: 0, 2: 1, 4: 2, 8: 3}
    if burst_length not in codes:
        raise ValueError(f"burst_length must be one of {sorted(codes)}, not {burst_length!r}")
    if cas_latency not in (2, 3):
        raise ValueError(f"cas_latency must be 2 or 3, not {cas_latency!r}")
    return codes[burst_length] | (cas_latency << 4)


def split_address(chip: SdramChip, addr: int) -> tuple:
    """``(bank, row, col)`` of the linear 16-bit word address ``addr``.

    Column bits lowest, then the bank, then the row: a sequential stream
    leaves a row for the next bank every ``cols`` words, so the controller
    can open that bank's row while the current one is still transferring.
    """
    if not 0 <= addr < chip.words:
        raise ValueError(f"SDRAM word address must be in [0, {chip.words}), not {addr!r}")
    col = addr % chip.cols
    bank = (addr // chip.cols) % chip.banks
    row = addr // (chip.cols * chip.banks)
    return bank, row, col


def join_address(chip: SdramChip, bank: int, row: int, col: int) -> int:
    """The linear word address of ``(bank, row, col)`` (see :func:`split_address`)."""
    if not (0 <= bank < chip.banks and 0 <= row < chip.rows and 0 <= col < chip.cols):
        raise ValueError(f"(bank, row, col) must be within ({chip.banks}, {chip.rows}, "
                         f"{chip.cols}), not {(bank, row, col)!r}")
    return (row * chip.banks + bank) * chip.cols + col


def schedule_parameters(timing: SdramTiming) -> dict:
    """Cycle counts of the controller's schedule beyond the chip's own timings:
    the least distance from one READ/WRITE to the next on the shared data bus
    (a burst occupies it ``MODE_BURST_LENGTH`` cycles; a read's data arrives
    ``cas_latency`` later and the chip holds DQ one cycle past the last beat,
    so a write after a read waits for both), from a READ/WRITE to the
    PRECHARGE of its bank (the burst must end, a write's last beat must be
    ``wr`` old), and how often a refresh falls due: early enough that closing
    every bank (up to ``pre_wait + 1`` cycles) and the refresh's own wait
    (``max(rp, rc)``) still end within ``refi`` of the previous one.

    The controller (:mod:`hetaccel.rtl.sdram`) is built with these numbers and
    the cycle model (:mod:`hetaccel.sim.sdram_model`) replays them.
    """
    bl = MODE_BURST_LENGTH
    pre_wait = max(timing.ras, bl, bl - 1 + timing.wr)
    return {
        "read_to_read": bl,
        "write_to_write": bl,
        "write_to_read": bl,
        "read_to_write": timing.cas_latency + bl + 1,
        "read_to_precharge": bl,
        "write_to_precharge": bl - 1 + timing.wr,
        "refresh_interval": timing.refi - (pre_wait + 1 + max(timing.rp, timing.rc)),
    }


def check_controller(chip: SdramChip, timing: SdramTiming, read_delay: int,
                     rdata_depth: int) -> dict:
    """Refuse what the controller (and so its cycle model) cannot be built
    for; return :func:`schedule_parameters` of ``timing``."""
    if not isinstance(chip, SdramChip):
        raise TypeError(f"chip must be an SdramChip, not {type(chip).__name__}")
    if not isinstance(timing, SdramTiming):
        raise TypeError(f"timing must be an SdramTiming, not {type(timing).__name__}")
    if chip.width != 16 or chip.banks != 4 or chip.rows > 1 << 13 or chip.cols < 64 \
            or chip.cols > 1 << 10:
        raise ValueError(f"chip must be a 16-bit part with 4 banks, at most 8192 rows and "
                         f"64..1024 columns, not {chip!r}")
    if timing.cas_latency not in (2, 3):
        raise ValueError(f"timing.cas_latency must be 2 or 3, not {timing.cas_latency!r}")
    if isinstance(read_delay, bool) or not isinstance(read_delay, int) \
            or not 0 <= read_delay <= 8:
        raise ValueError(f"read_delay must be an integer in [0, 8], not {read_delay!r}")
    if isinstance(rdata_depth, bool) or not isinstance(rdata_depth, int) \
            or rdata_depth < 2 or rdata_depth & (rdata_depth - 1):
        raise ValueError(f"rdata_depth must be a power of two >= 2, not {rdata_depth!r}")
    if timing.wr > 9:
        raise ValueError(f"timing.wr must be at most 9 cycles, not {timing.wr!r}")
    params = schedule_parameters(timing)
    if not 0 < params["refresh_interval"] < timing.ras_max:
        raise ValueError(f"timing.refi ({timing.refi}) leaves no refresh interval "
                         f"below ras_max ({timing.ras_max})")
    return params
