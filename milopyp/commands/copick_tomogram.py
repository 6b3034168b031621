"""``milopyp copick-tomogram``: translates the command line into
:func:`milopyp.io.copick_tomogram.run` (one run's tomogram of a copick project as MRC)."""

from __future__ import annotations

import argparse

from milopyp.cli import renamed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--copick-config", required=True, metavar="JSON",
                        help="the copick project's config.json")
    parser.add_argument("--run", required=True, help="run name (= the tomogram's name)")
    parser.add_argument("--voxel-spacing-a", *renamed("--voxel-spacing"), type=float,
                        required=True, metavar="A", help="voxel spacing of the tomogram in Å")
    parser.add_argument("--tomo-type", required=True, help="tomogram type, e.g. wbp or denoised")
    parser.add_argument("-o", "--output", required=True, help="MRC file to write")


def main(args: argparse.Namespace) -> None:
    from milopyp.io.copick_tomogram import run

    run(args.copick_config, args.run, args.voxel_spacing_a, args.tomo_type, args.output)
