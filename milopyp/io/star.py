"""STAR files (RELION) in and out, through the ``starfile`` package: the one STAR writer.

:func:`write` writes data blocks atomically, first line ``# version 50001`` as RELION 5
writes (its readers skip comments; RELION 5's tomography programs expect the line), then one
``data_<name>`` loop per table. A particle table is the block ``particles``
(``data_particles``): :func:`write` given one DataFrame writes just that block, with no
``data_optics`` and no ``data_global`` (RELION 5's Import > Coordinates takes optics and
tomogram geometry from its ``tomograms.star``). :func:`read` returns the blocks;
:func:`particle_block` the block holding coordinates.

RELION's coordinate columns are defined here. RELION-5 centred coordinates follow RELION 5's
own definition: RELION converts them back to pixels in
``ParticleSet::getParticleCoordDecenteredPixel`` (``src/jaz/tomography/particle_set.cpp``:
``out /= tiltSeriesPixelSize; out += tomo_centre``) with the centre set in
``TomogramSet::loadTomogram`` (``src/jaz/tomography/tomogram_set.cpp``: ``centre =
d3Vector(w0/2.0, h0/2.0, d0/2.0)``, a *float* division of the tomogram size). For a tomogram
of shape ``(nz, ny, nx)`` and voxel size ``s`` Å, with 0-based voxel coordinates ::

    x_A = (x - nx / 2) * s        x = x_A / s + nx / 2      (same for y with ny, z with nz)

so 0 Å is the point ``nx / 2`` in voxel coordinates: the centre of voxel 5 for ``nx = 10``,
the boundary between voxels 5 and 6 for ``nx = 11`` (voxel centres are at integers). copick
uses the same centre (``copick.util.relion.copick_tomogram_center``: shape / 2 * voxel size).
RELION measures the centre in unbinned tilt-series pixels (``rlnTomoSizeX`` x
``rlnTomoTiltSeriesPixelSize``); for a tomogram binned b times that equals ``nx * s / 2``
whenever ``nx = rlnTomoSizeX / b``. (Earlier milopyp versions used ``nx // 2``, half a voxel
off for odd sizes.) The conversion of point tables is :mod:`milopyp.io.coords`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from milopyp.errors import MilopypError
from milopyp.io.atomic import atomic_path

#: first line of every STAR file milopyp writes (RELION 5's own)
VERSION_LINE = "# version 50001"
#: name of the particle block (``data_particles``)
PARTICLES = "particles"

RLN_TOMO = "rlnTomoName"
RLN_VOX = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
RLN_CENTRED = (
    "rlnCenteredCoordinateXAngst",
    "rlnCenteredCoordinateYAngst",
    "rlnCenteredCoordinateZAngst",
)
RLN_SCORE = "rlnAutopickFigureOfMerit"


def write(path: str | os.PathLike, tables: pd.DataFrame | Mapping[str, pd.DataFrame]) -> None:
    """Write ``tables`` (block name -> DataFrame, in order; one DataFrame: the ``particles``
    block) to the STAR file ``path`` atomically, first line :data:`VERSION_LINE`."""
    import starfile

    blocks = {PARTICLES: tables} if isinstance(tables, pd.DataFrame) else dict(tables)
    with atomic_path(path) as tmp:
        starfile.write(blocks, tmp)
        text = tmp.read_text(encoding="utf-8")
        tmp.write_text(f"{VERSION_LINE}\n{text}", encoding="utf-8")


def read(path: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The loop blocks of the STAR file ``path``: block name (``""`` if unnamed) -> table."""
    import starfile

    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as err:  # noqa: BLE001 -- starfile raises many kinds on bad input
        raise MilopypError(f"{path}: not a readable STAR file ({err}); fix the file") from None
    return {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}


def particle_block(path: str | os.PathLike) -> pd.DataFrame:
    """The block of ``path`` with coordinates (``rlnCoordinateX/Y/Z`` or
    ``rlnCenteredCoordinateX/Y/ZAngst``): ``particles`` if it has them, else the first."""
    tables = read(path)

    def has_coords(df: pd.DataFrame) -> bool:
        cols = set(df.columns)
        return set(RLN_VOX) <= cols or set(RLN_CENTRED) <= cols

    if PARTICLES in tables and has_coords(tables[PARTICLES]):
        return tables[PARTICLES].copy()
    for df in tables.values():
        if has_coords(df):
            return df.copy()
    found = {k or "(unnamed)": list(v.columns)[:8] for k, v in tables.items()}
    raise MilopypError(
        f"{path}: no data block with rlnCoordinateX/Y/Z or rlnCenteredCoordinateX/Y/ZAngst; "
        f"found blocks {found}"
    )


def centre_vox(shape_zyx) -> np.ndarray:
    """RELION 5's tomogram centre in voxels, x,y,z order: ``(nx / 2, ny / 2, nz / 2)`` (a
    float division, see the module docstring)."""
    nz, ny, nx = (int(n) for n in shape_zyx)
    return np.array([nx, ny, nz], dtype=np.float64) / 2.0


def require_geometry(path: str | os.PathLike | Path, voxel_size_a, shape_zyx,
                     action: str) -> None:
    """Raise unless ``voxel_size_a`` (Å) and ``shape_zyx`` allow centred coordinates."""
    if voxel_size_a is None or shape_zyx is None:
        raise MilopypError(
            f"{path}: {action} RELION-5 centred coordinates (Å) needs the voxel size and the "
            f"tomogram shape; pass --voxel-size-a and the tomogram (voxel_size_a, shape_zyx)"
        )
    if not float(voxel_size_a) > 0 or len(tuple(shape_zyx)) != 3:
        raise MilopypError(
            f"{path}: expected a positive voxel size (Å) and shape (nz, ny, nx), got "
            f"{voxel_size_a} and {tuple(shape_zyx)}"
        )
