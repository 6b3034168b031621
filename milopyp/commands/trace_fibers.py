"""``milopyp trace-fibers``: trace filaments (microtubules) through dense fibre picks.

``--picks`` is a point table (``tomogram, x, y, z[, score]``; voxels), typically
``picks/{tomogram}.csv`` from ``milopyp localize`` with a fibre model; a table without a
``tomogram`` column is named after its file. The tracing is :mod:`milopyp.fibers`: link graph,
line growth that splits crossing filaments, a quadratic fit per fibre, rejection by residual,
curvature and size, resampling every ``--step`` voxels. At most ``--max-picks`` picks are
traced (the highest-scoring; a warning says when a model picked implausibly many), so
memory stays bounded. Outputs (atomic writes):

* ``-o``: the fibres, ``tomogram, fiber_id, x, y, z`` (voxels; ``fiber_id`` 0..K-1 per
  tomogram; rows in order along each fibre). Header only when no fibre is found.
* ``--segments``: overlapping extraction points every ``--segment-spacing-a`` Å (or
  ``--segment-spacing`` voxels) along each fibre with RELION tilt/psi priors from the tangent
  (:func:`milopyp.fibers.segment_points`): ``tomogram, fiber_id, x, y, z, rlnAngleTilt,
  rlnAnglePsi, rlnAngleTiltPrior, rlnAnglePsiPrior[, rlnHelicalTrackLengthAngst]``.
* ``--star``: the same segment points as a RELION-5 STAR file (``# version 50001``, one
  ``data_particles`` loop as ``milopyp export`` writes, see :mod:`milopyp.export`) with
  ``rlnHelicalTubeID`` (fibre number, 1-based) and the angle columns; needs ``--tomogram``
  for the tomogram's shape and voxel size (RELION-5 centred coordinates in Å).

Å options need a voxel size: ``--voxel-size`` or the ``--tomogram`` header.
"""

from __future__ import annotations

import argparse
import logging
import math

import pandas as pd

from milopyp.errors import MilopypError
from milopyp.fibers import MAX_PICKS

HELP = "trace filaments through dense fibre picks (fibres CSV, segments, RELION STAR)"
log = logging.getLogger(__name__)

DEFAULT_LINK_VOX = 12.0  # 0.6 x a 250 Å microtubule at 12 Å/voxel; see --particle-diameter
#: link distance as a fraction of the filament diameter (picks of a fibre model lie 3-7
#: voxels apart along a filament; separate filaments' centre lines are >= 1 diameter apart)
LINK_DIAMETER_FRACTION = 0.6
DEFAULT_SEGMENT_SPACING_A = 80.0  # one tubulin dimer (8 nm) along a microtubule


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--picks", required=True, metavar="FILE",
                        help="fibre picks of one tomogram (x, y, z in voxels; CSV/TSV/STAR/txt)")
    parser.add_argument("--tomogram", default=None, metavar="MRC",
                        help="the tomogram (shape and voxel size; needed for --star)")
    parser.add_argument("-o", "--output", required=True, metavar="CSV",
                        help="fibres to write: tomogram, fiber_id, x, y, z (voxels)")
    parser.add_argument("--star", default=None, metavar="FILE",
                        help="also write the segment points as a RELION-5 STAR file")
    parser.add_argument("--segments", default=None, metavar="CSV",
                        help="also write the segment points (with tilt/psi priors) as CSV")
    link = parser.add_mutually_exclusive_group()
    link.add_argument("--link-distance", type=float, default=None, metavar="VOX",
                      help=f"picks closer than this are linked, voxels (default: "
                           f"{LINK_DIAMETER_FRACTION:g} x --particle-diameter, else "
                           f"{DEFAULT_LINK_VOX:g})")
    link.add_argument("--link-distance-a", type=float, default=None, metavar="A",
                      help="the link distance in Å")
    parser.add_argument("--particle-diameter", type=float, default=None, metavar="A",
                        help="filament diameter in Å (sets the default link distance)")
    parser.add_argument("--min-points", type=int, default=10, metavar="N",
                        help="fewest picks of a fibre (10)")
    parser.add_argument("--max-residual", type=float, default=3.5, metavar="VOX",
                        help="largest RMS distance of a fibre's picks from its fit, voxels "
                             "(3.5: picks spread over the radius-3 training tube give ~2-3)")
    parser.add_argument("--join-distance", type=float, default=None, metavar="VOX",
                        help="join fibres whose ends are this close and point at each other, "
                             "voxels (default 3 x the link distance; 0 = never)")
    parser.add_argument("--max-curvature", type=float, default=0.05, metavar="1/VOX",
                        help="largest curvature of a fibre's fit, 1/voxel (0.05: radius 20)")
    parser.add_argument("--max-picks", type=int, default=MAX_PICKS, metavar="N",
                        help=f"trace at most this many picks, the highest-scoring (default "
                             f"{MAX_PICKS}; 0 = all): far more means a flat heat map, and "
                             f"time and memory grow with them (~0.3 GB at the default)")
    parser.add_argument("--step", type=float, default=2.0, metavar="VOX",
                        help="spacing of the output fibre points along the fibre, voxels (2)")
    spacing = parser.add_mutually_exclusive_group()
    spacing.add_argument("--segment-spacing-a", type=float, default=None, metavar="A",
                         help=f"spacing of the segment points, Å (default "
                              f"{DEFAULT_SEGMENT_SPACING_A:g})")
    spacing.add_argument("--segment-spacing", type=float, default=None, metavar="VOX",
                         help="spacing of the segment points, voxels")
    parser.add_argument("--voxel-size", type=float, default=None, metavar="A",
                        help="voxel size in Å (default: the --tomogram header)")


def _positive(value, flag: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise MilopypError(f"{flag} must be a positive number, got {value}")


def _check_args(args: argparse.Namespace) -> None:
    for flag in ("link_distance", "link_distance_a", "max_residual", "max_curvature", "step",
                 "segment_spacing_a", "segment_spacing", "voxel_size", "particle_diameter"):
        _positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.max_picks < 0:
        raise MilopypError(f"--max-picks must be >= 0 (0: trace all picks), got {args.max_picks}")
    if args.min_points < 3:
        raise MilopypError(f"--min-points must be >= 3 (a quadratic fit), got {args.min_points}")
    if args.star and not args.tomogram:
        raise MilopypError(
            f"--star {args.star}: RELION-5 coordinates need the tomogram's shape and voxel "
            f"size; pass --tomogram"
        )


def _vox(value_vox, value_a, default_vox: float, voxel_size_a, flag: str) -> float:
    """A length in voxels from the option in voxels, else the one in Å, else the default."""
    if value_vox is not None:
        return float(value_vox)
    if value_a is None:
        return default_vox
    if voxel_size_a is None:
        raise MilopypError(f"{flag} is in Å but the voxel size is unknown; pass --voxel-size or "
                           f"--tomogram")
    return float(value_a) / voxel_size_a


def _write_star(path: str, segments: pd.DataFrame, geometry) -> None:
    import starfile

    from milopyp.commands.export import STAR_VERSION_LINE
    from milopyp.export import relion_particles
    from milopyp.io.atomic import atomic_path

    particles = relion_particles(segments, geometry, source=path)
    with atomic_path(path) as tmp:
        starfile.write({"particles": particles}, tmp)
        text = tmp.read_text(encoding="utf-8")
        tmp.write_text(f"{STAR_VERSION_LINE}\n{text}", encoding="utf-8")


def main(args: argparse.Namespace) -> None:
    import numpy as np

    from milopyp.fibers import FIBER_COLUMNS, fibers_frame, segment_points, trace
    from milopyp.io.atomic import atomic_path, prepare_outputs
    from milopyp.io.coords import check_inside, read_picks

    _check_args(args)
    prepare_outputs(args.output, args.star, args.segments)
    shape_zyx, voxel = None, args.voxel_size
    if args.tomogram:
        from milopyp.io.mrc import read_header

        shape_zyx, voxel = read_header(args.tomogram, voxel_size_a=voxel)
    link_a = args.link_distance_a
    if link_a is None and args.link_distance is None and args.particle_diameter:
        link_a, flag = LINK_DIAMETER_FRACTION * args.particle_diameter, "--particle-diameter"
    else:
        flag = "--link-distance-a"
    link = _vox(args.link_distance, link_a, DEFAULT_LINK_VOX, voxel, flag)

    picks = read_picks(args.picks, voxel_size_a=voxel, shape_zyx=shape_zyx)
    if shape_zyx is not None:
        check_inside(picks, shape_zyx, args.picks)
    names = list(dict.fromkeys(picks["tomogram"].astype(str)))
    if len(names) > 1:
        log.warning("%s holds picks of %d tomograms (%s); tracing each separately",
                    args.picks, len(names), ", ".join(names[:5]))
    if not names:
        log.warning("%s: no picks; writing empty outputs", args.picks)
    frames = []
    for name in names:
        sub = picks[picks["tomogram"].astype(str) == name]
        scores = None
        if "score" in sub.columns:
            values = pd.to_numeric(sub["score"], errors="coerce").to_numpy(np.float64)
            if np.all(np.isfinite(values)):
                scores = values
            else:
                log.warning("%s: some picks of %s have no score; fitting unweighted", args.picks,
                            name)
        result = trace(sub[["x", "y", "z"]].to_numpy(np.float64), link_distance_vox=link,
                       min_points=args.min_points, max_residual_vox=args.max_residual,
                       max_curvature=args.max_curvature, step_vox=args.step, scores=scores,
                       join_distance_vox=args.join_distance, max_picks=args.max_picks or None)
        log.info("%s: %d picks (link %.3g voxels): %s", name, len(sub), link, result.summary())
        frames.append(fibers_frame(result.fibers, name))
    fibers = pd.concat(frames, ignore_index=True) if frames else fibers_frame([], "")
    fibers = fibers[list(FIBER_COLUMNS)]
    with atomic_path(args.output) as tmp:
        fibers.to_csv(tmp, index=False)
    n_fibers = fibers.groupby(["tomogram", "fiber_id"]).ngroups if len(fibers) else 0
    log.info("wrote %s (%d fibre(s), %d points)", args.output, n_fibers, len(fibers))

    if args.segments or args.star:
        default_a = DEFAULT_SEGMENT_SPACING_A
        if args.segment_spacing is None and args.segment_spacing_a is None and voxel is None:
            raise MilopypError(
                f"segment spacing defaults to {default_a:g} Å but the voxel size is unknown; "
                f"pass --voxel-size, --tomogram or --segment-spacing (voxels)"
            )
        spacing = _vox(args.segment_spacing, args.segment_spacing_a or default_a, 0.0,
                       voxel, "--segment-spacing-a")
        segments = segment_points(fibers, spacing, voxel_size_a=voxel)
        if args.segments:
            with atomic_path(args.segments) as tmp:
                segments.to_csv(tmp, index=False)
            log.info("wrote %s (%d segment points every %.3g voxels)", args.segments,
                     len(segments), spacing)
        if args.star:
            _write_star(args.star, segments, {name: (shape_zyx, voxel) for name in names})
            log.info("wrote %s (%d segment points)", args.star, len(segments))
