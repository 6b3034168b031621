"""``milopyp train-explore``: train the SimSiam exploration network on patch files.

Writes the model file (:mod:`milopyp.io.exploration`); the work, checkpointing and resuming
included, is :func:`milopyp.explore.run.train`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patches", nargs="+", required=True, metavar="NPZ",
                        help="patch files (patches/{tomogram}.npz) to train on")
    parser.add_argument("-o", "--output", required=True, help="model file to write (.pt)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="passes over the data (GPU 300, CPU 15)")
    parser.add_argument("--batch-size", type=int, default=256, help="patches per step (256)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate at batch size 256, scaled linearly (GPU 0.02, CPU 0.2)")
    parser.add_argument("--width", type=int, default=None,
                        help="ResNet18 first-stage width: 64 standard, 16/32 for CPU "
                             "(GPU 64, CPU 16)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    parser.add_argument("--max-patches-per-tomogram", type=int, default=None, metavar="N",
                        help="use at most N patches of each file, a seeded random subset")
    parser.add_argument("--log-every", type=int, default=0, metavar="STEPS",
                        help="also log every STEPS steps within an epoch (0: per epoch only)")
    parser.add_argument("--no-resume", action="store_true",
                        help="ignore an existing <output>.ckpt and start afresh")
    parser.add_argument(
        "--settings-output", default=None, metavar="JSON",
        help="also write the settings used (device, epochs, width, lr and where each came "
             "from) to this JSON file, for the provenance",
    )


def main(args: argparse.Namespace) -> None:
    from milopyp.explore.run import train

    train(args.patches, args.output, epochs=args.epochs, batch_size=args.batch_size,
          lr=args.lr, width=args.width, seed=args.seed, device=args.device,
          max_patches_per_tomogram=args.max_patches_per_tomogram, log_every=args.log_every,
          resume=not args.no_resume, settings_output=args.settings_output)
