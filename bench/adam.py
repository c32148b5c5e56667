"""``hetaccel bench adam``: throughput of the AdamUnit RTL and fidelity of its arithmetic.

``params_per_cycle`` is measured on the generated RTL under Verilator with full
streams (cocotb counts the cycles between consecutive output transfers once the
pipeline is full); the error figures come from the bit-exact model
(``adam_model.adam_step``, equal to the RTL by the cocotb tests) against an
independent float64 implementation (``adam_model.adam_reference``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..rtl.adam import AdamUnit
from ..sim.adam_model import adam_reference, adam_step, hyperparameters
from ..spec import AcceleratorConfig
from ..verify.cocotb_runner import run_cocotb

HELP = "Adam unit: params/cycle on RTL (Verilator) and fp32 fidelity vs float64"

__all__ = ["HELP", "add_arguments", "run", "run_adam_cocotb", "fidelity", "trajectory"]


def run_adam_cocotb(config, sim: str, extra_env: dict | None = None,
                    testcase: str | None = None, toplevel: str | None = None, **kwargs):
    """Run ``hetaccel.verify.adam_tests`` against ``AdamUnit(config)`` on ``sim``."""
    env = {"HETACCEL_CONFIG": config.to_json(), **(extra_env or {})}
    return run_cocotb(AdamUnit(config), toplevel=toplevel or f"adam_unit_l{config.adam_lanes}",
                      test_module="hetaccel.verify.adam_tests", sim=sim, extra_env=env,
                      testcase=testcase, **kwargs)


def fidelity(n: int = 100_000, seed: int = 0, trials=None) -> dict:
    """Per-step parameter relative error of the fp32 unit against float64.

    Each trial draws realistic optimizer state (parameters ~ N(0, 1), gradients
    and first moments spanning several decades, v consistent with them), a
    step number and a mode, runs one step through the bit-exact model and the
    float64 reference on the *same* fp32 inputs, and collects per parameter
    ``|p_fp32 - p_f64| / max(|p_f64|, |p|)``: the error relative to the
    parameter's magnitude before or after the step, whichever is larger.
    Dividing by ``|p_f64|`` alone is also reported (``plain_rel_err_*``): it
    blows up where the step cancels the parameter (``p_f64`` near 0), which
    no fp32 implementation avoids since ``p - update`` then loses the leading
    digits of the update's own (~1e-7) rounding error.
    """
    rng = np.random.default_rng(seed)
    trials = trials or [
        dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, step=1, decoupled=False),
        dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, step=10, decoupled=True),
        dict(lr=3e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-4, step=1000, decoupled=False),
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.1, step=100_000, decoupled=True),
    ]
    errs, plain = [], []
    per_trial = max(1, n // len(trials))
    for kw in trials:
        p = rng.standard_normal(per_trial).astype(np.float32)
        scale = np.exp2(rng.uniform(-20, 0, per_trial))
        g = (rng.standard_normal(per_trial) * scale).astype(np.float32)
        m = (rng.standard_normal(per_trial) * scale).astype(np.float32)
        v = (np.abs(rng.standard_normal(per_trial)) * scale * scale).astype(np.float32)
        hp = hyperparameters(**kw)
        p32, _, _ = adam_step(p, g, m, v, hp)
        p64, _, _ = adam_reference(p, g, m, v, **kw)
        diff = np.abs(p32.astype(np.float64) - p64)
        errs.append(diff / np.maximum(np.abs(p64), np.abs(p.astype(np.float64))))
        plain.append(diff / np.abs(p64))
    err = np.concatenate(errs)
    plain = np.concatenate(plain)
    return {"rel_err_median": float(np.median(err)), "rel_err_max": float(np.max(err)),
            "plain_rel_err_median": float(np.median(plain)),
            "plain_rel_err_p9999": float(np.quantile(plain, 0.9999)),
            "plain_rel_err_max": float(np.max(plain)),
            "fidelity_params": int(err.size)}


def trajectory(steps: int = 1000, seed: int = 0, n: int = 64, lr: float = 1e-2,
               decoupled: bool = True, weight_decay: float = 1e-2) -> dict:
    """``steps`` Adam steps on a small quadratic, fp32 unit model vs float64.

    Loss ``0.5 * (p - c)^T A (p - c)`` with a fixed SPD ``A`` (condition ~100)
    and a target ``c``; both runs start from the same point and compute their
    own gradients (float32 run: gradient of its fp32 parameters, rounded to
    fp32; float64 run: exact).  Returns the final relative distance
    ``||p32 - p64|| / ||p64||`` and the largest one along the way.
    """
    rng = np.random.default_rng(seed + 1)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * np.geomspace(0.1, 10.0, n)) @ q.T
    c = rng.uniform(-1, 1, n)
    p0 = rng.uniform(-2, 2, n).astype(np.float32)
    betas, eps = (0.9, 0.999), 1e-8
    p32, m32, v32 = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    p64, m64, v64 = p0.astype(np.float64), np.zeros(n), np.zeros(n)
    worst = 0.0
    for t in range(1, steps + 1):
        hp = hyperparameters(lr, betas, eps, weight_decay, t, decoupled)
        g32 = (a @ (p32.astype(np.float64) - c)).astype(np.float32)
        p32, m32, v32 = adam_step(p32, g32, m32, v32, hp)
        g64 = a @ (p64 - c)
        p64, m64, v64 = adam_reference(p64, g64, m64, v64, lr=lr, betas=betas, eps=eps,
                                       weight_decay=weight_decay, step=t, decoupled=decoupled)
        rel = float(np.linalg.norm(p32 - p64) / np.linalg.norm(p64))
        worst = max(worst, rel)
    loss0 = float(0.5 * (p0 - c) @ a @ (p0 - c))
    loss = float(0.5 * (p64 - c) @ a @ (p64 - c))
    return {"trajectory_rel_err": rel, "trajectory_rel_err_worst": worst,
            "trajectory_steps": steps, "trajectory_loss_start": loss0, "trajectory_loss_end": loss}


def add_arguments(parser) -> None:
    parser.add_argument("--lanes", type=int, default=1, help="config.adam_lanes of the unit measured")
    parser.add_argument("--params", type=int, default=4096,
                        help="parameters streamed for the throughput measurement")
    parser.add_argument("--fidelity-params", type=int, default=100_000,
                        help="parameters per fidelity trial")
    parser.add_argument("--steps", type=int, default=1000, help="steps of the quadratic trajectory")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the data")
    parser.add_argument("--no-rtl", action="store_true",
                        help="skip the Verilator measurement (params_per_cycle is then null)")


def run(args) -> dict:
    config = AcceleratorConfig(adam_lanes=args.lanes)
    result: dict = {"lanes": config.adam_lanes}
    if not args.no_rtl:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "throughput.json"
            run_adam_cocotb(config, "verilator", testcase="test_adam_full_stream_throughput",
                            extra_env={"HETACCEL_ADAM_BENCH_OUT": str(out),
                                       "HETACCEL_ADAM_THROUGHPUT_N": str(args.params),
                                       "HETACCEL_ADAM_SEED": str(args.seed)},
                            waves=False)
            measured = json.loads(out.read_text())
        result.update(params_per_cycle=measured["params_per_cycle"],
                      pass_params_per_cycle=measured["pass_params_per_cycle"],
                      latency_cycles=measured["latency_cycles"],
                      measured_params=measured["params"])
    else:
        result["params_per_cycle"] = None
    result.update(fidelity(n=args.fidelity_params, seed=args.seed))
    result.update(trajectory(steps=args.steps, seed=args.seed))
    result["ok"] = bool(result["rel_err_median"] <= 1e-6 and result["rel_err_max"] <= 1e-5
                        and result["trajectory_rel_err"] <= 1e-5)
    return result
