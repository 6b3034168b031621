"""Precision, recall, F1 and average precision of picks against ground-truth positions.

Matching is per tomogram and one-to-one: a pick and a true particle can be paired when their
centres are at most ``radius_vox`` voxels apart (Euclidean, inclusive), each is used at most
once, and among all such pairings the one with the most pairs (then the smallest total
distance) is taken (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``). It is run
per connected group of the "within radius" graph, so the cost matrices stay small whatever the
number of points. ``tp`` = pairs, ``fp = n_picks - tp``, ``fn = n_true - tp``;
``precision = tp / n_picks``, ``recall = tp / n_true``, ``f1 = 2 tp / (n_picks + n_true)``
(NaN where the denominator is 0). The ``overall`` row is micro-averaged (counts summed over
tomograms).

Average precision (only when the picks have a ``score``): picks are ranked by score
(descending; ties keep input order) and matched greedily in that order, each to the nearest
still-unmatched true particle within the radius (the usual detection-benchmark rule; it can
differ from the optimal matching above by a few pairs). With cumulative precision ``p_k`` and
recall ``r_k`` after the k-th pick, AP is the area under the precision-recall curve with the
all-points interpolation of PASCAL VOC 2010+: ``p`` is replaced by its running maximum from
the right, and ``AP = sum_k (r_k - r_{k-1}) * p_interp(r_k)``. A perfect ranking that finds
every particle gives 1; recall that never reaches 1 caps AP at the final recall. The overall
AP ranks the picks of all tomograms together (matching stays within each tomogram).

Modules: :mod:`~milopyp.evaluate.metrics` (matching, AP, the metrics table),
:mod:`~milopyp.evaluate.fiber_metrics` (traced fibres against true centre lines),
:mod:`~milopyp.evaluate.stage` (:func:`run`: files in and out).
"""

from milopyp.evaluate.fiber_metrics import FIBER_COLUMNS, evaluate_fibers, format_fiber_table
from milopyp.evaluate.metrics import (
    METRIC_COLUMNS,
    OVERALL,
    average_precision,
    evaluate,
    format_table,
    greedy_match_by_score,
    match,
)
from milopyp.evaluate.stage import run

__all__ = ["FIBER_COLUMNS", "METRIC_COLUMNS", "OVERALL", "average_precision", "evaluate",
           "evaluate_fibers", "format_fiber_table", "format_table", "greedy_match_by_score",
           "match", "run"]
