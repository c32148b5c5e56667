"""``hetaccel bench activations``: accuracy of every function and precision
against float64 math, and the unit's throughput measured on the RTL.

Accuracy (from the bit-exact model, which the RTL tests prove equal to the
hardware):

* INT8, SIGMOID/TANH/GELU: every one of the 256 table entries under
  ``--pairs`` random (in_scale, out_scale, out_zero) pairs plus fixed ones,
  against the exact function (the exact value clipped to [-128, 127]:
  saturation is the format's range, not an approximation error);
* INT8 and FIXED16, NONE/RELU: requantisation of random accumulators with
  random per-channel scales against ``(acc + bias) * real_scale`` in float64;
* FIXED16, SIGMOID/TANH/GELU: all 65536 Q4.12 inputs against the exact
  function in output LSBs (Q1.14 for sigmoid/tanh, Q4.12 for GELU).

Throughput: the cocotb throughput test on Verilator (or Icarus) with valid and
ready held high; ``elements_per_cycle = lanes * rows / cycles`` between the
first result and the last (steady state), plus the figure including the
pipeline fill.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

from ..rtl.activation import ActivationUnit
from ..sim import activation_model as am
from ..spec import AcceleratorConfig, ActivationFunction as AF, ActivationPrecision as AP
from ..verify.cocotb_runner import run_cocotb, stdout_to_stderr

HELP = "activation unit: error vs float64 per function/precision, elements/cycle on RTL"

INT8_LIMIT = 0.5
FIXED16_LIMIT = 2.0
# Multiplier quantisation (relative 2**-31) can move an exact tie by ~1e-7 LSB.
SLACK = 1e-6


def add_arguments(parser) -> None:
    parser.add_argument("--sim", choices=("verilator", "icarus", "none"), default="verilator",
                        help="simulator for the throughput measurement ('none' skips it)")
    parser.add_argument("--lanes", type=int, default=4,
                        help="lanes (config.cols) of the unit measured on RTL")
    parser.add_argument("--rows", type=int, default=512,
                        help="rows streamed in the throughput measurement")
    parser.add_argument("--pairs", type=int, default=32,
                        help="random scale pairs per table function")
    parser.add_argument("--samples", type=int, default=200_000,
                        help="random accumulators for the requantisation error")
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def _stats(err: np.ndarray) -> dict:
    return {"max_err_lsb": float(err.max()), "mean_err_lsb": float(err.mean()),
            "samples": int(err.size)}


def _table_errors(fn: AF, rng, pairs: int) -> np.ndarray:
    """Errors of every table entry over fixed and random scale pairs."""
    lo, hi = {AF.SIGMOID: (-8, 8), AF.TANH: (-4, 4), AF.GELU: (-6, 6)}[fn]
    cases = []
    for _ in range(pairs):
        in_scale = float(np.exp(rng.uniform(np.log(0.2 * hi / 128), np.log(4 * hi / 128))))
        in_zero = int(rng.integers(-20, 21))
        if fn == AF.SIGMOID:
            out_scale, out_zero = float(rng.uniform(1 / 256, 1 / 200)), -128
        elif fn == AF.TANH:
            out_scale, out_zero = float(rng.uniform(1 / 128, 1 / 100)), 0
        else:
            top = max(abs(in_scale * (-128 - in_zero)), abs(in_scale * (127 - in_zero)))
            out_scale, out_zero = float(top / 127 * rng.uniform(0.5, 1.0)), int(rng.integers(-10, 11))
        cases.append((in_scale, out_scale, in_zero, out_zero))
    cases += [(hi / 128, (1 / 255 if fn == AF.SIGMOID else hi / 127), 0,
               -128 if fn == AF.SIGMOID else 0)]
    errs = [am.table_error_lsb(am.build_table(fn, *c), fn, *c) for c in cases]
    return np.concatenate(errs)


def _requant_errors(fn: AF, prec: AP, rng, n: int) -> np.ndarray:
    """|unit - float64| for NONE/RELU over random accumulators and scales."""
    lanes = 16
    acc = rng.integers(-(1 << 24), 1 << 24, (n // lanes, lanes)) >> rng.integers(0, 20, (1, lanes))
    bias = rng.integers(-(1 << 16), 1 << 16, lanes)
    top = 127 if prec == AP.INT8 else 32767
    # Scales that map typical sums onto (a bit beyond) the output range.
    span = np.abs(acc + bias).max(axis=0) + 1
    real = top / span * np.exp(rng.uniform(np.log(0.05), np.log(1.5), lanes))
    mult, shift = am.quantize_multiplier(real)
    got = am.apply(acc, bias, mult, shift, fn, prec).astype(np.float64)
    exact = am.reference_function(fn, (acc + bias) * real)
    lo = -128 if prec == AP.INT8 else -32768
    return np.abs(got - np.clip(exact, lo, top))


def accuracy(seed: int = 0, pairs: int = 32, samples: int = 200_000) -> dict:
    """Error figures of every function and precision (model = RTL, bit-exact)."""
    rng = np.random.default_rng(seed)
    out: dict = {}
    allq = np.arange(-32768, 32768)
    for fn in AF:
        row = {}
        if fn in am.TABLE_FUNCTIONS:
            row["int8"] = _stats(_table_errors(fn, rng, pairs))
            got = am.fixed_function(fn, allq).astype(np.float64)
            row["fixed16"] = _stats(np.abs(got - am.fixed_reference(fn, allq)))
        else:
            row["int8"] = _stats(_requant_errors(fn, AP.INT8, rng, samples))
            row["fixed16"] = _stats(_requant_errors(fn, AP.FIXED16, rng, samples))
        row["int8"]["method"] = ("256-entry table, correctly rounded" if fn in am.TABLE_FUNCTIONS
                                 else "requantisation only")
        row["fixed16"]["method"] = {
            AF.SIGMOID: "PWL sigma, 256 segments of 1/16 (Q4.12 -> Q1.14)",
            AF.TANH: "2*sigma(2x)-1 from the same PWL (Q4.12 -> Q1.14)",
            AF.GELU: "x*Phi(x), Phi by PWL (Q4.12 -> Q4.12), vs exact erf-GELU",
        }.get(fn, "requantisation only (Q4.12)")
        out[fn.name.lower()] = row
    # For the record: the x*sigma(1.702x) approximation this unit does NOT use.
    x = allq / 4096.0
    approx = x * am.reference_function(AF.SIGMOID, 1.702 * x)
    out["gelu"]["x_sigmoid_1p702x_err_lsb_q412"] = float(
        np.abs(approx - am.reference_function(AF.GELU, x)).max() * 4096)
    return out


def throughput(sim: str, lanes: int, rows: int) -> dict:
    """Run the cocotb full-rate test on ``sim`` and return its measurement."""
    cfg = AcceleratorConfig(rows=2, cols=lanes, act_param_depth=16, act_tables=4)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "throughput.json")
        with stdout_to_stderr():
            run_cocotb(ActivationUnit(cfg), toplevel=f"activation_unit_bench_l{lanes}",
                       test_module="hetaccel.verify.activation_tests", sim=sim,
                       testcase="test_full_rate_throughput", waves=False,
                       extra_env={"HETACCEL_CONFIG": cfg.to_json(),
                                  "HETACCEL_ACT_BENCH_OUT": path,
                                  "HETACCEL_ACT_THROUGHPUT_ROWS": str(rows)})
        with open(path) as f:
            return json.load(f)


def run(args) -> dict:
    if args.lanes < 1 or args.lanes > 64:
        raise ValueError(f"--lanes must be in [1, 64], got {args.lanes}")
    if args.rows < 1:
        raise ValueError(f"--rows must be positive, got {args.rows}")
    if args.pairs < 1 or args.samples < 16:
        raise ValueError("--pairs must be >= 1 and --samples >= 16")
    t0 = time.time()
    acc = accuracy(args.seed, args.pairs, args.samples)
    result: dict = {"functions": acc}
    ok = all(r["int8"]["max_err_lsb"] <= INT8_LIMIT + SLACK for r in acc.values()) and \
        all(r["fixed16"]["max_err_lsb"] <= FIXED16_LIMIT for r in acc.values())
    if args.sim != "none":
        tp = throughput(args.sim, args.lanes, args.rows)
        result.update({"sim": args.sim, "lanes": tp["lanes"], "rows": tp["rows"],
                       "elements_per_cycle": tp["elements_per_cycle_steady"],
                       "elements_per_cycle_with_fill": tp["elements_per_cycle_with_fill"],
                       "latency_cycles": tp["latency_cycles"]})
        ok = ok and tp["elements_per_cycle_steady"] == tp["lanes"]
    result["limits_lsb"] = {"int8": INT8_LIMIT, "fixed16": FIXED16_LIMIT}
    result["ok"] = bool(ok)
    result["wall_s"] = round(time.time() - t0, 2)
    return result
