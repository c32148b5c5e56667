"""The ``hetaccel`` command line.

Each subcommand lives beside the code it drives, as a module exposing::

    HELP: str                       # one line for ``hetaccel --help``
    def add_arguments(parser): ...  # its options, each with a help text
    def run(args) -> dict: ...      # does the work, returns the JSON-able result

This file only routes; it holds no behaviour of its own.  ``--json`` prints the
returned dict as one JSON object; without it the dict is shown as a table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

__all__ = ["main", "COMMANDS", "BENCHES"]

#: ``hetaccel NAME`` -> module implementing it.
COMMANDS: dict[str, str] = {
    "build": "hetaccel.cli.build",
    "demo": "hetaccel.cli.demo",
    "run": "hetaccel.cli.run",
    "train": "hetaccel.cli.train",
    "report": "hetaccel.cli.report",
}

#: ``hetaccel bench NAME`` -> module implementing it.
BENCHES: dict[str, str] = {
    "adam": "hetaccel.bench.adam",
    "activations": "hetaccel.bench.activations",
    "gemm": "hetaccel.bench.gemm",
    "runtime": "hetaccel.bench.runtime",
    "fuzz": "hetaccel.bench.fuzz",
}


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_format_value(v)}" for k, v in value.items())
    return str(value)


def print_table(result: dict, file=None) -> None:
    """Readable key/value table of a command's result."""
    file = file or sys.stdout
    width = max((len(str(k)) for k in result), default=0)
    for key, value in result.items():
        print(f"{str(key):<{width}}  {_format_value(value)}", file=file)


def _add_module(subparsers, name: str, module_name: str) -> None:
    module = importlib.import_module(module_name)
    parser = subparsers.add_parser(name, help=module.HELP, description=module.HELP,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if not any(a.dest == "json" for a in parser._actions):
        parser.add_argument("--json", action="store_true",
                            help="print the result as one JSON object instead of a table")
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hetaccel",
        description="Generate, simulate, build and drive the hetaccel transformer accelerator.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        _add_module(sub, name, module_name)
    bench = sub.add_parser("bench", help="benchmarks; each prints figures (JSON with --json)",
                           description="Benchmarks. Figures come from measurement, never assumption.")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH")
    for name, module_name in BENCHES.items():
        _add_module(bench_sub, name, module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    try:
        result = args._run(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"hetaccel: error: {exc}", file=sys.stderr)
        return 1
    if result is None:
        return 0
    if args.json:
        print(json.dumps(result, default=_jsonable))
    else:
        print_table(result)
    failed = result.get("correct") is False or result.get("ok") is False
    return 1 if failed else 0


def _jsonable(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
