"""The ``trace-fibers`` stage: a pick table in, fibres (CSV), segment points (CSV) and a
RELION-5 STAR file out (``milopyp trace-fibers`` translates its options into :func:`run`).

Lengths carry their unit: ``_vox`` voxels of the tomogram, ``_a`` Å (converted with the voxel
size: ``voxel_size_a``, else the tomogram's header). Unset ones take the defaults of
:mod:`milopyp.defaults`: the link distance ``link_distance_a(particle_diameter_a)`` (else
:data:`~milopyp.defaults.FALLBACK_LINK_DISTANCE_VOX`), the segment spacing
``segment_spacing_a(particle_diameter_a)`` (else
:data:`~milopyp.defaults.FALLBACK_SEGMENT_SPACING_A`). Messages name each argument as its
command-line option (``max_residual_vox`` is ``--max-residual-vox``).
"""

from __future__ import annotations

import logging
import math
import os

import pandas as pd

from milopyp import defaults
from milopyp.errors import MilopypError
from milopyp.fibers.tables import FIBER_COLUMNS, segment_points, trace_table
from milopyp.fibers.tracing import MAX_PICKS

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check(lengths: dict, min_points: int, max_picks: int, star: PathLike | None,
           tomogram: PathLike | None) -> None:
    for name, value in lengths.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise MilopypError(f"{_flag(name)} must be a positive number, got {value}")
    if max_picks < 0:
        raise MilopypError(f"--max-picks must be >= 0 (0: trace all picks), got {max_picks}")
    if min_points < 3:
        raise MilopypError(f"--min-points must be >= 3 (a quadratic fit), got {min_points}")
    if star and not tomogram:
        raise MilopypError(f"--star {star}: RELION-5 coordinates need the tomogram's shape and "
                           f"voxel size; pass --tomogram")


def _to_vox(value_a: float, voxel_size_a: float | None, name: str) -> float:
    if voxel_size_a is None:
        raise MilopypError(f"{_flag(name)} is in Å but the voxel size is unknown; pass "
                           f"--voxel-size-a or --tomogram")
    return float(value_a) / voxel_size_a


def link_vox(link_distance_vox: float | None, link_distance_a: float | None,
                      particle_diameter_a: float | None, voxel_size_a: float | None) -> float:
    """The link distance in voxels: given in voxels, else in Å, else from the diameter (Å),
    else :data:`~milopyp.defaults.FALLBACK_LINK_DISTANCE_VOX`."""
    if link_distance_vox is not None:
        return float(link_distance_vox)
    if link_distance_a is not None:
        return _to_vox(link_distance_a, voxel_size_a, "link_distance_a")
    if particle_diameter_a:
        return _to_vox(defaults.link_distance_a(particle_diameter_a), voxel_size_a,
                       "particle_diameter_a")
    return defaults.FALLBACK_LINK_DISTANCE_VOX


def spacing_vox(segment_spacing_vox: float | None, segment_spacing_a: float | None,
                        particle_diameter_a: float | None, voxel_size_a: float | None) -> float:
    """The segment spacing in voxels: given in voxels, else in Å, else from the diameter (Å),
    else :data:`~milopyp.defaults.FALLBACK_SEGMENT_SPACING_A`."""
    if segment_spacing_vox is not None:
        return float(segment_spacing_vox)
    if segment_spacing_a is None:
        segment_spacing_a = (defaults.segment_spacing_a(particle_diameter_a) if particle_diameter_a
                             else defaults.FALLBACK_SEGMENT_SPACING_A)
        if voxel_size_a is None:
            raise MilopypError(
                f"segment spacing defaults to {segment_spacing_a:g} Å but the voxel size is "
                f"unknown; pass --voxel-size-a, --tomogram or --segment-spacing-vox")
    return _to_vox(segment_spacing_a, voxel_size_a, "segment_spacing_a")


def run(picks: PathLike, output: PathLike, *, tomogram: PathLike | None = None,
        star: PathLike | None = None, segments: PathLike | None = None,
        link_distance_vox: float | None = None,
        link_distance_a: float | None = None, particle_diameter_a: float | None = None,
        min_points: int = 10, max_residual_vox: float = 3.5,
        join_distance_vox: float | None = None, max_curvature: float = 0.05,
        max_picks: int = MAX_PICKS, step_vox: float = 2.0,
        segment_spacing_a: float | None = None, segment_spacing_vox: float | None = None,
        voxel_size_a: float | None = None) -> pd.DataFrame:
    """Trace the fibres of the pick table ``picks`` (voxels) and write them to ``output``
    (``tomogram, fiber_id, x, y, z``), the segment points to ``segments`` (CSV) and ``star``
    (RELION-5 STAR, needs ``tomogram``); returns the fibre table. ``max_picks`` 0: no cap;
    ``join_distance_vox`` None: 3 link distances, 0: never (see :func:`milopyp.fibers.trace`).
    """
    from milopyp.export import relion_particles
    from milopyp.io import star as star_io
    from milopyp.io.atomic import atomic_path, prepare_outputs
    from milopyp.io.coords import check_inside, read_picks

    _check({"link_distance_vox": link_distance_vox, "link_distance_a": link_distance_a,
            "max_residual_vox": max_residual_vox, "max_curvature": max_curvature,
            "step_vox": step_vox, "segment_spacing_a": segment_spacing_a,
            "segment_spacing_vox": segment_spacing_vox, "voxel_size_a": voxel_size_a,
            "particle_diameter_a": particle_diameter_a}, min_points, max_picks, star, tomogram)
    prepare_outputs(output, star, segments)
    shape_zyx, voxel = None, voxel_size_a
    if tomogram:
        from milopyp.io.mrc import read_header

        shape_zyx, voxel = read_header(tomogram, voxel_size_a=voxel)
    link = link_vox(link_distance_vox, link_distance_a, particle_diameter_a, voxel)
    table = read_picks(picks, voxel_size_a=voxel, shape_zyx=shape_zyx)
    if shape_zyx is not None:
        check_inside(table, shape_zyx, picks)
    names = list(dict.fromkeys(table["tomogram"].astype(str)))
    if len(names) > 1:
        log.warning("%s holds picks of %d tomograms (%s); tracing each separately", picks,
                    len(names), ", ".join(names[:5]))
    if not names:
        log.warning("%s: no picks; writing empty outputs", picks)
    fibers = trace_table(table, link_distance_vox=link, min_points=min_points,
                         max_residual_vox=max_residual_vox, max_curvature=max_curvature,
                         step_vox=step_vox, join_distance_vox=join_distance_vox,
                         max_picks=max_picks or None)[list(FIBER_COLUMNS)]
    with atomic_path(output) as tmp:
        fibers.to_csv(tmp, index=False)
    n_fibers = fibers.groupby(["tomogram", "fiber_id"]).ngroups if len(fibers) else 0
    log.info("wrote %s (%d fibre(s), %d points)", output, n_fibers, len(fibers))
    if not (segments or star):
        return fibers
    spacing = spacing_vox(segment_spacing_vox, segment_spacing_a, particle_diameter_a, voxel)
    points = segment_points(fibers, spacing, voxel_size_a=voxel)
    if segments:
        with atomic_path(segments) as tmp:
            points.to_csv(tmp, index=False)
        log.info("wrote %s (%d segment points every %.3g voxels)", segments, len(points),
                 spacing)
    if star:
        geometry = {name: (shape_zyx, voxel) for name in names}
        star_io.write(star, relion_particles(points, geometry, source=str(star)))
        log.info("wrote %s (%d segment points)", star, len(points))
    return fibers
