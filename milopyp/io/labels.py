"""The files of a selection: what the user wrote, and the labels it becomes.

Read:

- a *selection file* (:func:`read_selection`), its format detected from the content: a
  JSON/YAML mapping with ``clusters``, ``points`` or ``seeds`` is a selection document
  (parsed by :mod:`milopyp.selection.spec`); anything else is a coordinate table, read by
  suffix ``.csv/.tsv/.star/.txt/.coords`` through :func:`milopyp.io.coords.read_coordinates`
  or, for another suffix, sniffed from the first line (``data_`` = STAR, a header naming
  x, y, z separated by commas/tabs = CSV/TSV, 3-4 numbers = cet_pick text);
- coordinate tables (:func:`read_table`): x, y, z voxels, RELION-5 STAR tables in Å
  converted per tomogram with its shape and voxel size;
- the ``milopyp embed`` files a seed selection ranks cluster members with
  (:func:`read_embeddings`).

Write (:func:`write_labels_folder`; its summary is read back by :func:`read_labels_summary`)
a *labels folder*, the Snakemake checkpoint of ``milopyp import-selection``:
``{tomogram}.csv`` (``tomogram, x, y, z[, score, cluster]``, voxels) per tomogram with
labels, and ``selection.json`` (the summary); and optionally a
*negatives folder*: ``{tomogram}.csv`` (``tomogram, x, y, z, source``, possibly empty) per
campaign tomogram. Each folder is built in a hidden sibling folder and renamed into place,
so a failed run leaves neither.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from milopyp.errors import MilopypError
from milopyp.io import coords, exploration
from milopyp.io.atomic import stale_entries, umask, write_text

log = logging.getLogger(__name__)

#: the summary file of a labels folder
SUMMARY_NAME = "selection.json"
#: ``name -> (shape_zyx, voxel_size_a)`` of the campaign tomograms given as MRC files
Geometry = Mapping[str, tuple[tuple[int, int, int], float]]



# --------------------------------------------------------------------------- reading


def _load_document(text: str):
    """The parsed JSON/YAML value of ``text``, or None when it is neither."""
    import yaml

    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _sniff_suffix(text: str) -> str | None:
    """A coordinate-file suffix guessed from the first meaningful line, or None."""
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.lower().startswith("data_"):
            return ".star"
        for sep, suffix in (("\t", ".tsv"), (",", ".csv")):
            fields = {f.strip().lower() for f in s.split(sep)}
            if sep in s and {"x", "y", "z"} <= fields:
                return suffix
        fields = s.split()
        try:
            [float(v) for v in fields]
        except ValueError:
            return None
        return ".txt" if len(fields) in (3, 4) else None
    return None


def read_table(
    path: Path,
    *,
    tomogram: str | None,
    geometry: Geometry,
    display: Path | None = None,
) -> pd.DataFrame:
    """Read a coordinate table (x, y, z voxels) by suffix via ``read_coordinates``, with
    each row's place in the file (column ``LINE_COLUMN``, for messages).

    RELION-5 STAR tables in Å are converted per tomogram with ``geometry``. ``display`` is
    the name used in error messages when ``path`` is a renamed temporary copy.
    """
    display = display or path
    try:
        try:
            return coords.read_coordinates(path, tomogram=tomogram, lines=True)
        except MilopypError:
            if path.suffix.lower() != ".star" or not geometry:
                raise
        # Å coordinates: convert each tomogram's rows with its own shape and voxel size
        frames = []
        n_rows = None
        names_seen: set[str] = set()
        for name, (shape_zyx, voxel_size_a) in geometry.items():
            df = coords.read_coordinates(
                path, tomogram=tomogram, voxel_size_a=voxel_size_a, shape_zyx=shape_zyx,
                lines=True,
            )
            n_rows = len(df)
            names_seen |= set(df["tomogram"].astype(str))
            frames.append(df[df["tomogram"].astype(str) == name])
        out = pd.concat(frames, ignore_index=True)
        if n_rows is not None and len(out) != n_rows:
            unknown = sorted(names_seen - set(geometry))
            raise MilopypError(
                f"{display}: rows of tomogram(s) {unknown[:8]} cannot be converted from Å: no "
                f"MRC among --tomograms; known tomograms: {', '.join(sorted(geometry))}"
            )
        return out
    except MilopypError as err:
        if display != path:
            raise MilopypError(str(err).replace(str(path), str(display))) from None
        raise


def read_selection(path: Path, geometry: Geometry, select_keys: Iterable[str]):
    """Read a selection file and detect its format: ``("document", mapping)`` or
    ``("coordinates", table)``. A mapping is a document when the suffix is not a coordinate
    table's or when it has one of ``select_keys``."""
    select_keys = tuple(select_keys)
    if not path.exists():
        raise MilopypError(
            f"{path}: selection file not found; save it from explorer.html (Save selection) "
            f"or write a YAML file with clusters: [..]"
        )
    if not path.is_file():
        raise MilopypError(f"{path}: selection is not a file; give the selection file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise MilopypError(
            f"{path}: selection file is unreadable ({err}); give a UTF-8 JSON/YAML file or a "
            f"coordinate table"
        ) from None
    if not text.strip():
        raise MilopypError(
            f"selection {path} selects nothing (the file is empty); open explorer.html, tick "
            f"clusters and press Save selection, or list clusters: [..]"
        )
    doc = _load_document(text)
    suffix = path.suffix.lower()
    if isinstance(doc, dict) and (
        suffix not in coords.SUFFIXES or any(str(k).strip().lower() in select_keys for k in doc)
    ):
        return "document", doc
    if suffix in coords.SUFFIXES:
        return "coordinates", read_table(path, tomogram=None, geometry=geometry)
    sniffed = _sniff_suffix(text)
    if sniffed is None:
        raise MilopypError(
            f"{path}: unknown selection format: neither a JSON/YAML mapping with clusters:, "
            f"points: or seeds: nor a coordinate table with x, y, z; write e.g. "
            f"clusters: [3, 5] or save the selection from explorer.html"
        )
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / f"{path.stem}{sniffed}"
        copy.write_text(text, encoding="utf-8")
        return "coordinates", read_table(copy, tomogram=None, geometry=geometry, display=path)


def read_embeddings(paths: Iterable[str], wanted: set[str]) -> dict[str, tuple]:
    """``name -> (embeddings (n, D) float32, xyz (n, 3) voxels)`` of the ``wanted``
    tomograms among the ``milopyp embed`` files ``paths`` (read by
    :func:`milopyp.io.exploration.read_embeddings`)."""
    found: dict[str, tuple] = {}
    for path in paths:
        file = exploration.read_embeddings(path)
        if file.tomogram in wanted:
            found[file.tomogram] = (file.embeddings, file.xyz)
    missing = sorted(wanted - set(found))
    if missing:
        raise MilopypError(
            f"--embeddings: no file for tomogram(s) {missing}; give embeddings/{{tomogram}}.npz "
            f"of every tomogram the seeds' labels come from"
        )
    return found


def read_labels_summary(folder: Path) -> dict | None:
    """The ``selection.json`` summary :func:`write_labels_folder` wrote into ``folder``;
    None when there is none (label tables a user placed there)."""
    path = Path(folder) / SUMMARY_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MilopypError(f"{path}: cannot read the selection summary ({exc}); run "
                           f"`milopyp import-selection` again") from exc


# --------------------------------------------------------------------------- writing


def _is_labels_folder(path: Path) -> bool:
    return all(
        p.is_file() and (p.suffix == ".csv" or p.name == SUMMARY_NAME or p.name.startswith("."))
        for p in path.iterdir()
    )


def remove_old_output(out: Path) -> None:
    """Remove an earlier output folder (only one that looks like ours)."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or not _is_labels_folder(out):
        raise MilopypError(
            f"{out}: exists and is not a labels folder written by `milopyp import-selection` "
            f"(it holds other files); remove it or choose another -o"
        )
    shutil.rmtree(out)


def _build_prefix(out: Path) -> str:
    return f".{out.name}.tmp-"


def remove_stale_builds(out: Path, before: float) -> None:
    """Remove the hidden build folders of ``out`` (:func:`_build_folder`) that a killed run
    left beside it, those last modified before ``before`` (seconds since the epoch)."""
    for stale in stale_entries(out.parent, _build_prefix(out), "", before, directories=True):
        shutil.rmtree(stale, ignore_errors=True)
        log.info("removed %s, left by an interrupted run", stale)


def _build_folder(out: Path, tables: Mapping[str, pd.DataFrame]) -> Path:
    """Write ``{name}.csv`` for each table into a new hidden sibling folder of ``out``.

    Returns the folder; on an error it is removed.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_build_prefix(out), dir=out.parent))
    try:
        for name, table in tables.items():
            coords.write_coordinates(tmp / f"{name}.csv", table.reset_index(drop=True))
        os.chmod(tmp, 0o777 & ~umask())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def write_labels_folder(
    out: Path,
    labels: pd.DataFrame,
    summary: dict,
    *,
    negatives: Mapping[str, pd.DataFrame] | None = None,
    negatives_out: Path | None = None,
) -> list[str]:
    """Write ``{tomogram}.csv`` per tomogram and ``selection.json`` into ``out`` atomically,
    and, given ``negatives_out``, ``{name}.csv`` for each entry of ``negatives`` (tomogram
    name -> table, empty tables too) into that folder. Returns the label files' names.

    Files go to hidden temporary sibling folders that are renamed into place at the end
    (negatives first); on any error the temporary folders are removed and neither output
    exists.
    """
    tables = {str(name): table for name, table in labels.groupby("tomogram", sort=True)}
    files = [f"{name}.csv" for name in tables]
    made: list[Path] = []
    placed = False  # negatives_out is ours to remove again
    try:
        made.append(_build_folder(out, tables))
        write_text(made[0] / SUMMARY_NAME,
                   json.dumps({**summary, "files": files}, indent=1) + "\n")
        if negatives_out is not None:
            made.append(_build_folder(negatives_out, negatives or {}))
            remove_old_output(negatives_out)
            os.replace(made[1], negatives_out)
            placed = True
        remove_old_output(out)
        os.replace(made[0], out)
    except BaseException:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
        if placed:
            shutil.rmtree(negatives_out, ignore_errors=True)
        raise
    return files
