"""The board catalog: each board's device, resources, clock source and default image.

Pure data with no Amaranth in it, so the runtime and the planner can project
onto a board image and the board builds (:mod:`hetaccel.boards.build`) can
build it from the same entry.

``icebreaker``  iCE40UP5K-SG48, 12 MHz oscillator -> SB_PLL40_PAD, FTDI UART
                on pins 6/9.
``ulx3s-85f``   ECP5 LFE5U-85F-6 CABGA381, 25 MHz oscillator -> EHXPLLL, FTDI
                UART on M1/L4.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import AcceleratorConfig

__all__ = ["Board", "BOARDS", "board_image", "default_config"]


@dataclass(frozen=True)
class Board:
    """One FPGA board: its device, resources and the default image built for it.

    ``default`` holds the config fields of the board's image (array, units,
    clock, baud); :func:`default_config` makes the :class:`AcceleratorConfig`.
    """

    name: str
    family: str                       # "ice40" or "ecp5"
    device: str
    ref_hz: float
    available: dict                   # resource -> count on the device
    default: dict                     # config fields of the board's default build
    synth_opts: str = ""
    # nextpnr seeds tried in order until one meets timing (see build_board)
    seeds: tuple = (1,)
    # nextpnr's device, package and speed options, as Amaranth's own build
    # script for the board's platform spells them (build_board runs nextpnr
    # itself, once per seed)
    nextpnr: tuple = ()
    extra: dict = field(default_factory=dict)


BOARDS: dict[str, Board] = {
    "icebreaker": Board(
        name="icebreaker", family="ice40", device="iCE40UP5K-SG48", ref_hz=12e6,
        available={"luts": 5280, "ffs": 5280, "dsps": 8, "brams": 30, "sprams": 4},
        # All 8 SB_MAC16 in their dual signed 8x8 mode: a 4x4 array (16 MACs,
        # mac_mapping="ice40_dual").  No activation or Adam unit: the
        # activation unit alone, even folded to one lane (act_lanes=1), takes
        # the image to 9111 LUT4 and 53 BRAM of 5280 and 30 (synthesis), so
        # the runtime runs those ops on the host.
        # 50.25 MHz (the PLL's nearest to 50 from 12 MHz) and 6 Mbaud (the
        # FT2232H's 12 MHz / 2: 8.375 cycles a bit, exact with the UART's
        # fractional bit time).  Measured 6 Dec on commit 1ee61c6: Fmax 50.76
        # MHz with seed 2 (seed 1: 48.44), 2807 LUT4, 2664 FF, 4265/5280 LCs,
        # 8/8 SB_MAC16, 23/30 BRAM.  Every path is held to about four LUT
        # levels (a UP5K routing hop costs 1.7-3.6 ns); docs/boards.md has the
        # current figures, CHANGELOG.md the history.
        default=dict(rows=4, cols=4, mac_mapping="ice40_dual", has_adam=False,
                     has_activation=False,
                     input_depth=256, weight_depth=256, acc_depth=256, output_depth=256,
                     opt_depth=2, max_payload=256, clock_hz=50_250_000, baud=6_000_000,
                     cmd_queue_depth=2, act_param_depth=16, act_tables=1),
        # -device u: Yosys's LUT mapper then uses the UP5K's timing (its
        # default is the HX1K's, with a 250 ps wire where a UP5K hop is 1.7-3 ns)
        synth_opts="-dsp -device u",
        nextpnr=("--up5k", "--package", "sg48"),
        # The UP5K is 80% full and its Fmax moves by several MHz from seed to
        # seed on the same netlist (44-50.5 MHz over seeds 1-6 on a923e4c):
        # closure at 50.25 MHz is a seed sweep, stopped at the first pass.
        seeds=tuple(range(1, 9)),
    ),
    "ulx3s-85f": Board(
        name="ulx3s-85f", family="ecp5", device="LFE5U-85F-6BG381", ref_hz=25e6,
        available={"luts": 83640, "ffs": 83640, "dsps": 156, "brams": 208},
        # 16x16 = 256 MACs: 156 PEs on registered MULT18X18Ds
        # (mac_mapping="ecp5_mult18": the DSP's own A/B input and output
        # registers are the PE's activation, weight and product registers) and
        # the last 100 on LUT multipliers (their product split over two
        # register stages).  No activation or Adam unit: beside the full
        # array they need the DSPs the array uses (unfolded: 148), and with
        # both units folded (act_lanes=2, 150 LUT PEs) the image fits (56.8k
        # LUT slots) but places at an estimated 53.5 MHz and its routing
        # congests; docs/boards.md has the figures.
        # 100 MHz and 3 Mbaud (the FT231X's fastest: 33.3125 cycles a bit,
        # 0.06 % fast).  Measured 6 Dec on commit 1ee61c6: Fmax 103.99 MHz,
        # 13753 LUT4, 24100 FF, 156/156 MULT18X18D, 39/208 DP16KD; peak 51.2
        # GOPS.  Worst path: a weight-scratchpad DP16KD output (5.8 ns clock
        # to out, no output register) -> 2 LUTs -> the command processor's
        # READ_MEM word register.
        default=dict(rows=16, cols=16, mac_mapping="ecp5_mult18", lut_multipliers=100,
                     has_adam=False, has_activation=False,
                     input_depth=512, weight_depth=512, acc_depth=512, output_depth=512,
                     opt_depth=1024, max_payload=1024, clock_hz=100_000_000,
                     baud=3_000_000),
        nextpnr=("--85k", "--package", "CABGA381", "--speed", "6"),
    ),
}


def board_image(name: str) -> Board:
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[name]


def default_config(board: str, **overrides) -> AcceleratorConfig:
    """The board's default configuration (its image) with ``overrides`` applied."""
    b = board_image(board)
    return AcceleratorConfig(**{**b.default, **overrides})
