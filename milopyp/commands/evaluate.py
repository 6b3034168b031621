"""``milopyp evaluate``: options -> :func:`milopyp.evaluate.run`.

Picks and truth are point tables (CSV/TSV/STAR/txt) with a ``tomogram`` column (or named
after their file stem); matching is one-to-one within a radius, per tomogram (see
:mod:`milopyp.evaluate`). The table goes to ``-o`` (CSV), optionally ``--json``, and stdout.
"""

from __future__ import annotations

import argparse

from milopyp import defaults
from milopyp.cli import renamed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--picks", nargs="+", required=True, metavar="FILE",
        help="pick / candidate tables (x, y, z in voxels; `score` enables AP)")
    add("--truth", nargs="+", required=True, metavar="FILE",
        help="ground-truth tables (x, y, z in voxels; optional `species`)")
    radius = parser.add_mutually_exclusive_group()
    radius.add_argument("--radius-vox", *renamed("--radius"), type=float, metavar="VOX",
                        help=f"matching radius in voxels (default with --fibers: "
                             f"{defaults.FIBER_EVALUATION_RADIUS_VOX:g}, the training tube's)")
    radius.add_argument("--radius-a", type=float, metavar="A",
                        help="matching radius in Å (needs the voxel size: --voxel-size-a, or a "
                             "`voxel_size_a` column in the truth)")
    radius.add_argument("--particle-diameter-a", type=float, metavar="A",
                        help="particle diameter in Å: match within half of it")
    add("--voxel-size-a", *renamed("--voxel-size"), type=float, metavar="A", default=None,
        help="voxel size in Å, to convert --radius-a")
    add("--species", default=None,
        help="comma-separated truth species to score against (default: all)")
    add("--fibers", action="store_true",
        help="score traced fibres (tomogram, fiber_id, x, y, z) against true centre lines: "
             "fibres found / total and point precision/recall/F1")
    add("--min-coverage", type=float, default=0.5,
        help="with --fibers: fraction of a fibre's points within the radius for it to count "
             "as found (0.5)")
    add("-o", "--output", required=True, help="metrics table to write (.csv)")
    add("--json", default=None, metavar="FILE", help="also write JSON here")


def main(args: argparse.Namespace) -> None:
    from milopyp.evaluate import run

    run(args.picks, args.truth, args.output, radius_vox=args.radius_vox,
        radius_a=args.radius_a, particle_diameter_a=args.particle_diameter_a,
        voxel_size_a=args.voxel_size_a, species=args.species, fibers=args.fibers,
        min_coverage=args.min_coverage, json_path=args.json)
