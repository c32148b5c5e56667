"""Heterogeneous task allocation: which op runs on the CPU, which on the accelerator.

The models in :mod:`hetaccel.workloads.encoder`, :mod:`hetaccel.workloads.training` and
:mod:`hetaccel.workloads.lstm` never call the accelerator directly: they hand every
offloadable op (an exact int8 x int8 -> int32 matmul, an activation pass, an Adam
step) to an :class:`Executor`, which asks its :class:`CostModel` where the op
should run, runs it there, and records the decision and the figures.

Placement modes
---------------
``"accelerator"`` (forced)
    every offloadable op runs on the device — what the transformer demo does —
    except one whose unit the device's config lacks (an activation pass without
    ``has_activation``, an Adam step without ``has_adam``): that op runs on the
    CPU with the same integer numerics, its reason says which unit is missing,
    and a board image that has the unit counts it as device time
    (:func:`project_ops`);
``"cpu"`` (forced)
    everything runs on the CPU, with the *same* integer numerics (exact int64
    matmuls, and :mod:`hetaccel.sim.activation_model` / :mod:`hetaccel.sim.adam_model`
    for the device units), so results are bit-identical to the device's;
``"auto"``
    the cost model compares, per op, the device time the planner projects on the
    chosen board image (:func:`hetaccel.host.planner.project_op`: the op planned on
    the image's config, busy cycles at its clock vs frame bytes over its link,
    overlapped) with a guess of the CPU time (MACs at ``cpu_macs_per_s``, elements
    at ``cpu_elements_per_s``, plus a fixed call overhead) and picks the faster;
    an op whose unit the device lacks goes to the CPU whatever the projection says.

The CPU's own work (embeddings, softmax, layer norm, pooling, gradients, control)
is not an "op" here: it always runs on the CPU and is counted in ``cpu_macs`` only
when it is a matmul the executor placed there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..host.planner import (BoardImage, board_image, board_images, project_op,
                            resident_weight_bytes)
from ..sim.activation_model import apply, quantize_multiplier
from ..sim.adam_model import adam_step as adam_model_step, hyperparameters
from ..spec import DEFAULT_CONFIG, AcceleratorConfig, ActivationFunction, ActivationPrecision

__all__ = ["exact_int_matmul", "MODES", "CostModel", "Executor", "OpDecision"]

MODES = ("auto", "accelerator", "cpu")

#: The planner's name of each kind of offloadable op.
PLANNER_OP = {"matmul": "matmul", "activation": "activation", "adam": "adam_step"}


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


@dataclass
class CostModel:
    """Placement policy: an op's device time on one board image (the planner's
    projection, :func:`hetaccel.host.planner.project_op`) against a guess of
    its CPU time.

    Parameters
    ----------
    config : AcceleratorConfig
        The device's config: the default board image when ``board`` is None.
    board : BoardImage or str, optional
        The image the device time is projected onto (a name of
        :func:`hetaccel.host.planner.board_images`); default ``config`` itself.
    cpu_macs_per_s : float
        Host throughput for int8 matmuls (NumPy int64 products, about 1e9 on one
        core of a laptop).
    cpu_elements_per_s : float
        Host throughput of the activation and Adam models per element.
    cpu_call_s : float
        Fixed CPU cost per op (Python/NumPy dispatch).
    device_call_s : float
        Fixed host cost per offloaded op (frames, a SYNC round trip).
    """

    config: AcceleratorConfig = DEFAULT_CONFIG
    board: BoardImage | str | None = None
    cpu_macs_per_s: float = 1e9
    cpu_elements_per_s: float = 1e8
    cpu_call_s: float = 20e-6
    device_call_s: float = 2e-3

    def __post_init__(self):
        if not isinstance(self.board, BoardImage):
            self.board = board_image(self.board, self.config)
        for name in ("cpu_macs_per_s", "cpu_elements_per_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        for name in ("cpu_call_s", "device_call_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")

    def cpu_seconds(self, kind: str, shape: dict) -> float:
        """The host-speed guess for one op of ``kind`` (``"matmul"``,
        ``"activation"``, ``"adam"``) and ``shape``."""
        if kind == "matmul":
            return shape["m"] * shape["k"] * shape["n"] / self.cpu_macs_per_s + self.cpu_call_s
        n = shape["elements"] if kind == "activation" else shape["params"]
        return n / self.cpu_elements_per_s + self.cpu_call_s

    def choose(self, kind: str, shape: dict, resident: bool = False) -> tuple[str, str]:
        """``("accelerator" | "cpu", reason)`` for one op on :attr:`board`
        (``resident``: its weights stay in the image's device memory, if any)."""
        p = project_op(self.board, PLANNER_OP[kind], shape, resident=resident)
        cpu = self.cpu_seconds(kind, shape)
        if p.seconds is None:
            return "cpu", f"no {p.missing_unit} unit on {self.board.name}"
        dev = p.seconds + self.device_call_s
        if dev < cpu:
            return "accelerator", f"device {dev:.3g}s ({p.bound}-bound) < cpu {cpu:.3g}s"
        return "cpu", (f"cpu {cpu:.3g}s <= device {dev:.3g}s ({p.bound}-bound on "
                       f"{self.board.name})")


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
    # forced onto the accelerator but run on the CPU because the device lacks the
    # op's unit: a board image that has the unit projects it as device time
    fallback: bool = False
    # a matmul against a model weight (Executor.keep_resident): an image with
    # device memory keeps it there and fetches it on the device
    weight: bool = False

    def as_dict(self) -> dict:
        return {"name": self.name, "layer": self.layer, "kind": self.kind, "shape": self.shape,
                "macs": self.macs, "placed": self.placed, "reason": self.reason,
                "fallback": self.fallback, "weight": self.weight,
                "wall_s": self.wall_s, "device_cycles": self.device_cycles,
                "busy_cycles": dict(self.busy_cycles),
                "device_bytes_in": self.device_bytes_in,
                "device_bytes_out": self.device_bytes_out}


def project_ops(ops, image: BoardImage, cost: CostModel, host_s: float = 0.0,
                weights=()) -> dict:
    """The run of ``ops`` (:class:`OpDecision`) on ``image``.

    An op placed on the accelerator is planned again on the image's own config
    (its array, memories, clock and link: :func:`hetaccel.host.planner.project_op`);
    when the image lacks the op's unit, it is counted as CPU time
    (:meth:`CostModel.cpu_seconds`) among ``cpu_ops``.  An op placed on the
    CPU keeps its measured wall time, unless it went there only because the
    device lacked its unit (:attr:`OpDecision.fallback`): then it is an
    accelerator op like the others on an image that has the unit.  ``host_s``
    (the CPU's own work) is added.

    On an image with device memory the model's ``weights`` (``(k, n)`` of
    each, :meth:`Executor.keep_resident`) are uploaded once: their matmuls
    fetch them on the device, and the upload is ``upload_s``, outside
    ``latency_s`` (it is paid once per model, not per run).  An image without
    device memory receives them on every call.
    """
    device_s = compute_s = link_s = memory_s = upload_s = 0.0
    cpu_s = 0.0
    cpu_ops = device_ops = 0
    missing: set = set()
    if image.config.memory is not None:
        for k, n in weights:
            nbytes = resident_weight_bytes(image.config, k, n)
            upload_s += project_op(image, "upload", {"bytes": nbytes}).seconds
    for d in ops:
        if d.placed != "accelerator" and not d.fallback:
            cpu_s += d.wall_s
            cpu_ops += 1
            continue
        p = project_op(image, PLANNER_OP[d.kind], d.shape, resident=d.weight)
        if p.seconds is None:
            cpu_s += d.wall_s if d.fallback else cost.cpu_seconds(d.kind, d.shape)
            cpu_ops += 1
            missing.add(p.missing_unit)
            continue
        device_ops += 1
        device_s += p.seconds
        compute_s += p.compute_s
        link_s += p.link_s
        memory_s += p.memory_s
    bound = max((link_s, "link"), (compute_s, "compute"), (memory_s, "memory"),
                key=lambda t: t[0])[1]
    return {**image.as_dict(), "device_ops": device_ops, "cpu_ops": cpu_ops,
            "missing_units": sorted(missing), "device_s": device_s, "compute_s": compute_s,
            "link_s": link_s, "memory_s": memory_s, "cpu_s": cpu_s, "host_s": host_s,
            "upload_s": upload_s, "latency_s": host_s + device_s + cpu_s, "bound": bound}


class Executor:
    """Runs offloadable ops where the placement says and records every decision.

    Parameters
    ----------
    accelerator : hetaccel.host.Accelerator or None
        The device; required unless ``mode == "cpu"``.
    mode : {"auto", "accelerator", "cpu"}
    cost_model : CostModel, optional
        Default: one projecting onto the device's own image.
    config : AcceleratorConfig, optional
        Without an accelerator (``mode="cpu"``), the config the run's summary
        projects onto as ``"config"`` (default
        :data:`~hetaccel.spec.DEFAULT_CONFIG`); with one, it must be the
        accelerator's.

    Attributes
    ----------
    device : BoardImage
        The device's own config, named after the board whose image it is when
        the accelerator's profile projects onto that board's unchanged image,
        else ``"config"``.  An op whose unit it lacks runs on the CPU in every
        mode.
    """

    def __init__(self, accelerator=None, mode: str = "accelerator",
                 cost_model: CostModel | None = None, *,
                 config: AcceleratorConfig | None = None):
        if mode not in MODES:
            raise ValueError(f"placement mode must be one of {', '.join(MODES)}, got {mode!r}")
        if accelerator is None and mode != "cpu":
            raise ValueError(f"placement mode {mode!r} needs an accelerator; pass one or use "
                             f"mode='cpu'")
        if config is not None and not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        self.acc = accelerator
        self.mode = mode
        name = "config"
        if accelerator is not None:
            if config is not None and config != accelerator.config:
                raise ValueError("config must be the accelerator's own config (or None) when "
                                 "an accelerator is given")
            config = accelerator.config
            projected = accelerator.profile.board
            if projected.name != "config" and projected.config == config:
                name = projected.name
        self.config = config or DEFAULT_CONFIG
        self.device = BoardImage(name, self.config)
        self.cost = cost_model or CostModel(self.config, self.device)
        self.ops: list[OpDecision] = []
        self.layer = ""
        # id(array) -> (array, DeviceTensor or None) of the model's weights
        self._weights: dict[int, tuple] = {}
        #: the uploads of model weights to device memory (name, k, n, wall_s)
        self.uploads: list[dict] = []

    # --- placement -----------------------------------------------------------

    def keep_resident(self, name: str, b: np.ndarray) -> None:
        """Declare ``b`` a model weight: the right operand of matmuls on every
        run.  A device with device memory gets it once, now (an ``upload`` op),
        and fetches it itself from then on; without one it crosses the link
        with each matmul as before.  Either way the run's projection keeps it
        resident on every board image that has device memory.
        """
        if not isinstance(b, np.ndarray) or b.dtype != np.int8 or b.ndim != 2:
            raise TypeError(f"{name}: a resident weight must be a 2-D int8 array")
        if id(b) in self._weights:
            return
        tensor = None
        t0 = time.perf_counter()
        if self.mode != "cpu" and self.config.memory is not None:
            tensor = self.acc.upload(b)
        self.uploads.append({"name": name, "k": int(b.shape[0]), "n": int(b.shape[1]),
                             "on_device": tensor is not None,
                             "wall_s": time.perf_counter() - t0})
        self._weights[id(b)] = (b, tensor)

    def release_weights(self) -> None:
        """Free every resident weight on the device."""
        for _, tensor in self._weights.values():
            if tensor is not None:
                tensor.free()
        self._weights.clear()

    def _place(self, kind: str, shape: dict, resident: bool = False) -> tuple[str, str, bool]:
        """``(side, reason, fallback)`` of one op."""
        if self.mode == "cpu":
            return "cpu", "forced (--placement cpu)", False
        # the device's own units first: a projected image may have a unit the
        # device lacks, and the device would refuse the op
        missing = self.device.missing_unit(PLANNER_OP[kind])
        if missing is not None:
            where = self.device.name if self.device.name != "config" else "this image"
            return "cpu", f"no {missing} unit on {where}", self.mode == "accelerator"
        if self.mode == "accelerator":
            return "accelerator", "forced (--placement accelerator)", False
        return (*self.cost.choose(kind, shape, resident), False)

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
        shape = {"m": m, "k": k, "n": n}
        held = self._weights.get(id(b))
        weight = held is not None and held[0] is b
        placed, reason, fallback = self._place("matmul", shape, weight)
        dec = OpDecision(name, "matmul", shape, m * k * n, placed, reason, layer=self.layer,
                         fallback=fallback, weight=weight)
        t0 = time.perf_counter()
        if placed == "accelerator":
            operand = held[1] if weight and held[1] is not None else b
            out = np.asarray(self.acc.matmul(a, operand), dtype=np.int64)
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
        fn = ActivationFunction[function.upper()]
        acc = np.asarray(acc, dtype=np.int64)
        shape = {"elements": int(acc.size), "function": function}
        placed, reason, fallback = self._place("activation", shape)
        dec = OpDecision(name, "activation", shape, 0, placed, reason, layer=self.layer,
                         fallback=fallback)
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
        shape = {"params": int(params.size)}
        placed, reason, fallback = self._place("adam", shape)
        dec = OpDecision(name, "adam", shape, 0, placed, reason, layer=self.layer,
                         fallback=fallback)
        t0 = time.perf_counter()
        if placed == "accelerator":
            self.acc.adam_step(params, grads, m, v, **hp)
            self._device_record(dec)
        else:
            regs = hyperparameters(hp["lr"], hp.get("betas", (0.9, 0.999)), hp.get("eps", 1e-8),
                                   hp.get("weight_decay", 0.0), hp["step"],
                                   hp.get("decoupled", False))
            p2, m2, v2 = adam_model_step(params, grads, m, v, regs)
            params[...] = p2
            m[...] = m2
            v[...] = v2
        dec.wall_s = time.perf_counter() - t0
        self.ops.append(dec)
        return params, m, v

    # --- summaries -------------------------------------------------------------

    def summary(self, boards: list[BoardImage] | None = None, host_s: float = 0.0) -> dict:
        """Totals: MACs per side, device cycles, the link bytes of the device's
        ops (uploads of resident weights apart: ``resident_weights``), and the
        run projected onto each board image (default: :func:`hetaccel.host.planner.board_images` of the
        device's config; see :func:`project_ops`).

        ``host_s`` is the measured CPU time of the non-offloadable work (embeddings,
        softmax, ...), added to every board's projection.
        """
        boards = boards or board_images(self.config)
        off = sum(d.macs for d in self.ops if d.placed == "accelerator")
        cpu = sum(d.macs for d in self.ops if d.placed == "cpu")
        cycles = sum(d.device_cycles for d in self.ops if d.placed == "accelerator")
        weights = [(u["k"], u["n"]) for u in self.uploads]
        proj = {b.name: project_ops(self.ops, b, self.cost, host_s, weights) for b in boards}
        counts = {"accelerator": sum(d.placed == "accelerator" for d in self.ops),
                  "cpu": sum(d.placed == "cpu" for d in self.ops)}
        link = sum(d.device_bytes_in + d.device_bytes_out for d in self.ops
                   if d.placed == "accelerator")
        resident = [u for u in self.uploads if u["on_device"]]
        weights = {"declared": len(self.uploads), "on_device": len(resident),
                   "device_bytes": sum(resident_weight_bytes(self.config, u["k"], u["n"])
                                       for u in resident) if resident else 0,
                   "upload_wall_s": sum(u["wall_s"] for u in resident)}
        return {"offloaded_macs": int(off), "cpu_macs": int(cpu), "device_cycles": int(cycles),
                "link_bytes": int(link), "resident_weights": weights,
                "ops_on_accelerator": counts["accelerator"], "ops_on_cpu": counts["cpu"],
                "projected_latency_s": {k: v["latency_s"] for k, v in proj.items()},
                "projection": proj}

    def placement_table(self) -> list[dict]:
        """One row per (layer, op name, side): calls, MACs, cycles, bytes (summed) and
        the op shapes with their call counts (``shapes``), from which the planner
        projects the rows onto any board image."""
        rows: dict[tuple, dict] = {}
        shapes: dict[tuple, dict] = {}
        for d in self.ops:
            key = (d.layer, d.name.split("[")[0], d.placed)
            r = rows.setdefault(key, {"layer": d.layer, "op": key[1], "kind": d.kind,
                                      "placed": d.placed, "calls": 0, "macs": 0,
                                      "device_cycles": 0, "busy_cycles": 0, "gemm_busy": 0,
                                      "device_bytes": 0, "wall_s": 0.0, "reason": d.reason})
            r["calls"] += 1
            r["macs"] += d.macs
            r["device_cycles"] += d.device_cycles
            r["busy_cycles"] += sum(d.busy_cycles.values())
            r["gemm_busy"] += d.busy_cycles.get("gemm", 0)
            r["device_bytes"] += d.device_bytes_in + d.device_bytes_out
            r["wall_s"] += d.wall_s
            sk = tuple(sorted((k, v) for k, v in d.shape.items() if isinstance(v, int)))
            per = shapes.setdefault(key, {})
            per[sk] = per.get(sk, 0) + 1
        for key, r in rows.items():
            r["shapes"] = [{"shape": dict(sk), "calls": c} for sk, c in shapes[key].items()]
        return list(rows.values())
