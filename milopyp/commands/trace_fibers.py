"""``milopyp trace-fibers``: options -> :func:`milopyp.fibers.run` (see :mod:`milopyp.fibers`).

Writes ``-o`` the fibres (voxels), ``--segments`` the extraction points with RELION priors
(CSV), ``--star`` the same as RELION-5 STAR. Å options need ``--voxel-size-a`` or the tomogram.
"""

from __future__ import annotations

import argparse

from milopyp import defaults
from milopyp.cli import renamed
from milopyp.fibers.tracing import MAX_PICKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--picks", required=True, metavar="FILE",
        help="fibre picks of one tomogram (x, y, z in voxels; CSV/TSV/STAR/txt)")
    add("--tomogram", default=None, metavar="MRC",
        help="the tomogram (shape and voxel size; needed for --star)")
    add("-o", "--output", required=True, metavar="CSV",
        help="fibres to write: tomogram, fiber_id, x, y, z (voxels)")
    add("--star", default=None, metavar="FILE",
        help="also write the segment points as a RELION-5 STAR file")
    add("--segments", default=None, metavar="CSV",
        help="also write the segment points (with tilt/psi priors) as CSV")
    link = parser.add_mutually_exclusive_group()
    link.add_argument("--link-distance-vox", *renamed("--link-distance"), type=float, metavar="VOX",
                      help=f"picks closer than this are linked, voxels (default: "
                           f"{defaults.LINK_DIAMETER_FRACTION:g} x --particle-diameter-a, else "
                           f"{defaults.FALLBACK_LINK_DISTANCE_VOX:g} voxels)")
    link.add_argument("--link-distance-a", type=float, metavar="A", help="the link distance in Å")
    add("--particle-diameter-a", *renamed("--particle-diameter"), type=float, metavar="A",
        help="filament diameter in Å (sets the default link distance and segment spacing)")
    add("--min-points", type=int, default=10, help="fewest picks of a fibre (10)")
    add("--max-residual-vox", *renamed("--max-residual"), type=float, metavar="VOX", default=3.5,
        help="largest RMS distance of a fibre's picks from its fit, voxels (3.5: picks "
             "spread over the radius-3 training tube give ~2-3)")
    add("--join-distance-vox", *renamed("--join-distance"), type=float, metavar="VOX",
        help="join fibres whose ends are this close and point at each other, voxels "
             "(default 3 x the link distance; 0 = never)")
    add("--max-curvature", type=float, default=0.05, metavar="1/VOX",
        help="largest curvature of a fibre's fit, 1/voxel (0.05: radius 20)")
    add("--max-picks", type=int, default=MAX_PICKS,
        help=f"trace at most this many picks, the highest-scoring (default {MAX_PICKS}; 0 = "
             f"all): far more means a flat heat map; time and memory grow with them")
    add("--step-vox", *renamed("--step"), type=float, metavar="VOX", default=2.0,
        help="spacing of the output fibre points along the fibre, voxels (2)")
    spacing = parser.add_mutually_exclusive_group()
    spacing.add_argument("--segment-spacing-a", type=float, metavar="A",
                         help=f"spacing of the segment points, Å (default: diameter / 3, else "
                              f"{defaults.FALLBACK_SEGMENT_SPACING_A:g})")
    spacing.add_argument("--segment-spacing-vox", *renamed("--segment-spacing"), type=float,
                         metavar="VOX", help="spacing of the segment points, voxels")
    add("--voxel-size-a", *renamed("--voxel-size"), type=float, metavar="A",
        help="voxel size in Å (default: the --tomogram header)")


def main(args: argparse.Namespace) -> None:
    from milopyp.fibers import run

    a = args
    run(a.picks, a.output, tomogram=a.tomogram, star=a.star, segments=a.segments,
        link_distance_vox=a.link_distance_vox, link_distance_a=a.link_distance_a,
        particle_diameter_a=a.particle_diameter_a, min_points=a.min_points,
        max_residual_vox=a.max_residual_vox, join_distance_vox=a.join_distance_vox,
        max_curvature=a.max_curvature, max_picks=a.max_picks, step_vox=a.step_vox,
        segment_spacing_a=a.segment_spacing_a, segment_spacing_vox=a.segment_spacing_vox,
        voxel_size_a=a.voxel_size_a)
