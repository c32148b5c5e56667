"""What ``hetaccel run``, ``train``, ``demo`` and ``bench runtime`` share: the device
and image options, the config-file loader (``hetaccel build --config`` reads the same
files), opening the executor they name, the progress bar and the placement table.

Readable tables go to stdout, progress bars to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Progress", "Image", "add_device_options", "add_image_options", "load_config",
           "resolve_image", "open_executor", "print_placement"]


class Progress:
    """A one-line progress bar on stderr (silent when ``enabled`` is False)."""

    def __init__(self, label: str, enabled: bool = True, stream=None):
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()

    def __call__(self, done: int, total: int, note: str = "") -> None:
        if not self.enabled or total <= 0:
            return
        width = 28
        fill = int(width * done / total)
        el = time.perf_counter() - self.t0
        note = (note[:38] + "...") if len(note) > 41 else note
        self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] "
                          f"{100 * done / total:5.1f}% {el:6.1f}s {note:<41}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def add_device_options(parser: argparse.ArgumentParser,
                       default_placement: str = "accelerator") -> None:
    """``--backend``, ``--sim`` and ``--placement``: what :func:`open_executor` takes."""
    parser.add_argument("--backend", default="emu",
                        help="where device ops run: 'emu' (bit-exact emulator), 'rtl' (the "
                             "generated Verilog in a simulator), 'serial:PORT[@BAUD]' (a board), "
                             "or 'cpu' (no device: the same integer numerics in NumPy)")
    parser.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                        help="simulator of the rtl backend")
    parser.add_argument("--placement", choices=("accelerator", "cpu", "auto"),
                        default=default_placement,
                        help="force every offloadable op onto the accelerator or the CPU, or "
                             "let the cost model choose per op ('auto')")


def add_image_options(parser: argparse.ArgumentParser) -> None:
    """``--board`` and ``--config``: the device image :func:`resolve_image` makes (the
    command line adds them to every command whose module sets ``IMAGE_OPTIONS``)."""
    from ..spec.boards import BOARDS

    parser.add_argument("--board", choices=sorted(BOARDS), default=None,
                        help="emulate this board's image: the emulator, the rtl backend and "
                             "a serial board (its baud, without @BAUD) use its array, units, "
                             "memories, clock and baud, and the run is projected on it")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="JSON file of AcceleratorConfig fields (the format 'hetaccel "
                             "build --config' reads), applied on top of --board's image when "
                             "both are given (default: the default config)")


def load_config(path: Path | str | None, base=None, sets=()):
    """An :class:`~hetaccel.spec.AcceleratorConfig`: ``base`` (a config, a dict of its
    fields, or None for the defaults) with the fields of the JSON object in ``path``
    and then the ``FIELD=VALUE`` strings of ``sets`` (values parsed as JSON, else
    taken as strings) applied on top.  Every error is a one-line ``ValueError``."""
    from ..spec import AcceleratorConfig

    if isinstance(base, AcceleratorConfig):
        base = base.to_dict()
    fields = dict(base or {})
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a JSON object of AcceleratorConfig "
                             f"fields, not {type(data).__name__}")
        fields.update(data)
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        fields[key.strip()] = _parse_value(value.strip())
    if path is None:
        return AcceleratorConfig.from_dict(fields)
    try:
        return AcceleratorConfig.from_dict(fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config file {path}: {exc}") from None


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass(frozen=True)
class Image:
    """The device image a command runs on: ``--board``'s image with ``--config``'s
    fields on top.  ``name`` is the board's when there is no config file (the
    profiler projects onto the board by that name), else ``"config"``;
    ``config`` is None when neither option is given (the backend's default: the
    default config, or whatever a serial board reports)."""

    name: str = "config"
    config: object = None           # AcceleratorConfig or None
    board: str | None = None
    config_file: str | None = None

    @property
    def profile_board(self) -> str | None:
        """The catalog image the profiler projects onto by name (None: the config)."""
        return self.name if self.board is not None and self.name == self.board else None

    def describe(self, config) -> dict:
        """What a command's result says about the image it ran on; ``config`` is the
        device's (a serial board's own when no option named one)."""
        c = config
        return {"name": self.name, "board": self.board, "config_file": self.config_file,
                "rows": c.rows, "cols": c.cols, "has_activation": c.has_activation,
                "has_adam": c.has_adam, "clock_hz": c.clock_hz, "baud": c.baud}


def resolve_image(board: str | None, config_file: Path | str | None) -> Image:
    """The image of ``--board``/``--config``."""
    if board is None and config_file is None:
        return Image()
    from ..spec.boards import default_config

    base = default_config(board) if board is not None else None
    config = load_config(config_file, base)
    if config_file is None:
        return Image(board, config, board)
    return Image("config", config, board, str(config_file))


@contextlib.contextmanager
def open_executor(backend: str, placement: str, sim: str = "verilator",
                  image: Image | None = None):
    """An :class:`~hetaccel.workloads.placement.Executor` on ``backend`` (``cpu`` needs no
    device) with its device opened on ``image`` (default: the backend's default)."""
    from ..workloads.placement import Executor

    image = image or Image()
    if backend == "cpu" or placement == "cpu":
        yield Executor(None, "cpu", config=image.config)
        return
    from ..host.accelerator import Accelerator

    kw = {"sim": sim} if backend == "rtl" else {}
    with Accelerator.open(backend, config=image.config, board=image.profile_board,
                          **kw) as acc:
        yield Executor(acc, placement)


#: what an encoder run computes on the CPU whatever the placement
ENCODER_CPU_WORK = "embeddings, softmax, layer norm, quantization scales, pooling, control"


def print_placement(rows: list[dict], file=None, cpu_work: str = ENCODER_CPU_WORK) -> None:
    """Calls, MACs and device cycles per op, the side it ran on and why; ``cpu_work``
    names what the run computes on the CPU whatever the placement."""
    file = file or sys.stdout
    agg: dict = {}
    for r in rows:
        a = agg.setdefault((r["op"], r["placed"]), {"calls": 0, "macs": 0, "cycles": 0,
                                                    "reasons": []})
        a["calls"] += r["calls"]
        a["macs"] += r["macs"]
        a["cycles"] += r["device_cycles"]
        if r["reason"] not in a["reasons"]:
            a["reasons"].append(r["reason"])
    print(f"{'op':<10}{'placed on':<13}{'calls':>7}{'MACs':>15}{'device cycles':>15}  why",
          file=file)
    for (op, placed), a in agg.items():
        why = a["reasons"][0] + (f" (+{len(a['reasons']) - 1} other reasons)"
                                 if len(a["reasons"]) > 1 else "")
        print(f"{op:<10}{placed:<13}{a['calls']:>7}{a['macs']:>15,}{a['cycles']:>15,}  {why}",
              file=file)
    print(f"CPU always: {cpu_work}", file=file)
    print(file=file)
