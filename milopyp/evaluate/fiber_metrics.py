"""Fibre-level and point-level scores of traced fibres against true centre lines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from milopyp.errors import MilopypError
from milopyp.evaluate.metrics import OVERALL, _check_table, evaluate

FIBER_COLUMNS = ["tomogram", "n_true_fibers", "n_traced_fibers", "found_fibers",
                 "true_traced_fibers", "n_points", "n_true_points", "point_tp",
                 "point_precision", "point_recall", "point_f1"]


def _coverage(points: np.ndarray, others: cKDTree | None, radius_vox: float) -> float:
    """Fraction of ``points`` within ``radius_vox`` of a point of the tree ``others`` (0 when
    either is empty; ``others`` is None for no points)."""
    if not len(points) or others is None:
        return 0.0
    d, _ = others.query(points, distance_upper_bound=radius_vox + 1e-9)
    return float(np.mean(np.isfinite(d)))


def evaluate_fibers(
    traced: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    radius_vox: float,
    min_coverage: float = 0.5,
    tomograms: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Fibre-level and point-level scores of traced fibres against true centre lines.

    traced, truth: ``tomogram, fiber_id, x, y, z`` (voxels), points along each fibre (the
    tracer and the simulator both resample every 2 voxels). A true fibre counts as found when
    at least ``min_coverage`` of its points lie within ``radius_vox`` of a traced point; a
    traced fibre counts as true when ``min_coverage`` of its points lie within ``radius_vox``
    of a true point (a fibre split in two gives two true traced fibres and one found fibre).
    Point scores match the points one to one within ``radius_vox`` (:func:`evaluate`).

    Returns one row per tomogram and an ``overall`` row with :data:`FIBER_COLUMNS`.
    """
    for df, what in ((traced, "traced fibres"), (truth, "truth fibres")):
        _check_table(df, what)
        if "fiber_id" not in df.columns:
            raise MilopypError(f"{what} table has no `fiber_id` column (columns "
                               f"{list(df.columns)}); give fibre tables (milopyp trace-fibers)")
    points = evaluate(traced, truth, radius_vox=radius_vox, tomograms=tomograms)
    points = points.set_index("tomogram")
    names = [n for n in points.index if n != OVERALL]
    rows = []
    totals = dict.fromkeys(FIBER_COLUMNS[1:5], 0)
    for name in names:
        t_sub = truth[truth["tomogram"].astype(str) == name]
        p_sub = traced[traced["tomogram"].astype(str) == name]
        t_xyz = t_sub[["x", "y", "z"]].to_numpy(np.float64)
        p_xyz = p_sub[["x", "y", "z"]].to_numpy(np.float64)
        true_fibres = [g[["x", "y", "z"]].to_numpy(np.float64)
                       for _, g in t_sub.groupby("fiber_id")]
        traced_fibres = [g[["x", "y", "z"]].to_numpy(np.float64)
                         for _, g in p_sub.groupby("fiber_id")]
        p_tree = cKDTree(p_xyz) if len(p_xyz) else None
        t_tree = cKDTree(t_xyz) if len(t_xyz) else None
        counts = {
            "n_true_fibers": len(true_fibres),
            "n_traced_fibers": len(traced_fibres),
            "found_fibers": sum(_coverage(f, p_tree, radius_vox) >= min_coverage
                                for f in true_fibres),
            "true_traced_fibers": sum(_coverage(f, t_tree, radius_vox) >= min_coverage
                                      for f in traced_fibres),
        }
        for key, value in counts.items():
            totals[key] += int(value)
        rows.append({"tomogram": name, **counts, **_point_scores(points.loc[name])})
    rows.append({"tomogram": OVERALL, **totals, **_point_scores(points.loc[OVERALL])})
    return pd.DataFrame(rows, columns=FIBER_COLUMNS)


def _point_scores(row: pd.Series) -> dict:
    return {"n_points": int(row["n_picks"]), "n_true_points": int(row["n_true"]),
            "point_tp": int(row["tp"]), "point_precision": row["precision"],
            "point_recall": row["recall"], "point_f1": row["f1"]}


def format_fiber_table(metrics: pd.DataFrame) -> str:
    """A fixed-width text table of :func:`evaluate_fibers`'s output."""
    header = (f"{'tomogram':<20} {'fibres':>7} {'found':>6} {'traced':>7} {'on truth':>8} "
              f"{'point P':>8} {'point R':>8} {'point F1':>8}")
    lines = [header, "-" * len(header)]
    for r in metrics.itertuples(index=False):
        lines.append(
            f"{r.tomogram!s:<20} {r.n_true_fibers:>7d} {r.found_fibers:>6d} "
            f"{r.n_traced_fibers:>7d} {r.true_traced_fibers:>8d} {r.point_precision:>8.3f} "
            f"{r.point_recall:>8.3f} {r.point_f1:>8.3f}"
        )
    return "\n".join(lines)
