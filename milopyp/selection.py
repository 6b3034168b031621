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
selected cluster or are listed by ``point_id``: the union of both. Clusters chosen by seeds
are the exception (:func:`labels_near_seeds`): by default only the seeds' own candidates
and the members nearest to a seed in embedding space, in the seeds' tomograms, up to a cap
(:func:`default_seed_label_cap`), so that five clicks stay a few-shot selection.

A document may also carry ``negatives``: points that are *not* the target (the explorer's
clusters or points marked "not this", or ``negatives: {clusters: [..], points: [..],
seeds: ..}``, or ``negatives: table.csv``). Negative clusters and point ids resolve against
points.csv like positives; negative seeds and tables are used as given (coordinates).

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
KNOWN_KEYS = (*SELECT_KEYS, "negatives", "tomogram", "source", "n_points", "comment",
              "description")
#: keys of a ``negatives:`` mapping
NEGATIVE_KEYS = ("clusters", "points", "seeds", "tomogram", "n_points")
#: columns of the label files
LABEL_COLUMNS = ("tomogram", "x", "y", "z", "score", "cluster")
#: columns of the negatives files (``source``: cluster, point, seed)
NEGATIVE_COLUMNS = ("tomogram", "x", "y", "z", "source")
EXPLORER_SOURCE = "milopyp explorer"
#: how seed-chosen clusters become labels: the members nearest the seeds, or all members
SEED_LABEL_MODES = ("nearest", "clusters")


def default_seed_label_cap(n_seeds: int) -> int:
    """Most labels a seed selection gives by default: max(20, 10 x number of seeds)."""
    return max(20, 10 * int(n_seeds))


@dataclass
class NegativeSpec:
    """What a selection's ``negatives`` asks for: ``clusters`` and ``points`` (ids of
    points.csv), ``seeds`` (inline ``tomogram, x, y, z`` voxels) or ``seeds_file`` (a
    coordinate table, relative to the selection file's folder)."""

    clusters: list[int] = field(default_factory=list)
    points: list[int] = field(default_factory=list)
    seeds: pd.DataFrame | None = None
    seeds_file: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.clusters or self.points or self.seeds_file
                    or (self.seeds is not None and len(self.seeds) > 0))


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
    negatives: NegativeSpec = field(default_factory=NegativeSpec)

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


def _seeds_value(value, tomogram: str | None, key: str, source):
    """A ``seeds:`` value as ``(table or None, file or None)``."""
    if isinstance(value, str):
        return None, (value.strip() or None)
    if isinstance(value, (list, tuple)):
        return _inline_seeds(list(value), tomogram, source), None
    if value is None:
        return None, None
    raise MilopypError(
        f"{source}: {key}: expected a path to a coordinate table or a list of "
        f"{{tomogram, x, y, z}}, found {type(value).__name__} {value!r}"
    )


def negatives_from_value(value, tomogram: str | None, source) -> NegativeSpec:
    """Read a document's ``negatives:`` value.

    Forms: a mapping ``{clusters: [ids], points: [ids], seeds: <table path or list>}``
    (optionally ``tomogram``), a path to a coordinate table, or a list of
    ``{tomogram, x, y, z}`` (voxels). None gives an empty spec.
    """
    if value is None:
        return NegativeSpec()
    if isinstance(value, (str, list, tuple)):
        seeds, seeds_file = _seeds_value(value, tomogram, "negatives", source)
        return NegativeSpec(seeds=seeds, seeds_file=seeds_file)
    if not isinstance(value, Mapping):
        raise MilopypError(
            f"{source}: negatives: expected {{clusters: [..], seeds: ..}}, a coordinate table "
            f"path or a list of {{tomogram, x, y, z}}; found {type(value).__name__} {value!r}"
        )
    keys = {str(k).strip().lower(): v for k, v in value.items()}
    unknown = sorted(set(keys) - set(NEGATIVE_KEYS))
    if unknown:
        raise MilopypError(
            f"{source}: negatives: unknown key(s) {unknown}; use clusters: [ids], points: "
            f"[ids] or seeds: (a coordinate table or a list of {{tomogram, x, y, z}})"
        )
    own = keys.get("tomogram")
    tomogram = tomogram if own is None else str(own)
    seeds, seeds_file = _seeds_value(keys.get("seeds"), tomogram, "negatives: seeds", source)
    return NegativeSpec(
        clusters=_int_list(keys.get("clusters"), "negatives: clusters", source),
        points=_int_list(keys.get("points"), "negatives: points", source),
        seeds=seeds,
        seeds_file=seeds_file,
    )


def spec_from_document(doc: Mapping, source) -> SelectionSpec:
    """Read a parsed YAML/JSON selection document (formats explorer, clusters, seeds).

    Raises when the mapping has none of ``clusters``, ``points``, ``seeds`` (unknown format)
    or when it selects nothing.
    """
    keys = {str(k).strip().lower(): v for k, v in doc.items()}
    if "negatives" in keys and not any(k in keys for k in SELECT_KEYS):
        raise MilopypError(
            f"{source}: the selection lists only negatives (what is not the target); also "
            f"say what is: clusters: [..], points: [..] or seeds: [..]"
        )
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
    seeds, seeds_file = _seeds_value(keys.get("seeds"), tomogram, "seeds", source)
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
        negatives=negatives_from_value(keys.get("negatives"), tomogram, source),
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


def check_known_tomograms(names: Iterable[str], known: Iterable[str], source, what: str,
                          first_at: str | None = None) -> None:
    """Raise when ``names`` holds tomograms outside the campaign ``known``; ``first_at`` (e.g.
    ``"line 7 ('TS_9')"``) says where the first of them is, for the message."""
    known = sorted(set(map(str, known)))
    unknown = sorted(set(map(str, names)) - set(known))
    if unknown:
        shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
        where = f", first at {first_at}" if first_at else ""
        raise MilopypError(
            f"{source}: {what} name tomogram(s) {unknown[:8]} that are not in the "
            f"campaign{where}; known tomograms: {shown}; use those names (file stems) in the "
            f"`tomogram` column"
        )


def check_table_rows(
    table: pd.DataFrame, known: Iterable[str], shapes_zyx: Mapping[str, tuple[int, int, int]],
    source, what: str = "its rows",
) -> None:
    """Check a coordinate table as the user wrote it, before any filter: every row names a
    campaign tomogram (``known``) and lies inside it (``shapes_zyx``: ``name -> (nz, ny,
    nx)``, for the tomograms whose shape is known). The error names ``source`` and the first
    bad row's line (:data:`milopyp.io.coords.LINE_COLUMN`, when the table has it)."""
    from milopyp.io.coords import check_inside, where_in_file

    names = table["tomogram"].astype(str).to_numpy()
    known = sorted(set(map(str, known)))
    unknown = np.flatnonzero(~np.isin(names, known))
    if unknown.size:
        i = int(unknown[0])
        check_known_tomograms(names, known, source, what,
                              first_at=f"{where_in_file(table, i)} ({names[i]!r})")
    for name, shape_zyx in shapes_zyx.items():
        rows = table[names == name]
        if len(rows):
            check_inside(rows, shape_zyx, f"{source} (tomogram {name})")


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


def cap_per_tomogram(
    labels: pd.DataFrame, max_labels: int, *, seed: int, keep: np.ndarray | None = None
) -> pd.DataFrame:
    """Keep at most ``max_labels`` labels per tomogram ("few-shot").

    Rows where the boolean array ``keep`` (one per row) is true are kept first (a seed's own
    candidate), then, with a ``score`` column that has values, the highest scores (ties and
    missing scores: table order, missing last); otherwise a random sample drawn with
    ``np.random.default_rng(seed)``, one draw per tomogram in sorted name order. The result
    keeps the input's row order.
    """
    if max_labels < 1:
        raise MilopypError(f"--max-labels-per-tomogram must be >= 1, got {max_labels}")
    rng = np.random.default_rng(seed)
    by_score = "score" in labels.columns and pd.to_numeric(
        labels["score"], errors="coerce"
    ).notna().any()
    first = np.zeros(len(labels), bool) if keep is None else np.asarray(keep, bool)
    chosen_parts: list[np.ndarray] = []
    positions = np.arange(len(labels))
    names = labels["tomogram"].astype(str).to_numpy()
    for name in sorted(set(names)):
        rows = positions[names == name]
        if len(rows) <= max_labels:
            chosen_parts.append(rows)
            continue
        kept = rows[first[rows]][:max_labels]
        rest = rows[~first[rows]]
        room = max_labels - len(kept)
        if by_score:
            score = pd.to_numeric(labels["score"].iloc[rest], errors="coerce").to_numpy(float)
            key = np.where(np.isnan(score), -np.inf, score)
            order = np.argsort(-key, kind="stable")
            chosen_parts.append(np.concatenate([kept, rest[order[:room]]]))
        else:
            chosen_parts.append(
                np.concatenate([kept, rng.choice(rest, size=room, replace=False)])
            )
    chosen = np.sort(np.concatenate(chosen_parts)) if chosen_parts else np.zeros(0, int)
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


def cluster_counts(labels: pd.DataFrame) -> dict[int, int]:
    """Labels per cluster id, sorted by id."""
    counts = labels["cluster"].value_counts()
    return {int(k): int(counts[k]) for k in sorted(counts.index)}


def describe_cluster_counts(counts: Mapping[int, int]) -> str:
    """``"9 from cluster 5, 2 from cluster 7"`` (largest first)."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{n} from cluster {c}" for c, n in items) or "none"


# --------------------------------------------------------------------------- seeds, few-shot
# (kept here past ~500 lines: seeds, caps and negatives are all "selection -> labels", and
# the command imports one module for them)


def embedding_features(
    points: pd.DataFrame,
    embeddings: Mapping[str, tuple[np.ndarray, np.ndarray]],
    source,
) -> np.ndarray:
    """Embedding rows aligned with ``points``: ``(len(points), D)`` float32, NaN for the
    rows of tomograms not in ``embeddings``.

    ``embeddings``: tomogram name -> ``(embeddings (n, D), xyz (n, 3) voxels)`` as written
    by ``milopyp embed``; its rows are that tomogram's rows of points.csv, in order (how
    ``milopyp cluster`` numbers them). Raises when counts or positions disagree.
    """
    dims = {e.shape[1] for e, _ in embeddings.values()}
    if len(dims) > 1:
        raise MilopypError(f"{source}: embeddings of different widths {sorted(dims)}")
    features = np.full((len(points), dims.pop() if dims else 1), np.nan, np.float32)
    names = points["tomogram"].astype(str).to_numpy()
    for name, (emb, xyz) in embeddings.items():
        rows = np.flatnonzero(names == name)
        want = points[["x", "y", "z"]].to_numpy(np.float64)[rows]
        if len(rows) != len(emb) or not np.allclose(want, xyz, atol=0.01):
            raise MilopypError(
                f"{source}: the embeddings of tomogram {name} ({len(emb)} candidates) do not "
                f"match its {len(rows)} rows of points.csv; give the embeddings that "
                f"`milopyp cluster` used for this points.csv"
            )
        features[rows] = emb
    return features


def umap_features(points: pd.DataFrame) -> np.ndarray | None:
    """The UMAP coordinates of points.csv (3-D if present, else 2-D), or None."""
    for columns in (("umap3_x", "umap3_y", "umap3_z"), ("umap_x", "umap_y")):
        if all(c in points.columns for c in columns):
            return points[list(columns)].to_numpy(np.float32)
    return None


@dataclass
class SeedLabels:
    """Result of :func:`labels_near_seeds`.

    ``labels``: rows of points (points.csv order); ``seed_rows``: boolean, one per label,
    true for a seed's own candidate; ``n_seeds``: labels that are seed candidates;
    ``n_from_clusters``: other members kept; ``n_dropped``: members of the seeds' clusters
    in ``tomograms`` left out by the cap; ``n_elsewhere``: members in other tomograms;
    ``cap``: the cap used (labels in all, seeds included).
    """

    labels: pd.DataFrame
    seed_rows: np.ndarray
    n_seeds: int
    n_from_clusters: int
    n_dropped: int
    n_elsewhere: int
    clusters: list[int]
    tomograms: list[str]
    cap: int

    def describe(self, space: str) -> str:
        return (
            f"{self.n_seeds} labels from seeds, {self.n_from_clusters} from clusters "
            f"{self.clusters} in tomograms {self.tomograms}, {self.n_dropped} dropped by the "
            f"cap ({self.cap} labels, members nearest to a seed in {space} space); "
            f"{self.n_elsewhere} members in other tomograms not used"
        )


def labels_near_seeds(
    points: pd.DataFrame,
    choice: SeedChoice,
    features: np.ndarray,
    *,
    max_labels: int,
    tomograms: Iterable[str] | None = None,
    metric: str = "cosine",
) -> SeedLabels:
    """Few-shot labels from seeds: each seed's own candidate, then the members of the seeds'
    clusters nearest to a seed in ``features`` space, up to ``max_labels`` labels in all.

    ``points``: checked points.csv table; ``choice``: from :func:`clusters_from_seeds`;
    ``features``: ``(len(points), D)`` rows aligned with ``points`` (embeddings or UMAP
    coordinates; must be finite for the seeds and the members considered); ``tomograms``:
    where members may come from (default: the seeds' tomograms); ``metric``: "cosine" or
    "euclidean". A member's distance is its smallest distance to any seed's candidate.
    Seeds are always kept, even when there are more than ``max_labels``.
    """
    if max_labels < 1:
        raise MilopypError(f"--max-seed-labels must be >= 1, got {max_labels}")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be cosine or euclidean, got {metric!r}")
    features = np.asarray(features, np.float64)
    if features.shape[0] != len(points):
        raise ValueError(f"features have {features.shape[0]} rows for {len(points)} points")
    ids = points["point_id"].to_numpy()
    seed_pos = np.flatnonzero(np.isin(ids, choice.assignments["point_id"].to_numpy()))
    scope = sorted(set(map(str, tomograms)) if tomograms is not None
                   else set(choice.assignments["tomogram"].astype(str)))
    names = points["tomogram"].astype(str).to_numpy()
    in_clusters = points["cluster"].isin(choice.clusters).to_numpy().copy()
    in_clusters[seed_pos] = False
    in_scope = np.isin(names, scope)
    members = np.flatnonzero(in_clusters & in_scope)
    n_elsewhere = int((in_clusters & ~in_scope).sum())
    room = max(0, max_labels - len(seed_pos))
    kept = np.zeros(0, int)
    if room and len(members):
        seeds_f, members_f = features[seed_pos], features[members]
        if not (np.isfinite(seeds_f).all() and np.isfinite(members_f).all()):
            raise MilopypError(
                "no embedding for some seeds or cluster members (tomograms "
                f"{scope}); give the embeddings of these tomograms"
            )
        if metric == "cosine":
            def unit(a):
                return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
            distance = 1.0 - (unit(members_f) @ unit(seeds_f).T).max(axis=1)
        else:
            distance, _ = cKDTree(seeds_f).query(members_f)
        order = np.argsort(distance, kind="stable")
        kept = members[order[:room]]
    chosen = np.sort(np.concatenate([seed_pos, kept]))
    return SeedLabels(
        labels=points.iloc[chosen].reset_index(drop=True),
        seed_rows=np.isin(chosen, seed_pos),
        n_seeds=len(seed_pos),
        n_from_clusters=len(kept),
        n_dropped=len(members) - len(kept),
        n_elsewhere=n_elsewhere,
        clusters=list(choice.clusters),
        tomograms=scope,
        cap=max_labels,
    )


# --------------------------------------------------------------------------- negatives


def negatives_table(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One negatives table (``tomogram, x, y, z, source``) from ``source -> points``."""
    parts = []
    for source, frame in frames.items():
        if len(frame):
            part = frame[["tomogram", "x", "y", "z"]].copy()
            part["tomogram"] = part["tomogram"].astype(str)
            part["source"] = source
            parts.append(part)
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=str if c in ("tomogram", "source") else float)
                             for c in NEGATIVE_COLUMNS})
    return pd.concat(parts, ignore_index=True)[list(NEGATIVE_COLUMNS)]


def drop_negatives_near_labels(
    negatives: pd.DataFrame, labels: pd.DataFrame, radius_vox: float
) -> tuple[pd.DataFrame, int]:
    """Negatives farther than ``radius_vox`` voxels from every label of their tomogram
    (a point cannot be both), and how many were dropped."""
    keep = np.ones(len(negatives), bool)
    names = negatives["tomogram"].astype(str).to_numpy()
    for name, table in labels.groupby(labels["tomogram"].astype(str)):
        rows = np.flatnonzero(names == name)
        if len(rows) == 0:
            continue
        tree = cKDTree(table[["x", "y", "z"]].to_numpy(np.float64))
        distance, _ = tree.query(negatives[["x", "y", "z"]].to_numpy(np.float64)[rows])
        keep[rows[distance <= radius_vox]] = False
    return negatives[keep].reset_index(drop=True), int((~keep).sum())
