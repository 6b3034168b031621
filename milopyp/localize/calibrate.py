"""Pick threshold from the labels: where the trained heat map puts the labelled particles.

Heat-map probabilities of a PU-trained localiser are not calibrated in absolute terms (their
scale follows the class prior and the training length), so a fixed threshold such as 0.5 can
keep nothing. The labels tell where particles are: the heat map's peak near each label
gives the score a true particle reaches. The automatic threshold is a fraction of the
median of those peaks; the median resists labels that are wrong (a cluster selection
holds some non-target candidates) and the fraction keeps true particles that score a little
lower than the typical label.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

#: Automatic threshold = THRESHOLD_FRACTION x median heat-map peak at the labels.
THRESHOLD_FRACTION = 0.9
#: The same for fibre targets. Their labels usually lie along one or two filaments, which the
#: network then knows better than the filaments of other tomograms: on the demo (half of
#: one microtubule labelled) the labels' peaks had median 0.56 and the centre lines of the
#: unseen microtubules 0.47-0.62, with a tenth of their voxels below 0.35-0.50. Picks that
#: a lower threshold lets through off the filaments are isolated, and the fibre tracer drops
#: them (too few, not line-like); gaps along a filament are what it cannot recover.
FIBER_THRESHOLD_FRACTION = 0.6
#: Tomograms (those with the most labels) whose heat maps calibrate the pick threshold.
CALIBRATION_TOMOGRAMS = 3


def label_peak_scores(heatmap: np.ndarray, xyz: np.ndarray, radius_vox: float) -> np.ndarray:
    """Maximum heat-map value within a box of half-side ``radius_vox`` around each label.

    heatmap: [z, y, x]; xyz: (N, 3) label centres in voxels (x, y, z). Returns (N,) float.
    """
    xyz = np.asarray(xyz, dtype=float).reshape(-1, 3)
    half = max(1, round(radius_vox))
    shape = np.array(heatmap.shape)
    scores = np.empty(len(xyz), dtype=np.float64)
    for i, (x, y, z) in enumerate(np.rint(xyz).astype(int)):
        lo = np.maximum(np.array([z, y, x]) - half, 0)
        hi = np.minimum(np.array([z, y, x]) + half + 1, shape)
        scores[i] = float(heatmap[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].max())
    return scores


def auto_threshold(scores: np.ndarray, fraction: float = THRESHOLD_FRACTION) -> float:
    """``fraction`` x the median of the label peak scores (NaN when there are none)."""
    scores = np.asarray(scores, dtype=float)
    return float(fraction * np.median(scores)) if scores.size else float("nan")


def count_particles(
    heatmap: np.ndarray,
    threshold: float,
    radius_vox: float,
    *,
    exclude_xyz: np.ndarray | None = None,
) -> int:
    """Particles a heat map shows: its local maxima above ``threshold``, thinned greedily
    (strongest first) so that no two lie within ``radius_vox`` of each other (one particle
    can have several maxima), not counting those within ``radius_vox / 2`` of a point of
    ``exclude_xyz`` ((N, 3) x, y, z, e.g. the labels).

    heatmap: [z, y, x]; radius_vox: particle radius in voxels. Used to estimate how many
    unlabelled particles a labelled tomogram holds (the PU class prior).
    """
    from scipy.spatial import cKDTree

    from milopyp.localize.peaks import find_peaks

    kernel = max(3, round(radius_vox) | 1)
    peaks = find_peaks(heatmap, kernel_vox=kernel, threshold=threshold)
    xyz = peaks[["x", "y", "z"]].to_numpy(dtype=np.float64)  # strongest first
    if len(xyz) == 0:
        return 0
    keep = np.ones(len(xyz), dtype=bool)
    tree = cKDTree(xyz)
    for i, near in enumerate(tree.query_ball_point(xyz, radius_vox)):
        if keep[i]:
            near = np.asarray(near, dtype=np.intp)
            keep[near[near > i]] = False
    xyz = xyz[keep]
    if exclude_xyz is not None and len(exclude_xyz):
        d, _ = cKDTree(np.asarray(exclude_xyz, dtype=np.float64).reshape(-1, 3)).query(xyz)
        xyz = xyz[d > radius_vox / 2]
    return len(xyz)


def most_labelled(labels: list[np.ndarray], n: int) -> list[int]:
    """Indices of the (up to) ``n`` tomograms with the most labels, none without labels;
    ``labels``: per tomogram an (N, 3) array."""
    order = sorted(range(len(labels)), key=lambda i: -len(labels[i]))[:n]
    return [i for i in order if len(labels[i])]


def calibrate_threshold(model, tomograms: list[np.ndarray], labels: list[np.ndarray],
                        radius_vox: float, device, *, shape: str = "globular") -> dict:
    """The automatic pick threshold of a trained localiser: heat-map peaks at the labels of
    the :data:`CALIBRATION_TOMOGRAMS` most-labelled tomograms ([z, y, x]; labels (N, 3)
    x, y, z voxels), times :data:`THRESHOLD_FRACTION` (:data:`FIBER_THRESHOLD_FRACTION` for
    ``shape="fiber"``) of their median. Returns ``threshold``, ``label_peak_median`` and
    ``n_labels`` (stored in the model file as its calibration)."""
    from milopyp.localize.infer import predict_heatmap

    scores = np.concatenate([
        label_peak_scores(predict_heatmap(model, tomograms[i], device=device), labels[i],
                          radius_vox / 2)
        for i in most_labelled(labels, CALIBRATION_TOMOGRAMS)
    ])
    fraction = FIBER_THRESHOLD_FRACTION if shape == "fiber" else THRESHOLD_FRACTION
    threshold = auto_threshold(scores, fraction)
    log.info("label peak scores: median %.4g, 10%% %.4g, 90%% %.4g -> threshold %.4g",
             np.median(scores), np.quantile(scores, 0.1), np.quantile(scores, 0.9), threshold)
    return {"threshold": threshold, "label_peak_median": float(np.median(scores)),
            "n_labels": int(scores.size)}
