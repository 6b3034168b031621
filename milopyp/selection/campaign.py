"""The campaign a selection refers to, and the inputs it names besides the selection file.

The campaign is the list of tomograms given to ``milopyp import-selection`` (``--tomograms``),
as names or as MRC paths (name = file name up to the first dot). With paths, the header's
shape and voxel size (Å) are known: labels are checked to lie inside their tomogram, and
RELION-5 tables in Å are converted per tomogram. Files are read through :mod:`milopyp.io`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from milopyp.errors import MilopypError
from milopyp.io.labels import Geometry, read_table
from milopyp.io.mrc import tomogram_name
from milopyp.selection.resolve import check_points_table, check_table_rows
from milopyp.selection.spec import nothing_selected

log = logging.getLogger(__name__)

#: suffixes that make a ``--tomograms`` item a path (which must then exist)
_TOMOGRAM_SUFFIXES = (".mrc", ".rec", ".st", ".ali", ".map")


def campaign(
    items: Iterable[str], voxel_size_a: float | None = None
) -> tuple[list[str], dict[str, tuple[tuple[int, int, int], float]]]:
    """Names of the campaign's tomograms and ``name -> (shape_zyx, voxel_size_a)`` for paths
    (the voxel size in Å from each header, or ``voxel_size_a`` for all when given)."""
    from milopyp.io.mrc import read_header

    names: list[str] = []
    geometry: dict[str, tuple[tuple[int, int, int], float]] = {}
    for item in items:
        path = Path(item)
        if path.is_file():
            name = tomogram_name(path)
            geometry[name] = read_header(path, voxel_size_a=voxel_size_a)
        elif os.sep in item or path.suffix.lower() in _TOMOGRAM_SUFFIXES:
            raise MilopypError(
                f"{item}: tomogram not found; give existing MRC files or plain names to "
                f"--tomograms"
            )
        else:
            name = item
        if name in names:
            raise MilopypError(f"--tomograms names {name!r} twice; give each tomogram once")
        names.append(name)
    return names, geometry


def shapes(geometry: Geometry) -> dict[str, tuple[int, int, int]]:
    """``name -> shape_zyx`` of the campaign tomograms given as MRC paths."""
    return {name: shape_zyx for name, (shape_zyx, _) in geometry.items()}


def check_inside(labels: pd.DataFrame, geometry: Geometry, source) -> None:
    """Raise when a row lies outside its tomogram (for the tomograms in ``geometry``)."""
    from milopyp.io.coords import check_inside as inside

    for name, table in labels.groupby("tomogram"):
        if name in geometry:
            inside(table, geometry[name][0], f"{source} (tomogram {name})")


def read_points(path: str | None, selection: Path) -> pd.DataFrame:
    """explore/points.csv at ``path``, checked (:func:`check_points_table`)."""
    from milopyp.io.exploration import read_points as read_points_file

    if path is None:
        raise MilopypError(
            f"{selection}: a selection by clusters, points or seeds needs --points "
            f"explore/points.csv (written by `milopyp cluster`)"
        )
    points = read_points_file(path, columns=("tomogram", "x", "y", "z", "cluster"))
    return check_points_table(points, path)


def seed_table(
    spec, selection: Path, known: list[str], geometry: Geometry, *,
    tomogram: str | None = None, allow_empty: bool = False, what: str = "seeds",
) -> pd.DataFrame:
    """The seeds of a ``seeds`` document (or of its ``negatives``) as ``tomogram, x, y, z``
    (voxels). ``spec`` has ``seeds`` and ``seeds_file``; ``tomogram`` is the default name."""
    if spec.seeds_file:
        seed_path = Path(spec.seeds_file)
        if not seed_path.is_absolute():
            seed_path = selection.parent / seed_path
        if not seed_path.is_file():
            raise MilopypError(
                f"{selection}: {what}: file {seed_path} not found; the path is relative to the "
                f"selection file's folder"
            )
        seeds = read_table(seed_path, tomogram=tomogram, geometry=geometry)
        if len(seeds) == 0 and not allow_empty:
            raise MilopypError(
                f"{selection}: {what}: file {seed_path} holds no points; add rows x, y, z "
                f"(voxels) or remove the entry"
            )
        check_table_rows(seeds, known, shapes(geometry), seed_path, f"its {what}")
    else:
        seeds = spec.seeds.copy()
        if seeds["tomogram"].isna().any():
            if len(known) != 1:
                i = int(seeds.index[seeds["tomogram"].isna()][0])
                raise MilopypError(
                    f"{selection}: {what}: point {i} names no tomogram and the campaign has "
                    f"{len(known)}; add tomogram: NAME to each seed (or once at the top level)"
                )
            seeds["tomogram"] = seeds["tomogram"].fillna(known[0])
    if len(seeds) == 0 and not allow_empty:
        raise nothing_selected(selection)
    return seeds[["tomogram", "x", "y", "z"]].reset_index(drop=True)


def copick_labels(
    selection: str, picks: tuple[str, str, str], copick_config: str | None,
    known: list[str], geometry: Mapping, voxel_size_a: float | None,
) -> pd.DataFrame:
    """The picks ``(object, user, session)`` of a ``copick:OBJECT:USER:SESSION`` selection
    (``tomogram, x, y, z, score``, voxels of each campaign tomogram: copick's Å divided by
    its header's voxel size, or ``voxel_size_a``)."""
    from milopyp.io import copick as cp

    if not copick_config:
        raise MilopypError(
            f"selection {selection}: a copick selection needs --copick-config (the "
            f"project's config.json; `copick:` in the workflow config)"
        )
    voxel_sizes = {}
    for name in known:
        if name in geometry:
            voxel_sizes[name] = geometry[name][1]
        elif voxel_size_a:
            voxel_sizes[name] = float(voxel_size_a)
        else:
            raise MilopypError(
                f"selection {selection}: no voxel size for tomogram {name} to convert "
                f"copick's Å positions; give its MRC path to --tomograms or pass "
                f"--voxel-size-a"
            )
    root = cp.open_project(copick_config)
    object_name, user_id, session_id = picks
    labels = cp.read_picks(root, object_name, user_id, session_id, voxel_sizes,
                           f"{copick_config} ({selection})")
    log.info("%s: %d copick picks of %s (user %s, session %s)", copick_config,
             len(labels), object_name, user_id, session_id)
    return labels
