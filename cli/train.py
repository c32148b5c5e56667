"""``hetaccel train``: training on the accelerator, against the same training in float64."""

from __future__ import annotations

import argparse

from .commands import Progress, add_device_options, open_executor, print_placement

__all__ = ["HELP", "IMAGE_OPTIONS", "add_arguments", "run"]

#: --board/--config: the command line resolves them into ``args.image``
IMAGE_OPTIONS = True

HELP = ("train on the accelerator: 'seed-classifier' (100 samples, 10 features, "
        "one ReLU layer, cross-entropy, Adam lr 0.01) vs the same training in float64")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=("seed-classifier",),
                        help="the training example to run")
    parser.add_argument("--epochs", type=int, default=100, help="full-batch training steps")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--hidden", type=int, default=8, help="width of the ReLU layer")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the deterministic data set and initial weights")
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    add_device_options(parser)


def run(args) -> dict:
    from ..workloads.training import train_seed_classifier

    image = args.image
    progress = Progress(f"seed-classifier on {args.backend}", enabled=not args.quiet)
    with open_executor(args.backend, args.placement, args.sim, image) as ex:
        result = train_seed_classifier(ex, epochs=args.epochs, lr=args.lr, hidden=args.hidden,
                                       seed=args.seed, progress=progress)
        result["image"] = image.describe(ex.config)
        table = ex.placement_table()
    if args.json:
        result["placement_table"] = table
    else:
        print_placement(table, cpu_work="loss, gradients, bias adds, ReLU, quantization "
                                         "scales, control")
    return result
