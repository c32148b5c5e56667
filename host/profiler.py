"""Per-operation and per-run figures of the host runtime.

Every operation records where it ran (``emu``, ``rtl`` or ``serial``: the
runtime never computes a result on the CPU instead), the device's own
performance counters (``CYCLES``, unit busy cycles, bytes on the link —
docs/isa.md), what the host moved (frames, bytes, retries), the wall time,
and a projection onto a board image: the planner's cost of the same
operation on that image's own config (array, memories, frame size) at its
clock against its link (:func:`hetaccel.host.planner.project_op`), so a user
sees which of the two bounds the operation there.

The image is ``"config"`` (the session's own config) or a board of
:data:`hetaccel.spec.boards.BOARDS` (its default image); see
:func:`hetaccel.host.planner.board_images`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .planner import UART_BITS_PER_BYTE, BoardImage, project_op, utilisation

__all__ = ["OpRecord", "Profile", "UART_BITS_PER_BYTE"]

#: Device counters whose per-op difference is recorded.
_UNITS = (("gemm", "GEMM_BUSY"), ("activation", "ACT_BUSY"), ("adam", "ADAM_BUSY"))


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
    board: BoardImage | None = None
    counters: dict = field(default_factory=dict)   # every device counter's difference
    table_load: bool = False                       # the op loaded an activation table
    resident: bool = False                         # its weights were in device memory
    dma_cycles: int = 0                            # DMA_BUSY: LOAD / STORE cycles
    dram_bytes: int = 0                            # bytes LOAD / STORE moved

    @property
    def utilization(self) -> dict:
        """Busy fraction of each unit over the op's device cycles, and the MAC
        utilisation (:func:`hetaccel.host.planner.utilisation`) of its GEMMs."""
        c = max(1, self.device_cycles)
        out = {unit: self.busy_cycles.get(unit, 0) / c for unit, _ in _UNITS}
        out["mac"] = utilisation(self.macs, self.busy_cycles.get("gemm", 0),
                                 self.peak_macs_per_cycle)
        return out

    def projection(self) -> dict:
        """Wall time this op would take on :attr:`board` (see
        :class:`hetaccel.host.planner.Projection`): ``compute_s`` (busy
        cycles at the image's clock), ``link_s`` (frame bytes at its baud),
        ``projected_s`` (the larger) and the ``bound``; ``"cpu"`` with no
        ``projected_s`` when the image lacks a unit the op needs."""
        return project_op(self.board, self.op, self.shape, table=self.table_load,
                          resident=self.resident).as_dict()

    def as_dict(self) -> dict:
        return {
            "op": self.op, "shape": self.shape, "ran_on": self.backend,
            "wall_s": self.wall_s, "device_cycles": self.device_cycles,
            "busy_cycles": dict(self.busy_cycles), "utilization": self.utilization,
            "device_bytes_in": self.device_bytes_in, "device_bytes_out": self.device_bytes_out,
            "host_bytes_sent": self.host_bytes_sent,
            "host_bytes_received": self.host_bytes_received,
            "frames": self.frames, "retries": self.retries, "faults": list(self.faults),
            "macs": self.macs, "resident": self.resident, "dma_cycles": self.dma_cycles,
            "dram_bytes": self.dram_bytes, "projection": self.projection(),
            "counters": dict(self.counters),
        }


class Profile:
    """All :class:`OpRecord` of one :class:`~hetaccel.host.Accelerator` session."""

    def __init__(self, backend: str, board: BoardImage):
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
        """Sums over the run, and its projection onto the board image: the ops
        run one after another, so their projected times add up."""
        t = {"op": "run", "shape": {"ops": len(self.ops)}, "ran_on": self.backend,
             "wall_s": 0.0, "device_cycles": 0, "busy_cycles": {}, "device_bytes_in": 0,
             "device_bytes_out": 0, "host_bytes_sent": 0, "host_bytes_received": 0,
             "frames": 0, "retries": 0, "faults": [], "macs": 0, "dma_cycles": 0,
             "dram_bytes": 0}
        proj = {"board": self.board.name, "clock_hz": self.board.clock_hz,
                "baud": self.board.baud, "compute_s": 0.0, "link_s": 0.0, "memory_s": 0.0,
                "projected_s": 0.0, "cpu_ops": 0}
        for r in self.ops:
            for k in ("wall_s", "device_cycles", "device_bytes_in", "device_bytes_out",
                      "host_bytes_sent", "host_bytes_received", "frames", "retries", "macs",
                      "dma_cycles", "dram_bytes"):
                t[k] += getattr(r, k)
            for k, v in r.busy_cycles.items():
                t["busy_cycles"][k] = t["busy_cycles"].get(k, 0) + v
            t["faults"] += r.faults
            p = r.projection()
            if p["projected_s"] is None:
                proj["cpu_ops"] += 1
                continue
            for k in ("compute_s", "link_s", "memory_s", "projected_s"):
                proj[k] += p[k]
        proj["bound"] = max(("link", "compute", "memory"), key=lambda b: proj[f"{b}_s"])
        peak = self.ops[-1].peak_macs_per_cycle if self.ops else 1
        t["utilization"] = {"mac": utilisation(t["macs"], t["busy_cycles"].get("gemm", 0), peak)}
        t["projection"] = proj
        return t

    def report(self) -> str:
        """A readable table: one line per op, then the run's totals."""
        b = self.board
        head = (f"{'op':<12}{'shape':<24}{'ran on':<8}{'cycles':>12}{'gemm%':>7}{'act%':>6}"
                f"{'adam%':>6}{'mac%':>6}{'bytes in':>11}{'bytes out':>11}{'dram bytes':>11}"
                f"{'retry':>6}{'wall s':>9}{'board s':>10}  bound")
        lines = [f"backend {self.backend}; board {b.name} ({b.config.rows}x{b.config.cols} "
                 f"array, {b.clock_hz / 1e6:g} MHz, {b.baud} baud)", head]

        def secs(p):
            return f"{'cpu':>10}" if p["projected_s"] is None else f"{p['projected_s']:>10.4f}"

        for r in self.ops:
            u, p = r.utilization, r.projection()
            shape = "x".join(str(v) for v in r.shape.values())
            bound = p["bound"] if p["missing_unit"] is None else f"no {p['missing_unit']} unit"
            lines.append(
                f"{r.op:<12}{shape:<24}{r.backend:<8}{r.device_cycles:>12}"
                f"{100 * u['gemm']:>7.1f}{100 * u['activation']:>6.1f}{100 * u['adam']:>6.1f}"
                f"{100 * u['mac']:>6.1f}{r.device_bytes_in:>11}{r.device_bytes_out:>11}"
                f"{r.dram_bytes:>11}{r.retries:>6}{r.wall_s:>9.3f}{secs(p)}  {bound}")
        if self.ops:
            t = self.totals()
            lines.append(f"{'total':<12}{'':<24}{self.backend:<8}{t['device_cycles']:>12}"
                         f"{'':>25}{t['device_bytes_in']:>11}{t['device_bytes_out']:>11}"
                         f"{t['dram_bytes']:>11}{t['retries']:>6}{t['wall_s']:>9.3f}"
                         f"{t['projection']['projected_s']:>10.4f}  {t['projection']['bound']}")
        return "\n".join(lines)
