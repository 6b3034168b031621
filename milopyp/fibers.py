"""Filament (microtubule) tracing from dense centre-line picks.

Input: what ``milopyp localize`` gives for a fibre model, picks ``xyz`` (N, 3), x, y, z in
voxels, one every ~2 voxels along each filament's centre line (NMS box 3 on a tube-shaped
heat map), plus false positives. The paper ("Post-processing for tubular-shaped
macromolecules"; DESIGN.md "Fibres") groups picks by the graph "distance <= cutoff", fits
second-order polynomials per group and keeps small residual and curvature. Here:

1. **Graph.** Picks closer than ``link_distance_vox`` (``link``) are joined; connected
   components with fewer than ``min_points`` picks are dropped.
2. **Tracks (splitting crossings).** Crossing filaments are one component, so components are
   traced by line growth. A pick is *line-like* when the covariance of its component's picks
   within ``2 * link`` (at least 5, itself included) has eigenvalues ``l2 / l1 < 0.1``. A
   track starts at the most line-like pick not yet used (with its neighbours within
   ``link / 2`` of its principal axis) and grows both ways: a line is fitted robustly
   (Tukey's biweight, cutoff ``link / 2``, from the previous step's line) to the track's
   picks in its last ``4 * link`` voxels, and a robust quadratic to the line's inliers; the
   picks within ``link`` ahead of the track's end and within ``link / 2`` of either join,
   until none does. The robust straight line carries a track across a crossing (picks at
   the crossing are shared), the quadratic lets it follow curvature.
   Picks within ``link`` of a finished track start no other; a track that shares picks with
   an earlier one and is the same filament (see :func:`_merge`) is united with it. A
   component without line-like picks (a blob, a sheet) gives no track. Limits: filaments
   closer than ``link`` cannot be told apart (choose it below their spacing); crossings
   under ~20 degrees may not split; tracks follow radii of curvature down to ~``4 * link``;
   picks should scatter less than ~``link / 6`` (RMS per axis) about the centre line.
3. **Fit.** Per track of at least ``min_points`` picks: PCA axes ``e1, e2, e3`` about the
   (score-weighted) mean ``m``; ``t = (p - m) . e1``; ``u = (p - m) . e2`` and ``v = (p - m) .
   e3`` fitted as quadratics of ``t`` (weighted least squares). DESIGN.md's ``x(y), z(y)`` is
   the case ``e1 = y``; this works along x, y or oblique in z. *Residual*: RMS orthogonal
   distance (voxels) of the picks from the curve. *Curvature* (1/voxel): the maximum over
   the picks' ``t`` range of ``|r' x r''| / |r'|^3`` for ``r(t) = (t, u, v)``, i.e.
   ``sqrt(u''^2 + v''^2 + (u' v'' - v' u'')^2) / (1 + u'^2 + v'^2)^1.5``; for a plane curve
   (``v = 0``) the paper's ``|2a| / (1 + (2a t + b)^2)^1.5``. Kept when residual <=
   ``max_residual_vox`` and curvature <= ``max_curvature``.
4. **Resampling.** Points every ``step_vox`` voxels of arc length along the fit, from the
   smallest to the largest ``t`` of the track's picks (never extrapolated), by increasing t.
5. **Joining across gaps.** Where the heat map dips below the threshold for a stretch, one
   filament gives two fibres. Fibres whose ends lie within ``join_distance_vox`` (default 3
   link distances) and point at each other (within 30 degrees of the line joining the ends)
   are refitted as one from the union of their picks and joined when that fit passes the
   residual and curvature cutoffs (closest pair first, repeated). Picks of a trained fibre
   model are sparser than the 2-voxel truth (a smooth ridge has a local maximum every 3-7
   voxels), which is why the workflow links picks over 0.6 filament diameters.

The result does not depend on the order of the input picks (they are sorted first). Memory
grows linearly with the picks (neighbour pairs are handled in bounded chunks), and at most
``max_picks`` (:data:`MAX_PICKS`) are traced: a flood of picks from a flat heat map is cut
to the highest-scoring ones, with a warning.
:func:`segment_points` turns fibres into overlapping extraction points with RELION priors.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

log = logging.getLogger(__name__)

#: columns of a fibre table, in this order
FIBER_COLUMNS = ("tomogram", "fiber_id", "x", "y", "z")

_LINE_RATIO = 0.1  # a pick is line-like when l2 / l1 of its neighbourhood is below this
_MIN_NEIGHBOURS = 5  # ... and its neighbourhood holds at least this many picks (itself included)
_MAX_TURN_COS = 0.5  # a growing track never turns by more than 60 degrees in one step
_SAME_DIRECTION_DEG = 15.0  # tracks sharing picks and running within this angle are united
_SAME_COS = float(np.cos(np.radians(_SAME_DIRECTION_DEG)))
_JOIN_ANGLE_DEG = 30.0  # fibre ends joined across a gap must point at each other this well
_DENSE_STEP = 0.1  # voxels of t between samples of the fitted curve (residual, arc length)
#: Most neighbour pairs held at once (each ~100 bytes while a chunk is processed, ~200 MB):
#: the link graph and the neighbourhood shapes are built chunk by chunk, so memory stays
#: O(picks + this) however dense the picks are.
_PAIR_CHUNK = 1 << 21

#: Default cap on the picks traced (:func:`trace`'s ``max_picks``). Filaments' centre lines
#: take a few % of a tomogram at most; picked every 3-7 voxels, 160x512x512 voxels of
#: microtubules give ~10^4 picks. Far more means a flat (saturated) heat map; beyond this cap
#: the highest-scoring picks are kept, which bounds time and memory (500,000 random picks in
#: 160x512x512: 11 s and 0.27 GB peak; benchmarks/fibers_memory.py).
MAX_PICKS = 200_000


@dataclass(frozen=True)
class Fiber:
    """One traced fibre. ``points`` (M, 3): x, y, z in voxels, every ``step_vox`` of arc
    length along the fit, in order along the fibre; ``members`` (K,): indices of the input
    picks of its track (sorted; picks at a crossing can belong to two fibres);
    ``rms_residual_vox``: RMS orthogonal distance of those picks from the fit (voxels);
    ``max_curvature``: 1/voxel; ``length_vox``: arc length of the fit between its ends
    (voxels); ``score``: mean score of its picks (NaN without scores)."""

    points: np.ndarray
    members: np.ndarray
    rms_residual_vox: float
    max_curvature: float
    length_vox: float
    score: float = float("nan")


@dataclass
class Tracing:
    """What :func:`trace` found: the kept ``fibers`` and counts for the log.
    ``n_components``: connected components of the link graph; ``n_tracks``: tracks traced in
    the components big enough; ``rejected``: reason -> number of components or tracks dropped
    (``"fewer than min_points picks"``, ``"not line-like"``, ``"shorter than step"``,
    ``"residual"``, ``"curvature"``); ``n_capped``: picks beyond ``max_picks`` not traced."""

    fibers: list[Fiber]
    n_components: int = 0
    n_tracks: int = 0
    rejected: Counter = field(default_factory=Counter)
    joined: int = 0
    n_capped: int = 0

    def summary(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        capped = f"{self.n_capped} lowest-scoring pick(s) over max_picks not traced; " \
            if self.n_capped else ""
        return (f"{capped}{self.n_components} component(s), {self.n_tracks} track(s), "
                f"rejected: {why}; {self.joined} gap(s) bridged; {len(self.fibers)} fibre(s) "
                f"kept")


# --------------------------------------------------------------------------- tracing


def trace(xyz, *, link_distance_vox: float, min_points: int = 10, max_residual_vox: float = 3.5,
          max_curvature: float = 0.05, step_vox: float = 2.0, scores=None,
          join_distance_vox: float | None = None, max_picks: int | None = MAX_PICKS) -> Tracing:
    """Trace fibres through picks ``xyz`` (N, 3), x, y, z in voxels (see the module docstring).

    ``link_distance_vox``: graph cutoff (voxels; ~3 times the pick spacing along a filament,
    below the filaments' spacing: 6 suits picks every ~2 voxels); ``min_points``: fewest
    picks of a fibre (>= 3; 10 picks ~ 20 voxels, further than random false picks chain);
    ``max_residual_vox``: largest RMS residual (voxels; centre-line picks give ~1, picks
    spread over a radius-3 tube ~2, picks of a trained fibre model 2-3); ``max_curvature``: 1/voxel (0.05: a radius of 20 voxels;
    noisy 20-voxel fits reach ~0.02); ``step_vox``: spacing of the output points (voxels);
    ``scores`` (N,): pick scores, least-squares weights of the fit (negative ones count 0);
    ``join_distance_vox``: fibres whose ends are this close and point at each other are
    joined (step 5 of the module docstring; default 3 x link, 0 = never); ``max_picks``: most
    picks traced (None = all): beyond it the highest-scoring are kept (without scores, a
    seeded random subset) and a warning says so; time and memory stay bounded by it (memory
    grows linearly with the picks traced, see :data:`MAX_PICKS`).
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    xyz = xyz.reshape(0, 3) if xyz.size == 0 else xyz
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"trace: expected picks of shape (N, 3) x, y, z, got {xyz.shape}")
    if not np.all(np.isfinite(xyz)):
        raise ValueError("trace: picks hold NaN or infinite coordinates")
    for name, value in (("link_distance_vox", link_distance_vox), ("step_vox", step_vox),
                        ("max_residual_vox", max_residual_vox), ("max_curvature", max_curvature)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"trace: {name} must be a positive number, got {value}")
    if int(min_points) < 3:
        raise ValueError(f"trace: min_points must be >= 3 (a quadratic fit), got {min_points}")
    if max_picks is not None and int(max_picks) < 1:
        raise ValueError(f"trace: max_picks must be >= 1 (or None: no cap), got {max_picks}")
    weights = _weights(scores, len(xyz))
    result = Tracing(fibers=[])
    if len(xyz) == 0:
        return result

    order = np.lexsort((xyz[:, 2], xyz[:, 1], xyz[:, 0]))  # input order must not matter
    if max_picks is not None and len(order) > max_picks:
        order = _cap(order, scores, int(max_picks))
        result.n_capped = len(xyz) - len(order)
        log.warning(
            "trace: %d picks, more than max_picks %d: the model picked implausibly many points "
            "(filament centre lines give ~10^4 per tomogram); tracing the %d %s. Check the "
            "fibre heat map (flat or saturated: the model did not learn the filaments?) and "
            "the pick threshold (localize --threshold)", len(xyz), max_picks, len(order),
            "highest-scoring" if scores is not None else "picks of a random subset")
    pts = xyz[order]
    labels = _components(pts, float(link_distance_vox))
    result.n_components = int(labels.max()) + 1
    by_label = np.argsort(labels, kind="stable")  # each component's picks, sorted
    for comp in np.split(by_label, np.flatnonzero(np.diff(labels[by_label])) + 1):
        if len(comp) < min_points:
            result.rejected["fewer than min_points picks"] += 1
            continue
        tracks = _tracks(pts[comp], float(link_distance_vox))
        if not tracks:
            result.rejected["not line-like"] += 1
            continue
        for track in tracks:
            result.n_tracks += 1
            members = comp[track]
            if len(members) < min_points:
                result.rejected["fewer than min_points picks"] += 1
                continue
            picks = order[members]
            fit = _fit(pts[members], None if weights is None else weights[picks], float(step_vox))
            why = ("shorter than step" if fit is None else "residual" if fit[1] > max_residual_vox
                   else "curvature" if fit[2] > max_curvature else "")
            if why:
                result.rejected[why] += 1
                continue
            score = float(np.mean(np.asarray(scores, np.float64)[picks])) if scores is not None \
                else float("nan")
            result.fibers.append(Fiber(fit[0], np.sort(picks), fit[1], fit[2], fit[3], score))
    if join_distance_vox is None:
        join_distance_vox = 3.0 * float(link_distance_vox)
    if join_distance_vox > 0 and len(result.fibers) > 1:
        before = len(result.fibers)
        result.fibers = _join_ends(result.fibers, xyz, weights, scores, float(join_distance_vox),
                                   float(step_vox), max_residual_vox, max_curvature)
        result.joined = before - len(result.fibers)
    result.fibers.sort(key=lambda f: tuple(np.round(f.points.mean(axis=0), 6)))
    log.debug("traced %d picks: %s", len(xyz), result.summary())
    return result


def trace_fibers(xyz, *, link_distance_vox: float, **kwargs) -> list[Fiber]:
    """The fibres of :func:`trace` (same arguments), ordered by their centroid (x, y, z)."""
    return trace(xyz, link_distance_vox=link_distance_vox, **kwargs).fibers


def fibers_frame(fibers: list[Fiber], tomogram: str) -> pd.DataFrame:
    """Fibre table ``tomogram, fiber_id, x, y, z`` (voxels) of ``fibers``; ids 0..K-1 in
    list order, rows in order along each fibre."""
    if not fibers:
        return _empty_fibers()
    ids = np.concatenate([np.full(len(f.points), i, np.int64) for i, f in enumerate(fibers)])
    xyz = np.concatenate([f.points for f in fibers])
    return pd.DataFrame({"tomogram": str(tomogram), "fiber_id": ids,
                         "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})


def trace_table(picks: pd.DataFrame, *, link_distance_vox: float, **kwargs) -> pd.DataFrame:
    """Trace the picks of each tomogram of a point table (``tomogram, x, y, z[, score]``,
    voxels); returns ``tomogram, fiber_id, x, y, z`` with ``fiber_id`` 0..K-1 per tomogram.

    Keyword arguments as :func:`trace`; a finite ``score`` column is used as the weights.
    """
    frames = []
    names = picks["tomogram"].astype(str).to_numpy() if len(picks) else np.array([], str)
    for name in dict.fromkeys(names):
        sub = picks[names == name]
        scores = pd.to_numeric(sub["score"], errors="coerce").to_numpy(np.float64) \
            if "score" in sub.columns else None
        scores = scores if scores is not None and np.all(np.isfinite(scores)) else None
        xyz = sub.loc[:, ["x", "y", "z"]].to_numpy(np.float64)
        fibers = trace_fibers(xyz, link_distance_vox=link_distance_vox, scores=scores, **kwargs)
        frames.append(fibers_frame(fibers, name))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else _empty_fibers()


def _empty_fibers() -> pd.DataFrame:
    return pd.DataFrame({"tomogram": pd.Series(dtype=str), "fiber_id": pd.Series(dtype=np.int64),
                         **{c: pd.Series(dtype=np.float64) for c in ("x", "y", "z")}})


def _weights(scores, n: int) -> np.ndarray | None:
    w = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if w is not None and (len(w) != n or not np.all(np.isfinite(w))):
        raise ValueError(f"trace: expected {n} finite scores, got {len(w)} (or NaN/inf)")
    return None if w is None or np.clip(w, 0, None).sum() <= 0 else np.clip(w, 0.0, None)


def _cap(order: np.ndarray, scores, max_picks: int) -> np.ndarray:
    """The ``max_picks`` entries of ``order`` (input indices, sorted by position) with the
    highest scores (ties: by position), or a seeded random subset without scores; returned
    in position order, so the result still does not depend on the input order."""
    if scores is None:
        keep = np.random.default_rng(0).choice(len(order), max_picks, replace=False)
    else:
        ranked = np.asarray(scores, np.float64)[order]
        keep = np.argsort(-ranked, kind="stable")[:max_picks]
    return order[np.sort(keep)]


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


def _tracks(pts: np.ndarray, link: float) -> list[np.ndarray]:
    """Tracks (sorted index arrays into ``pts``) of one component, by line growth."""
    tree = cKDTree(pts)
    window, tube = 2.0 * link, 0.5 * link
    count, ratio, axis = _local_shape(pts, tree, window)
    seedable = (count >= _MIN_NEIGHBOURS) & (ratio < _LINE_RATIO)
    free = np.ones(len(pts), bool)
    member = np.zeros(len(pts), bool)  # scratch of _grow, all False between calls
    tracks = []
    for seed in np.lexsort((np.arange(len(pts)), ratio)):
        if not (seedable[seed] and free[seed]):
            continue
        track = _grow(pts, tree, int(seed), axis[seed], window, tube, link, member)
        free[track] = False
        for near in tree.query_ball_point(pts[track], link):
            free[near] = False
        tracks = _merge(tracks, track, pts, window)
    return tracks


def _merge(tracks: list[np.ndarray], new: np.ndarray, pts: np.ndarray, window: float):
    """Add the track ``new`` to ``tracks``, uniting it with each track that shares picks with
    it and is the same filament (traced twice: a track stopped at a gap or kink in its picks
    and a later one grew back over it). Crossing filaments share a few picks and stay apart.

    Each track's own picks within ``2 * window`` of the shared picks' centroid are compared:
    one filament when either has fewer than 3, when their principal axes are within
    ``_SAME_DIRECTION_DEG``, or when they lie end to end (each on one side only of the shared
    stretch, on opposite sides); at a crossing both filaments go on at both sides."""
    while True:
        for k, old in enumerate(tracks):
            shared = np.intersect1d(old, new, assume_unique=True)
            if len(shared) >= 2 and _same_filament(pts, old, new, shared, 2.0 * window):
                new = np.union1d(tracks.pop(k), new)
                break
        else:
            return [*tracks, new]


def _same_filament(pts, a: np.ndarray, b: np.ndarray, shared: np.ndarray, radius: float) -> bool:
    centre = pts[shared].mean(axis=0)
    near = []
    for track in (a, b):
        own = pts[np.setdiff1d(track, shared, assume_unique=True)]
        near.append(own[np.linalg.norm(own - centre, axis=1) <= radius])
    if min(len(near[0]), len(near[1])) < 3:
        return True
    if abs(_principal_axis(near[0]) @ _principal_axis(near[1])) >= _SAME_COS:
        return True
    axis = _principal_axis(np.concatenate([near[0], near[1], pts[shared]]))
    sides = [np.sign((n - centre) @ axis) for n in near]
    one_sided = [max(np.mean(x > 0), np.mean(x < 0)) >= 0.9 for x in sides]
    return all(one_sided) and np.sign(sides[0].sum()) != np.sign(sides[1].sum())


def _end_directions(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit outward directions at the first and last point of a fibre's points (M, 3)."""
    k = min(len(points) - 1, 5)
    first = points[0] - points[k]
    last = points[-1] - points[-1 - k]
    return (first / max(np.linalg.norm(first), 1e-12), last / max(np.linalg.norm(last), 1e-12))


def _join_ends(fibers: list[Fiber], xyz: np.ndarray, weights, scores, gap: float, step: float,
               max_residual: float, max_curvature: float) -> list[Fiber]:
    """Join fibres end to end across gaps in their picks (a stretch where the heat map fell
    below the threshold splits one filament into pieces).

    Two fibres are candidates when an end of one lies within ``gap`` voxels of an end of the
    other and both ends point outwards at each other (each outward direction within
    :data:`_JOIN_ANGLE_DEG` of the line joining the ends). The closest candidate pair is
    fitted as one fibre from the union of their picks and joined when the fit passes the
    residual and curvature cutoffs; then the search repeats.
    """
    fibers = list(fibers)
    cos_max = float(np.cos(np.radians(_JOIN_ANGLE_DEG)))
    refused: set[tuple[bytes, bytes]] = set()
    while True:
        ends = [(f.points[0], f.points[-1]) for f in fibers]
        dirs = [_end_directions(f.points) for f in fibers]
        keys = [f.members.tobytes() for f in fibers]
        pairs = []
        for i in range(len(fibers)):
            for j in range(i + 1, len(fibers)):
                if (keys[i], keys[j]) in refused:
                    continue
                for a in range(2):
                    for b in range(2):
                        link = ends[j][b] - ends[i][a]
                        dist = float(np.linalg.norm(link))
                        if dist > gap:
                            continue
                        u = link / max(dist, 1e-12)
                        if dist > step and (dirs[i][a] @ u < cos_max or -(dirs[j][b] @ u) < cos_max):
                            continue
                        pairs.append((dist, i, j))
        for _, i, j in sorted(pairs):
            members = np.union1d(fibers[i].members, fibers[j].members)
            fit = _fit(xyz[members], None if weights is None else weights[members], step)
            if fit is None or fit[1] > max_residual or fit[2] > max_curvature:
                refused.add((keys[i], keys[j]))
                continue
            score = float(np.mean(np.asarray(scores, np.float64)[members])) \
                if scores is not None else float("nan")
            joined = Fiber(fit[0], members, fit[1], fit[2], fit[3], score)
            fibers = [f for k, f in enumerate(fibers) if k not in (i, j)] + [joined]
            break
        else:
            return fibers


def _principal_axis(p: np.ndarray) -> np.ndarray:
    """Unit principal axis (largest variance) of points ``p`` (K, 3)."""
    c = p - p.mean(axis=0)
    return np.linalg.eigh(c.T @ c)[1][:, 2]


def _grow(pts, tree, seed: int, axis, window: float, tube: float, reach: float,
          member: np.ndarray) -> np.ndarray:
    """Grow a track from ``seed`` along ``axis``, then against it (module docstring, step 2):
    a robust line (:func:`_robust_line`) carries it straight across crossings, a robust
    quadratic through the line's inliers (:func:`_bend`) lets it follow curvature.
    ``member`` (n,): all-False scratch, left so (a step costs O(track), not O(n picks))."""
    axis = np.asarray(axis, np.float64)
    near = np.asarray(tree.query_ball_point(pts[seed], window), np.int64)
    track = np.union1d(near[_line_distance(pts[near], pts[seed], axis) <= tube], [seed])
    member[track] = True
    for sign in (1.0, -1.0):
        line = (pts[seed], sign * axis)
        while True:
            s = (pts[track] - line[0]) @ line[1]
            recent = pts[track[s >= s.max() - 2.0 * window]]
            line = _robust_line(recent, tube, line)
            centre, u = line
            s_end = float(((recent - centre) @ u).max())
            cand = np.asarray(tree.query_ball_point(centre + s_end * u, reach + 2 * tube), np.int64)
            cand = cand[~member[cand]]
            if len(cand) == 0:
                break
            off = _line_distance(pts[cand], centre, u)
            bend = _bend(recent, centre, u, tube, window)
            if bend is not None:
                off = np.minimum(off, bend(pts[cand]))
            ok = ((pts[cand] - centre) @ u <= s_end + reach) & (off <= tube)
            if not ok.any():
                break
            member[cand[ok]] = True
            track = np.union1d(track, cand[ok])  # sorted, as the picks' order
    member[track] = False
    return track


def _bend(p: np.ndarray, centre, u, cutoff: float, window: float):
    """Distance function (points (K, 3) -> (K,)) to a quadratic through points ``p`` (the two
    coordinates normal to ``u`` as quadratics of the one along it), fitted twice by Tukey-
    weighted least squares starting from the weights of the line ``(centre, u)``; None when
    fewer than 6 points carry weight or they span less than ``window`` voxels."""
    poly = np.polynomial.polynomial
    normal = np.linalg.svd(np.eye(3) - np.outer(u, u))[0][:, :2].T  # (2, 3), normal to u
    s, uv = (p - centre) @ u, (p - centre) @ normal.T
    w = _tukey(_line_distance(p, centre, u), cutoff)
    if np.count_nonzero(w) < 6 or np.ptp(s[w > 0]) < window:
        return None
    for _ in range(2):
        used = w > 0
        coef = poly.polyfit(s[used], uv[used], 2, w=np.sqrt(w[used]))
        w = _tukey(np.linalg.norm(uv - poly.polyval(s, coef).T, axis=1), cutoff)
        if np.count_nonzero(w) < 6:
            return None

    def distance(x: np.ndarray) -> np.ndarray:
        q = x - centre
        return np.linalg.norm(q @ normal.T - poly.polyval(q @ u, coef).T, axis=1)

    return distance


def _line_distance(p: np.ndarray, centre: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Distances of points ``p`` (K, 3) from the line through ``centre`` along unit ``u``."""
    rel = p - centre
    return np.linalg.norm(rel - np.outer(rel @ u, u), axis=1)


def _robust_line(p: np.ndarray, cutoff: float, prev):
    """``(centre, unit direction)`` of a line through the points ``p`` (K, 3): iteratively
    reweighted orthogonal regression with Tukey's biweight (``cutoff``, voxels), starting from
    the distances to the line ``prev`` and oriented like it. Keeps ``prev`` when fewer than 3
    points carry weight, and keeps its direction for a turn of more than 60 degrees."""
    w = _tukey(_line_distance(p, *prev), cutoff)
    line = prev
    for _ in range(3):
        if np.count_nonzero(w) < 3:
            return line
        centre = np.average(p, axis=0, weights=w)
        x = (p - centre) * np.sqrt(w)[:, None]
        u = np.linalg.eigh(x.T @ x)[1][:, 2]
        u = u if u @ prev[1] >= 0 else -u
        line = (centre, u if u @ prev[1] >= _MAX_TURN_COS else prev[1])
        w = _tukey(_line_distance(p, *line), cutoff)
    return line


def _tukey(r: np.ndarray, c: float) -> np.ndarray:
    return np.where(r < c, (1.0 - (r / c) ** 2) ** 2, 0.0)


# --------------------------------------------------------------------------- fitting


def _fit(p: np.ndarray, w, step: float):
    """Quadratic fit of one track's picks ``p`` (K, 3): ``(points, residual, curvature,
    length)`` (see the module docstring), or None when they span less than ``step``."""
    w = np.ones(len(p)) if w is None or w.sum() <= 0 else w
    m = np.average(p, axis=0, weights=w)
    c = p - m
    e = np.linalg.eigh((c * w[:, None]).T @ c)[1][:, ::-1]  # columns e1, e2, e3
    e = e * np.where(e[np.argmax(np.abs(e), axis=0), [0, 1, 2]] < 0, -1.0, 1.0)  # canonical
    q = c @ e
    t = q[:, 0]
    if np.ptp(t) < step:
        return None
    scale = max(np.abs(t).max(), 1.0)  # conditioning of the Vandermonde matrix
    vander = np.stack([(t / scale) ** 2, t / scale, np.ones_like(t)], axis=1)
    sw = np.sqrt(w)[:, None]
    coef = np.linalg.lstsq(vander * sw, q[:, 1:] * sw, rcond=None)[0]  # (3, 2) for u, v
    a, b, c0 = coef[0] / scale**2, coef[1] / scale, coef[2]
    td = np.linspace(t.min(), t.max(), max(2, int(np.ceil(np.ptp(t) / _DENSE_STEP)) + 1))
    uv = td[:, None] ** 2 * a + td[:, None] * b + c0  # (n, 2)
    d1, d2 = 2 * td[:, None] * a + b, 2 * a  # (u', v') along td; (u'', v'') constant
    speed2 = 1.0 + (d1**2).sum(axis=1)
    cross2 = (d2**2).sum() + (d1[:, 0] * d2[1] - d1[:, 1] * d2[0]) ** 2
    curvature = float(np.max(np.sqrt(cross2) / speed2**1.5))
    dense = m + np.column_stack([td, uv]) @ e.T
    residual = float(np.sqrt(np.mean(cKDTree(dense).query(p)[0] ** 2)))
    speed = np.sqrt(speed2)
    arc = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * np.diff(td))])
    t_out = np.interp(np.arange(0.0, arc[-1] + 1e-9, step), arc, td)
    uv_out = t_out[:, None] ** 2 * a + t_out[:, None] * b + c0
    return m + np.column_stack([t_out, uv_out]) @ e.T, residual, curvature, float(arc[-1])


# --------------------------------------------------------------------------- segments


def relion_tilt_psi(tangent) -> tuple[np.ndarray, np.ndarray]:
    """RELION priors (degrees) that put a particle's z axis along ``tangent`` (N, 3), x,y,z.

    RELION's Euler angles (rot, tilt, psi) are ZYZ; ``A = Euler_angles2matrix(rot, tilt,
    psi)`` carries the reference onto the particle (``x_particle = A x_reference``; ``A`` is
    the transpose of scipy's ``Rotation.from_euler("ZYZ", [rot, tilt, psi])`` matrix). Its
    last column, the image of the reference z axis (a helix's axis), is
    ``(-cos(psi) sin(tilt), sin(psi) sin(tilt), cos(tilt))`` whatever rot is: rot is the
    free angle about the fibre. So ``tilt = arccos(t_z)`` in [0, 180] and ``psi = 180 -
    atan2(t_y, t_x)`` in (-180, 180] (as PySeg's ``vect_to_zrelion``); fibres lying in the
    x-y plane have tilt 90.
    """
    t = np.asarray(tangent, dtype=np.float64).reshape(-1, 3)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    tilt = np.degrees(np.arccos(np.clip(t[:, 2], -1.0, 1.0)))
    psi = 180.0 - np.degrees(np.arctan2(t[:, 1], t[:, 0]))
    psi = np.where(psi > 180.0, psi - 360.0, psi)
    return tilt, psi


def segment_points(
    fibers: pd.DataFrame, spacing_vox: float, *, voxel_size_a: float | None = None
) -> pd.DataFrame:
    """Overlapping extraction points every ``spacing_vox`` voxels along each fibre.

    ``fibers``: a fibre table (``tomogram, fiber_id, x, y, z``; voxels; rows in order along
    each fibre, as :func:`trace_table` writes). Along each fibre's polyline the points sit at
    arc lengths ``o, o + spacing, ...`` with ``o`` centring them (a fibre shorter than the
    spacing gets one point, at its middle). Returns ``tomogram, fiber_id, x, y, z`` (voxels),
    ``rlnAngleTilt, rlnAnglePsi`` and the same values as ``rlnAngleTiltPrior,
    rlnAnglePsiPrior`` (degrees, see :func:`relion_tilt_psi`; the tangent points along
    increasing row order, so the fibre's polarity is arbitrary), and with ``voxel_size_a``
    (Å) ``rlnHelicalTrackLengthAngst``: the point's arc length from the fibre's first point.
    """
    if not (np.isfinite(spacing_vox) and spacing_vox > 0):
        raise ValueError(f"segment_points: spacing_vox must be > 0, got {spacing_vox}")
    cols = ["rlnAngleTilt", "rlnAnglePsi", "rlnAngleTiltPrior", "rlnAnglePsiPrior"]
    cols += ["rlnHelicalTrackLengthAngst"] if voxel_size_a is not None else []
    rows = [_empty_fibers().assign(**{c: pd.Series(dtype=np.float64) for c in cols})]
    keys = fibers["tomogram"].astype(str) + "\0" + fibers["fiber_id"].astype(str)
    for key in dict.fromkeys(keys):
        sub = fibers[keys == key]
        pos, tangent, s = _polyline_samples(sub[["x", "y", "z"]].to_numpy(np.float64),
                                            float(spacing_vox))
        tilt, psi = relion_tilt_psi(tangent)
        values = [tilt, psi, tilt, psi] + ([s * voxel_size_a] if voxel_size_a is not None else [])
        rows.append(pd.DataFrame({"tomogram": str(sub["tomogram"].iloc[0]),
                                  "fiber_id": sub["fiber_id"].iloc[0], "x": pos[:, 0],
                                  "y": pos[:, 1], "z": pos[:, 2], **dict(zip(cols, values))}))
    return pd.concat(rows[1:], ignore_index=True) if len(rows) > 1 else rows[0]


def _polyline_samples(xyz: np.ndarray, spacing: float):
    """Positions (n, 3), unit tangents (n, 3) and arc lengths (n,) every ``spacing`` voxels."""
    if len(xyz) == 1:
        return xyz.copy(), np.array([[1.0, 0.0, 0.0]]), np.zeros(1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xyz, axis=0), axis=1))])
    total = arc[-1]
    n = int(np.floor(total / spacing + 1e-9)) + 1
    s = (total - (n - 1) * spacing) / 2 + spacing * np.arange(n)

    def at(a):
        return np.column_stack([np.interp(np.clip(a, 0, total), arc, xyz[:, k]) for k in range(3)])

    h = min(spacing, total) / 2
    pos, tangent = at(s), at(s + h) - at(s - h)
    norm = np.linalg.norm(tangent, axis=1, keepdims=True)
    fallback = (xyz[-1] - xyz[0]) / max(total, 1e-12)
    tangent = np.where(norm > 1e-12, tangent / np.maximum(norm, 1e-12), fallback)
    return pos, tangent, s
