"""``hetaccel report``: PNG plots of a run and of the boards, and per-board figures.

Every figure comes from the planner (:mod:`hetaccel.host.planner`) on each board
image's own config (array, memories, clock, link): the run's ops (from a run's
JSON, ``hetaccel run minilm --json > run.json``; ``--run run.json``, or without one
MiniLM at ``--tokens`` tokens) are planned again on every image.

* ``utilisation.png`` — per encoder layer, the MAC utilisation
  (:func:`hetaccel.host.planner.utilisation`: useful MACs / (image MACs x matmul
  engine busy cycles)) on every board image, and for ``--run`` the utilisation
  the run's own counters measured on its config (the same definition);
* ``roofline.png`` — the ``--board`` image's roofline (peak 2 x MACs x clock
  operations/s, the link at its baud) with every op of the run placed at its
  arithmetic intensity (operations per link byte) and attained rate;
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
                             "planner's model of MiniLM at --tokens tokens")
    parser.add_argument("--tokens", type=int, default=32,
                        help="sentence length of the modelled run (without --run)")
    parser.add_argument("--board", default="ulx3s-85f",
                        help="board image whose roofline is drawn ('config' = the default "
                             "config)")
    parser.add_argument("--boards-dir", type=Path, default=Path("build/boards"),
                        help="where 'hetaccel build' left <board>/report.json")
    parser.add_argument("--out", type=Path, default=Path("build/report"),
                        help="directory for the PNG files")


def minilm_ops(tokens: int, bert_config) -> list[tuple]:
    """``(op, kind, shape, calls)`` of one encoder layer of one sentence, as
    :class:`hetaccel.workloads.encoder.QuantizedEncoder` issues them with its
    default scheme: token activations split into hi/lo rows stacked in one
    matmul, Q/K/V fused, P split for P.V, FFN-down weights split (lo x lo
    skipped), GELU on the activation unit."""
    T = tokens
    H, inter = bert_config.hidden_size, bert_config.intermediate_size
    nh, d = bert_config.num_attention_heads, bert_config.head_dim

    def mm(m, k, n):
        return {"m": m, "k": k, "n": n}

    return [("qkv", "matmul", mm(2 * T, H, 3 * H), 1),
            ("attn_qk", "matmul", mm(T, d, T), nh),
            ("attn_pv", "matmul", mm(2 * T, T, d), nh),
            ("o", "matmul", mm(2 * T, H, H), 1),
            ("up", "matmul", mm(2 * T, H, inter), 1),
            ("gelu", "activation", {"elements": T * inter}, 1),
            ("down", "matmul", mm(2 * T, inter, H), 1),
            ("down", "matmul", mm(T, inter, H), 1)]


def modelled_run(tokens: int = 32, config=None) -> dict:
    """Placement rows of MiniLM for one sentence of ``tokens`` tokens, planned on
    ``config`` (default: the default config) without a device run: the same
    rows as a run's ``placement_table``, figures from the planner."""
    from ..host.planner import op_cost
    from ..spec import DEFAULT_CONFIG
    from ..workloads.bert import BertConfig, packaged_model_dir
    from ..workloads.placement import PLANNER_OP

    if not isinstance(tokens, int) or not 1 <= tokens <= 512:
        raise ValueError(f"tokens must be an integer in [1, 512], got {tokens!r}")
    config = config or DEFAULT_CONFIG
    cfg = BertConfig.from_dict(json.loads((packaged_model_dir() / "config.json").read_text()))
    rows: dict = {}
    for layer in range(cfg.num_hidden_layers):
        for name, kind, shape, calls in minilm_ops(tokens, cfg):
            cost = op_cost(config, PLANNER_OP[kind], shape)
            r = rows.setdefault((layer, name), {
                "layer": f"layer{layer}", "op": name, "kind": kind, "placed": "accelerator",
                "calls": 0, "macs": 0, "device_cycles": 0, "busy_cycles": 0, "gemm_busy": 0,
                "device_bytes": 0, "wall_s": 0.0, "shapes": []})
            r["calls"] += calls
            r["macs"] += cost.macs * calls
            r["device_cycles"] += cost.cycles * calls
            r["busy_cycles"] += cost.busy_cycles * calls
            r["gemm_busy"] += cost.busy["gemm"] * calls
            r["device_bytes"] += (cost.bytes_in + cost.bytes_out) * calls
            r["shapes"].append({"shape": shape, "calls": calls})
    return {"placement_table": list(rows.values()), "source": f"planner, MiniLM at {tokens} tokens",
            "peak_macs_per_cycle": config.macs}


def board_figures(run: dict, image) -> dict:
    """The run's device ops planned on ``image`` (a :class:`~hetaccel.host.planner.BoardImage`).

    The image's own figures (``macs`` per cycle, clock, baud, peak), then per
    layer and in total: useful MACs, matmul-engine busy cycles and their MAC
    utilisation; per op: operations, link bytes and projected seconds (for the
    roofline); ops whose unit the image lacks are counted in ``cpu_ops``.
    """
    from ..host.planner import op_cost, project, utilisation
    from ..workloads.placement import PLANNER_OP

    layers: dict = {}
    ops: dict = {}
    tot = {"useful_macs": 0, "gemm_busy": 0, "device_s": 0.0, "compute_s": 0.0, "link_s": 0.0,
           "cpu_ops": 0, "device_ops": 0}
    for r in run["placement_table"]:
        if r.get("placed") != "accelerator":
            continue
        op = PLANNER_OP[r["kind"]]
        for item in r["shapes"]:
            calls = item["calls"]
            if image.missing_unit(op) is not None:
                tot["cpu_ops"] += calls
                continue
            cost = op_cost(image.config, op, item["shape"])
            p = project(cost, image)
            tot["device_ops"] += calls
            tot["useful_macs"] += cost.macs * calls
            tot["gemm_busy"] += cost.busy["gemm"] * calls
            tot["device_s"] += p.seconds * calls
            tot["compute_s"] += p.compute_s * calls
            tot["link_s"] += p.link_s * calls
            lay = layers.setdefault(r.get("layer", ""), {"macs": 0, "gemm_busy": 0})
            lay["macs"] += cost.macs * calls
            lay["gemm_busy"] += cost.busy["gemm"] * calls
            if cost.macs:
                o = ops.setdefault(r["op"], {"ops": 0, "bytes": 0, "seconds": 0.0})
                o["ops"] += 2 * cost.macs * calls
                o["bytes"] += (cost.bytes_in + cost.bytes_out) * calls
                o["seconds"] += p.seconds * calls
    for lay in layers.values():
        lay["utilisation"] = utilisation(lay["macs"], lay["gemm_busy"], image.macs)
    return {**image.as_dict(), **tot,
            "utilisation": utilisation(tot["useful_macs"], tot["gemm_busy"], image.macs),
            "attained_gops": (2 * tot["useful_macs"] / tot["device_s"] / 1e9
                              if tot["device_s"] else 0.0),
            "bound": "link" if tot["link_s"] >= tot["compute_s"] else "compute",
            "layers": layers, "ops": ops}


def measured_utilisation(run: dict, peak: int) -> dict:
    """The utilisation a run's own counters measured on its config, per encoder
    layer and in total (:func:`hetaccel.host.planner.utilisation`, ``peak`` MACs)."""
    from ..host.planner import utilisation

    layers: dict = {}
    for r in run["placement_table"]:
        if r.get("placed") != "accelerator" or r.get("kind") != "matmul":
            continue
        lay = layers.setdefault(r.get("layer", ""), {"macs": 0, "gemm_busy": 0})
        lay["macs"] += r["macs"]
        lay["gemm_busy"] += r.get("gemm_busy", r.get("busy_cycles", 0))
    for lay in layers.values():
        lay["utilisation"] = utilisation(lay["macs"], lay["gemm_busy"], peak)
    macs = sum(v["macs"] for v in layers.values())
    busy = sum(v["gemm_busy"] for v in layers.values())
    return {"macs_per_cycle": peak, "useful_macs": macs, "gemm_busy": busy,
            "utilisation": utilisation(macs, busy, peak), "layers": layers}


def _encoder_layers(layers: dict) -> list[str]:
    return sorted((k for k in layers if k.startswith("layer")), key=lambda s: int(s[5:]))


def _load_run(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"run file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from exc
    rows = data.get("placement_table")
    if rows is None or any(r.get("placed") == "accelerator" and "shapes" not in r for r in rows):
        raise ValueError(f"{path} has no 'placement_table' with op shapes: produce it with "
                         f"'hetaccel run minilm --json > {path.name}'")
    data.setdefault("source", str(path))
    return data


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_utilisation(boards: dict, measured: dict | None, source: str, path: Path) -> Path:
    plt = _plt()
    series = [(f"{name} ({b['rows']}x{b['cols']}, planner)", b["layers"])
              for name, b in boards.items() if b["device_ops"]]
    if measured is not None:
        series.append((f"run's counters ({measured['macs_per_cycle']} MACs)",
                       measured["layers"]))
    names = _encoder_layers(series[0][1]) if series else []
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(names))
    width = 0.8 / max(1, len(series))
    for i, (label, layers) in enumerate(series):
        vals = [layers.get(n, {}).get("utilisation", 0.0) for n in names]
        xs = x - 0.4 + width * (i + 0.5)
        ax.bar(xs, vals, width, label=label)
        for xi, v in zip(xs, vals):
            ax.annotate(f"{100 * v:.3g}%", (xi, v), ha="center", va="bottom", fontsize=6)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.35)
    ax.set_ylabel("useful MACs / (array MACs x engine busy cycles)", fontsize=8)
    ax.set_title(f"MAC utilisation per layer ({source})")
    ax.legend(loc="upper center", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roofline(fig_board: dict, path: Path) -> Path:
    plt = _plt()
    b = fig_board
    peak = b["peak_gops"] * 1e9                            # operations/s
    bw = b["link_bytes_per_s"]                             # bytes/s
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ridge = peak / bw
    xs = np.logspace(-2, math.log10(ridge) + 1, 200)
    ax.loglog(xs, np.minimum(peak, bw * xs), "k-", lw=2, label="roofline")
    ax.axhline(peak, color="gray", ls=":", lw=1)
    ax.axvline(ridge, color="gray", ls=":", lw=1)
    for op, a in b["ops"].items():
        if a["bytes"] <= 0 or a["seconds"] <= 0:
            continue
        ax.loglog([a["ops"] / a["bytes"]], [a["ops"] / a["seconds"]], "o", label=op)
    ax.set_xlabel("arithmetic intensity (operations per link byte)")
    ax.set_ylabel("operations/s")
    ax.set_title(f"Roofline of {b['board']}: {b['rows']}x{b['cols']} = {b['macs']} MACs at "
                 f"{b['clock_hz'] / 1e6:g} MHz ({b['peak_gops']:.3g} GOPS), "
                 f"{b['baud'] / 1e6:g} Mbaud; ridge {ridge:.3g} op/B", fontsize=9)
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
    from ..host.planner import board_images
    from ..spec import DEFAULT_CONFIG

    out = Path(args.out)
    data = _load_run(args.run) if args.run is not None else modelled_run(args.tokens)
    images = {b.name: b for b in board_images(DEFAULT_CONFIG)}
    if args.board not in images:
        raise ValueError(f"unknown board {args.board!r}; known: {', '.join(images)}")
    out.mkdir(parents=True, exist_ok=True)
    boards = {name: board_figures(data, img) for name, img in images.items()}
    measured = None
    if args.run is not None:
        measured = measured_utilisation(
            data, int(data.get("peak_macs_per_cycle", DEFAULT_CONFIG.macs)))
    files = [str(plot_utilisation(boards, measured, data.get("source", "run"),
                                  out / "utilisation.png")),
             str(plot_roofline(boards[args.board], out / "roofline.png"))]
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
    result = {"files": files, "source": data.get("source"), "board": args.board,
              "boards": {name: {k: v for k, v in b.items() if k not in ("layers", "ops")}
                         for name, b in boards.items()}}
    if measured is not None:
        result["measured"] = {k: v for k, v in measured.items() if k != "layers"}
    if note:
        result["note"] = note
    return result
