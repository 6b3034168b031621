"""``milopyp overlay``: a PNG of a tomogram slab with its picks (and traced fibres) drawn on it.

Globular targets: each pick is a circle of the particle's radius on a projection of the slab
around the picks' median z. Fibre targets (``--fibers``): each traced fibre is a coloured
line and the picks are small markers, on a projection of the slab that holds the fibres.
See :mod:`milopyp.visualize.overlay` for the projection and the drawing.
"""

from __future__ import annotations

import argparse
import logging

from milopyp.errors import MilopypError

HELP = "draw picks and traced fibres over a slab of a tomogram (PNG)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tomogram", required=True, help="tomogram (MRC, [z, y, x])")
    parser.add_argument("--picks", required=True, help="pick table of that tomogram (CSV/STAR)")
    parser.add_argument("--fibers", default=None,
                        help="traced fibres of that tomogram (milopyp trace-fibers CSV)")
    parser.add_argument("--particle-diameter", type=float, required=True,
                        help="target diameter in Å (circle size)")
    parser.add_argument("--voxel-size", type=float, default=None,
                        help="voxel size in Å (default: the MRC header)")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")


def main(args: argparse.Namespace) -> None:
    from milopyp.io.atomic import prepare_outputs, write_bytes
    from milopyp.io.coords import read_coordinates, xyz_array
    from milopyp.io.mrc import read_tomogram
    from milopyp.visualize.overlay import fibre_overlay_png, picks_overlay_png

    prepare_outputs(args.output)
    volume, voxel_size_a = read_tomogram(args.tomogram, mmap=True, voxel_size_a=args.voxel_size)
    picks = read_coordinates(args.picks)
    title = f"{args.title} · " if args.title else ""
    title += f"{len(picks)} picks"
    if args.fibers:
        fibers = read_coordinates(args.fibers)
        if len(fibers) and "fiber_id" not in fibers.columns:
            raise MilopypError(f"{args.fibers}: no fiber_id column; give the CSV of "
                               "`milopyp trace-fibers`")
        n_fibres = int(fibers["fiber_id"].nunique()) if len(fibers) else 0
        png = fibre_overlay_png(volume, picks_xyz=xyz_array(picks), fibers=fibers,
                                title=f"{title}, {n_fibres} fibres")
    else:
        radius_vox = args.particle_diameter / 2 / voxel_size_a
        png = picks_overlay_png(volume, xyz_array(picks), radius_vox=radius_vox, title=title)
    write_bytes(args.output, png)
    log.info("wrote %s", args.output)
