"""A campaign's tomograms from a RELION 5 ``tomograms.star`` (the tomogram set).

RELION 5's Reconstruct tomograms job (``relion_tomo_reconstruct_tomogram``) writes
``<project>/Tomograms/jobNNN/tomograms.star`` with one ``data_global`` table, a row per
tomogram. The columns read here, checked against RELION 5's own source:

- ``rlnTomoName``: the tomogram's name. milopyp names the tomogram after it, so the picks'
  ``rlnTomoName`` in ``picks.star`` goes straight back into RELION.
- ``rlnTomoReconstructedTomogram``: the reconstruction's path, relative to the RELION project
  directory (``<job>/tomograms/rec_<rlnTomoName>.mrc``); ``rlnTomoReconstructedTomogramHalf1``
  / ``Half2`` for even/odd halves (``rec_<name>_half1.mrc``), and, after a cryoCARE Denoise
  job, ``rlnTomoReconstructedTomogramDenoised`` ("N/A" for rows that were not denoised).
- ``rlnTomoTiltSeriesPixelSize`` (Å, of the unbinned tilt series) and
  ``rlnTomoTomogramBinning``: the reconstruction's voxel size is their product (RELION writes
  it as the MRC header's sampling rate). RELION writes the binning only when it is not 1,
  so a missing column means 1.
- ``rlnTomoSizeX/Y/Z``: the tomogram's size in unbinned pixels ("Width of a bin-1 tomogram in
  pixels"); the reconstruction has ``int(x / bin + 0.5)``, ``int(y / bin + 0.5)`` and
  ``int(z / bin)`` voxels (its Fourier-inversion route windows the volume from fractional
  sizes and may differ by a voxel, hence a tolerance of 1 voxel).

Sources (read through the project's code search; RELION 5 branch):
``3dem/relion src/jaz/tomography/programs/reconstruct_tomogram.cpp`` (``w1 = w / spacing +
0.5``, ``t1 = d / spacing``, ``samplingRate = getTiltSeriesPixelSize * spacing``,
``EMDL_TOMO_TOMOGRAM_BINNING`` set only when ``|spacing - 1| > 1e-2``, output names
``tomograms/rec_<name>[_half1|_half2].mrc``); the label strings in ``src/metadata_label.h`` of
RELION 5 (as mirrored in ``LSB-Helsinki/relion5``: ``EMDL_TOMO_RECONSTRUCTED_TOMOGRAM_FILE_NAME
= "rlnTomoReconstructedTomogram"``, ``..._HALF1/2 = "rlnTomoReconstructedTomogramHalf1/2"``,
``EMDL_TOMO_TOMOGRAM_BINNING = "rlnTomoTomogramBinning"``, ``rlnTomoSizeX`` "Width of a bin-1
tomogram in pixels", ``rlnTomoTiltSeriesPixelSize`` "Pixel size of the original tilt
series"); ``3dem/relion src/tomography_python_programs/denoise/cryoCARE/_utils.py``
(``add_denoised_tomo_to_global_star`` writes ``rlnTomoReconstructedTomogramDenoised``, "N/A"
for the rows of tomograms it did not denoise). The C++ label table also defines
``rlnTomoDenoisedTomogram`` (``EMDL_TOMO_DENOISED_TOMOGRAM_FILE_NAME``); any column can be
chosen with ``column``.

Only :func:`read_relion_tomograms` (with its private helpers) touches files: the STAR file
and the MRC headers. The rest are pure helpers.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import starfile

from milopyp.errors import MilopypError
from milopyp.io.mrc import common_voxel_size, read_header_sizes

log = logging.getLogger(__name__)

NAME = "rlnTomoName"
PIXEL_SIZE = "rlnTomoTiltSeriesPixelSize"
BINNING = "rlnTomoTomogramBinning"
SIZE_XYZ = ("rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ")
#: the column `relion_tomogram_column` defaults to
DEFAULT_COLUMN = "rlnTomoReconstructedTomogram"
#: relative tolerance between RELION's voxel size and the MRC header's
VOXEL_SIZE_RTOL = 0.01
#: voxels by which the MRC shape may differ from rlnTomoSize / binning (RELION truncates z)
SHAPE_TOLERANCE_VOX = 1

_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_NO_PATH = {"", "n/a", "none", "null", "nan"}


@dataclass(frozen=True)
class RelionTomogram:
    """One row of a tomograms.star, checked against its MRC file.

    ``shape_zyx``: the MRC's ``(nz, ny, nx)``. ``voxel_size_a``: the voxel size milopyp uses,
    in Å (the header's; RELION's when the header has none). ``relion_voxel_size_a``: Å,
    ``rlnTomoTiltSeriesPixelSize × rlnTomoTomogramBinning``. ``header_voxel_size_a``: Å, or
    None when the header has none (0, or IMOD's placeholder 1 Å where RELION says otherwise).
    """

    name: str
    path: Path
    shape_zyx: tuple[int, int, int]
    voxel_size_a: float
    relion_voxel_size_a: float
    header_voxel_size_a: float | None


def relion_voxel_size_a(pixel_size_a: float, binning: float) -> float:
    """Voxel size in Å of a RELION reconstruction: tilt-series pixel size (Å) × binning."""
    return float(pixel_size_a) * float(binning)


def expected_shape_zyx(size_xyz_vox: Sequence[float], binning: float) -> tuple[int, int, int]:
    """``(nz, ny, nx)`` of a reconstruction from rlnTomoSizeX/Y/Z (unbinned pixels) and the
    binning, as RELION sizes it: x and y rounded half up, z truncated."""
    x, y, z = (float(s) / float(binning) for s in size_xyz_vox)
    return math.floor(z), math.floor(y + 0.5), math.floor(x + 0.5)


def shapes_agree(shape_zyx: Sequence[int], expected_zyx: Sequence[int],
                 tolerance_vox: int = SHAPE_TOLERANCE_VOX) -> bool:
    """True when every axis of ``shape_zyx`` is within ``tolerance_vox`` of ``expected_zyx``."""
    return all(abs(int(a) - int(b)) <= tolerance_vox for a, b in zip(shape_zyx, expected_zyx))


def choose_voxel_size_a(relion_a: float, header_a: float | None, where: str,
                        rtol: float = VOXEL_SIZE_RTOL) -> tuple[float, float | None]:
    """The voxel size (Å) to use and the header's (None when it has none).

    A header without one (``header_a`` None) or with IMOD's placeholder 1 Å (while RELION's
    is not 1 Å) gives RELION's. A header that disagrees with RELION by more than ``rtol``
    raises: one of the two is wrong, and nothing downstream may run on a guessed scale.
    """
    if header_a is None or (header_a == 1.0 and abs(relion_a - 1.0) > rtol):
        return relion_a, None
    if abs(header_a - relion_a) > rtol * relion_a:
        raise MilopypError(
            f"{where}: voxel size {relion_a:g} Å in RELION ({PIXEL_SIZE} × {BINNING}) but "
            f"{header_a:g} Å in the MRC header; point the row at the tomogram of that binning, "
            f"fix the header (IMOD `alterheader -d`), or set `voxel_size:` to the true size"
        )
    return header_a, header_a


def candidate_paths(value: str, star_path: Path, project_dir: str | os.PathLike | None
                    ) -> list[Path]:
    """Where a tomograms.star path may lie, in order: as it is when absolute; else below
    ``project_dir`` when given; else below the project the star's job folder hangs from
    (``<project>/<JobType>/jobNNN/tomograms.star``), then below the working directory."""
    path = Path(value)
    if path.is_absolute():
        return [path]
    if project_dir is not None:
        return [Path(project_dir) / path]
    roots = [star_path.parent.parent.parent, Path(".")]
    found: list[Path] = []
    for root in roots:
        candidate = Path(os.path.normpath(root / path))
        if candidate not in found:
            found.append(candidate)
    return found


def voxel_size_override_a(tomograms: Mapping[str, RelionTomogram], source: str) -> float | None:
    """Voxel size (Å) the commands must be given instead of the headers' (``--voxel-size-a``),
    or None when every header has one. When a header has none, the campaign's one voxel size
    from RELION (the headers that have one agree with it to 1 %; mixed voxel sizes raise, as
    for MRC files)."""
    if all(t.header_voxel_size_a is not None for t in tomograms.values()):
        return None
    return common_voxel_size({n: t.relion_voxel_size_a for n, t in tomograms.items()}, source)


# --------------------------------------------------------------------------- reading


def _global_table(star_path: Path, column: str) -> pd.DataFrame:
    """The tomograms table (the block with rlnTomoName) of a tomograms.star."""
    if not star_path.is_file():
        raise MilopypError(f"{star_path}: RELION tomograms.star not found; check "
                           "`relion_tomograms:` (relative to the working directory)")
    try:
        blocks = starfile.read(star_path, always_dict=True,
                               parse_as_string=[NAME, column])
    except Exception as err:  # noqa: BLE001 -- starfile raises many kinds on bad input
        raise MilopypError(f"{star_path}: not a readable STAR file ({err}); give the "
                           "tomograms.star of a RELION 5 Reconstruct tomograms job") from None
    for block in [blocks.get("global"), *blocks.values()]:
        if isinstance(block, dict) and NAME in block:  # a single tomogram as a key-value block
            block = pd.DataFrame([block])
        if isinstance(block, pd.DataFrame) and NAME in block.columns and len(block):
            return block.reset_index(drop=True)
    raise MilopypError(
        f"{star_path}: no table with {NAME} rows (blocks: {', '.join(blocks) or 'none'}); give "
        "the tomograms.star of a RELION 5 Reconstruct tomograms job"
    )


def _require_columns(table: pd.DataFrame, star_path: Path, column: str) -> None:
    if column not in table.columns:
        paths = [c for c in table.columns if c.startswith("rlnTomoReconstructedTomogram")]
        raise MilopypError(
            f"{star_path}: no column {column} (tomogram columns here: {', '.join(paths) or 'none'}); "
            f"set `relion_tomogram_column:` to one of them, or give the tomograms.star of a RELION 5 "
            f"Reconstruct tomograms (or Denoise) job"
        )
    if PIXEL_SIZE not in table.columns:
        raise MilopypError(f"{star_path}: no column {PIXEL_SIZE}, so no voxel size; give the "
                           "tomograms.star of a RELION 5 Reconstruct tomograms job")


def _positive(value, what: str, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise MilopypError(f"{where}: {what} must be a number > 0, got {value!r}; fix the row")
    return number


def read_relion_tomograms(
    star_path: str | os.PathLike, *, column: str = DEFAULT_COLUMN,
    project_dir: str | os.PathLike | None = None, voxel_size_a: float | None = None,
) -> dict[str, RelionTomogram]:
    """``rlnTomoName -> RelionTomogram`` for every row of a RELION 5 tomograms.star.

    ``column``: the column holding each tomogram's path (e.g.
    ``rlnTomoReconstructedTomogramDenoised``). Paths are relative to ``project_dir``, else to
    the project the star's job folder hangs from, else to the working directory (see
    :func:`candidate_paths`). ``voxel_size_a`` (Å, config `voxel_size`), when given, is used
    as it is and RELION's is not compared with the headers.

    Raises MilopypError (one line naming the star file, the row and the fix) on a missing
    file or column, a bad name and a voxel size that disagrees with the header by more than
    1 %; logs a warning when the MRC shape is more than 1 voxel off rlnTomoSize / binning.
    """
    star_path = Path(star_path)
    table = _global_table(star_path, column)
    _require_columns(table, star_path, column)
    tomograms: dict[str, RelionTomogram] = {}
    for _, row in table.iterrows():
        name = str(row[NAME]).strip()
        where = f"{star_path}: {NAME} {name}"
        if not _NAME_PATTERN.fullmatch(name):
            raise MilopypError(f"{where}: the name holds characters other than letters, digits, "
                               "_ and -, which cannot name a tomogram; rename it in RELION")
        if name in tomograms:
            raise MilopypError(f"{where}: two rows share this name; remove one")
        value = row[column]
        if pd.isna(value) or str(value).strip().lower() in _NO_PATH:
            raise MilopypError(f"{where}: no tomogram in {column} ({value!r}); run the job for "
                               "this tomogram or remove its row")
        tried = candidate_paths(str(value).strip(), star_path, project_dir)
        path = next((p for p in tried if p.is_file()), None)
        if path is None:
            fix = ("check `relion_project_dir:`" if project_dir is not None else
                   "set `relion_project_dir:` to the RELION project directory")
            raise MilopypError(
                f"{where}: {column} {value} not found (tried {', '.join(map(str, tried))}); "
                f"{fix} (the paths in tomograms.star are relative to it)"
            )
        binning = _positive(row[BINNING], BINNING, where) if BINNING in table.columns else 1.0
        relion_a = relion_voxel_size_a(_positive(row[PIXEL_SIZE], PIXEL_SIZE, where), binning)
        shape_zyx, recorded_a = read_header_sizes(path)  # one read; checks it is a 3-D MRC
        where = f"{where} ({path})"
        if voxel_size_a:
            chosen_a, header_a = float(voxel_size_a), recorded_a
        else:
            chosen_a, header_a = choose_voxel_size_a(relion_a, recorded_a, where)
            if header_a is None:
                log.info("%s: the MRC header has no voxel size; using RELION's %g Å", where, relion_a)
        if all(c in table.columns for c in SIZE_XYZ):
            size_xyz = [_positive(row[c], c, where) for c in SIZE_XYZ]
            expected = expected_shape_zyx(size_xyz, binning)
            if not shapes_agree(shape_zyx, expected):
                log.warning(
                    "%s: MRC shape (z, y, x) %s but RELION's %s / %s %g gives %s; check that the "
                    "row points at the reconstruction of that binning", where, shape_zyx,
                    "rlnTomoSizeX/Y/Z", BINNING, binning, expected,
                )
        tomograms[name] = RelionTomogram(name, path, shape_zyx, chosen_a, relion_a, header_a)
    return tomograms
