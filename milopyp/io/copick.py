"""copick projects in and out, through the ``copick`` package.

A copick project (its ``config.json``) holds runs (one tilt series each); a run holds
tomograms per voxel spacing (OME-Zarr, ``[z, y, x]``, voxel spacing in Å) and picks per
``(object_name, user_id, session_id)``. copick's points are in Å: a pick at ``x_a`` lies at
voxel ``x_a / voxel_size_a`` of the run's tomogram (0-based, voxel centres; copick's RELION
conversion uses the same origin, see :mod:`milopyp.io.star`). milopyp names a tomogram after
its run.

Functions here open the project and convert; point tables are the usual
``tomogram, x, y, z[, score]`` in voxels, the conversion to Å taking a ``name -> voxel size``
mapping.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from milopyp.errors import MilopypError
from milopyp.io.coords import points_frame, xyz_array

log = logging.getLogger(__name__)

#: selection strings ``copick:{object}:{user}:{session}``
SELECTION_PREFIX = "copick:"
#: user_id of the picks milopyp writes
USER_ID = "milopyp"


def open_project(config_path: str | os.PathLike):
    """The copick root of the project described by ``config_path`` (its config.json)."""
    path = Path(config_path)
    if not path.is_file():
        raise MilopypError(
            f"{path}: copick project config not found; give the project's config.json "
            f"(`copick:` in the config, --copick-config)"
        )
    try:
        import copick
    except ImportError as err:  # pragma: no cover - copick is a dependency
        raise MilopypError(f"{path}: the copick package is not installed ({err}); "
                           f"pip install -c constraints.txt copick") from None
    try:
        return copick.from_file(str(path))
    except Exception as err:  # noqa: BLE001 -- pydantic, JSON and fsspec errors alike
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MilopypError(
            f"{path}: not a readable copick config ({first}); fix the file") from None


def _tomogram(root, run_name: str, voxel_spacing_a: float, tomo_type: str, source):
    run = root.get_run(run_name)
    if run is None:
        raise MilopypError(f"{source}: the copick project has no run {run_name!r}")
    vs = run.get_voxel_spacing(float(voxel_spacing_a))
    found = vs.get_tomograms(tomo_type) if vs is not None else []
    tomo = found[0] if found else None
    if tomo is None:
        have = sorted(
            f"{v.voxel_size:g} Å/{t.tomo_type}" for v in run.voxel_spacings for t in v.tomograms
        )
        raise MilopypError(
            f"{source}: run {run_name} has no {tomo_type!r} tomogram at {voxel_spacing_a:g} Å "
            f"(it has {', '.join(have) or 'none'}); set copick_tomogram.voxel_spacing/tomo_type"
        )
    return tomo


def tomogram_runs(root, voxel_spacing_a: float, tomo_type: str, source) -> list[str]:
    """Names of the runs that have a ``tomo_type`` tomogram at ``voxel_spacing_a`` Å, sorted."""
    names = []
    for run in root.runs:
        vs = run.get_voxel_spacing(float(voxel_spacing_a))
        if vs is not None and vs.get_tomograms(tomo_type):
            names.append(run.name)
    if not names:
        raise MilopypError(
            f"{source}: no run of the copick project has a {tomo_type!r} tomogram at "
            f"{voxel_spacing_a:g} Å ({len(root.runs)} runs); check copick_tomogram.voxel_spacing "
            f"and tomo_type"
        )
    return sorted(names)


def tomogram_geometry(
    root, run_name: str, voxel_spacing_a: float, tomo_type: str, source
) -> tuple[tuple[int, int, int], float]:
    """``(shape_zyx, voxel_size_a)`` of a run's tomogram, from its OME-Zarr metadata only."""
    import zarr

    tomo = _tomogram(root, run_name, voxel_spacing_a, tomo_type, source)
    shape = tuple(int(n) for n in zarr.open(tomo.zarr(), mode="r")["0"].shape)
    if len(shape) != 3:
        raise MilopypError(f"{source}: run {run_name}'s tomogram has shape {shape}, expected 3-D")
    return shape, float(tomo.voxel_spacing.voxel_size)


def read_tomogram(
    root, run_name: str, voxel_spacing_a: float, tomo_type: str, source
) -> tuple[np.ndarray, float]:
    """A run's tomogram as float32 ``[z, y, x]`` (full resolution level) and its voxel size."""
    tomo = _tomogram(root, run_name, voxel_spacing_a, tomo_type, source)
    data = np.asarray(tomo.numpy(), dtype=np.float32)
    return data, float(tomo.voxel_spacing.voxel_size)


def parse_selection(text: str) -> tuple[str, str, str] | None:
    """``(object_name, user_id, session_id)`` of ``copick:{object}:{user}:{session}``, or None
    for any other selection."""
    if not str(text).startswith(SELECTION_PREFIX):
        return None
    parts = str(text)[len(SELECTION_PREFIX):].split(":")
    if len(parts) != 3 or not all(parts):
        raise MilopypError(
            f"selection {text!r}: expected copick:OBJECT:USER:SESSION, e.g. "
            f"copick:ribosome:curator:0"
        )
    return parts[0], parts[1], parts[2]


def read_picks(
    root, object_name: str, user_id: str, session_id: str,
    voxel_sizes_a: Mapping[str, float], source,
) -> pd.DataFrame:
    """The picks ``(object_name, user_id, session_id)`` of the runs in ``voxel_sizes_a`` (run
    name -> voxel size in Å of its tomogram) as ``tomogram, x, y, z, score`` in voxels.

    Positions are copick's particle centres (location + the transform's shift), in Å, divided
    by the voxel size. Runs without such picks contribute no rows.
    """
    frames = []
    for name, voxel_size_a in voxel_sizes_a.items():
        run = root.get_run(name)
        if run is None:
            continue
        for picks in run.get_picks(object_name=object_name, user_id=user_id,
                                   session_id=session_id):
            if not picks.points:
                continue
            xyz_a = picks.full_positions()
            frames.append(points_frame(xyz_a / float(voxel_size_a), name, score=picks.scores()))
    if not frames:
        raise MilopypError(
            f"{source}: no picks of object {object_name!r} by user {user_id!r} in session "
            f"{session_id!r} in the runs {', '.join(list(voxel_sizes_a)[:5])}; check the "
            f"selection copick:OBJECT:USER:SESSION"
        )
    return pd.concat(frames, ignore_index=True)


def check_object(root, object_name: str, source) -> None:
    """Raise unless the project declares a pickable object ``object_name``."""
    names = [o.name for o in root.config.pickable_objects]
    if object_name not in names:
        raise MilopypError(
            f"{source}: the copick project has no pickable object {object_name!r} (it has "
            f"{', '.join(names) or 'none'}); add it to the project's config.json or name the "
            f"target after one of them"
        )


def write_picks(
    root, picks: pd.DataFrame, voxel_sizes_a: Mapping[str, float], object_name: str,
    session_id: str = "0", user_id: str = USER_ID, source="export",
) -> dict[str, int]:
    """Write ``picks`` (``tomogram, x, y, z[, score]``, voxels) into the project: one picks
    file per run in ``voxel_sizes_a`` (run -> voxel size in Å), replacing an earlier one of the
    same object, user and session; runs without picks get an empty one. Returns picks per run.
    """
    check_object(root, object_name, source)
    names = picks["tomogram"].astype(str).to_numpy()
    unknown = sorted(set(names) - set(voxel_sizes_a))
    missing_runs = sorted(n for n in voxel_sizes_a if root.get_run(n) is None)
    if unknown or missing_runs:
        raise MilopypError(
            f"{source}: tomogram(s) {(unknown or missing_runs)[:8]} are not runs of the copick "
            f"project; export only tomograms read from it"
        )
    counts = {}
    for name, voxel_size_a in voxel_sizes_a.items():
        rows = picks[names == name]
        xyz_a = xyz_array(rows) * float(voxel_size_a)
        score = (pd.to_numeric(rows["score"], errors="coerce").fillna(0.0).to_numpy(np.float64)
                 if "score" in rows.columns else None)
        run = root.get_run(name)
        target = run.new_picks(object_name, session_id, user_id, exist_ok=True)
        target.from_numpy(xyz_a, scores=score)
        counts[name] = len(rows)
    return counts
