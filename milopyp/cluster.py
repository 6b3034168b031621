"""Over-clustering of embeddings and UMAP projection (paper, "Dimensionality reduction,
visualization and module output").

Over-clustering: FAISS k-means with ``k`` much larger than the number of classes, then spectral
clustering of the ``k`` centres into ``n_classes`` classes; every embedding takes the class of
its centre. Classes are numbered ``0 .. h-1`` by decreasing size.

UMAP (umap-learn) is imported inside :func:`umap_project` because ``import umap`` costs
seconds (tens of seconds the first time, while numba compiles). Numba caches its compiled
functions next to the package, or under ``NUMBA_CACHE_DIR`` when that is set; callers that run
in a read-only environment (containers, shared installs) should set ``NUMBA_CACHE_DIR`` to a
writable, persistent folder before the first call, or each process pays the compile again.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np

from milopyp.errors import MilopypError

log = logging.getLogger(__name__)

#: k-means is given at least this many points per centre when ``k`` is clipped for small N.
MIN_POINTS_PER_CENTRE = 4


def _check_embeddings(embeddings: np.ndarray, what: str = "embeddings") -> np.ndarray:
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise MilopypError(
            f"{what}: expected a 2-D array (N points, D features) with N, D > 0, got shape "
            f"{x.shape}; give the embeddings written by `milopyp embed`"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        n_bad = int(np.sum(~np.isfinite(x).all(axis=1)))
        raise MilopypError(
            f"{what}: {n_bad} of {x.shape[0]} rows hold NaN or inf; re-run `milopyp embed` "
            "(the exploration network may have diverged)"
        )
    return x


def effective_k(n_points: int, k: int, n_classes: int) -> int:
    """Number of k-means centres actually used: ``k`` clipped to ``N // 4`` (at least
    ``n_classes``) so that every centre gets a few points on small data sets."""
    return int(max(n_classes, min(k, n_points // MIN_POINTS_PER_CENTRE)))


def kmeans(
    embeddings: np.ndarray, *, k: int, seed: int, niter: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS k-means. Returns ``(assignment (N,) int64, centres (k, D) float32)``."""
    import faiss

    x = _check_embeddings(embeddings)
    km = faiss.Kmeans(
        x.shape[1],
        int(k),
        niter=int(niter),
        seed=int(seed),
        verbose=False,
        # We clip k ourselves; these stop FAISS warning about (or sub-sampling) small sets.
        min_points_per_centroid=1,
        max_points_per_centroid=max(256, -(-x.shape[0] // int(k))),
    )
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64), np.asarray(km.centroids, dtype=np.float32)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber labels ``0 .. h-1`` by decreasing count (ties: smaller old label first)."""
    labels = np.asarray(labels)
    uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")  # new label i = old label uniq[order[i]]
    new_of_old = np.empty(len(uniq), dtype=np.int64)
    new_of_old[order] = np.arange(len(uniq))
    return new_of_old[inverse.reshape(-1)]


def self_tuning_affinity(points: np.ndarray, n_neighbors: int = 7) -> np.ndarray:
    """Dense affinity (M, M) ``exp(-d_ij^2 / (s_i s_j))`` with ``s_i`` the distance from point i
    to its ``n_neighbors``-th nearest neighbour (Zelnik-Manor & Perona 2004, "self-tuning
    spectral clustering"): a Gaussian kernel whose width follows the local density, so small
    and large groups of centres are both kept together and apart from each other."""
    p = np.asarray(points, dtype=np.float64)
    sq = np.sum(p * p, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (p @ p.T), 0.0)
    np.fill_diagonal(d2, 0.0)
    d = np.sqrt(d2)
    kth = int(min(max(n_neighbors, 1), len(p) - 1))
    scale = np.sort(d, axis=1)[:, kth]
    positive = scale[scale > 0]
    scale = np.maximum(scale, positive.min() if len(positive) else 1.0)
    affinity = np.exp(-d2 / np.outer(scale, scale))
    np.fill_diagonal(affinity, 0.0)
    return affinity


def spectral_classes(centres: np.ndarray, n_classes: int, *, seed: int) -> np.ndarray:
    """Spectral clustering of k-means centres (k, D) into ``n_classes`` classes: (k,) int64.

    Affinity: :func:`self_tuning_affinity` (a locally scaled RBF kernel). sklearn's fixed
    10-nearest-neighbour graph split three well-separated blobs wrongly when one blob had only
    5 of the 30 centres (its centres' neighbour lists reached into the next blob); the local
    scale needs no such choice.
    """
    from sklearn.cluster import SpectralClustering

    spectral = SpectralClustering(
        n_clusters=int(n_classes),
        affinity="precomputed",
        assign_labels="kmeans",
        random_state=int(seed),
    )
    with warnings.catch_warnings():
        # Well-separated groups of centres make a disconnected graph: expected here.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        labels = spectral.fit_predict(self_tuning_affinity(centres))
    return labels.astype(np.int64)


def with_profiles(embeddings: np.ndarray, profiles: np.ndarray, weight: float) -> np.ndarray:
    """Features for clustering and UMAP: the embeddings (N, D), each row scaled to unit
    length and then all divided by their mean per-dimension standard deviation, beside the
    radial profiles (N, P) standardised per shell and multiplied by ``weight``: (N, D + P)
    float32. ``weight`` 0 gives the scaled embeddings alone."""
    x = _check_embeddings(embeddings).astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x /= max(float(x.std(axis=0).mean()), 1e-12)
    if weight <= 0:
        return x.astype(np.float32)
    p = np.asarray(profiles, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(x) or not np.isfinite(p).all():
        raise MilopypError(f"radial profiles: expected ({len(x)}, P) finite values, got {p.shape}")
    p = (p - p.mean(axis=0)) / np.maximum(p.std(axis=0), 1e-12)
    return np.hstack([x, weight * p]).astype(np.float32)


def overcluster(
    embeddings: np.ndarray, *, k: int, n_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Over-cluster ``embeddings`` (N, D) into at most ``n_classes`` classes.

    FAISS k-means with ``k`` centres (clipped to ``N // 4``, at least ``n_classes``), then
    spectral clustering (:func:`spectral_classes`) of the centres into ``n_classes``; each
    point takes its centre's class. Deterministic for a given ``seed`` on CPU.

    Returns ``labels`` (N,) int64 in ``0 .. h-1`` numbered by decreasing class size
    (h <= n_classes: a class whose centres received no point disappears) and
    ``centre_labels`` (k_used,) int64, the class of each k-means centre in the same numbering
    (-1 for a centre whose class holds no point).
    """
    x = _check_embeddings(embeddings)
    n = x.shape[0]
    if k < 1 or n_classes < 1:
        raise MilopypError(
            f"over-clustering: expected k >= 1 and n_classes >= 1, got k={k}, "
            f"n_classes={n_classes}; give positive values"
        )
    if n < n_classes or n < 2:
        raise MilopypError(
            f"over-clustering: {n} embeddings cannot make {n_classes} classes; give more "
            "candidates (more tomograms, a lower candidate threshold) or fewer classes"
        )
    k_used = effective_k(n, k, n_classes)
    if k_used != k:
        log.info("k-means: %d points, k clipped from %d to %d", n, k, k_used)

    t0 = time.perf_counter()
    assign, centres = kmeans(x, k=k_used, seed=seed)
    log.info(
        "k-means: %d x %d into %d centres in %.2f s",
        n,
        x.shape[1],
        k_used,
        time.perf_counter() - t0,
    )

    if n_classes == 1:
        centre_class = np.zeros(k_used, dtype=np.int64)
    elif k_used <= n_classes:
        centre_class = np.arange(k_used, dtype=np.int64)
    else:
        t1 = time.perf_counter()
        centre_class = spectral_classes(centres, n_classes, seed=seed)
        log.info(
            "spectral clustering: %d centres into %d classes in %.2f s",
            k_used,
            n_classes,
            time.perf_counter() - t1,
        )

    point_class = centre_class[assign]
    labels = relabel_by_size(point_class)
    # Map every centre's class into the relabelled numbering (-1 where the class is empty).
    old_to_new = np.full(int(centre_class.max()) + 1, -1, dtype=np.int64)
    old_to_new[point_class] = labels
    centre_labels = old_to_new[centre_class]
    return labels, centre_labels


def umap_project(
    embeddings: np.ndarray,
    *,
    n_components: int,
    n_neighbors: int = 40,
    min_dist: float = 0.1,
    seed: int,
    metric: str = "euclidean",
) -> np.ndarray:
    """UMAP of ``embeddings`` (N, D) to (N, n_components) float32.

    ``n_neighbors`` (paper: 40) is clipped to ``N - 1``. Seeded (``random_state``), hence
    single-threaded and reproducible. See the module docstring for ``NUMBA_CACHE_DIR``.
    """
    x = _check_embeddings(embeddings)
    n = x.shape[0]
    if n < max(4, n_components + 2):
        raise MilopypError(
            f"UMAP: {n} embeddings are too few for a {n_components}-D projection; "
            "give at least 10 candidates"
        )
    nn = int(max(2, min(n_neighbors, n - 1)))
    if nn != n_neighbors:
        log.info("UMAP: %d points, n_neighbors clipped from %d to %d", n, n_neighbors, nn)
    t0 = time.perf_counter()
    import umap  # slow import: keep it here

    reducer = umap.UMAP(
        n_components=int(n_components),
        n_neighbors=nn,
        min_dist=float(min_dist),
        metric=metric,
        random_state=int(seed),
        transform_seed=int(seed),
        n_jobs=1,
    )
    with warnings.catch_warnings():
        # UMAP's spectral initialisation of a k-NN graph with separate components
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        out = reducer.fit_transform(x).astype(np.float32)
    log.info(
        "UMAP: %d x %d -> %d-D in %.1f s", n, x.shape[1], n_components, time.perf_counter() - t0
    )
    return out


def normalise_embedding_rgb(embedding: np.ndarray, *, percentile: float = 1.0) -> np.ndarray:
    """Colours (N, 3) float32 in [0, 1] from a 2-D or 3-D embedding (N, 2|3).

    Each axis is scaled to [0, 1] between its ``percentile`` and ``100 - percentile``
    percentiles (outliers clipped). 3-D: the axes are R, G, B. 2-D: R = u, G = v,
    B = 1 - (u + v) / 2, so that the four corners of the map get distinct colours.
    """
    e = np.asarray(embedding, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] not in (2, 3):
        raise MilopypError(
            f"colour map: expected an (N, 2) or (N, 3) embedding, got shape {e.shape}; "
            "give a 2-D or 3-D UMAP"
        )
    if e.shape[0] == 0:
        return np.zeros((0, 3), np.float32)
    lo = np.percentile(e, percentile, axis=0)
    hi = np.percentile(e, 100.0 - percentile, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    u = np.clip((e - lo) / span, 0.0, 1.0)
    if e.shape[1] == 2:
        u = np.column_stack([u[:, 0], u[:, 1], 1.0 - 0.5 * (u[:, 0] + u[:, 1])])
    return u.astype(np.float32)
