"""The link graph of fibre picks and their neighbourhood shapes, built in bounded chunks of
neighbour pairs (step 1 of :mod:`milopyp.fibers`, and the line-likeness of step 2)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

#: Most neighbour pairs held at once (each ~100 bytes while a chunk is processed, ~200 MB):
#: the link graph and the neighbourhood shapes are built chunk by chunk, so memory stays
#: O(picks + this) however dense the picks are.
_PAIR_CHUNK = 1 << 21


def _pair_chunks(pts: np.ndarray, tree: cKDTree, radius: float, budget: int | None = None):
    """All pairs of picks within ``radius`` (each pick with itself included), in chunks of
    consecutive picks: yields ``(lo, i, j)`` with ``lo + i`` and ``j`` (int arrays) the two
    picks' indices. A chunk holds at most ``budget`` pairs (or one pick), so memory per
    chunk is O(budget) whatever the density: its picks' neighbour counts are bounded from
    above by :func:`_neighbour_bound` (a counting pass of the tree would cost as much as
    the pairs themselves). ``budget`` defaults to :data:`_PAIR_CHUNK`."""
    budget = _PAIR_CHUNK if budget is None else budget
    ends = np.cumsum(_neighbour_bound(pts, radius))
    lo = 0
    while lo < len(pts):
        done = ends[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, done + budget, side="right")))
        pairs = cKDTree(pts[lo:hi]).sparse_distance_matrix(tree, radius, output_type="ndarray")
        yield lo, pairs["i"].astype(np.intp), pairs["j"].astype(np.intp)
        lo = hi


def _neighbour_bound(pts: np.ndarray, radius: float) -> np.ndarray:
    """(n,) upper bound of each pick's neighbours within ``radius``: the picks in the 3x3x3
    cells of side ``radius`` around its cell (about 6x the count for uniform picks)."""
    cell = np.floor((pts - pts.min(axis=0)) / radius).astype(np.int64) + 1  # >= 1: a margin
    dims = cell.max(axis=0) + 2
    key = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
    keys, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    cells = np.stack(np.unravel_index(keys, tuple(dims)), axis=1)
    total = np.zeros(len(keys), np.int64)
    for off in np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3):
        c = cells + off
        k = (c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2]
        at = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
        total += np.where(keys[at] == k, counts[at], 0)
    return total[inverse.reshape(-1)]


def _components(pts: np.ndarray, link: float) -> np.ndarray:
    """Connected-component label (n,) of each pick in the graph "distance <= link",
    numbered by their first pick (as :func:`scipy.sparse.csgraph.connected_components`):
    the components found so far are united chunk by chunk (:func:`_pair_chunks`)."""
    labels = np.arange(len(pts))
    for lo, i, j in _pair_chunks(pts, cKDTree(pts), link):
        a, b = labels[lo + i], labels[j]
        m = int(labels.max()) + 1
        graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(m, m))
        labels = connected_components(graph, directed=False)[1][labels]
    return labels


def _local_shape(pts: np.ndarray, tree: cKDTree, radius: float):
    """Per pick: neighbour count within ``radius`` (itself included), ``l2 / l1`` of their
    covariance and its principal axis (n, 3); moments summed chunk by chunk
    (:func:`_pair_chunks`) as one sparse product (neighbours x [1, p, p p^T])."""
    n = len(pts)
    q = pts - pts.mean(axis=0)  # centred, for precision
    a, b = np.triu_indices(3)
    features = np.column_stack([np.ones(n), q, q[:, a] * q[:, b]])  # (n, 10)
    sums = np.empty((n, 10))
    for lo, i, j in _pair_chunks(pts, tree, radius):
        m = int(i.max()) + 1  # every pick is its own neighbour
        graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(m, n)).tocsr()
        sums[lo:lo + m] = graph @ features
    count = sums[:, 0]
    mean = sums[:, 1:4] / count[:, None]
    cov = np.empty((n, 3, 3))
    cov[:, a, b] = sums[:, 4:] / count[:, None]
    cov[:, b, a] = cov[:, a, b]
    cov -= mean[:, :, None] * mean[:, None, :]
    evals, evecs = np.linalg.eigh(cov)  # ascending
    ratio = evals[:, 1] / np.maximum(evals[:, 2], 1e-12)
    return count, ratio, evecs[:, :, 2]
