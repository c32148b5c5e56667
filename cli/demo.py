"""``hetaccel demo`` (what ``make demo`` runs): the whole story in one command.

1. generate the accelerator's Verilog (:class:`hetaccel.rtl.device.Device`): the
   default config's, or with ``--board``/``--config`` that image's;
2. run a handful of MiniLM sentences through the emulator of that image, every
   matmul and GELU on the device (a GELU on the CPU, bit-exact, when the image
   has no activation unit), and compare the embeddings with the float32 reference;
3. cross-check one encoder layer on the RTL backend (the generated Verilog in
   Verilator) bit for bit against the emulator;
4. print fidelity, device cycles, placement and the run projected onto each board
   image: the planner plans every op of the run again on the image's own array,
   memories, clock and link; an op whose unit the image lacks is host time there
   (``cpu ops``), never device time.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

__all__ = ["HELP", "IMAGE_OPTIONS", "add_arguments", "run"]

#: --board/--config: the command line resolves them into ``args.image``
IMAGE_OPTIONS = True

HELP = ("end-to-end demo: generate the accelerator, run MiniLM sentences on the emulator, "
        "cross-check a layer on the RTL bit for bit, print fidelity/cycles/placement/latency")

DEMO_SENTENCES = [
    "Hello world.",
    "A man is playing a guitar.",
    "The café serves crème brûlée!",
    "Is it raining?",
]


def add_arguments(parser) -> None:
    parser.add_argument("--sentences", type=int, default=len(DEMO_SENTENCES),
                        help=f"how many of the demo sentences to run (1..{len(DEMO_SENTENCES)})")
    parser.add_argument("--rtl-check", choices=("layer", "linear", "none"), default="layer",
                        help="what to cross-check on the RTL backend: one whole encoder layer, "
                             "one linear (layer 0's Q projection), or nothing")
    parser.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                        help="simulator of the RTL cross-check")
    parser.add_argument("--out", type=Path, default=Path("build/demo"),
                        help="directory for the generated Verilog and the run's JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")


def _say(msg: str, quiet: bool) -> None:
    import sys

    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def print_projection(projection: dict, file=None) -> None:
    """One line per board image: its array and clock, where the run's ops go, the latency."""
    import sys

    file = file or sys.stdout
    print(f"{'board':<12}{'array':>7}{'MHz':>8}{'baud':>9}{'device ops':>11}{'cpu ops':>9}"
          f"{'device s':>10}{'cpu s':>8}{'host s':>8}{'latency s':>11}  bound", file=file)
    missing = set()
    for name, b in projection.items():
        missing.update(b["missing_units"])
        print(f"{name:<12}{str(b['rows']) + 'x' + str(b['cols']):>7}{b['clock_hz'] / 1e6:>8g}"
              f"{b['baud']:>9}{b['device_ops']:>11}{b['cpu_ops']:>9}{b['device_s']:>10.3f}"
              f"{b['cpu_s']:>8.3f}{b['host_s']:>8.3f}{b['latency_s']:>11.3f}  {b['bound']}",
              file=file)
    if missing:
        print(f"cpu ops: the image has no {' or '.join(sorted(missing))} unit, so the host "
              f"computes them", file=file)
    print(file=file)


def run(args) -> dict:
    import json

    from ..rtl.device import Device
    from ..verify.checking import assert_bit_exact
    from ..verify.verilog import export_verilog
    from ..spec import DEFAULT_CONFIG
    from ..host.accelerator import Accelerator
    from ..workloads.bert import BertModel
    from .commands import Progress, print_placement
    from ..workloads.encoder import QuantizedEncoder, run_encoder
    from ..workloads.placement import Executor

    if not 1 <= args.sentences <= len(DEMO_SENTENCES):
        raise ValueError(f"--sentences must be in [1, {len(DEMO_SENTENCES)}], got {args.sentences}")
    import resource

    def children_cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    t_start = time.perf_counter()
    c_start = time.process_time() - children_cpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image = args.image
    cfg = image.config or DEFAULT_CONFIG
    board = image.profile_board
    label = image.name if image.config is not None else "default"

    _say(f"[1/4] generating the {label} accelerator ({cfg.rows}x{cfg.cols} int8 array) ...",
         args.quiet)
    t0 = time.perf_counter()
    vpath = export_verilog(Device(cfg), "hetaccel_device", out)
    verilog_s = time.perf_counter() - t0
    n_lines = sum(1 for _ in vpath.open())

    where = ("all matmuls and GELU on the device" if cfg.has_activation else
             "all matmuls on the device, GELU on the CPU: the image has no activation unit")
    _say(f"[2/4] MiniLM on the emulator ({where}) ...", args.quiet)
    model = BertModel.packaged_minilm()
    sentences = DEMO_SENTENCES[: args.sentences]
    t0 = time.perf_counter()
    with Accelerator.open("emu", config=cfg, board=board) as acc:
        ex = Executor(acc, "accelerator")
        result, emb = run_encoder(model, sentences, ex,
                                  progress=Progress("MiniLM on emu", enabled=not args.quiet))
    emu_s = time.perf_counter() - t0

    rtl = {"check": args.rtl_check}
    if args.rtl_check != "none":
        _say(f"[3/4] cross-checking {args.rtl_check} on the RTL ({args.sim}) bit for bit ...",
             args.quiet)
        ids = model.tokenize(sentences[0]).ids[:6]
        t0 = time.perf_counter()
        x0 = model.embed(ids)
        if args.rtl_check == "layer":
            with Accelerator.open("emu", config=cfg) as acc:
                want = QuantizedEncoder(model, Executor(acc, "accelerator")).layer(0, x0)
            with Accelerator.open("rtl", config=cfg, sim=args.sim) as acc:
                got = QuantizedEncoder(model, Executor(acc, "accelerator")).layer(0, x0)
        else:
            from ..workloads import quantize as Q

            s = Q.split_rows(x0)
            w = np.ascontiguousarray(Q.quantize_weight(model.layers[0]["q.weight"]).values.T)
            with Accelerator.open("emu", config=cfg) as acc:
                want = np.stack([acc.matmul(s.hi, w), acc.matmul(s.lo, w)])
            with Accelerator.open("rtl", config=cfg, sim=args.sim) as acc:
                got = np.stack([acc.matmul(s.hi, w), acc.matmul(s.lo, w)])
        assert_bit_exact(want, got, f"RTL vs emulator, {args.rtl_check} of layer 0")
        rtl.update({"tokens": int(len(ids)), "bit_exact": True, "elements": int(want.size),
                    "sim": args.sim, "wall_s": time.perf_counter() - t0})
    else:
        _say("[3/4] RTL cross-check skipped (--rtl-check none)", args.quiet)

    _say("[4/4] results", args.quiet)
    (out / "run.json").write_text(json.dumps(result, default=float))
    if not args.json:
        print(f"Image: {image.name} ({cfg.rows}x{cfg.cols} array, {cfg.clock_hz / 1e6:g} MHz, "
              f"{cfg.baud} baud, activation unit: {'yes' if cfg.has_activation else 'no'}, "
              f"Adam unit: {'yes' if cfg.has_adam else 'no'})")
        print(f"Verilog: {vpath} ({n_lines} lines, {verilog_s:.1f} s)")
        print()
        print(f"{'sentence':<36}{'tokens':>7}{'cosine vs float32':>19}")
        for s in result["sentences"]:
            print(f"{s['text']:<36}{s['tokens']:>7}{s['cosine']:>19.5f}")
        print()
        print_placement(result["placement_table"])
        print_projection(result["projection"])
    return {
        "image": image.describe(cfg),
        "verilog": str(vpath),
        "sentences": len(sentences),
        "min_cosine": result["min_cosine"],
        "mean_cosine": result["mean_cosine"],
        "device_cycles": result["device_cycles"],
        "offloaded_macs": result["offloaded_macs"],
        "cpu_macs": result["cpu_macs"],
        "projected_latency_s": result["projected_latency_s"],
        "projection": {name: {k: v for k, v in b.items()
                              if k in ("rows", "cols", "macs", "clock_hz", "baud", "device_ops",
                                       "cpu_ops", "missing_units", "device_s", "cpu_s", "host_s",
                                       "latency_s", "bound")}
                       for name, b in result["projection"].items()},
        "rtl_check": rtl,
        "emulator_wall_s": emu_s,
        "wall_s": time.perf_counter() - t_start,
        # CPU seconds of this process plus the finished simulator children: the
        # wall time on an otherwise idle machine, since every stage is serial
        "cpu_s": time.process_time() + children_cpu() - c_start,
        "ok": bool(result["min_cosine"] >= 0.995 and rtl.get("bit_exact", True)),
    }
