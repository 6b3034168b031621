"""Resolving a selection against points.csv: checks, ids -> rows, caps, counts, negatives.

``points`` is explore/points.csv as a table (``point_id, tomogram, x, y, z, score, cluster,
...``; x, y, z in voxels). Every function takes and returns DataFrames; none opens a file.
``source`` arguments name the selection file in error messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from milopyp.errors import MilopypError

#: columns of the label files
LABEL_COLUMNS = ("tomogram", "x", "y", "z", "score", "cluster")
#: columns of the negatives files (``source``: cluster, point, seed, table)
NEGATIVE_COLUMNS = ("tomogram", "x", "y", "z", "source")


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
