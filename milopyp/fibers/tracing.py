"""Fibres from picks: graph, tracks, a quadratic fit per track, rejection and joining across
gaps (steps 1-5 of :mod:`milopyp.fibers`)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from milopyp.fibers.graph import _components
from milopyp.fibers.tracks import _tracks

log = logging.getLogger(__name__)

_JOIN_ANGLE_DEG = 30.0  # fibre ends joined across a gap must point at each other this well
_DENSE_STEP = 0.1  # voxels of t between samples of the fitted curve (residual, arc length)

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


def trace(xyz, *, link_distance_vox: float, min_points: int = 10, max_residual_vox: float = 3.5,
          max_curvature: float = 0.05, step_vox: float = 2.0, scores=None,
          join_distance_vox: float | None = None, max_picks: int | None = MAX_PICKS) -> Tracing:
    """Trace fibres through picks ``xyz`` (N, 3), x, y, z in voxels (see the module docstring).

    ``link_distance_vox``: graph cutoff (voxels; ~3 times the pick spacing along a filament,
    below the filaments' spacing: 6 suits picks every ~2 voxels); ``min_points``: fewest
    picks of a fibre (>= 3; 10 picks ~ 20 voxels, further than random false picks chain);
    ``max_residual_vox``: largest RMS residual (voxels; centre-line picks give ~1, picks
    spread over a radius-3 tube ~2, picks of a trained fibre model 2-3); ``max_curvature``:
    1/voxel (0.05: a radius of 20 voxels; noisy 20-voxel fits reach ~0.02); ``step_vox``:
    spacing of the output points (voxels);
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
                        if dist > step and (dirs[i][a] @ u < cos_max
                                            or -(dirs[j][b] @ u) < cos_max):
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
