"""``hetaccel build``: a board bitstream (``--board``) or the ASIC report (``--target asic``)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "build a board bitstream (--board) or the generic ASIC synthesis report (--target asic)"


def add_arguments(parser) -> None:
    from ..boards.build import CORES
    from ..spec.boards import BOARDS

    parser.add_argument("--board", choices=sorted(BOARDS),
                        help="FPGA board to build a bitstream for")
    parser.add_argument("--target", choices=["fpga", "asic"], default="fpga",
                        help="'asic': generic Yosys synthesis with cell and transistor counts")
    parser.add_argument("--config", type=Path,
                        help="JSON file with AcceleratorConfig fields (default: the board's "
                             "default config, or the project default for --target asic)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one config field (repeatable), e.g. --set rows=4")
    parser.add_argument("--out", type=Path, default=Path("build"),
                        help="output directory (boards/<board>/ or asic/ under it)")
    parser.add_argument("--seed", type=_seeds, default=None,
                        help="nextpnr placement seed N, or seeds A-B tried in order until "
                             "one meets timing (default: the board's, e.g. icebreaker 1-8)")
    parser.add_argument("--synth-opts", default=None,
                        help="replace the board's synth_<family> options (iCE40 default "
                             "'-dsp'; e.g. '-nodsp' on ECP5 maps multipliers to LUTs)")
    parser.add_argument("--core", choices=sorted(CORES), default="device",
                        help="what the board top wraps: the whole device, or the host link "
                             "echoing frames (a quick bring-up image)")


def _seeds(text: str):
    """``N`` -> N, ``A-B`` -> (A, ..., B)."""
    first, sep, last = text.partition("-")
    try:
        lo, hi = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or A-B, got {text!r}") from None
    if lo < 0 or hi < lo:
        raise argparse.ArgumentTypeError(f"range {text!r} is empty or negative")
    return tuple(range(lo, hi + 1)) if sep else lo


def _config(args, base: dict):
    from .commands import load_config

    return load_config(args.config, base, args.set)


def run(args) -> dict:
    from ..boards.build import CORES
    from ..spec.boards import BOARDS, default_config

    if args.target == "asic":
        from ..boards.asic import asic_report
        if args.board is not None:
            raise ValueError("--target asic takes no --board")
        return asic_report(_config(args, {}), out_dir=args.out / "asic")
    if args.board is None:
        raise ValueError("choose a board with --board (" + ", ".join(sorted(BOARDS)) +
                         ") or --target asic")
    from ..boards.build import build_board
    cfg = _config(args, default_config(args.board).to_dict())
    report = build_board(args.board, cfg, out_dir=args.out / "boards", seed=args.seed,
                         core=CORES[args.core], synth_opts=args.synth_opts)
    report.pop("yosys_cells", None)
    return report
