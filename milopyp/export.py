"""Collect per-tomogram picks into one table and a RELION-5 particle table.

:func:`combine_picks` and :func:`relion_particles` are pure functions on DataFrames;
:func:`run`, the ``export`` stage (``milopyp export`` translates its options into it), reads
the pick tables and the tomograms' headers and writes the CSV, the STAR file
(:func:`milopyp.io.star.write`: ``# version 50001``, one ``data_particles`` loop, no
``data_optics`` or ``data_global``: RELION 5's Import > Coordinates takes those from its
``tomograms.star``) and the copick picks (:mod:`milopyp.io.copick`).

The STAR table follows :mod:`milopyp.io.coords` exactly (it is built by the same helper that
:func:`milopyp.io.coords.write_coordinates` uses), one tomogram at a time so that each
tomogram gets its own shape and voxel size:

- ``rlnTomoName``: the tomogram's name;
- ``rlnCoordinateX/Y/Z``: voxels of that tomogram, 0-based (RELION-4 style);
- ``rlnCenteredCoordinateX/Y/ZAngst``: RELION-5 centred coordinates,
  ``(x - nx / 2) * voxel_size_a`` (same for y with ny, z with nz; a float division, as
  RELION 5's ``TomogramSet::loadTomogram`` sets the centre; see :mod:`milopyp.io.coords`);
- ``rlnAutopickFigureOfMerit``: the pick score;
- ``rlnHelicalTubeID``: for fibre picks, the fibre's number within its tomogram, 1-based
  (rank of ``fiber_id``; rows with a negative or missing ``fiber_id`` get 0).

RELION 5 reads the centred Å columns first (``ParticleSet::getParticleCoordDecenteredPixel``
falls back to ``rlnCoordinate*`` only without them).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from milopyp.errors import MilopypError
from milopyp.io.coords import empty_points, star_frame
from milopyp.io.mrc import tomogram_name

log = logging.getLogger(__name__)

#: leading columns of the combined CSV, in this order where present
CSV_COLUMNS = ("tomogram", "x", "y", "z", "score", "fiber_id")
TUBE_COLUMN = "rlnHelicalTubeID"
PathLike = str | os.PathLike


def combine_picks(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate pick tables (``tomogram, x, y, z[, score][, fiber_id], ...``; voxels).

    Empty tables contribute no rows. Columns ``tomogram, x, y, z, score, fiber_id`` come first
    (those present in any table), then the others in order of appearance.
    """
    frames = [f for f in frames if f is not None]
    non_empty = [f for f in frames if len(f)]
    if non_empty:
        df = pd.concat(non_empty, ignore_index=True, sort=False)
    else:
        columns = [c for f in frames for c in f.columns if c not in ("tomogram", "x", "y", "z")]
        df = empty_points(list(dict.fromkeys(columns)))
    df["tomogram"] = df["tomogram"].astype(str)
    first = [c for c in CSV_COLUMNS if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]].reset_index(drop=True)


def _tube_ids(fiber_id: pd.Series) -> np.ndarray:
    """1-based rank of each non-negative ``fiber_id``; 0 for negative or missing ids."""
    values = pd.to_numeric(fiber_id, errors="coerce").to_numpy(np.float64)
    valid = np.isfinite(values) & (values >= 0)
    out = np.zeros(len(values), np.int64)
    if valid.any():
        _, rank = np.unique(values[valid], return_inverse=True)
        out[valid] = rank + 1
    return out


def relion_particles(
    picks: pd.DataFrame,
    geometry: Mapping[str, tuple[tuple[int, int, int], float]],
    *,
    source: str = "picks",
) -> pd.DataFrame:
    """The RELION-5 ``data_particles`` table of ``picks`` (see the module docstring).

    ``geometry`` maps each tomogram name to ``(shape_zyx, voxel_size_a)`` (Å); every tomogram
    in ``picks`` must be in it. Rows keep the order of ``picks``.
    """
    missing = sorted(set(picks["tomogram"].astype(str)) - set(geometry))
    if missing:
        raise MilopypError(
            f"{source}: picks of tomogram(s) {missing[:8]} have no tomogram MRC among "
            f"--tomograms ({', '.join(sorted(geometry)[:8])}); add their MRC files"
        )
    parts = []
    order = []
    names = picks["tomogram"].astype(str).to_numpy()
    for name in dict.fromkeys(names):
        rows = np.flatnonzero(names == name)
        sub = picks.iloc[rows].reset_index(drop=True)
        if "fiber_id" in sub.columns and TUBE_COLUMN not in sub.columns:
            sub[TUBE_COLUMN] = _tube_ids(sub["fiber_id"])
        shape_zyx, voxel_size_a = geometry[name]
        parts.append(star_frame(sub, source, voxel_size_a, shape_zyx))
        order.append(rows)
    if not parts:
        # an empty table with the full set of columns
        empty = empty_points(["score"] + (["fiber_id"] if "fiber_id" in picks.columns else []))
        if "fiber_id" in empty.columns:
            empty[TUBE_COLUMN] = pd.Series(dtype=np.int64)
        out = star_frame(empty, source, 1.0, (1, 1, 1))
        out["rlnTomoName"] = out["rlnTomoName"].astype(str)
        return out
    out = pd.concat(parts, ignore_index=True)
    inverse = np.empty(len(out), np.int64)
    inverse[np.concatenate(order)] = np.arange(len(out))
    return out.iloc[inverse].reset_index(drop=True)


def tomogram_geometry(paths: Sequence[PathLike], voxel_size_a: float | None = None):
    """``name -> (shape_zyx, voxel_size_a)`` of the tomogram MRC files ``paths``, each known
    by its file name up to the first dot and by its stem; ``voxel_size_a`` (Å) overrides the
    headers'."""
    from milopyp.io.mrc import read_header

    geometry: dict[str, tuple[tuple[int, int, int], float]] = {}
    owner: dict[str, PathLike] = {}
    for p in paths:
        shape_zyx, voxel = read_header(p, voxel_size_a=voxel_size_a)
        for name in dict.fromkeys((tomogram_name(p), Path(p).stem)):
            if name in owner and owner[name] != p:
                raise MilopypError(
                    f"{p}: tomogram name {name!r} is also that of {owner[name]}; give each "
                    f"tomogram once"
                )
            owner[name] = p
            geometry[name] = (shape_zyx, voxel)
    return geometry


def run(picks: Sequence[PathLike], tomograms: Sequence[PathLike], *,
        output: PathLike | None = None, csv: PathLike | None = None,
        voxel_size_a: float | None = None, copick_config: PathLike | None = None,
        copick_object: str | None = None, copick_session: str = "0",
        copick_summary: PathLike | None = None) -> pd.DataFrame:
    """Collect the pick tables ``picks`` (voxels) of the tomograms ``tomograms`` (MRC: shape
    and voxel size, ``voxel_size_a`` Å overriding the headers) into ``csv``, the RELION-5 STAR
    file ``output`` and the copick project ``copick_config`` (picks of ``copick_object``,
    session ``copick_session``; counts per run as JSON in ``copick_summary``). Returns the
    combined picks."""
    from milopyp.io import star
    from milopyp.io.atomic import atomic_path, prepare_outputs
    from milopyp.io.coords import check_inside, read_picks

    if not output and not csv and not copick_config:
        raise MilopypError(
            "nothing to write: give -o picks.star, --csv picks.csv and/or --copick-config"
        )
    if copick_config and not copick_object:
        raise MilopypError("--copick-config needs --copick-object, the pickable object's name")
    if voxel_size_a is not None and not (voxel_size_a > 0 and math.isfinite(voxel_size_a)):
        raise MilopypError(f"--voxel-size-a must be > 0 Å, got {voxel_size_a}")
    prepare_outputs(output, csv, copick_summary)
    geometry = tomogram_geometry(list(tomograms), voxel_size_a)
    frames = []
    for path in picks:
        df = read_picks(path)
        unknown = sorted(set(df["tomogram"].astype(str)) - set(geometry))
        if unknown:
            raise MilopypError(
                f"{path}: picks of tomogram(s) {unknown[:8]} have no MRC among --tomograms "
                f"({', '.join(sorted(set(geometry))[:8])}); add the tomogram files"
            )
        for name, sub in df.groupby("tomogram"):
            check_inside(sub, geometry[str(name)][0], f"{path} (tomogram {name})")
        frames.append(df)
    table = combine_picks(frames)
    if "score" in table.columns and table["score"].isna().any():
        log.warning("%d of %d picks have no score", int(table["score"].isna().sum()), len(table))
    if len(table) == 0:
        log.warning("no picks in any of the %d pick table(s); writing empty %s", len(picks),
                    " and ".join(str(p) for p in (output, csv) if p))
    particles = relion_particles(table, geometry, source=", ".join(map(str, picks[:3])))
    if copick_config:
        _export_copick(copick_config, table, geometry, tomograms, copick_object,
                       str(copick_session), copick_summary)
    if csv:
        with atomic_path(csv) as tmp:
            table.to_csv(tmp, index=False)
        log.info("wrote %s (%d picks)", csv, len(table))
    if output:
        star.write(output, particles)
        counts = table["tomogram"].value_counts()
        log.info("wrote %s (%d picks in %d tomogram(s)%s)", output, len(table), len(counts),
                 ": " + ", ".join(f"{k} {int(v)}" for k, v in sorted(counts.items()))
                 if len(counts) else "")
    return table


def _export_copick(config: PathLike, picks: pd.DataFrame, geometry, tomograms, object_name: str,
                   session_id: str, summary_path: PathLike | None) -> None:
    from milopyp.io import copick as cp
    from milopyp.io.atomic import write_text

    root = cp.open_project(config)
    runs = sorted({tomogram_name(p) for p in tomograms})
    voxel_sizes = {name: geometry[name][1] for name in runs}
    counts = cp.write_picks(root, picks, voxel_sizes, object_name, session_id=session_id,
                            source=config)
    log.info("wrote %d picks of %s into copick project %s (user %s, session %s): %s",
             sum(counts.values()), object_name, config, cp.USER_ID, session_id,
             ", ".join(f"{k} {v}" for k, v in counts.items()))
    if summary_path:
        summary = {"copick_config": str(config), "object_name": object_name,
                   "user_id": cp.USER_ID, "session_id": session_id, "picks": counts}
        write_text(summary_path, json.dumps(summary, indent=1) + "\n")
