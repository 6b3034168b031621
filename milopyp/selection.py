"""Turn a user's selection into labels: pure functions on point tables.

A *selection* says which candidates are the target. It comes in four shapes (the command
``milopyp import-selection`` reads the file and detects which one, see
:mod:`milopyp.commands.import_selection`):

- ``explorer``: the explorer's saved ``selection.json``
  ``{"clusters": [ids], "points": [point_id, ...], "source": "milopyp explorer", ...}``;
- ``clusters``: a YAML/JSON mapping ``{clusters: [3, 5]}`` (optionally ``points: [...]``);
- ``seeds``: ``{seeds: <coordinate table>}`` or ``{seeds: [{tomogram, x, y, z}, ...]}``, a
  few clicks on the target; each seed chooses the cluster of its nearest candidate;
- ``coordinates``: a plain coordinate table used directly as labels (manual annotation).

For the first three, the labels are the rows of ``explore/points.csv`` (columns
``point_id, tomogram, x, y, z, score, cluster, ...``; x, y, z in voxels) that belong to a
selected cluster or are listed by ``point_id``: the union of both.

Every function here takes and returns DataFrames; none opens a file. ``source`` arguments
name the selection file in error messages.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from milopyp.errors import MilopypError

log = logging.getLogger(__name__)

FORMATS = ("explorer", "clusters", "seeds", "coordinates")
#: keys of a selection document that select something
SELECT_KEYS = ("clusters", "points", "seeds")
#: other keys a selection document may carry (ignored, but not warned about)
KNOWN_KEYS = (*SELECT_KEYS, "tomogram", "source", "n_points", "comment", "description")
#: columns of the label files
LABEL_COLUMNS = ("tomogram", "x", "y", "z", "score", "cluster")
EXPLORER_SOURCE = "milopyp explorer"


@dataclass
class SelectionSpec:
    """What a selection document asks for (before it is resolved against points.csv).

    ``seeds`` holds inline seeds (``tomogram, x, y, z`` in voxels, tomogram may be None when
    the document gives none); ``seeds_file`` a seed-table path as written in the document
    (relative to the selection file's folder); ``tomogram`` the document's default tomogram.
    """

    format: str
    clusters: list[int] = field(default_factory=list)
    points: list[int] = field(default_factory=list)
    seeds: pd.DataFrame | None = None
    seeds_file: str | None = None
    tomogram: str | None = None
    n_points: int | None = None

    @property
    def selects_something(self) -> bool:
        return bool(
            self.clusters
            or self.points
            or self.seeds_file
            or (self.seeds is not None and len(self.seeds) > 0)
        )


def nothing_selected(source) -> MilopypError:
    """The error for a selection that lists no clusters, points, seeds or rows."""
    return MilopypError(
        f"selection {source} selects nothing; open explorer.html, tick clusters and press "
        f"Save selection, or list clusters: [..]"
    )


# --------------------------------------------------------------------------- parsing


def _int_list(value, key: str, source) -> list[int]:
    """A YAML/JSON value as a list of ints (None -> [], a single int -> [it])."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[int] = []
    for item in items:
        number = None
        if isinstance(item, bool):
            number = None
        elif isinstance(item, (int, np.integer)) or isinstance(item, float) and math.isfinite(item) and item == int(item):
            number = int(item)
        elif isinstance(item, str) and item.strip().lstrip("-").isdigit():
            number = int(item.strip())
        if number is None:
            raise MilopypError(
                f"{source}: {key}: expected a list of integer ids, found {item!r}; write e.g. "
                f"{key}: [3, 5]"
            )
        out.append(number)
    return sorted(set(out))


def _inline_seeds(value: list, default_tomogram: str | None, source) -> pd.DataFrame:
    """``[{tomogram, x, y, z}, ...]`` or ``[[x, y, z], ...]`` as a seed table."""
    rows = []
    for i, item in enumerate(value):
        if isinstance(item, Mapping):
            low = {str(k).strip().lower(): v for k, v in item.items()}
            missing = [c for c in ("x", "y", "z") if c not in low]
            if missing:
                raise MilopypError(
                    f"{source}: seed {i} ({dict(item)}) has no {', '.join(missing)}; write "
                    f"each seed as {{tomogram: NAME, x: .., y: .., z: ..}} in voxels"
                )
            xyz = [low["x"], low["y"], low["z"]]
            tomogram = low.get("tomogram", default_tomogram)
        elif isinstance(item, (list, tuple)) and len(item) == 3:
            xyz = list(item)
            tomogram = default_tomogram
        else:
            raise MilopypError(
                f"{source}: seed {i} is {item!r}; write each seed as "
                f"{{tomogram: NAME, x: .., y: .., z: ..}} (voxels)"
            )
        try:
            values = [float(v) for v in xyz]
        except (TypeError, ValueError):
            values = [math.nan]
        if not all(math.isfinite(v) for v in values):
            raise MilopypError(
                f"{source}: seed {i} has coordinates {xyz!r}; expected three finite numbers "
                f"x, y, z in voxels"
            )
        rows.append(
            {"tomogram": None if tomogram is None else str(tomogram), "x": values[0],
             "y": values[1], "z": values[2]}
        )
    return pd.DataFrame(rows, columns=["tomogram", "x", "y", "z"])


def spec_from_document(doc: Mapping, source) -> SelectionSpec:
    """Read a parsed YAML/JSON selection document (formats explorer, clusters, seeds).

    Raises when the mapping has none of ``clusters``, ``points``, ``seeds`` (unknown format)
    or when it selects nothing.
    """
    keys = {str(k).strip().lower(): v for k, v in doc.items()}
    if not any(k in keys for k in SELECT_KEYS):
        raise MilopypError(
            f"{source}: unknown selection format: a mapping with keys {sorted(keys)[:8]} but "
            f"none of clusters:, points:, seeds:; write e.g. clusters: [3, 5], save the "
            f"selection from explorer.html, or give a coordinate table (x, y, z)"
        )
    unknown = sorted(set(keys) - set(KNOWN_KEYS))
    if unknown:
        log.warning("%s: ignoring unknown keys %s", source, unknown)
    tomogram = keys.get("tomogram")
    tomogram = None if tomogram is None else str(tomogram)
    seeds_value = keys.get("seeds")
    seeds = None
    seeds_file = None
    if isinstance(seeds_value, str):
        seeds_file = seeds_value.strip() or None
    elif isinstance(seeds_value, (list, tuple)):
        seeds = _inline_seeds(list(seeds_value), tomogram, source)
    elif seeds_value is not None:
        raise MilopypError(
            f"{source}: seeds: expected a path to a coordinate table or a list of "
            f"{{tomogram, x, y, z}}, found {type(seeds_value).__name__} {seeds_value!r}"
        )
    if str(keys.get("source", "")).strip() == EXPLORER_SOURCE:
        fmt = "explorer"
    elif "seeds" in keys:
        fmt = "seeds"
    else:
        fmt = "clusters"
    n_points = keys.get("n_points")
    spec = SelectionSpec(
        format=fmt,
        clusters=_int_list(keys.get("clusters"), "clusters", source),
        points=_int_list(keys.get("points"), "points", source),
        seeds=seeds,
        seeds_file=seeds_file,
        tomogram=tomogram,
        n_points=int(n_points)
        if isinstance(n_points, (int, float)) and not isinstance(n_points, bool)
        and math.isfinite(n_points)
        else None,
    )
    if not spec.selects_something:
        raise nothing_selected(source)
    return spec


# --------------------------------------------------------------------------- checks


def check_points_table(points: pd.DataFrame, points_source) -> pd.DataFrame:
    """Validate a points.csv table; add ``point_id`` (row number) when it has none."""
    missing = [c for c in ("tomogram", "x", "y", "z", "cluster") if c not in points.columns]
    if missing:
        raise MilopypError(
            f"{points_source}: no column(s) {missing}; found {list(points.columns)}; give the "
            f"explore/points.csv written by `milopyp cluster`"
        )
    points = points.copy()
    if "point_id" not in points.columns:
        points["point_id"] = np.arange(len(points))
    for c in ("point_id", "cluster"):
        values = pd.to_numeric(points[c], errors="coerce")
        if values.isna().any() or not np.all(values == np.round(values)):
            row = int(np.flatnonzero(values.isna() | (values != np.round(values)))[0])
            raise MilopypError(
                f"{points_source}: column {c!r} row {row + 1} is {points[c].iloc[row]!r}, "
                f"expected an integer; re-run `milopyp cluster`"
            )
        points[c] = values.astype(np.int64)
    if points["point_id"].duplicated().any():
        dup = int(points.loc[points["point_id"].duplicated(), "point_id"].iloc[0])
        raise MilopypError(
            f"{points_source}: point_id {dup} appears more than once; re-run `milopyp cluster`"
        )
    points["tomogram"] = points["tomogram"].astype(str)
    return points


def check_known_tomograms(names: Iterable[str], known: Iterable[str], source, what: str) -> None:
    """Raise when ``names`` holds tomograms outside the campaign ``known``."""
    known = sorted(set(known))
    unknown = sorted(set(map(str, names)) - set(known))
    if unknown:
        shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
        raise MilopypError(
            f"{source}: {what} name tomogram(s) {unknown[:8]} that are not in the campaign; "
            f"known tomograms: {shown}; use those names (file stems) in the `tomogram` column"
        )


def _format_ids(ids: Iterable[int], limit: int = 30) -> str:
    ids = sorted({int(i) for i in ids})
    text = ", ".join(str(i) for i in ids[:limit])
    return text + (" ..." if len(ids) > limit else "")


# --------------------------------------------------------------------------- resolving


def labels_from_ids(
    points: pd.DataFrame,
    clusters: Iterable[int],
    point_ids: Iterable[int],
    source,
    points_source,
) -> pd.DataFrame:
    """Rows of ``points`` in any of ``clusters`` or with ``point_id`` in ``point_ids`` (union).

    ``points`` is a checked points.csv table (:func:`check_points_table`). Returns those rows
    in points.csv order. Raises naming ``source`` on unknown cluster or point ids.
    """
    clusters = sorted({int(c) for c in clusters})
    point_ids = sorted({int(p) for p in point_ids})
    valid_clusters = set(points["cluster"].tolist())
    bad = [c for c in clusters if c not in valid_clusters]
    if bad:
        raise MilopypError(
            f"{source}: cluster id(s) {_format_ids(bad)} are not in {points_source}; valid ids "
            f"are {_format_ids(valid_clusters)}; check that the selection belongs to this run"
        )
    ids = points["point_id"].to_numpy()
    bad_points = sorted(set(point_ids) - set(ids.tolist()))
    if bad_points:
        lo, hi = (int(ids.min()), int(ids.max())) if len(ids) else (0, -1)
        raise MilopypError(
            f"{source}: point id(s) {_format_ids(bad_points, 10)} are out of range; "
            f"{points_source} has point_id {lo}..{hi}; save the selection again from the "
            f"explorer of this run"
        )
    mask = points["cluster"].isin(clusters).to_numpy() | np.isin(ids, point_ids)
    return points.loc[mask].reset_index(drop=True)


@dataclass
class SeedChoice:
    """Result of :func:`clusters_from_seeds`.

    ``clusters``: chosen cluster ids (sorted); ``votes``: cluster id -> seeds in it;
    ``assignments``: one row per seed (``seed, tomogram, x, y, z, point_id, cluster,
    distance_vox``).
    """

    clusters: list[int]
    votes: dict[int, int]
    assignments: pd.DataFrame


def clusters_from_seeds(
    points: pd.DataFrame, seeds: pd.DataFrame, *, radius_vox: float, source
) -> SeedChoice:
    """Choose the cluster of each seed's nearest candidate in the same tomogram.

    ``points``: checked points.csv table; ``seeds``: ``tomogram, x, y, z`` (voxels). A seed
    whose nearest candidate is farther than ``radius_vox`` voxels raises, naming the seed.
    A cluster is chosen if any seed falls in it.
    """
    if not radius_vox > 0:
        raise MilopypError(f"--seed-radius must be > 0 voxels, got {radius_vox}")
    rows = []
    trees: dict[str, tuple[cKDTree | None, pd.DataFrame]] = {}
    for i, seed in enumerate(seeds.itertuples(index=False)):
        name = str(seed.tomogram)
        if name not in trees:
            sub = points[points["tomogram"] == name]
            xyz = sub[["x", "y", "z"]].to_numpy(np.float64)
            trees[name] = (cKDTree(xyz) if len(sub) else None, sub)
        tree, sub = trees[name]
        where = f"seed {i} ({name} x={seed.x:g} y={seed.y:g} z={seed.z:g})"
        if tree is None:
            raise MilopypError(
                f"{source}: {where} has no candidate within {radius_vox:g} voxels: tomogram "
                f"{name} has no candidates in points.csv; put seeds in tomograms that have "
                f"candidates"
            )
        distance, j = tree.query([seed.x, seed.y, seed.z])
        if distance > radius_vox:
            raise MilopypError(
                f"{source}: {where} has no candidate within {radius_vox:g} voxels (nearest is "
                f"{distance:.1f} voxels away); click closer to a particle centre, check that "
                f"x, y, z are voxels of that tomogram, or raise --seed-radius"
            )
        hit = sub.iloc[int(j)]
        rows.append(
            {"seed": i, "tomogram": name, "x": float(seed.x), "y": float(seed.y),
             "z": float(seed.z), "point_id": int(hit["point_id"]), "cluster": int(hit["cluster"]),
             "distance_vox": float(distance)}
        )
    assignments = pd.DataFrame(
        rows, columns=["seed", "tomogram", "x", "y", "z", "point_id", "cluster", "distance_vox"]
    )
    votes = {int(c): int(n) for c, n in assignments["cluster"].value_counts().sort_index().items()}
    return SeedChoice(clusters=sorted(votes), votes=votes, assignments=assignments)


def restrict_tomograms(labels: pd.DataFrame, tomograms: Iterable[str]) -> pd.DataFrame:
    """Keep the labels of ``tomograms`` only."""
    keep = set(map(str, tomograms))
    return labels[labels["tomogram"].astype(str).isin(keep)].reset_index(drop=True)


def cap_per_tomogram(labels: pd.DataFrame, max_labels: int, *, seed: int) -> pd.DataFrame:
    """Keep at most ``max_labels`` labels per tomogram ("few-shot").

    With a ``score`` column that has values, the highest scores are kept (ties and missing
    scores: table order, missing last); otherwise a random sample drawn with
    ``np.random.default_rng(seed)``, one draw per tomogram in sorted name order. The result
    keeps the input's row order.
    """
    if max_labels < 1:
        raise MilopypError(f"--max-labels-per-tomogram must be >= 1, got {max_labels}")
    rng = np.random.default_rng(seed)
    by_score = "score" in labels.columns and pd.to_numeric(
        labels["score"], errors="coerce"
    ).notna().any()
    keep: list[np.ndarray] = []
    positions = np.arange(len(labels))
    names = labels["tomogram"].astype(str).to_numpy()
    for name in sorted(set(names)):
        rows = positions[names == name]
        if len(rows) <= max_labels:
            keep.append(rows)
            continue
        if by_score:
            score = pd.to_numeric(labels["score"].iloc[rows], errors="coerce").to_numpy(float)
            key = np.where(np.isnan(score), -np.inf, score)
            order = np.argsort(-key, kind="stable")
            keep.append(rows[order[:max_labels]])
        else:
            keep.append(rng.choice(rows, size=max_labels, replace=False))
    chosen = np.sort(np.concatenate(keep)) if keep else np.zeros(0, int)
    return labels.iloc[chosen].reset_index(drop=True)


def label_table(labels: pd.DataFrame) -> pd.DataFrame:
    """Labels with columns ``tomogram, x, y, z`` then ``score, cluster`` where present."""
    columns = [c for c in LABEL_COLUMNS if c in labels.columns]
    out = labels[columns].copy()
    out["tomogram"] = out["tomogram"].astype(str)
    return out.reset_index(drop=True)


def label_counts(labels: pd.DataFrame) -> dict[str, int]:
    """Labels per tomogram, sorted by name."""
    counts = labels["tomogram"].astype(str).value_counts()
    return {str(k): int(counts[k]) for k in sorted(counts.index)}
