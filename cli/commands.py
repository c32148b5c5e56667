"""What ``hetaccel run``, ``train`` and ``demo`` share: the device options, opening
the executor they name, the progress bar and the placement table.

Readable tables go to stdout, progress bars to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

__all__ = ["Progress", "add_device_options", "open_executor", "print_placement"]


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


@contextlib.contextmanager
def open_executor(backend: str, placement: str, sim: str = "verilator", config=None):
    """An :class:`~hetaccel.workloads.placement.Executor` on ``backend`` (``cpu`` needs no device)."""
    from ..workloads.placement import Executor

    if backend == "cpu" or placement == "cpu":
        yield Executor(None, "cpu")
        return
    from ..host.accelerator import Accelerator

    kw = {"sim": sim} if backend == "rtl" else {}
    with Accelerator.open(backend, config=config, **kw) as acc:
        yield Executor(acc, placement)


def print_placement(rows: list[dict], file=None) -> None:
    """Calls, MACs and device cycles per op and the side it ran on."""
    file = file or sys.stdout
    agg: dict = {}
    for r in rows:
        a = agg.setdefault((r["op"], r["placed"]), {"calls": 0, "macs": 0, "cycles": 0})
        a["calls"] += r["calls"]
        a["macs"] += r["macs"]
        a["cycles"] += r["device_cycles"]
    print(f"{'op':<10}{'placed on':<13}{'calls':>7}{'MACs':>15}{'device cycles':>15}", file=file)
    for (op, placed), a in agg.items():
        print(f"{op:<10}{placed:<13}{a['calls']:>7}{a['macs']:>15,}{a['cycles']:>15,}", file=file)
    print("CPU always: embeddings, softmax, layer norm, quantization scales, pooling, control",
          file=file)
    print(file=file)
