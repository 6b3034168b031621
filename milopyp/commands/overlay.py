"""``milopyp overlay``: options -> :func:`milopyp.visualize.overlay.run`.

Globular targets: each pick is a circle of the particle's radius on a projection of the slab
around the picks' median z. Fibre targets (``--fibers``): each traced fibre is a coloured
line and the picks are small markers, on a projection of the slab that holds the fibres.
"""

from __future__ import annotations

import argparse
import logging

from milopyp.cli import renamed

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--tomogram", required=True, help="tomogram (MRC, [z, y, x])")
    add("--picks", required=True, help="pick table of that tomogram (CSV/STAR)")
    add("--fibers", default=None, help="traced fibres of that tomogram (milopyp trace-fibers CSV)")
    add("--particle-diameter-a", *renamed("--particle-diameter"), type=float, metavar="A",
        required=True, help="target diameter in Å (circle size)")
    add("--voxel-size-a", *renamed("--voxel-size"), type=float, metavar="A", default=None,
        help="voxel size in Å (default: the MRC header)")
    add("--title", default=None, help="figure title")
    add("-o", "--output", required=True, help="PNG to write")


def main(args: argparse.Namespace) -> None:
    from milopyp.visualize.overlay import run

    run(args.tomogram, args.picks, args.output, particle_diameter_a=args.particle_diameter_a,
        fibers=args.fibers, voxel_size_a=args.voxel_size_a, title=args.title)
    log.info("wrote %s", args.output)
