"""Filament (microtubule) tracing from dense centre-line picks.

Input: what ``milopyp localize`` gives for a fibre model, picks ``xyz`` (N, 3), x, y, z in
voxels, about one per voxel along each filament's centre line (the ridge points of a
tube-shaped heat map, :func:`milopyp.localize.peaks.find_ridge_points`), plus false
positives. The paper ("Post-processing for tubular-shaped macromolecules"; DESIGN.md
"Fibres") groups picks by the graph "distance <= cutoff", fits second-order polynomials
per group and keeps small residual and curvature. Here:

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
:func:`segment_points` turns fibres into overlapping extraction points with RELION priors;
:func:`run` is the ``trace-fibers`` stage (files in and out).

Modules: :mod:`~milopyp.fibers.graph` (step 1, neighbourhoods), :mod:`~milopyp.fibers.tracks`
(step 2), :mod:`~milopyp.fibers.tracing` (steps 3-5), :mod:`~milopyp.fibers.tables` (tables,
segments), :mod:`~milopyp.fibers.stage`.
"""

from milopyp.fibers.stage import run
from milopyp.fibers.tables import (
    FIBER_COLUMNS,
    fibers_frame,
    relion_tilt_psi,
    segment_points,
    trace_table,
)
from milopyp.fibers.tracing import MAX_PICKS, Fiber, Tracing, trace, trace_fibers

__all__ = ["FIBER_COLUMNS", "MAX_PICKS", "Fiber", "Tracing", "fibers_frame", "relion_tilt_psi",
           "run", "segment_points", "trace", "trace_fibers", "trace_table"]
