"""Read and write point tables (particle coordinates) as CSV/TSV, cet_pick text or RELION STAR.

A point table is a DataFrame with columns ``tomogram, x, y, z`` (+ ``score`` where there is
one, + any other columns the file carried). ``x, y, z`` are voxels of the tomogram named in
``tomogram``, 0-based, at voxel centres: voxel ``[k, j, i]`` of a ``[z, y, x]`` array is the
point ``x=i, y=j, z=k``. This module is the one place that turns tables into ``(N, 3)``
``xyz`` arrays (:func:`xyz_array`) and back (:func:`points_frame`).

Formats, chosen by suffix:

- ``.csv`` / ``.tsv``: a header line naming ``x, y, z`` (any case); other columns are kept.
- ``.txt`` / ``.coords`` (cet_pick, TomoTwin): whitespace-separated ``x y z [score]``, one
  point per line, no header; lines starting with ``#`` are ignored.
- ``.star`` (RELION): ``rlnCoordinateX/Y/Z`` in voxels of the tomogram, or RELION-5
  ``rlnCenteredCoordinateX/Y/ZAngst``. ``rlnTomoName`` <-> ``tomogram`` and
  ``rlnAutopickFigureOfMerit`` <-> ``score``.

RELION-5 centred coordinates (Å from the tomogram's centre ``n / 2``) are defined in
:mod:`milopyp.io.star`, which reads and writes the STAR files;
:func:`read_coordinates` / :func:`write_coordinates` are exact inverses.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from milopyp.errors import MilopypError
from milopyp.io import star
from milopyp.io.atomic import atomic_path

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".tsv", ".txt", ".coords", ".star")

_XYZ = ("x", "y", "z")
# RELION's columns (:mod:`milopyp.io.star` defines them)
_RLN_VOX, _RLN_CENTRED, _RLN_TOMO, _RLN_SCORE = (star.RLN_VOX, star.RLN_CENTRED, star.RLN_TOMO,
                                                 star.RLN_SCORE)
#: column :func:`read_coordinates` adds with ``lines=True``: where each row is in the file
#: (``"line 7"``; ``"data row 3"`` where lines are unknown, e.g. STAR)
LINE_COLUMN = "__line__"


# --------------------------------------------------------------------------- helpers


def xyz_array(df: pd.DataFrame) -> np.ndarray:
    """The ``x, y, z`` columns of a point table as a float64 ``(N, 3)`` array (voxels)."""
    missing = [c for c in _XYZ if c not in df.columns]
    if missing:
        raise MilopypError(
            f"point table has no column(s) {missing}; found {list(df.columns)}; "
            f"expected x, y, z in voxels"
        )
    return df.loc[:, list(_XYZ)].to_numpy(dtype=np.float64).reshape(-1, 3)


def empty_points(columns: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """An empty point table with ``tomogram, x, y, z`` and then ``columns``."""
    df = pd.DataFrame({"tomogram": pd.Series(dtype=str)})
    for c in _XYZ:
        df[c] = pd.Series(dtype=np.float64)
    for c in columns:
        if c not in df.columns:
            df[c] = pd.Series(dtype=np.float64)
    return df


def points_frame(xyz, tomogram: str, score=None, **columns) -> pd.DataFrame:
    """A point table from an ``(N, 3)`` x,y,z array (voxels), a tomogram name and extras."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    data: dict = {"tomogram": [str(tomogram)] * len(xyz)}
    data.update({c: xyz[:, i] for i, c in enumerate(_XYZ)})
    if score is not None:
        data["score"] = np.asarray(score, dtype=np.float64).reshape(-1)
    data.update(columns)
    return pd.DataFrame(data)


def _standard_order(df: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in ("tomogram", *_XYZ, "score") if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]].reset_index(drop=True)


def _fill_tomogram(df: pd.DataFrame, tomogram: str | None, path: Path) -> pd.DataFrame:
    if "tomogram" not in df.columns:
        df.insert(0, "tomogram", tomogram if tomogram is not None else path.stem)
    df["tomogram"] = df["tomogram"].astype(str)
    return df


def _numeric_xyz(df: pd.DataFrame, columns, path: Path) -> None:
    """Make ``columns`` float64 in place; raise naming the first bad row (1-based, data rows)."""
    for c in columns:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = values.isna().to_numpy() | ~np.isfinite(values.to_numpy(dtype=np.float64))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise MilopypError(
                f"{path}: column {c!r} row {row + 1} is {df[c].iloc[row]!r}, expected a finite "
                f"number; fix the coordinate file"
            )
        df[c] = values.astype(np.float64)


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise MilopypError(
            f"{path}: unknown coordinate format {path.suffix!r}; use one of {', '.join(SUFFIXES)}"
        )
    return suffix


# --------------------------------------------------------------------------- readers


def _table_lines(path: Path, n_rows: int) -> list[int] | None:
    """The 1-based file line of each data row of a CSV/TSV (the header is the first non-blank
    line; blank lines hold no row, as pandas reads them), or None when that does not account
    for ``n_rows`` rows (e.g. a quoted field spanning lines)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    numbers = [i for i, line in enumerate(lines, start=1) if line.strip()][1:]
    return numbers if len(numbers) == n_rows else None


def _read_table(path: Path, sep: str) -> pd.DataFrame:
    try:
        header = pd.read_csv(path, sep=sep, nrows=0, skipinitialspace=True).columns
        as_text = {c: str for c in header if str(c).strip().lower() == "tomogram"}
        df = pd.read_csv(path, sep=sep, skipinitialspace=True, dtype=as_text)
    except pd.errors.EmptyDataError:
        raise MilopypError(
            f"{path}: file is empty; expected a header line naming x, y, z"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise MilopypError(f"{path}: not a readable table ({err}); fix the file") from None
    df.columns = [str(c).strip() for c in df.columns]
    rename = {}
    for c in df.columns:
        low = c.lower()
        if low in (*_XYZ, "score", "tomogram") and c != low:
            rename[c] = low
    lowered = [rename.get(c, c) for c in df.columns]
    duplicates = sorted({c for c in lowered if lowered.count(c) > 1})
    if duplicates:
        raise MilopypError(
            f"{path}: columns {duplicates} appear more than once (names are case-insensitive); "
            f"keep one of each"
        )
    df = df.rename(columns=rename)
    missing = [c for c in _XYZ if c not in df.columns]
    if missing:
        raise MilopypError(
            f"{path}: no column(s) {', '.join(missing)}; found {list(df.columns)}; the first "
            f"line must be a header naming x, y, z (voxels)"
        )
    _numeric_xyz(df, _XYZ, path)
    if "score" in df.columns:
        df["score"] = pd.to_numeric(df["score"], errors="coerce")
    df.attrs["lines"] = _table_lines(path, len(df))
    return df


def _read_text(path: Path) -> pd.DataFrame:
    rows: list[list[float]] = []
    numbers: list[int] = []
    n_columns = None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise MilopypError(f"{path}: not a text file of coordinates ({err})") from None
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise MilopypError(
                f"{path}: line {number} is {text[:60]!r}, expected numbers 'x y z [score]' "
                f"(voxels); a file with a header line should be named .csv or .tsv"
            ) from None
        if len(values) not in (3, 4) or (n_columns is not None and len(values) != n_columns):
            expected = f"{n_columns}" if n_columns is not None else "3 or 4"
            raise MilopypError(
                f"{path}: line {number} has {len(values)} numbers, expected {expected} "
                f"('x y z [score]'); fix the coordinate file"
            )
        if not np.all(np.isfinite(values[:3])):
            raise MilopypError(f"{path}: line {number} has a non-finite coordinate: {text!r}")
        n_columns = len(values)
        rows.append(values)
        numbers.append(number)
    columns = ["x", "y", "z", "score"][: n_columns or 3]
    df = pd.DataFrame(np.asarray(rows, dtype=np.float64).reshape(-1, len(columns)), columns=columns)
    df.attrs["lines"] = numbers
    return df


def _read_star(path: Path, voxel_size_a, shape_zyx) -> pd.DataFrame:
    df = star.particle_block(path)
    if set(_RLN_VOX) <= set(df.columns):
        _numeric_xyz(df, _RLN_VOX, path)
        xyz = df.loc[:, list(_RLN_VOX)].to_numpy(dtype=np.float64)
        drop = list(_RLN_VOX) + [c for c in _RLN_CENTRED if c in df.columns]
    else:
        star.require_geometry(path, voxel_size_a, shape_zyx, "reading")
        _numeric_xyz(df, _RLN_CENTRED, path)
        xyz_a = df.loc[:, list(_RLN_CENTRED)].to_numpy(dtype=np.float64)
        xyz = xyz_a / float(voxel_size_a) + star.centre_vox(shape_zyx)
        drop = list(_RLN_CENTRED)
    df = df.drop(columns=drop)
    rename = {}
    if _RLN_TOMO in df.columns and "tomogram" not in df.columns:
        rename[_RLN_TOMO] = "tomogram"
    if _RLN_SCORE in df.columns and "score" not in df.columns:
        rename[_RLN_SCORE] = "score"
    df = df.rename(columns=rename)
    for i, c in enumerate(_XYZ):
        df[c] = xyz[:, i]
    return df


def read_coordinates(
    path: str | os.PathLike,
    *,
    tomogram: str | None = None,
    voxel_size_a: float | None = None,
    shape_zyx: tuple[int, int, int] | None = None,
    lines: bool = False,
) -> pd.DataFrame:
    """Read a point table (columns ``tomogram, x, y, z[, score], ...``; x,y,z in voxels).

    The format follows the suffix (see the module docstring). A file without a tomogram
    column gets ``tomogram`` (or, if None, the file stem) in every row. ``voxel_size_a``
    (Å) and ``shape_zyx`` are needed only for RELION-5 centred coordinates in Å. With
    ``lines=True`` the column :data:`LINE_COLUMN` says where each row is in the file (``"line
    7"`` for CSV/TSV/text, ``"data row 3"`` for STAR), for messages that name the user's
    line; drop it before writing the table.
    """
    path = Path(path)
    suffix = _check_suffix(path)
    if not path.is_file():
        raise MilopypError(f"{path}: coordinate file not found; check the path")
    if suffix in (".csv", ".tsv"):
        df = _read_table(path, "," if suffix == ".csv" else "\t")
    elif suffix in (".txt", ".coords"):
        df = _read_text(path)
    else:
        df = _read_star(path, voxel_size_a, shape_zyx)
    numbers = df.attrs.pop("lines", None)
    df = _fill_tomogram(df, tomogram, path)
    if lines:
        df[LINE_COLUMN] = ([f"line {n}" for n in numbers] if numbers is not None
                           else [f"data row {i}" for i in range(1, len(df) + 1)])
    return _standard_order(df)


# --------------------------------------------------------------------------- writers


def star_frame(df: pd.DataFrame, path: Path, voxel_size_a, shape_zyx) -> pd.DataFrame:
    """The RELION particle table of a point table (see :func:`write_coordinates`); ``path``
    names the output in messages."""
    xyz = xyz_array(df)
    out = pd.DataFrame(index=range(len(df)))
    if "tomogram" in df.columns:
        out[_RLN_TOMO] = df["tomogram"].astype(str).to_numpy()
    for i, c in enumerate(_RLN_VOX):
        out[c] = xyz[:, i]
    if voxel_size_a is not None or shape_zyx is not None:
        star.require_geometry(path, voxel_size_a, shape_zyx, "writing")
        xyz_a = (xyz - star.centre_vox(shape_zyx)) * float(voxel_size_a)
        for i, c in enumerate(_RLN_CENTRED):
            out[c] = xyz_a[:, i]
    if "score" in df.columns:
        out[_RLN_SCORE] = df["score"].to_numpy()
    extra = [c for c in df.columns if c.startswith("rln") and c not in out.columns]
    dropped = [c for c in df.columns if c not in ("tomogram", *_XYZ, "score", *extra)]
    for c in extra:
        out[c] = df[c].to_numpy()
    if dropped:
        log.debug("%s: columns %s have no RELION label and are not written", path, dropped)
    return out


def write_coordinates(
    path: str | os.PathLike,
    df: pd.DataFrame,
    *,
    voxel_size_a: float | None = None,
    shape_zyx: tuple[int, int, int] | None = None,
) -> None:
    """Write a point table atomically in the format given by the suffix.

    ``.csv``/``.tsv`` keep every column; ``.txt``/``.coords`` hold one tomogram as
    ``x y z [score]``; ``.star`` writes ``rlnTomoName, rlnCoordinateX/Y/Z`` (voxels),
    ``rlnAutopickFigureOfMerit`` (score), other ``rln*`` columns and, given ``voxel_size_a``
    (Å) and ``shape_zyx``, RELION-5 ``rlnCenteredCoordinateX/Y/ZAngst``.
    """
    path = Path(path)
    suffix = _check_suffix(path)
    xyz = xyz_array(df)
    if not np.all(np.isfinite(xyz)):
        raise MilopypError(f"{path}: refusing to write non-finite coordinates")
    df = _standard_order(df)
    if suffix in (".csv", ".tsv"):
        with atomic_path(path) as tmp:
            df.to_csv(tmp, sep="," if suffix == ".csv" else "\t", index=False)
    elif suffix in (".txt", ".coords"):
        if "tomogram" in df.columns and df["tomogram"].nunique() > 1:
            raise MilopypError(
                f"{path}: the table holds points of {df['tomogram'].nunique()} tomograms but "
                f"{suffix} holds one; write .csv/.star or one file per tomogram"
            )
        cols = ["x", "y", "z"] + (["score"] if "score" in df.columns else [])
        with atomic_path(path) as tmp:
            np.savetxt(tmp, df[cols].to_numpy(dtype=np.float64), fmt="%.10g", delimiter="\t")
    else:
        out = star_frame(df, path, voxel_size_a, shape_zyx)
        star.write(path, out)


def read_picks(path: str | os.PathLike, *, voxel_size_a: float | None = None,
               shape_zyx: tuple[int, int, int] | None = None) -> pd.DataFrame:
    """A pick table as `milopyp localize` writes it (:func:`read_coordinates`). A 0-byte file
    is an error, not "no picks": localize writes a header line even for a tomogram without
    picks, so an empty file is a cut-off or foreign write."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise MilopypError(
            f"{path}: empty file (0 bytes), not a pick table; a tomogram without picks has a "
            f"header line (tomogram,x,y,z,score); rerun its localize job (delete the file)"
        )
    return read_coordinates(path, voxel_size_a=voxel_size_a, shape_zyx=shape_zyx)


def where_in_file(df: pd.DataFrame, i: int) -> str:
    """Where row ``i`` (0-based position in ``df``) is, for a message: its
    :data:`LINE_COLUMN` entry (``line L`` of the file read), else ``row i+1``."""
    if LINE_COLUMN in df.columns:
        return str(df[LINE_COLUMN].iloc[i])
    return f"row {i + 1}"


def check_inside(df: pd.DataFrame, shape_zyx: tuple[int, int, int], source) -> None:
    """Raise naming ``source`` if any point lies outside a tomogram of shape ``(nz, ny, nx)``.

    A point is inside when it rounds to a voxel: ``-0.5 <= x < nx - 0.5`` (same for y, z).
    The first such point is named by its file line when ``df`` has :data:`LINE_COLUMN`,
    else by its 1-based row in ``df``.
    """
    xyz = xyz_array(df)
    nz, ny, nx = (int(n) for n in shape_zyx)
    upper = np.array([nx, ny, nz], dtype=np.float64) - 0.5
    with np.errstate(invalid="ignore"):
        inside = np.all((xyz >= -0.5) & (xyz < upper), axis=1)
    if inside.all():
        return
    bad = np.flatnonzero(~inside)
    x, y, z = xyz[bad[0]]
    raise MilopypError(
        f"{source}: {bad.size} of {len(xyz)} points lie outside the tomogram "
        f"(x 0..{nx - 1}, y 0..{ny - 1}, z 0..{nz - 1}; shape_zyx {(nz, ny, nx)}), first is "
        f"{where_in_file(df, int(bad[0]))}: x={x:g}, y={y:g}, z={z:g}; coordinates must be "
        f"voxels of this tomogram, 0-based, in x,y,z order; did you pass Å or z,y,x?"
    )
