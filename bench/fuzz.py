"""``hetaccel bench fuzz``: long protocol fuzz of the RTL device against DeviceModel.

Sends ``--frames`` random and corrupted request units (see
:mod:`hetaccel.verify.fuzz_tests`) through the device's byte stream on a
simulator, compares every reply byte with the model, reads every scratchpad
back every ``--check-every`` units, and reports ``frames``, ``hangs``,
``silent_corruptions`` (memory or readback differing from the model),
``mismatches`` (a reply differing otherwise) and ``rejected`` (replies with a
non-OK status).  The run stops at the first failure, which is included.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ..rtl.device import Device
from ..spec import AcceleratorConfig
from ..verify.cocotb_runner import run_cocotb, stdout_to_stderr

HELP = "protocol fuzz of the whole RTL device against the device model"


def add_arguments(parser) -> None:
    parser.add_argument("--frames", type=int, default=10000, help="fuzz units to send")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument("--sim", default="verilator", choices=("verilator", "icarus"),
                        help="simulator")
    parser.add_argument("--check-every", type=int, default=500,
                        help="read all scratchpads back every N units (0: only at the end)")
    parser.add_argument("--config", default=None,
                        help="AcceleratorConfig as JSON (default: the small CI config)")


def run(args) -> dict:
    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    if args.config:
        cfg = AcceleratorConfig.from_json(args.config)
    else:
        cfg = AcceleratorConfig(rows=4, cols=4, input_depth=16, weight_depth=16, acc_depth=16,
                                output_depth=16, opt_depth=16, max_k=64, acc_bits=24,
                                act_param_depth=4, act_tables=3, max_payload=64)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "fuzz.json"
        t0 = time.perf_counter()
        with stdout_to_stderr():
            run_cocotb(Device(cfg), toplevel="hetaccel_device_fuzz", sim=args.sim,
                       test_module="hetaccel.verify.fuzz_tests", waves=False, check=False,
                       extra_env={"HETACCEL_CONFIG": cfg.to_json(),
                                  "HETACCEL_FUZZ_FRAMES": str(args.frames),
                                  "HETACCEL_FUZZ_SEED": str(args.seed),
                                  "HETACCEL_FUZZ_CHECK_EVERY": str(args.check_every),
                                  "HETACCEL_FUZZ_RESULT": str(result)})
        seconds = time.perf_counter() - t0
        if not result.exists():
            raise ValueError("the fuzz run produced no result (simulator failed to start?)")
        stats = json.loads(result.read_text())
    ok = (stats["frames"] == args.frames and stats["hangs"] == 0
          and stats["silent_corruptions"] == 0 and stats["mismatches"] == 0)
    return {
        "frames": stats["frames"], "hangs": stats["hangs"],
        "silent_corruptions": stats["silent_corruptions"], "rejected": stats["rejected"],
        "accepted": stats["accepted"], "mismatches": stats["mismatches"],
        "checkpoints": stats["checkpoints"], "kinds": stats["kinds"],
        "cycles": stats["cycles"], "seconds": round(seconds, 1), "sim": args.sim,
        "seed": args.seed, "config": cfg.to_dict(), "first_failure": stats["first_failure"],
        "ok": ok,
    }
