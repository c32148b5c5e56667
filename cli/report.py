"""``hetaccel report``: PNG plots of a run and of the boards.

* ``utilisation.png`` — per encoder layer, the fraction of the array's peak MACs
  that did useful work and the busy fraction of the matmul engine, from a run's
  JSON (``hetaccel run minilm --json > run.json``; ``--run run.json``) or, without
  one, from the engine's cycle model (:func:`hetaccel.sim.systolic_model.gemm_cycles`)
  for MiniLM at ``--tokens`` tokens;
* ``roofline.png`` — the board's roofline (peak MAC rate at its clock, link
  bandwidth at its baud) with every op of the run placed at its arithmetic
  intensity (MACs per link byte) and attained rate;
* ``boards.png`` — resources used vs available and Fmax vs target per board, from
  the board builds' ``report.json`` (``hetaccel build --board NAME``, under
  ``--boards-dir``); skipped with a note when no build report exists.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["HELP", "add_arguments", "run", "modelled_run"]

HELP = ("write PNG plots: utilisation per layer, the board's roofline with each op placed on "
        "it, resources and Fmax per board")


def add_arguments(parser) -> None:
    parser.add_argument("--run", type=Path, default=None,
                        help="a run's JSON (from 'hetaccel run minilm --json'); default: the "
                             "cycle model of MiniLM at --tokens tokens")
    parser.add_argument("--tokens", type=int, default=32,
                        help="sentence length of the modelled run (without --run)")
    parser.add_argument("--board", default="ulx3s-85f",
                        help="board whose roofline is drawn ('config' = the default config's "
                             "own clock and baud)")
    parser.add_argument("--boards-dir", type=Path, default=Path("build/boards"),
                        help="where 'hetaccel build' left <board>/report.json")
    parser.add_argument("--out", type=Path, default=Path("build/report"),
                        help="directory for the PNG files")


def modelled_run(tokens: int = 32, config=None) -> dict:
    """Placement rows of MiniLM for one sentence of ``tokens`` tokens from the
    cycle model (no device run): the same shape as a run's ``placement_table``."""
    from ..spec import DEFAULT_CONFIG
    from ..workloads.bert import BertConfig, packaged_model_dir
    from ..workloads.placement import CostModel

    if not isinstance(tokens, int) or not 1 <= tokens <= 512:
        raise ValueError(f"tokens must be an integer in [1, 512], got {tokens!r}")
    config = config or DEFAULT_CONFIG
    cfg = BertConfig.from_dict(json.loads((packaged_model_dir() / "config.json").read_text()))
    cm = CostModel(config)
    H, I, nh, d = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.head_dim
    T = tokens
    ops = [("q", T, H, H, 2), ("k", T, H, H, 2), ("v", T, H, H, 2), ("attn_qk", T, d, T, nh),
           ("attn_pv", T, T, d, 2 * nh), ("o", T, H, H, 2), ("up", T, H, I, 2),
           ("down", T, I, H, 3)]
    rows = []
    for layer in range(cfg.num_hidden_layers):
        for name, m, k, n, calls in ops:
            busy = cm.gemm_cycles(m, k, n) * calls
            bi, bo = cm.gemm_link_bytes(m, k, n)
            # the device waits for the link: its cycles are the larger of the two
            link_cycles = max(bi, bo) * 10 / config.baud * config.clock_hz * calls
            rows.append({"layer": f"layer{layer}", "op": name, "kind": "matmul",
                         "placed": "accelerator", "calls": calls, "macs": m * k * n * calls,
                         "device_cycles": int(max(busy, link_cycles)), "busy_cycles": busy,
                         "device_bytes": (bi + bo) * calls, "wall_s": 0.0})
    return {"placement_table": rows, "source": f"cycle model, {T} tokens",
            "peak_macs_per_cycle": config.macs}


def _load_run(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"run file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from exc
    if "placement_table" not in data:
        raise ValueError(f"{path} has no 'placement_table': produce it with "
                         f"'hetaccel run minilm --json > {path.name}'")
    data.setdefault("source", str(path))
    return data


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_utilisation(run: dict, path: Path, peak: int) -> Path:
    plt = _plt()
    layers: dict = {}
    for r in run["placement_table"]:
        if r.get("placed") != "accelerator" or not r.get("layer", "").startswith("layer"):
            continue
        a = layers.setdefault(r["layer"], {"macs": 0, "cycles": 0, "busy": 0})
        a["macs"] += r["macs"]
        a["cycles"] += r["device_cycles"]
        a["busy"] += r.get("busy_cycles", 0)
    names = sorted(layers, key=lambda s: int(s[5:]))
    mac = [layers[n]["macs"] / max(1, layers[n]["cycles"] * peak) for n in names]
    busy = [min(1.0, layers[n]["busy"] / max(1, layers[n]["cycles"])) for n in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, mac, 0.4, label="MAC utilisation (useful MACs / peak)")
    ax.bar(x + 0.2, busy, 0.4, label="engine busy / device cycles")
    for xi, (a, b) in enumerate(zip(mac, busy)):
        ax.annotate(f"{100 * a:.3g}%", (xi - 0.2, max(a, 1e-5)), ha="center", va="bottom",
                    fontsize=7)
        ax.annotate(f"{100 * b:.3g}%", (xi + 0.2, max(b, 1e-5)), ha="center", va="bottom",
                    fontsize=7)
    ax.set_xticks(x, names)
    # log scale: on a UART-linked board the link keeps utilisation far below 1
    ax.set_yscale("log")
    ax.set_ylim(1e-5, 20)
    ax.set_ylabel("fraction (log)")
    ax.set_title(f"Utilisation per layer ({run.get('source', 'run')})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roofline(run: dict, board: dict, path: Path, peak: int) -> Path:
    plt = _plt()
    peak_rate = peak * board["clock_hz"]                  # MAC/s
    bw = board["baud"] / 10.0                              # bytes/s, 8N1
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ridge = peak_rate / bw
    xs = np.logspace(-2, math.log10(ridge) + 1, 200)
    ax.loglog(xs, np.minimum(peak_rate, bw * xs), "k-", lw=2, label="roofline")
    ax.axhline(peak_rate, color="gray", ls=":", lw=1)
    ax.axvline(ridge, color="gray", ls=":", lw=1)
    agg: dict = {}
    for r in run["placement_table"]:
        if r.get("placed") != "accelerator" or r.get("macs", 0) == 0:
            continue
        a = agg.setdefault(r["op"], {"macs": 0, "bytes": 0, "cycles": 0})
        a["macs"] += r["macs"]
        a["bytes"] += r.get("device_bytes", 0)
        a["cycles"] += r.get("busy_cycles", r["device_cycles"])
    for op, a in agg.items():
        if a["bytes"] <= 0:
            continue
        intensity = a["macs"] / a["bytes"]
        t = max(a["cycles"] / board["clock_hz"], a["bytes"] * 10 / board["baud"])
        ax.loglog([intensity], [a["macs"] / t], "o", label=op)
    ax.set_xlabel("arithmetic intensity (MACs per link byte)")
    ax.set_ylabel("MAC/s")
    ax.set_title(f"Roofline of {board['board']} ({board['clock_hz'] / 1e6:g} MHz, "
                 f"{board['baud'] / 1e6:g} Mbaud); ridge at {ridge:.3g} MAC/B")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_boards(reports: list[dict], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    res = ("luts", "ffs", "dsps", "brams")
    width = 0.8 / max(1, len(reports))
    for i, r in enumerate(reports):
        avail = r.get("available", {})
        frac = [r.get(k, 0) / avail[k] if avail.get(k) else 0 for k in res]
        axes[0].bar(np.arange(len(res)) + i * width, frac, width,
                    label=f"{r['board']} ({r.get('core', '?')})")
    axes[0].set_xticks(np.arange(len(res)) + width * (len(reports) - 1) / 2, res)
    axes[0].set_ylabel("used / available")
    axes[0].set_title("Resources")
    axes[0].legend(fontsize=7)
    names = [r["board"] for r in reports]
    axes[1].bar(np.arange(len(reports)) - 0.2, [r.get("fmax_mhz") or 0 for r in reports], 0.4,
                label="Fmax achieved")
    axes[1].bar(np.arange(len(reports)) + 0.2, [r.get("target_mhz") or 0 for r in reports], 0.4,
                label="target")
    axes[1].set_xticks(np.arange(len(reports)), names)
    axes[1].set_ylabel("MHz")
    axes[1].set_title("Fmax per board")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args) -> dict:
    from ..spec import DEFAULT_CONFIG
    from ..workloads.placement import available_boards

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _load_run(args.run) if args.run is not None else modelled_run(args.tokens)
    peak = int(data.get("peak_macs_per_cycle", DEFAULT_CONFIG.macs))
    boards = {b["board"]: b for b in available_boards(DEFAULT_CONFIG)}
    if args.board not in boards:
        raise ValueError(f"unknown board {args.board!r}; known: {', '.join(boards)}")
    files = [str(plot_utilisation(data, out / "utilisation.png", peak)),
             str(plot_roofline(data, boards[args.board], out / "roofline.png", peak))]
    reports = []
    bdir = Path(args.boards_dir)
    for p in sorted(bdir.glob("*/report.json")) if bdir.is_dir() else []:
        try:
            reports.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    note = None
    if reports:
        files.append(str(plot_boards(reports, out / "boards.png")))
    else:
        note = (f"no board build reports under {bdir}: run 'hetaccel build --board NAME' "
                f"first for boards.png")
    result = {"files": files, "source": data.get("source"), "board": args.board}
    if note:
        result["note"] = note
    return result
