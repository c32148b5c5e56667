"""``hetaccel bench runtime``: one large linear/matmul through the runtime.

Reports the device cycles the operation took, the wall time, device cycles per
wall second (the backend's simulation speed), unit utilisation, the board
projection, and — compared with the same product in NumPy float32 — how fast
the backend is relative to the CPU doing it alone.  The result is checked
against the bit-exact models (``correct``).  ``host_cpu_s`` is this process's
CPU time for the operation and ``simulator_cpu_s`` the simulator process's
(rtl): on a loaded machine ``device_cycles_per_simulator_cpu_s`` is the
steadier measure of simulation speed than the wall-clock rate.

``--resident`` uploads the weights to the device memory first
(:meth:`~hetaccel.host.Accelerator.upload`, reported apart as ``upload``) and
runs the operation on the resident tensor: the weights stay off the link.

``--board`` runs the operation on that board's image (the emulator or the RTL
of its array, units, memories, clock and baud) and projects it there;
``--config FILE`` applies a JSON file of config fields on top (the format
``hetaccel build --config`` reads).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..host.accelerator import Accelerator
from ..sim import activation_model as am
from ..spec import DEFAULT_CONFIG, ActivationFunction

HELP = "runtime throughput: a large linear/matmul on the emu or rtl backend"

#: --board/--config, as run/train/demo take them: the command line resolves them
#: into ``args.image`` (its ``name``, ``config``, ``profile_board``, ``describe``)
IMAGE_OPTIONS = True


def add_arguments(parser) -> None:
    parser.add_argument("--backend", choices=("emu", "rtl"), default="emu",
                        help="where the operation runs")
    parser.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                        help="simulator of the rtl backend")
    parser.add_argument("--harness", choices=("native", "cocotb"), default=None,
                        help="rtl driver: generated C++ (Verilator default) or the cocotb bridge")
    parser.add_argument("--op", choices=("linear", "matmul"), default=None,
                        help="int8 linear (GEMM + requant/activation) or plain int8 matmul "
                             "(default: linear, or matmul on an image without the activation "
                             "unit)")
    parser.add_argument("--m", type=int, default=None, help="rows of x (default 128 emu, 32 rtl)")
    parser.add_argument("--k", type=int, default=None, help="reduction (default 384 emu, 128 rtl)")
    parser.add_argument("--n", type=int, default=None,
                        help="output features (default 1536 emu, 128 rtl)")
    parser.add_argument("--activation", default="gelu",
                        help="activation of the linear (none, relu, sigmoid, tanh, gelu)")
    parser.add_argument("--resident", action="store_true",
                        help="upload the weights to the device memory once and run on the "
                             "resident tensor (needs a config with device_memory)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of the operation; the fastest is reported")


def _proc_cpu(pid) -> float | None:
    """CPU seconds used so far by process ``pid`` (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return None


def run(args) -> dict:
    image = args.image
    config = image.config or DEFAULT_CONFIG
    op = args.op or ("linear" if config.has_activation else "matmul")
    if op == "linear" and not config.has_activation:
        raise ValueError(f"--op linear needs the activation unit and image {image.name!r} "
                         f"has none (has_activation=False); use --op matmul")
    rtl = args.backend == "rtl"
    m = args.m or (32 if rtl else 128)
    k = args.k or (128 if rtl else 384)
    n = args.n or (128 if rtl else 1536)
    if args.repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    if args.resident and config.memory is None:
        raise ValueError(f"--resident needs device memory and image {image.name!r} has none "
                         f"(device_memory='none'); add it with --config")
    act = None if args.activation.lower() == "none" else args.activation.lower()
    fn = ActivationFunction[(act or "none").upper()]
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    bias = rng.integers(-4096, 4096, n).astype(np.int32)
    scale = np.full(n, 1.0 / (128 * 128 * np.sqrt(k) / 16))
    table_scales = (1.0 / 16, 1.0 / 32)

    opened = time.perf_counter()
    options = {"sim": args.sim, "harness": args.harness} if rtl else {}
    with Accelerator.open(args.backend, config=config, board=image.profile_board,
                          **options) as acc:
        start_s = time.perf_counter() - opened
        upload = None
        weight = w if op == "linear" else w.T
        if args.resident:
            t0 = time.perf_counter()
            weight = acc.upload(w, layout="linear") if op == "linear" else acc.upload(w.T.copy())
            up = acc.profile.last.as_dict()
            upload = {"bytes": weight.nbytes, "wall_s": time.perf_counter() - t0,
                      "device_bytes_in": up["device_bytes_in"],
                      "projection": up["projection"]}
        best = None
        for _ in range(args.repeat):
            c0 = acc.transport.device_cycles
            pid = getattr(acc.transport, "pid", None)
            s0 = _proc_cpu(pid) if pid else None
            p0 = time.process_time()
            t0 = time.perf_counter()
            if op == "linear":
                y = acc.linear(x, weight, bias, act, scale=scale, table_scales=table_scales)
            else:
                y = acc.matmul(x, weight)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - p0
            s1 = _proc_cpu(pid) if pid else None
            sim_cpu = s1 - s0 if s0 is not None and s1 is not None else None
            sim_cycles = acc.transport.device_cycles - c0
            rec = acc.profile.last
            if best is None or wall < best[0]:
                best = (wall, rec, sim_cycles, y, cpu, sim_cpu)
        wall, rec, sim_cycles, y, cpu, sim_cpu = best

    accv = x.astype(np.int64) @ w.T.astype(np.int64)
    if op == "linear":
        mult, shift = am.quantize_multiplier(scale)
        table = am.build_table(fn, *table_scales) if fn in am.TABLE_FUNCTIONS else None
        ref = am.apply(accv, bias, mult, shift, fn, 0, table)
    else:
        ref = accv
    correct = bool(np.array_equal(y, ref))

    xf, wf = x.astype(np.float32), w.T.astype(np.float32).copy()
    np_times, np_cpu = [], []
    for _ in range(5):
        p0 = time.process_time()
        t0 = time.perf_counter()
        xf @ wf
        np_times.append(time.perf_counter() - t0)
        np_cpu.append(time.process_time() - p0)
    np_s = min(np_times)
    # CYCLES on the emulator are the model's compute prediction; on rtl the counter
    # counts every simulated cycle the op spanned (link time included).
    d = rec.as_dict()
    return {
        "backend": args.backend + (f"/{args.sim}/{acc.transport.harness}" if rtl else ""),
        "op": op, "activation": act or "none",
        "image": image.describe(config),
        "shape": {"m": m, "k": k, "n": n},
        "config": {"rows": config.rows, "cols": config.cols, "max_payload": config.max_payload},
        "correct": correct,
        "device_cycles": d["device_cycles"],
        "simulated_cycles": int(sim_cycles),
        "wall_s": wall,
        "device_cycles_per_s": (sim_cycles if rtl else d["device_cycles"]) / wall,
        "utilization": d["utilization"],
        "busy_cycles": d["busy_cycles"],
        "device_bytes_in": d["device_bytes_in"], "device_bytes_out": d["device_bytes_out"],
        "resident": bool(args.resident), "upload": upload,
        "dma_cycles": d["dma_cycles"], "dram_bytes": d["dram_bytes"],
        "frames": d["frames"], "retries": d["retries"],
        "host_cpu_s": cpu,
        "simulator_cpu_s": sim_cpu,
        "device_cycles_per_simulator_cpu_s": (sim_cycles / sim_cpu) if sim_cpu else None,
        "numpy_f32_s": np_s,
        "numpy_f32_cpu_s": min(np_cpu),
        "speed_vs_numpy_f32": np_s / wall,
        "startup_s": start_s,
        "projection": d["projection"],
    }
