"""Heterogeneous task allocation: which op runs on the CPU, which on the accelerator.

The models in :mod:`hetaccel.workloads.encoder`, :mod:`hetaccel.workloads.training` and
:mod:`hetaccel.workloads.lstm` never call the accelerator directly: they hand every
offloadable op (an exact int8 x int8 -> int32 matmul, an activation pass, an Adam
step) to an :class:`Executor`, which asks its :class:`CostModel` where the op
should run, runs it there, and records the decision and the figures.

Placement modes
---------------
``"accelerator"`` (forced)
    every offloadable op runs on the device — what the transformer demo does;
``"cpu"`` (forced)
    everything runs on the CPU, with the *same* integer numerics (exact int64
    matmuls, and :mod:`hetaccel.sim.activation_model` / :mod:`hetaccel.sim.adam_model`
    for the device units), so results are bit-identical to the device's;
``"auto"``
    the cost model compares, per op, the projected device time on the chosen board
    (compute cycles at the board clock vs bytes over its link, overlapped: the larger
    bounds) with the estimated CPU time (MACs at ``cpu_macs_per_s`` plus a fixed call
    overhead) and picks the faster.

The CPU's own work (embeddings, softmax, layer norm, pooling, gradients, control)
is not an "op" here: it always runs on the CPU and is counted in ``cpu_macs`` only
when it is a matmul the executor placed there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..spec import DEFAULT_CONFIG, AcceleratorConfig

__all__ = ["exact_int_matmul", "MODES", "CostModel", "Executor", "OpDecision", "available_boards"]

MODES = ("auto", "accelerator", "cpu")

#: 8N1 UART: a start bit, eight data bits, a stop bit per byte.
_BITS_PER_BYTE = 10
#: Frame overhead per WRITE_MEM/READ_MEM frame: sync, length, seq, opcode, address
#: header and CRC (protocol + spec layouts); a fair average for the cost model.
_FRAME_OVERHEAD = 16


def exact_int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact ``a @ b`` of small integers as int64, through float64 BLAS.

    Every partial sum of int8 products with k <= 2**36 stays below 2**53, where
    float64 represents integers exactly, so this equals the int64 product (and
    the device's int32 accumulators) while running at BLAS speed.
    """
    k = a.shape[1]
    bound = k * float(np.abs(a).max(initial=0)) * float(np.abs(b).max(initial=0))
    if bound >= 2.0 ** 53:
        return a.astype(np.int64) @ b.astype(np.int64)
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def available_boards(config: AcceleratorConfig | None = None) -> list[dict]:
    """``{"board", "clock_hz", "baud"}`` for every known board, plus the config's own.

    Boards come from :data:`hetaccel.spec.boards.BOARDS` (the clock and baud of
    each board's default build).  The projection applies the *measured* device
    cycles and link bytes of this run to each board's clock and baud; a board
    whose default array differs from the run's config would take other cycle
    counts, so treat those rows as "this accelerator at that board's clock/link".
    """
    from ..host.profiler import board_params

    config = config or DEFAULT_CONFIG
    out = [board_params(None, config)]
    try:
        from ..spec.boards import BOARDS
    except Exception:  # pragma: no cover - board support is optional at run time
        return out
    for name in sorted(BOARDS):
        b = BOARDS[name]
        default = getattr(b, "default", {}) or {}
        out.append({"board": name, "clock_hz": int(default.get("clock_hz", config.clock_hz)),
                    "baud": int(default.get("baud", config.baud))})
    return out


@dataclass
class CostModel:
    """Projected time of an op on the device (on one board) and on the CPU.

    Parameters
    ----------
    config : AcceleratorConfig
    board : dict
        ``{"board", "clock_hz", "baud"}`` (see :func:`available_boards`).
    cpu_macs_per_s : float
        Host throughput for int8 matmuls (NumPy int64 products, about 1e9 on one
        core of a laptop).
    cpu_call_s : float
        Fixed CPU cost per op (Python/NumPy dispatch).
    device_call_s : float
        Fixed host cost per offloaded op (frames, a SYNC round trip).
    """

    config: AcceleratorConfig = DEFAULT_CONFIG
    board: dict | None = None
    cpu_macs_per_s: float = 1e9
    cpu_call_s: float = 20e-6
    device_call_s: float = 2e-3

    def __post_init__(self):
        if self.board is None:
            self.board = available_boards(self.config)[0]
        for name in ("cpu_macs_per_s",):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        for name in ("cpu_call_s", "device_call_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")

    def gemm_cycles(self, m: int, k: int, n: int) -> int:
        """Device cycles of an ``m x k @ k x n`` product at full rate."""
        try:
            from ..host.planner import gemm_cycles

            return int(gemm_cycles(self.config, m, k, n))
        except Exception:  # the engine model refuses shapes the runtime tiles itself
            c = self.config
            tiles = math.ceil(k / c.rows) * math.ceil(n / c.cols)
            return tiles * (m + c.rows + c.cols)

    def gemm_link_bytes(self, m: int, k: int, n: int) -> tuple[int, int]:
        """Bytes host->device and device->host of one product (weights streamed)."""
        c = self.config
        kp = math.ceil(k / c.rows) * c.rows
        np_ = math.ceil(n / c.cols) * c.cols
        accw = 4 if c.acc_bits <= 32 else 8
        words_in = m * kp + kp * np_
        words_out = m * np_ * accw
        frames_in = math.ceil(words_in / c.max_payload) + math.ceil(k / c.rows) * math.ceil(
            n / c.cols)
        frames_out = math.ceil(words_out / c.max_payload)
        return (words_in + _FRAME_OVERHEAD * frames_in, words_out + _FRAME_OVERHEAD * frames_out)

    def device_seconds(self, m: int, k: int, n: int) -> dict:
        b = self.board
        compute = self.gemm_cycles(m, k, n) / b["clock_hz"]
        bin_, bout = self.gemm_link_bytes(m, k, n)
        link = max(bin_, bout) * _BITS_PER_BYTE / b["baud"]
        return {"compute_s": compute, "link_s": link,
                "projected_s": max(compute, link) + self.device_call_s,
                "bound": "link" if link >= compute else "compute"}

    def cpu_seconds(self, m: int, k: int, n: int) -> float:
        return m * k * n / self.cpu_macs_per_s + self.cpu_call_s

    def choose(self, m: int, k: int, n: int) -> tuple[str, str]:
        dev = self.device_seconds(m, k, n)
        cpu = self.cpu_seconds(m, k, n)
        if dev["projected_s"] < cpu:
            return "accelerator", (f"device {dev['projected_s']:.3g}s ({dev['bound']}-bound) "
                                   f"< cpu {cpu:.3g}s")
        return "cpu", (f"cpu {cpu:.3g}s <= device {dev['projected_s']:.3g}s "
                       f"({dev['bound']}-bound on {self.board['board']})")


    def choose_elementwise(self, elements: int, kind: str) -> tuple[str, str]:
        """An activation pass (4 bytes in, 2 out per element) or an Adam step (16
        bytes each way per parameter) against the CPU at ~10 ns per element."""
        per_in, per_out = (4, 2) if kind == "activation" else (16, 16)
        b = self.board
        link = elements * max(per_in, per_out) * _BITS_PER_BYTE / b["baud"]
        compute = elements / max(1, self.config.cols) / b["clock_hz"]
        dev = max(link, compute) + self.device_call_s
        cpu = elements * 1e-8 + self.cpu_call_s
        if dev < cpu:
            return "accelerator", f"device {dev:.3g}s < cpu {cpu:.3g}s"
        return "cpu", f"cpu {cpu:.3g}s <= device {dev:.3g}s (link-bound on {b['board']})"


@dataclass
class OpDecision:
    """One offloadable op: where it ran and what it cost."""

    name: str
    kind: str                 # "matmul", "activation", "adam"
    shape: dict
    macs: int
    placed: str               # "accelerator" | "cpu"
    reason: str
    wall_s: float = 0.0
    device_cycles: int = 0
    busy_cycles: dict = field(default_factory=dict)
    device_bytes_in: int = 0
    device_bytes_out: int = 0
    layer: str = ""

    def projected_s(self, board: dict) -> float:
        """Time on ``board``: the device op's busy cycles at its clock vs its bytes
        at its baud (overlapped), or the measured wall time of a CPU op."""
        if self.placed != "accelerator":
            return self.wall_s
        compute = sum(self.busy_cycles.values()) / board["clock_hz"]
        link = max(self.device_bytes_in, self.device_bytes_out) * _BITS_PER_BYTE / board["baud"]
        return max(compute, link)

    def as_dict(self) -> dict:
        return {"name": self.name, "layer": self.layer, "kind": self.kind, "shape": self.shape,
                "macs": self.macs, "placed": self.placed, "reason": self.reason,
                "wall_s": self.wall_s, "device_cycles": self.device_cycles,
                "busy_cycles": dict(self.busy_cycles),
                "device_bytes_in": self.device_bytes_in,
                "device_bytes_out": self.device_bytes_out}


class Executor:
    """Runs offloadable ops where the placement says and records every decision.

    Parameters
    ----------
    accelerator : hetaccel.host.Accelerator or None
        The device; required unless ``mode == "cpu"``.
    mode : {"auto", "accelerator", "cpu"}
    cost_model : CostModel, optional
        Default: one for the accelerator's config and its own clock/baud.
    """

    def __init__(self, accelerator=None, mode: str = "accelerator",
                 cost_model: CostModel | None = None):
        if mode not in MODES:
            raise ValueError(f"placement mode must be one of {', '.join(MODES)}, got {mode!r}")
        if accelerator is None and mode != "cpu":
            raise ValueError(f"placement mode {mode!r} needs an accelerator; pass one or use "
                             f"mode='cpu'")
        self.acc = accelerator
        self.mode = mode
        config = accelerator.config if accelerator is not None else DEFAULT_CONFIG
        self.config = config
        self.cost = cost_model or CostModel(config)
        self.ops: list[OpDecision] = []
        self.layer = ""

    # --- placement -----------------------------------------------------------

    def _place(self, m: int, k: int, n: int, kind: str) -> tuple[str, str]:
        if self.mode == "cpu":
            return "cpu", "forced (--placement cpu)"
        if self.mode == "accelerator":
            return "accelerator", "forced (--placement accelerator)"
        if kind != "matmul":
            return self.cost.choose_elementwise(m, kind)
        return self.cost.choose(m, k, n)

    def _device_record(self, dec: OpDecision) -> None:
        rec = self.acc.profile.last
        if rec is not None:
            dec.device_cycles = rec.device_cycles
            dec.busy_cycles = dict(rec.busy_cycles)
            dec.device_bytes_in = rec.device_bytes_in
            dec.device_bytes_out = rec.device_bytes_out

    # --- ops -----------------------------------------------------------------

    def matmul(self, name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Exact ``a @ b`` of int8 operands as int64 (device int32 widened)."""
        if a.dtype != np.int8 or b.dtype != np.int8:
            raise TypeError(f"{name}: operands must be int8, got {a.dtype} and {b.dtype}")
        m, k = a.shape
        n = b.shape[1]
        placed, reason = self._place(m, k, n, "matmul")
        dec = OpDecision(name, "matmul", {"m": m, "k": k, "n": n}, m * k * n, placed, reason,
                         layer=self.layer)
        t0 = time.perf_counter()
        if placed == "accelerator":
            out = np.asarray(self.acc.matmul(a, b), dtype=np.int64)
            self._device_record(dec)
        else:
            out = exact_int_matmul(a, b)
        dec.wall_s = time.perf_counter() - t0
        self.ops.append(dec)
        return out

    def activation_fixed16(self, name: str, function: str, acc: np.ndarray) -> np.ndarray:
        """The activation unit's 16-bit fixed-point path on int32 accumulator values
        that already are Q4.12 codes (requantisation by exactly 1.0).

        Returns the int16 results (Q4.12 for GELU/ReLU/none, Q1.14 for sigmoid/tanh)
        as computed by the device, or on the CPU by
        :func:`hetaccel.sim.activation_model.apply` (the same numerics).
        """
        from ..sim.activation_model import apply, quantize_multiplier
        from ..spec import ActivationFunction, ActivationPrecision

        fn = ActivationFunction[function.upper()]
        acc = np.asarray(acc, dtype=np.int64)
        placed, reason = self._place(acc.size, 1, 1, "activation")
        dec = OpDecision(name, "activation", {"elements": int(acc.size), "function": function},
                         0, placed, reason, layer=self.layer)
        mult, shift = quantize_multiplier(1.0)
        t0 = time.perf_counter()
        if placed == "accelerator":
            out = self.acc.activation(function, acc.astype(np.int32), multiplier=mult,
                                      shift=shift, precision="fixed16")
            out = np.asarray(out, dtype=np.int16)
            self._device_record(dec)
        else:
            out = apply(acc, 0, mult, shift, fn, ActivationPrecision.FIXED16).astype(np.int16)
        dec.wall_s = time.perf_counter() - t0
        self.ops.append(dec)
        return out

    def adam_step(self, name: str, params, grads, m, v, **hp):
        """One Adam/AdamW step (fp32, in place) on the device or with the bit-exact model."""
        placed, reason = self._place(params.size, 1, 1, "adam")
        dec = OpDecision(name, "adam", {"params": int(params.size)}, 0, placed, reason,
                         layer=self.layer)
        t0 = time.perf_counter()
        if placed == "accelerator":
            self.acc.adam_step(params, grads, m, v, **hp)
            self._device_record(dec)
        else:
            from ..sim.adam_model import adam_step, hyperparameters

            regs = hyperparameters(hp["lr"], hp.get("betas", (0.9, 0.999)), hp.get("eps", 1e-8),
                                   hp.get("weight_decay", 0.0), hp["step"],
                                   hp.get("decoupled", False))
            p2, m2, v2 = adam_step(params, grads, m, v, regs)
            params[...] = p2
            m[...] = m2
            v[...] = v2
        dec.wall_s = time.perf_counter() - t0
        self.ops.append(dec)
        return params, m, v

    # --- summaries -------------------------------------------------------------

    def summary(self, boards: list[dict] | None = None, host_s: float = 0.0) -> dict:
        """Totals: MACs per side, device cycles, projected latency per board.

        ``host_s`` is the measured CPU time of the non-offloadable work (embeddings,
        softmax, ...), added to every board's projection.
        """
        boards = boards or available_boards(self.config)
        off = sum(d.macs for d in self.ops if d.placed == "accelerator")
        cpu = sum(d.macs for d in self.ops if d.placed == "cpu")
        cycles = sum(d.device_cycles for d in self.ops if d.placed == "accelerator")
        proj = {}
        for b in boards:
            proj[b["board"]] = host_s + sum(d.projected_s(b) for d in self.ops)
        counts = {"accelerator": sum(d.placed == "accelerator" for d in self.ops),
                  "cpu": sum(d.placed == "cpu" for d in self.ops)}
        return {"offloaded_macs": int(off), "cpu_macs": int(cpu), "device_cycles": int(cycles),
                "ops_on_accelerator": counts["accelerator"], "ops_on_cpu": counts["cpu"],
                "projected_latency_s": proj}

    def placement_table(self) -> list[dict]:
        """One row per (layer, op name): where it ran, MACs, cycles (aggregated)."""
        rows: dict[tuple, dict] = {}
        for d in self.ops:
            key = (d.layer, d.name.split("[")[0], d.placed)
            r = rows.setdefault(key, {"layer": d.layer, "op": key[1], "kind": d.kind,
                                      "placed": d.placed, "calls": 0, "macs": 0,
                                      "device_cycles": 0, "busy_cycles": 0,
                                      "device_bytes": 0, "wall_s": 0.0, "reason": d.reason})
            r["calls"] += 1
            r["macs"] += d.macs
            r["device_cycles"] += d.device_cycles
            r["busy_cycles"] += sum(d.busy_cycles.values())
            r["device_bytes"] += d.device_bytes_in + d.device_bytes_out
            r["wall_s"] += d.wall_s
        return list(rows.values())
