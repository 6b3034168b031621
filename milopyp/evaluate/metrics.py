"""Precision, recall, F1 and average precision of picks (see :mod:`milopyp.evaluate`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from milopyp.errors import MilopypError

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["tomogram", "n_picks", "n_true", "tp", "fp", "fn", "precision", "recall",
                  "f1", "ap"]
OVERALL = "overall"


def _as_xyz(points, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise MilopypError(f"{name}: expected an (N, 3) x,y,z array, got shape {arr.shape}")
    return arr


def _pairs_within(pred: np.ndarray, true: np.ndarray, radius: float):
    """(i_pred, j_true, distance) of every pair at most ``radius`` apart."""
    if len(pred) == 0 or len(true) == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0)
    sdm = cKDTree(pred).sparse_distance_matrix(cKDTree(true), radius, output_type="ndarray")
    return sdm["i"].astype(np.intp), sdm["j"].astype(np.intp), sdm["v"].astype(np.float64)


def match(pred_xyz, true_xyz, radius_vox: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of predicted to true positions within ``radius_vox`` voxels.

    Maximises the number of pairs, then minimises their total distance (Hungarian algorithm
    per connected group of candidate pairs).

    Args:
        pred_xyz: (N, 3) x, y, z voxels.
        true_xyz: (M, 3) x, y, z voxels.
        radius_vox: largest centre distance of a pair (inclusive).

    Returns:
        (pred_idx, true_idx): int arrays of equal length K <= min(N, M), sorted by pred_idx.
    """
    if not radius_vox >= 0:
        raise MilopypError(f"matching radius must be >= 0 voxels, got {radius_vox}")
    pred = _as_xyz(pred_xyz, "picks")
    true = _as_xyz(true_xyz, "truth")
    i, j, d = _pairs_within(pred, true, float(radius_vox))
    if i.size == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    n_p = len(pred)
    # Bipartite graph: nodes 0..n_p-1 are picks, n_p.. are true particles.
    graph = coo_matrix((np.ones(i.size), (i, j + n_p)), shape=(n_p + len(true),) * 2)
    _, label = connected_components(graph, directed=False)
    comp = label[i]
    order = np.argsort(comp, kind="stable")
    i, j, d, comp = i[order], j[order], d[order], comp[order]
    starts = np.flatnonzero(np.r_[True, comp[1:] != comp[:-1]])
    ends = np.r_[starts[1:], comp.size]
    sizes = ends - starts
    out_p: list[np.ndarray] = [i[starts[sizes == 1]]]  # isolated pairs match directly
    out_t: list[np.ndarray] = [j[starts[sizes == 1]]]
    for s, e in zip(starts[sizes > 1], ends[sizes > 1]):
        ip, inv_p = np.unique(i[s:e], return_inverse=True)
        jt, inv_t = np.unique(j[s:e], return_inverse=True)
        # A non-pair costs more than any set of real pairs: cardinality first, then distance.
        big = float(radius_vox) * (min(ip.size, jt.size) + 1) + 1.0
        cost = np.full((ip.size, jt.size), big)
        cost[inv_p, inv_t] = d[s:e]
        rows, cols = linear_sum_assignment(cost)
        real = cost[rows, cols] < big
        out_p.append(ip[rows[real]])
        out_t.append(jt[cols[real]])
    pred_idx = np.concatenate(out_p).astype(np.intp)
    true_idx = np.concatenate(out_t).astype(np.intp)
    order = np.argsort(pred_idx, kind="stable")
    return pred_idx[order], true_idx[order]


def greedy_match_by_score(pred_xyz, scores, true_xyz, radius_vox: float) -> np.ndarray:
    """True-positive flags (N,) bool of picks matched greedily in descending score order.

    Each pick, strongest first, takes the nearest still-unmatched true particle within
    ``radius_vox``; a pick with none left is a false positive. Flags are in input order.
    """
    pred = _as_xyz(pred_xyz, "picks")
    true = _as_xyz(true_xyz, "truth")
    flags = np.zeros(len(pred), dtype=bool)
    if len(pred) == 0 or len(true) == 0:
        return flags
    order = np.argsort(-_clean_scores(scores), kind="stable")
    tree = cKDTree(true)
    neighbours = tree.query_ball_point(pred[order], float(radius_vox))
    taken = np.zeros(len(true), dtype=bool)
    for k, idx in zip(order, neighbours):
        if not idx:
            continue
        idx = np.asarray(idx, dtype=np.intp)
        idx = idx[~taken[idx]]
        if idx.size == 0:
            continue
        dist = np.linalg.norm(true[idx] - pred[k], axis=1)
        best = idx[np.argmin(dist)]
        taken[best] = True
        flags[k] = True
    return flags


def _clean_scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return np.where(np.isnan(s), -np.inf, s)


def average_precision(scores, is_tp, n_true: int) -> float:
    """Area under the precision-recall curve (VOC all-points interpolation).

    Args:
        scores: (N,) pick scores (higher = more confident; NaN ranks last).
        is_tp: (N,) bool, whether each pick is a true positive.
        n_true: number of true particles.

    Returns:
        AP in [0, 1]; NaN when ``n_true`` is 0.
    """
    if n_true <= 0:
        return float("nan")
    s = _clean_scores(scores)
    tp = np.asarray(is_tp, dtype=bool).reshape(-1)
    if s.size != tp.size:
        raise MilopypError(f"scores ({s.size}) and flags ({tp.size}) differ in length")
    if s.size == 0:
        return 0.0
    order = np.argsort(-s, kind="stable")
    ctp = np.cumsum(tp[order])
    precision = ctp / np.arange(1, s.size + 1)
    recall = ctp / float(n_true)
    p_interp = np.maximum.accumulate(precision[::-1])[::-1]
    d_recall = np.diff(np.r_[0.0, recall])
    return float(np.sum(d_recall * p_interp))


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def _row(name: str, n_picks: int, n_true: int, tp: int, ap: float) -> dict:
    return {
        "tomogram": name,
        "n_picks": int(n_picks),
        "n_true": int(n_true),
        "tp": int(tp),
        "fp": int(n_picks - tp),
        "fn": int(n_true - tp),
        "precision": _ratio(tp, n_picks),
        "recall": _ratio(tp, n_true),
        "f1": _ratio(2 * tp, n_picks + n_true),
        "ap": ap,
    }


def _check_table(df: pd.DataFrame, what: str) -> None:
    missing = [c for c in ("tomogram", "x", "y", "z") if c not in df.columns]
    if missing:
        raise MilopypError(
            f"{what} table has no column(s) {missing}; found {list(df.columns)}; expected "
            "tomogram, x, y, z (voxels)"
        )


def evaluate(
    picks: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    radius_vox: float,
    tomograms: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per-tomogram and overall detection metrics.

    Args:
        picks: columns ``tomogram, x, y, z`` (voxels) and optionally ``score``.
        truth: columns ``tomogram, x, y, z`` (voxels).
        radius_vox: matching radius in voxels.
        tomograms: the tomograms to score (default: every tomogram in picks or truth). A
            tomogram without truth rows has no particles: its picks are false positives.

    Returns:
        DataFrame with columns ``tomogram, n_picks, n_true, tp, fp, fn, precision, recall, f1,
        ap`` (one row per tomogram in sorted order, then the ``overall`` row). ``ap`` is NaN
        when picks have no ``score`` column or there are no true particles.
    """
    _check_table(picks, "picks")
    _check_table(truth, "truth")
    if not radius_vox >= 0:
        raise MilopypError(f"matching radius must be >= 0 voxels, got {radius_vox}")
    has_score = "score" in picks.columns
    p_name = picks["tomogram"].astype(str).to_numpy()
    t_name = truth["tomogram"].astype(str).to_numpy()
    if tomograms is None:
        names = sorted(set(p_name) | set(t_name))
    else:
        names = sorted({str(t) for t in tomograms})
    p_xyz = picks[["x", "y", "z"]].to_numpy(dtype=np.float64)
    t_xyz = truth[["x", "y", "z"]].to_numpy(dtype=np.float64)
    p_score = picks["score"].to_numpy(dtype=np.float64) if has_score else None
    rows = []
    all_scores: list[np.ndarray] = []
    all_flags: list[np.ndarray] = []
    total_p = total_t = total_tp = 0
    for name in names:
        pm = p_name == name
        tm = t_name == name
        pred, true = p_xyz[pm], t_xyz[tm]
        pi, _ti = match(pred, true, radius_vox)
        ap = float("nan")
        if p_score is not None:
            flags = greedy_match_by_score(pred, p_score[pm], true, radius_vox)
            ap = average_precision(p_score[pm], flags, len(true))
            all_scores.append(p_score[pm])
            all_flags.append(flags)
        rows.append(_row(name, len(pred), len(true), len(pi), ap))
        total_p += len(pred)
        total_t += len(true)
        total_tp += len(pi)
    overall_ap = float("nan")
    if p_score is not None and all_scores:
        overall_ap = average_precision(np.concatenate(all_scores), np.concatenate(all_flags),
                                       total_t)
    rows.append(_row(OVERALL, total_p, total_t, total_tp, overall_ap))
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def format_table(metrics: pd.DataFrame) -> str:
    """A fixed-width text table of :func:`evaluate`'s output (for the terminal)."""
    header = f"{'tomogram':<20} {'picks':>7} {'true':>7} {'tp':>7} {'precision':>9} " \
             f"{'recall':>7} {'f1':>7} {'ap':>7}"
    lines = [header, "-" * len(header)]
    for r in metrics.itertuples(index=False):
        lines.append(
            f"{r.tomogram!s:<20} {r.n_picks:>7d} {r.n_true:>7d} {r.tp:>7d} "
            f"{r.precision:>9.3f} {r.recall:>7.3f} {r.f1:>7.3f} {r.ap:>7.3f}"
        )
    return "\n".join(lines)
