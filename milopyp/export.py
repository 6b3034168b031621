"""Collect per-tomogram picks into one table and a RELION-5 particle table.

Pure functions on DataFrames; ``milopyp export`` (:mod:`milopyp.commands.export`) reads and
writes the files.

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

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd

from milopyp.errors import MilopypError
from milopyp.io.coords import empty_points, star_frame

log = logging.getLogger(__name__)

#: leading columns of the combined CSV, in this order where present
CSV_COLUMNS = ("tomogram", "x", "y", "z", "score", "fiber_id")
TUBE_COLUMN = "rlnHelicalTubeID"


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
