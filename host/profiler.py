"""Per-operation and per-run figures of the host runtime.

Every operation records where it ran (``emu``, ``rtl`` or ``serial``: the
runtime never computes a result on the CPU instead), the device's own
performance counters (``CYCLES``, unit busy cycles, bytes on the link —
docs/isa.md), what the host moved (frames, bytes, retries), the wall time,
and a projection onto a named board: compute at the board's clock against
the link at its baud, so a user sees which of the two bounds the operation.

Board clocks and bauds come from :data:`hetaccel.spec.boards.BOARDS` (the
board's default build), or from the accelerator config (board name ``"config"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["OpRecord", "Profile", "board_params", "UART_BITS_PER_BYTE"]

#: 8N1 framing: a start bit, eight data bits, a stop bit.
UART_BITS_PER_BYTE = 10

#: Device counters whose per-op difference is recorded.
_UNITS = (("gemm", "GEMM_BUSY"), ("activation", "ACT_BUSY"), ("adam", "ADAM_BUSY"))


def board_params(board: str | None, config) -> dict:
    """``{"board", "clock_hz", "baud"}`` for ``board`` (None: the config's own).

    Named boards are the ones :mod:`hetaccel.boards.build` defines: the clock
    and baud of the board's default build.
    """
    if board in (None, "config"):
        return {"board": "config", "clock_hz": int(config.clock_hz), "baud": int(config.baud)}
    try:
        from ..spec.boards import BOARDS
    except ImportError:  # pragma: no cover - boards are part of the package
        BOARDS = {}
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; known boards: {sorted(BOARDS) + ['config']}")
    default = getattr(BOARDS[board], "default", {}) or {}
    return {"board": board, "clock_hz": int(default.get("clock_hz", config.clock_hz)),
            "baud": int(default.get("baud", config.baud))}


@dataclass
class OpRecord:
    """Figures of one runtime operation."""

    op: str
    shape: dict
    backend: str
    wall_s: float = 0.0
    device_cycles: int = 0
    busy_cycles: dict = field(default_factory=dict)
    device_bytes_in: int = 0
    device_bytes_out: int = 0
    host_bytes_sent: int = 0
    host_bytes_received: int = 0
    frames: int = 0
    retries: int = 0
    faults: list = field(default_factory=list)
    macs: int = 0
    peak_macs_per_cycle: int = 1
    board: dict = field(default_factory=dict)
    counters: dict = field(default_factory=dict)   # every device counter's difference

    @property
    def utilization(self) -> dict:
        """Busy fraction of each unit over the op's device cycles, and the
        fraction of the array's peak MACs that did useful work."""
        c = max(1, self.device_cycles)
        out = {unit: self.busy_cycles.get(unit, 0) / c for unit, _ in _UNITS}
        out["mac"] = self.macs / (c * max(1, self.peak_macs_per_cycle))
        return out

    def projection(self) -> dict:
        """Wall time this op would take on :attr:`board`.

        ``compute_s`` counts the cycles the units were busy at the board's
        clock; ``link_s`` the bytes each way at the board's baud (the UART is
        full duplex, so the larger direction).  Loads overlap compute, so the
        estimate is the larger of the two, which names the bound.
        """
        clock = self.board.get("clock_hz", 1)
        baud = self.board.get("baud", 1)
        compute = sum(self.busy_cycles.values()) / clock
        link = max(self.device_bytes_in, self.device_bytes_out) * UART_BITS_PER_BYTE / baud
        return {"board": self.board.get("board"), "clock_hz": clock, "baud": baud,
                "compute_s": compute, "link_s": link, "projected_s": max(compute, link),
                "bound": "link" if link >= compute else "compute"}

    def as_dict(self) -> dict:
        return {
            "op": self.op, "shape": self.shape, "ran_on": self.backend,
            "wall_s": self.wall_s, "device_cycles": self.device_cycles,
            "busy_cycles": dict(self.busy_cycles), "utilization": self.utilization,
            "device_bytes_in": self.device_bytes_in, "device_bytes_out": self.device_bytes_out,
            "host_bytes_sent": self.host_bytes_sent,
            "host_bytes_received": self.host_bytes_received,
            "frames": self.frames, "retries": self.retries, "faults": list(self.faults),
            "macs": self.macs, "projection": self.projection(),
            "counters": dict(self.counters),
        }


class Profile:
    """All :class:`OpRecord` of one :class:`~hetaccel.host.Accelerator` session."""

    def __init__(self, backend: str, board: dict):
        self.backend = backend
        self.board = board
        self.ops: list[OpRecord] = []
        self._t0 = time.perf_counter()

    def add(self, rec: OpRecord) -> None:
        self.ops.append(rec)

    @property
    def last(self) -> OpRecord | None:
        return self.ops[-1] if self.ops else None

    def clear(self) -> None:
        self.ops.clear()

    def totals(self) -> dict:
        """Sums over the run, plus its projection onto the board."""
        t = OpRecord(op="run", shape={"ops": len(self.ops)}, backend=self.backend,
                     board=self.board)
        for r in self.ops:
            t.wall_s += r.wall_s
            t.device_cycles += r.device_cycles
            for k, v in r.busy_cycles.items():
                t.busy_cycles[k] = t.busy_cycles.get(k, 0) + v
            t.device_bytes_in += r.device_bytes_in
            t.device_bytes_out += r.device_bytes_out
            t.host_bytes_sent += r.host_bytes_sent
            t.host_bytes_received += r.host_bytes_received
            t.frames += r.frames
            t.retries += r.retries
            t.faults += r.faults
            t.macs += r.macs
            t.peak_macs_per_cycle = r.peak_macs_per_cycle
        return t.as_dict()

    def report(self) -> str:
        """A readable table: one line per op, then the run's totals."""
        head = (f"{'op':<12}{'shape':<24}{'ran on':<8}{'cycles':>12}{'gemm%':>7}{'act%':>6}"
                f"{'adam%':>6}{'mac%':>6}{'bytes in':>11}{'bytes out':>11}{'retry':>6}"
                f"{'wall s':>9}{'board s':>10}  bound")
        lines = [f"backend {self.backend}; board {self.board.get('board')} "
                 f"({self.board.get('clock_hz', 0) / 1e6:g} MHz, {self.board.get('baud')} baud)",
                 head]
        for r in self.ops + ([] if not self.ops else []):
            u, p = r.utilization, r.projection()
            shape = "x".join(str(v) for v in r.shape.values())
            lines.append(
                f"{r.op:<12}{shape:<24}{r.backend:<8}{r.device_cycles:>12}"
                f"{100 * u['gemm']:>7.1f}{100 * u['activation']:>6.1f}{100 * u['adam']:>6.1f}"
                f"{100 * u['mac']:>6.1f}{r.device_bytes_in:>11}{r.device_bytes_out:>11}"
                f"{r.retries:>6}{r.wall_s:>9.3f}{p['projected_s']:>10.4f}  {p['bound']}")
        if self.ops:
            t = self.totals()
            lines.append(f"{'total':<12}{'':<24}{self.backend:<8}{t['device_cycles']:>12}"
                         f"{'':>25}{t['device_bytes_in']:>11}{t['device_bytes_out']:>11}"
                         f"{t['retries']:>6}{t['wall_s']:>9.3f}"
                         f"{t['projection']['projected_s']:>10.4f}  {t['projection']['bound']}")
        return "\n".join(lines)
