"""Seeds: a few clicks on the target choose clusters and give few-shot labels.

Each seed chooses the cluster of its nearest candidate (:func:`clusters_from_seeds`); by
default only the seeds' own candidates and the members of those clusters nearest to a seed
in embedding space become labels, up to a cap (:func:`labels_near_seeds`,
:func:`default_seed_label_cap`), so that five clicks stay a few-shot selection.
Pure functions on DataFrames and arrays; positions in voxels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from milopyp.errors import MilopypError

#: how seed-chosen clusters become labels: the members nearest the seeds, or all members
SEED_LABEL_MODES = ("nearest", "clusters")
#: a seed must lie within this many voxels of a candidate (the workflow's localize.seed_radius)
SEED_RADIUS_VOX = 10.0


def default_seed_label_cap(n_seeds: int) -> int:
    """Most labels a seed selection gives by default: max(20, 10 x number of seeds)."""
    return max(20, 10 * int(n_seeds))



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
        raise MilopypError(f"--seed-radius-vox must be > 0 voxels, got {radius_vox}")
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
                f"x, y, z are voxels of that tomogram, or raise --seed-radius-vox"
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

