"""``milopyp embed``: embed every patch of a tomogram with a trained exploration model.

Writes the embeddings file (:mod:`milopyp.io.exploration`): ``embeddings`` (N, 128), the
SimSiam projector output z, with the patch file's candidates; the work is
:func:`milopyp.explore.run.embed`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model file from `milopyp train-explore`")
    parser.add_argument("--patches", required=True, help="patch file patches/{tomogram}.npz")
    parser.add_argument("-o", "--output", required=True, help="embeddings file to write (.npz)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    parser.add_argument("--batch-size", type=int, default=256, help="patches per batch (256)")


def main(args: argparse.Namespace) -> None:
    from milopyp.explore.run import embed

    embed(args.model, args.patches, args.output, device=args.device, batch_size=args.batch_size)
