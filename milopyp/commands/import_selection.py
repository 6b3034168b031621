"""``milopyp import-selection``: turn a user's selection into per-tomogram label files.

The selection file's format is detected from its content (see :mod:`milopyp.selection`):

1. a JSON/YAML *mapping* with ``clusters``, ``points`` or ``seeds`` is a selection document:
   ``explorer`` when ``source: "milopyp explorer"`` (the explorer's ``selection.json``),
   ``seeds`` when it has ``seeds``, else ``clusters``; these need ``--points``;
2. anything else is read as a coordinate table (manual annotation, used directly as labels):
   by suffix ``.csv/.tsv/.star/.txt/.coords`` through :func:`milopyp.io.coords.read_coordinates`,
   or, for another suffix, sniffed from the first line (``data_`` = STAR, a header naming
   x, y, z separated by commas/tabs = CSV/TSV, 3-4 numbers = cet_pick text).

3. ``copick:{object}:{user}:{session}`` (with ``--copick-config``): the picks of that object,
   user and session in a copick project, one run per campaign tomogram, converted from Å with
   each tomogram's voxel size; used directly as labels, like a coordinate table.

``--tomograms`` lists the campaign, as names or as MRC paths (name = file name up to the
first dot, as the workflow names them). With paths, labels are checked to lie inside their
tomogram, and RELION-5 STAR tables in Å (``rlnCenteredCoordinate*Angst``) are converted per
tomogram with its header's shape and voxel size. A coordinate table (the selection itself,
a seeds file, a negatives table) is checked as written, before any filter: an empty table
(negatives may be empty), a row naming a tomogram outside the campaign and (with paths) a
row outside its tomogram stop the command with one line naming that file and the line.

Seeds (``--seed-labels nearest``, the default) give few-shot labels: each seed's nearest
candidate (within ``--seed-radius``), then the members of the seeds' clusters nearest to a
seed in embedding space (``--embeddings``; without them, the UMAP coordinates of points.csv),
in the seeds' tomograms (or ``--label-tomograms``), up to ``--max-seed-labels`` labels
(default max(20, 10 x seeds)). ``--seed-labels clusters`` takes every member, as clusters
named explicitly always do. The log says how many labels came from where.

A selection document's ``negatives`` (see :mod:`milopyp.selection`) go to
``--negatives-output``: one ``{tomogram}.csv`` (``tomogram, x, y, z, source``, possibly
empty) per campaign tomogram. Negatives within ``--seed-radius`` voxels of a label are
dropped (a point cannot be both).

Output folder (a Snakemake checkpoint): ``{tomogram}.csv`` (``tomogram, x, y, z[, score,
cluster]``, voxels) for each tomogram that has labels, and ``selection.json`` (always) with
the source file, the detected format, the clusters chosen (and seed votes), the label counts
per tomogram, the negatives' counts and the options used. It is built in a hidden sibling
folder and renamed into place at the end; an existing output folder is removed first, so a
failed run leaves none.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from milopyp.errors import MilopypError

HELP = "turn a selection (explorer, clusters, seeds, coordinates) into labels"
log = logging.getLogger(__name__)

SUMMARY_NAME = "selection.json"
DEFAULT_SEED_RADIUS_VOX = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--selection", required=True, metavar="FILE",
        help="selection: explorer selection.json, YAML/JSON {clusters: [..]} or {seeds: ..}, "
             "a coordinate table (CSV/TSV/STAR/.txt, x y z in voxels), or "
             "copick:OBJECT:USER:SESSION with --copick-config",
    )
    parser.add_argument(
        "--copick-config", default=None, metavar="JSON",
        help="copick project (config.json) of a copick:OBJECT:USER:SESSION selection",
    )
    parser.add_argument(
        "--points", default=None, metavar="CSV",
        help="explore/points.csv from `milopyp cluster` (needed unless the selection is a "
             "coordinate table)",
    )
    parser.add_argument(
        "--tomograms", nargs="+", required=True, metavar="NAME",
        help="the campaign's tomograms: names or MRC paths (paths enable inside checks and "
             "RELION-5 Å coordinates)",
    )
    parser.add_argument("-o", "--output", required=True, help="output folder (e.g. labels)")
    parser.add_argument(
        "--voxel-size", type=float, default=None, metavar="A",
        help="voxel size in Å of every tomogram, for RELION-5 Å coordinates (default: each "
             "MRC header)",
    )
    parser.add_argument(
        "--seed-radius", type=float, default=DEFAULT_SEED_RADIUS_VOX, metavar="VOX",
        help=f"a seed must lie within this many voxels of a candidate "
             f"({DEFAULT_SEED_RADIUS_VOX:g})",
    )
    parser.add_argument(
        "--max-labels-per-tomogram", type=int, default=None, metavar="N",
        help="keep at most N labels per tomogram (highest score first, else a seeded random "
             "sample); default: all",
    )
    parser.add_argument(
        "--label-tomograms", nargs="+", default=None, metavar="NAME",
        help="keep labels of these tomograms only (e.g. train on one tomogram)",
    )
    parser.add_argument(
        "--seed-labels", choices=["nearest", "clusters"], default="nearest",
        help="labels from seed-chosen clusters: the members nearest to the seeds, up to "
             "--max-seed-labels (nearest), or every member (clusters); default nearest",
    )
    parser.add_argument(
        "--max-seed-labels", type=int, default=None, metavar="N",
        help="most labels from seeds, seeds included (nearest mode); default max(20, 10 x "
             "seeds)",
    )
    parser.add_argument(
        "--embeddings", nargs="+", default=None, metavar="NPZ",
        help="embeddings/{tomogram}.npz used by `milopyp cluster`: the space in which cluster "
             "members are ranked by distance to the seeds (default: UMAP of points.csv)",
    )
    parser.add_argument(
        "--negatives-output", default=None, metavar="DIR",
        help="folder for the negatives, one {tomogram}.csv per campaign tomogram (e.g. "
             "negatives); default: not written",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling (0)")


# --------------------------------------------------------------------------- campaign


def tomogram_name(path: str | os.PathLike) -> str:
    """A tomogram's name: its file name up to the first dot (as the workflow names them)."""
    return Path(path).name.split(".")[0]


def campaign(
    items: list[str], voxel_size_a: float | None = None
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
        elif os.sep in item or path.suffix.lower() in (".mrc", ".rec", ".st", ".ali", ".map"):
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


# --------------------------------------------------------------------------- reading


def _load_document(path: Path, text: str):
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
    geometry: dict[str, tuple[tuple[int, int, int], float]],
    display: Path | None = None,
) -> pd.DataFrame:
    """Read a coordinate table (x, y, z voxels) by suffix via ``read_coordinates``, with
    each row's place in the file (column ``LINE_COLUMN``, for messages).

    RELION-5 STAR tables in Å are converted per tomogram with ``geometry``. ``display`` is
    the name used in error messages when ``path`` is a renamed temporary copy.
    """
    from milopyp.io.coords import read_coordinates

    display = display or path
    try:
        try:
            return read_coordinates(path, tomogram=tomogram, lines=True)
        except MilopypError:
            if path.suffix.lower() != ".star" or not geometry:
                raise
        # Å coordinates: convert each tomogram's rows with its own shape and voxel size
        frames = []
        n_rows = None
        names_seen: set[str] = set()
        for name, (shape_zyx, voxel_size_a) in geometry.items():
            df = read_coordinates(
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


def read_selection(path: Path, geometry) -> tuple[str, object]:
    """Detect the selection format: ``("document", mapping)`` or ``("coordinates", table)``."""
    from milopyp.io.coords import SUFFIXES
    from milopyp.selection import SELECT_KEYS

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
    doc = _load_document(path, text)
    suffix = path.suffix.lower()
    if isinstance(doc, dict) and (
        suffix not in SUFFIXES or any(str(k).strip().lower() in SELECT_KEYS for k in doc)
    ):
        return "document", doc
    if suffix in SUFFIXES:
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


def read_points(path: str | None, selection: Path) -> pd.DataFrame:
    from milopyp.io.coords import read_coordinates
    from milopyp.selection import check_points_table

    if path is None:
        raise MilopypError(
            f"{selection}: a selection by clusters, points or seeds needs --points "
            f"explore/points.csv (written by `milopyp cluster`)"
        )
    if not Path(path).is_file():
        raise MilopypError(f"{path}: points table not found; run `milopyp cluster` first")
    return check_points_table(read_coordinates(path), path)


# --------------------------------------------------------------------------- output


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
    from milopyp.io.atomic import stale_entries

    for stale in stale_entries(out.parent, _build_prefix(out), "", before, directories=True):
        shutil.rmtree(stale, ignore_errors=True)
        log.info("removed %s, left by an interrupted run", stale)


def _build_folder(out: Path, tables: dict[str, pd.DataFrame]) -> Path:
    """Write ``{name}.csv`` for each table into a new hidden sibling folder of ``out``.

    Returns the folder; on an error it is removed.
    """
    from milopyp.io.coords import write_coordinates

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_build_prefix(out), dir=out.parent))
    try:
        for name, table in tables.items():
            write_coordinates(tmp / f"{name}.csv", table.reset_index(drop=True))
        os.chmod(tmp, 0o777 & ~_umask())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def write_labels_folder(
    out: Path,
    labels: pd.DataFrame,
    summary: dict,
    *,
    negatives: dict[str, pd.DataFrame] | None = None,
    negatives_out: Path | None = None,
) -> list[str]:
    """Write ``{tomogram}.csv`` per tomogram and ``selection.json`` into ``out`` atomically,
    and, given ``negatives_out``, ``{name}.csv`` for each entry of ``negatives`` (tomogram
    name -> table, empty tables too) into that folder.

    Files go to hidden temporary sibling folders that are renamed into place at the end
    (negatives first); on any error the temporary folders are removed and neither output
    exists.
    """
    from milopyp.io.atomic import write_text

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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- main


def _shapes(geometry) -> dict[str, tuple[int, int, int]]:
    """``name -> shape_zyx`` of the campaign tomograms given as MRC paths."""
    return {name: shape_zyx for name, (shape_zyx, _) in geometry.items()}


def _inside_check(labels: pd.DataFrame, geometry, source) -> None:
    from milopyp.io.coords import check_inside

    for name, table in labels.groupby("tomogram"):
        if name in geometry:
            check_inside(table, geometry[name][0], f"{source} (tomogram {name})")


def _seed_table(
    spec, selection: Path, known: list[str], geometry, *, tomogram: str | None = None,
    allow_empty: bool = False, what: str = "seeds",
) -> pd.DataFrame:
    """The seeds of a ``seeds`` document (or of its ``negatives``) as ``tomogram, x, y, z``
    (voxels). ``spec`` has ``seeds`` and ``seeds_file``; ``tomogram`` is the default name."""
    from milopyp.selection import check_table_rows, nothing_selected

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
        check_table_rows(seeds, known, _shapes(geometry), seed_path, f"its {what}")
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


def read_embeddings(paths: list[str], wanted: set[str]) -> dict[str, tuple]:
    """``name -> (embeddings (n, D), xyz (n, 3))`` of the ``wanted`` tomograms among the
    ``milopyp embed`` files ``paths`` (name: the file's ``tomogram`` entry, else its stem)."""
    import numpy as np

    found: dict[str, tuple] = {}
    for path in paths:
        if not Path(path).is_file():
            raise MilopypError(f"{path}: embeddings file not found; run `milopyp embed` first")
        try:
            with np.load(path, allow_pickle=False) as f:
                name = str(f["tomogram"]) if "tomogram" in f.files else tomogram_name(path)
                if name not in wanted:
                    continue
                found[name] = (np.asarray(f["embeddings"], np.float32),
                               np.asarray(f["xyz"], np.float64).reshape(-1, 3))
        except (OSError, ValueError, KeyError) as err:
            raise MilopypError(
                f"{path}: not an embeddings file with embeddings and xyz ({err}); give the "
                f"files written by `milopyp embed`"
            ) from None
    missing = sorted(wanted - set(found))
    if missing:
        raise MilopypError(
            f"--embeddings: no file for tomogram(s) {missing}; give embeddings/{{tomogram}}.npz "
            f"of every tomogram the seeds' labels come from"
        )
    return found


def _seed_features(points, scope: set[str], embeddings: list[str] | None):
    """Features to rank cluster members by (rows of points), the metric and the space's name."""
    from milopyp import selection as sel

    if embeddings:
        found = read_embeddings(embeddings, scope)
        return sel.embedding_features(points, found, "--embeddings"), "cosine", "embedding"
    umap = sel.umap_features(points)
    if umap is None:
        raise MilopypError(
            "seeds: no --embeddings and no UMAP columns in --points to rank cluster members "
            "by; give --embeddings embeddings/*.npz or --seed-labels clusters"
        )
    return umap, "euclidean", "UMAP"


def _labels_from_document(args, spec, selection: Path, known, geometry, summary):
    """Labels of a selection document (explorer, clusters, seeds) and the point ids of the
    seeds' own candidates; logs how many labels came from where."""
    import numpy as np

    from milopyp import selection as sel

    points = read_points(args.points, selection)
    explicit = list(spec.clusters)
    labels = sel.labels_from_ids(points, explicit, spec.points, selection, args.points)
    from_clusters = sel.cluster_counts(labels[labels["cluster"].isin(explicit)])
    n_by_id = int((~labels["cluster"].isin(explicit)).sum())
    if explicit or spec.points:
        log.info("%s: %s selection: %s", selection, spec.format, "; ".join(
            part for part in (sel.describe_cluster_counts(from_clusters) if explicit else "",
                              f"{n_by_id} from points listed by id" if spec.points else "")
            if part))
    seed_ids = np.zeros(0, np.int64)
    chosen = list(explicit)
    if spec.seeds_file or spec.seeds is not None:
        seeds = _seed_table(spec, selection, known, geometry, tomogram=spec.tomogram)
        sel.check_known_tomograms(seeds["tomogram"], known, selection, "its seeds")
        choice = sel.clusters_from_seeds(
            points, seeds, radius_vox=float(args.seed_radius), source=selection
        )
        for c, n in choice.votes.items():
            log.info("%s: cluster %d chosen by %d of %d seed(s)", selection, c, n, len(seeds))
        chosen = sorted(set(explicit) | set(choice.clusters))
        seed_ids = choice.assignments["point_id"].to_numpy(np.int64)
        summary.update(
            {"n_seeds": len(seeds), "seed_radius_vox": float(args.seed_radius),
             "seed_votes": {str(c): n for c, n in choice.votes.items()},
             "seed_labels": args.seed_labels}
        )
        if args.seed_labels == "clusters":
            extra = sel.labels_from_ids(points, choice.clusters, seed_ids, selection,
                                        args.points)
            log.info("%s: seeds: every member of the chosen clusters: %s", selection,
                     sel.describe_cluster_counts(sel.cluster_counts(extra)))
        else:
            own = sel.SeedChoice(
                clusters=[c for c in choice.clusters if c not in explicit],
                votes=choice.votes, assignments=choice.assignments,
            )
            cap = args.max_seed_labels or sel.default_seed_label_cap(len(seeds))
            seed_tomograms = set(seeds["tomogram"].astype(str))
            scope = set(args.label_tomograms or seed_tomograms)
            features, metric, space = _seed_features(points, scope | seed_tomograms,
                                                     args.embeddings)
            near = sel.labels_near_seeds(points, own, features, max_labels=cap,
                                         tomograms=scope, metric=metric)
            extra = near.labels
            log.info("%s: %s", selection, near.describe(space))
            summary.update(
                {"max_seed_labels": cap, "seed_space": space,
                 "labels_from_seeds": near.n_seeds, "labels_from_clusters": near.n_from_clusters,
                 "dropped_by_seed_cap": near.n_dropped}
            )
        labels = pd.concat([labels, extra], ignore_index=True)
        labels = labels.drop_duplicates("point_id").sort_values("point_id")
        labels = labels.reset_index(drop=True)
    if spec.n_points is not None and spec.n_points != len(labels):
        log.warning(
            "%s: the explorer counted %d selected points but %s gives %d; was the "
            "selection saved from this run's explorer?",
            selection, spec.n_points, args.points, len(labels),
        )
    outside = sorted(set(labels["tomogram"]) - set(known))
    if outside:
        n = int(labels["tomogram"].isin(outside).sum())
        log.warning(
            "%s: %d selected points of tomogram(s) %s that are not in --tomograms are "
            "dropped", args.points, n, outside[:8],
        )
        labels = sel.restrict_tomograms(labels, known)
    summary.update(
        {"format": spec.format, "points_table": args.points, "clusters": chosen,
         "points": list(spec.points), "n_selected": len(labels)}
    )
    log.info("%s: %s selection, clusters %s + %d point id(s) -> %d points",
             selection, spec.format, chosen, len(spec.points), len(labels))
    return labels, points, seed_ids


def _negatives(args, spec, selection: Path, points, known, geometry, explicit_clusters):
    """The selection's negatives (``tomogram, x, y, z, source``) and how many came from
    where (``source -> count``)."""
    from milopyp import selection as sel

    neg = spec.negatives if spec is not None else sel.NegativeSpec()
    frames: dict[str, pd.DataFrame] = {}
    if neg.clusters or neg.points:
        both = sorted(set(neg.clusters) & set(explicit_clusters))
        if both:
            raise MilopypError(
                f"{selection}: cluster(s) {both} are selected and marked as negatives; a "
                f"cluster is either the target or not, remove it from one of the lists"
            )
        rows = sel.labels_from_ids(points, neg.clusters, neg.points, selection, args.points)
        in_cluster = rows["cluster"].isin(neg.clusters)
        if neg.clusters:
            frames["cluster"] = rows[in_cluster]
        if neg.points:
            frames["point"] = rows[~in_cluster]
    if neg.seeds_file or (neg.seeds is not None and len(neg.seeds)):
        seeds = _seed_table(neg, selection, known, geometry, tomogram=spec.tomogram,
                            allow_empty=True, what="negatives")
        sel.check_known_tomograms(seeds["tomogram"], known, selection, "its negatives")
        frames["table" if neg.seeds_file else "seed"] = seeds
    negatives = sel.negatives_table(frames)
    negatives = sel.restrict_tomograms(negatives, known)
    _inside_check(negatives, geometry, f"{selection} (negatives)")
    counts = {k: int((negatives["source"] == k).sum()) for k in frames}
    return negatives, counts


def _copick_labels(args, spec: tuple[str, str, str], known: list[str], geometry):
    """The picks of a ``copick:OBJECT:USER:SESSION`` selection (``tomogram, x, y, z, score``,
    voxels of each campaign tomogram)."""
    from milopyp.io import copick as cp

    if not args.copick_config:
        raise MilopypError(
            f"selection {args.selection}: a copick selection needs --copick-config (the "
            f"project's config.json; `copick:` in the workflow config)"
        )
    voxel_sizes = {}
    for name in known:
        if name in geometry:
            voxel_sizes[name] = geometry[name][1]
        elif args.voxel_size:
            voxel_sizes[name] = float(args.voxel_size)
        else:
            raise MilopypError(
                f"selection {args.selection}: no voxel size for tomogram {name} to convert "
                f"copick's Å positions; give its MRC path to --tomograms or pass --voxel-size"
            )
    root = cp.open_project(args.copick_config)
    object_name, user_id, session_id = spec
    labels = cp.read_picks(root, object_name, user_id, session_id, voxel_sizes,
                           f"{args.copick_config} ({args.selection})")
    log.info("%s: %d copick picks of %s (user %s, session %s)", args.copick_config,
             len(labels), object_name, user_id, session_id)
    return labels


def main(args: argparse.Namespace) -> None:
    from milopyp import selection as sel
    from milopyp.io.atomic import check_writable

    selection = Path(args.selection)
    out = Path(args.output)
    negatives_out = Path(args.negatives_output) if args.negatives_output else None
    if args.seed_radius is None or not args.seed_radius > 0:
        raise MilopypError(f"--seed-radius must be > 0 voxels, got {args.seed_radius}")
    for option in ("max_labels_per_tomogram", "max_seed_labels"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise MilopypError(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    for folder in (out, negatives_out):
        if folder is None:
            continue
        with contextlib.suppress(OSError):
            if selection.resolve().is_relative_to(folder.resolve()):
                raise MilopypError(
                    f"{selection}: the selection file lies inside the output folder {folder}, "
                    f"which is replaced; keep the selection elsewhere"
                )
    # A failed run must not leave an earlier labels folder that looks current, nor the
    # half-built folders of a killed one; a read-only results folder fails here.
    started = time.time()
    for folder in (out, negatives_out):
        if folder is not None:
            remove_old_output(folder)
            remove_stale_builds(folder, started)
            check_writable(folder)

    known, geometry = campaign(list(args.tomograms), args.voxel_size)
    if args.label_tomograms:
        sel.check_known_tomograms(args.label_tomograms, known, "--label-tomograms", "they")

    from milopyp.io.copick import parse_selection

    copick_spec = parse_selection(args.selection)
    if copick_spec is not None:
        kind, content = "coordinates", _copick_labels(args, copick_spec, known, geometry)
    else:
        kind, content = read_selection(selection, geometry)
    summary: dict = {"source": str(selection), "format": None, "campaign_tomograms": known}
    spec, points, seed_ids = None, None, None
    if kind == "coordinates":
        labels = content
        fmt = "coordinates"
        if len(labels) == 0:
            raise sel.nothing_selected(selection)
        # as written, before any filter: the error names the user's file and line
        sel.check_table_rows(labels, known, _shapes(geometry), selection)
        summary.update({"format": fmt, "clusters": [], "n_selected": len(labels)})
        log.info("%s: coordinate table, %d labels used directly", selection, len(labels))
    else:
        spec = sel.spec_from_document(content, selection)
        labels, points, seed_ids = _labels_from_document(
            args, spec, selection, known, geometry, summary
        )

    before = sel.label_counts(labels)
    if args.label_tomograms:
        labels = sel.restrict_tomograms(labels, args.label_tomograms)
    if args.max_labels_per_tomogram is not None:
        keep = labels["point_id"].isin(seed_ids).to_numpy() if seed_ids is not None else None
        labels = sel.cap_per_tomogram(labels, args.max_labels_per_tomogram, seed=args.seed,
                                      keep=keep)
    if len(labels) == 0:
        filters = f" after --label-tomograms {' '.join(args.label_tomograms)}" if (
            args.label_tomograms) else ""
        raise MilopypError(
            f"selection {selection} resolves to 0 labels{filters} (before filters: "
            f"{before or 'none'}); select clusters that hold points of these tomograms or "
            f"change --label-tomograms"
        )
    if "cluster" in labels.columns and spec is not None:
        log.info("labels after filters, by cluster: %s",
                 sel.describe_cluster_counts(sel.cluster_counts(labels)))
    labels = sel.label_table(labels)
    _inside_check(labels, geometry, selection)
    counts = sel.label_counts(labels)

    negatives, from_where = _negatives(
        args, spec, selection, points, known, geometry, spec.clusters if spec else []
    )
    negatives, n_conflict = sel.drop_negatives_near_labels(
        negatives, labels, float(args.seed_radius)
    )
    negative_counts = {name: int((negatives["tomogram"] == name).sum()) for name in known}
    if from_where:
        where = {"cluster": f"clusters {sorted(spec.negatives.clusters)}",
                 "point": "point ids", "seed": "seeds",
                 "table": f"table {spec.negatives.seeds_file}"}
        log.info(
            "negatives: %s; %d dropped (within %g voxels of a label); per tomogram: %s",
            ", ".join(f"{n} from {where[k]}" for k, n in from_where.items()),
            n_conflict, float(args.seed_radius),
            ", ".join(f"{k} {v}" for k, v in negative_counts.items()),
        )
    else:
        log.info("negatives: none (a selection may list `negatives:`, what is not the target)")
    if from_where and negatives_out is None:
        log.warning("%s: %d negatives not written: no --negatives-output", selection,
                    len(negatives))

    summary.update(
        {"label_tomograms": list(args.label_tomograms) if args.label_tomograms else None,
         "max_labels_per_tomogram": args.max_labels_per_tomogram, "seed": args.seed,
         "label_counts": counts, "n_labels": len(labels),
         "negatives_from": from_where, "negatives_dropped_near_labels": n_conflict,
         "negative_counts": negative_counts, "n_negatives": len(negatives)}
    )
    tables = {name: negatives[negatives["tomogram"] == name] for name in known}
    write_labels_folder(out, labels, summary, negatives=tables, negatives_out=negatives_out)
    log.info(
        "wrote %s: %d labels in %d tomogram(s): %s", out, len(labels), len(counts),
        ", ".join(f"{k} {v}" for k, v in counts.items()),
    )
    if negatives_out is not None:
        log.info("wrote %s: %d negatives in %d file(s)", negatives_out, len(negatives),
                 len(tables))
