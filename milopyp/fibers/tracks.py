"""Tracks through one connected component of picks, by line growth that splits crossing
filaments (step 2 of :mod:`milopyp.fibers`)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from milopyp.fibers.graph import _local_shape

_LINE_RATIO = 0.1  # a pick is line-like when l2 / l1 of its neighbourhood is below this
_MIN_NEIGHBOURS = 5  # ... and its neighbourhood holds at least this many picks (itself included)
_MAX_TURN_COS = 0.5  # a growing track never turns by more than 60 degrees in one step
_SAME_DIRECTION_DEG = 15.0  # tracks sharing picks and running within this angle are united
_SAME_COS = float(np.cos(np.radians(_SAME_DIRECTION_DEG)))


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
