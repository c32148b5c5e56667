"""``hetaccel bench gemm``: one GEMM through the MatmulEngine RTL, fed at full rate.

The cycle count is measured on the simulated RTL, from the cycle the first
weight row is accepted to the cycle after the last result row was written into
the accumulator memory (the engine's ``idle`` rising).  Result blocks are read
back through the engine's read port while later blocks compute and the whole
product is compared bit for bit with ``a.astype(int64) @ b.astype(int64)`` and
with the tile model.  ``model_cycles`` is :func:`hetaccel.host.planner.gemm_cycles`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from ..host.planner import gemm_cycles, plan_gemm
from ..rtl.engine import MatmulEngine
from ..spec import AcceleratorConfig, min_acc_bits
from ..verify.cocotb_runner import run_cocotb, stdout_to_stderr

HELP = "GEMM on the systolic engine RTL: measured cycles, utilisation, cycle model, bit-exactness"

__all__ = ["HELP", "add_arguments", "run", "bench_config"]


def add_arguments(parser) -> None:
    parser.add_argument("--rows", type=int, default=8, help="systolic array rows (K per tile)")
    parser.add_argument("--cols", type=int, default=8, help="systolic array columns (N per tile)")
    parser.add_argument("--m", type=int, default=128, help="rows of A and C")
    parser.add_argument("--k", type=int, default=384, help="columns of A, rows of B")
    parser.add_argument("--n", type=int, default=384, help="columns of B and C")
    parser.add_argument("--acc-depth", type=int, default=512,
                        help="accumulator rows (power of two); two regions of up to half of it "
                             "alternate so results are read while the next block computes")
    parser.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                        help="RTL simulator")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random int8 operands")


def bench_config(rows: int, cols: int, k: int, acc_depth: int = 512) -> AcceleratorConfig:
    """The default config resized to ``rows x cols``, with ``max_k`` covering ``k``."""
    max_k = max(4096, k)
    return AcceleratorConfig(rows=rows, cols=cols, max_k=max_k, acc_depth=acc_depth,
                             acc_bits=max(32, min_acc_bits(8, max_k)))


def run(args) -> dict:
    cfg = bench_config(args.rows, args.cols, args.k, args.acc_depth)
    plan = plan_gemm(cfg, args.m, args.k, args.n)   # validates the shape
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        request = {"m": args.m, "k": args.k, "n": args.n, "seed": args.seed, "out": str(out)}
        saved = dict(os.environ)
        try:
            with stdout_to_stderr():
                run_cocotb(MatmulEngine(cfg), toplevel=f"matmul_bench_{args.rows}x{args.cols}",
                           test_module="hetaccel.verify.systolic_tests", sim=args.sim,
                           testcase="gemm_bench", waves=False,
                           extra_env={"HETACCEL_CONFIG": cfg.to_json(),
                                      "HETACCEL_BENCH": json.dumps(request)})
        finally:
            os.environ.clear()
            os.environ.update(saved)
        measured = json.loads(out.read_text())
    wall = time.perf_counter() - t0
    cycles = measured["cycles"]
    ideal = args.m * args.k * args.n / (args.rows * args.cols)
    model = gemm_cycles(cfg, args.m, args.k, args.n, plan=plan)
    return {
        "rows": args.rows, "cols": args.cols, "m": args.m, "k": args.k, "n": args.n,
        "sim": args.sim,
        "cycles": cycles,
        "ideal_cycles": ideal,
        "utilization": ideal / cycles,
        "model_cycles": model,
        "model_error": (model - cycles) / cycles,
        "correct": measured["correct"],
        "tiles": measured["tiles"],
        "macs_per_cycle": args.m * args.k * args.n / cycles,
        "sim_s": measured["sim_s"],
        "wall_s": wall,
    }
