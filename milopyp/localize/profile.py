"""Radial density profiles: globular picks checked against the labelled particles.

The localiser's remaining false positives on crowded data are look-alikes of the target's
size (the devset's dense complexes: every insitu false positive lies within 2.5 voxels
of one). Their rotational average differs from the target's: on the devset a complex is
hollow or denser at the centre and ends within ~8 voxels where a ribosome is still dense,
and a linear discriminant on the two profiles, fitted on one tomogram, told them apart in
the other 95-97 % of the time. No complex is labelled, though. What the check compares
(:func:`profile_features`) is each shell's mean density relative to the surroundings (the
radial profile) and the density's spread within the shell (how lumpy the particle is at
that radius). The labels' features (a Ledoit-Wolf Gaussian) say what the target looks
like; the tomogram's own heat-map peaks (another Gaussian: particles, look-alikes and
background together) say what a peak of that tomogram looks like in general. The
log-likelihood ratio of the two weighs most the directions in which the labels differ from
the tomogram's other peaks, where a one-class distance weighs all directions by the labels'
spread alone. Being rotational statistics of twelve numbers, the features cannot memorise
the labelled tomogram as the network can. A peak's score is its heat-map score times the
logistic of that ratio less the cut, the ratio that 95 % of the labels exceed (each label
against the others, :data:`PROFILE_LABEL_QUANTILE`; :func:`profile_weights`): a peak at the
cut keeps half its score, a look-alike far below it nothing.

``milopyp localize`` weighs the peaks before the per-tomogram threshold
(:func:`milopyp.localize.calibrate.tomogram_threshold`): the look-alikes no longer widen the
particle mode of the peaks' mixture, so the threshold can sit lower and keep more of the
particles; and a look-alike that resembles the labels a little no longer counts in full.
Devset, 55 ribosome labels, held-out F1 at the automatic threshold: the README's "Accuracy
on data we did not make" and docs/accuracy.md. The check can only be as good as the labels
are typical: with labels from the exploration's clusters (a subset of the target's looks, a
few voxels off centre) the first, one-class version dropped real particles (unattended
insitu 0.600 -> 0.509) and was off for them; the likelihood ratio helps them (0.832 / 0.851
without -> 0.848 / 0.878 as a cut, 0.840 / 0.881 as this weight) and is on for every
selection (``localize.profile_check: true``). A peak at one face of the tomogram is not judged
(:data:`PROFILE_FACE_FRACTION`): it keeps its score.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

from milopyp.defaults import FACE_RADIUS_FRACTION
from milopyp.localize.normalize import intensity_stats, normalize

log = logging.getLogger(__name__)

#: Shell width as a fraction of the particle radius, and the profile's reach: 7 shells out
#: to 1.4 × the radius. The outermost shell (1.2-1.4 × the radius) is the particle's
#: surroundings: it is subtracted from the others, which are what the check compares, so
#: that a thicker or darker patch of ice does not move the profile. On the project's
#: simulator (30 labels, 3 held-out tomograms of 36 ribosomes) profiles of one-voxel shells
#: out to 1.25 × the radius, not relative to the surroundings, dropped 4 of 36 ribosomes per
#: tomogram (held-out F1 1.000 -> 0.941; relative ones 0.986), for 0.011 more on the
#: devset's crowded mean (0.886 against 0.875, three training seeds).
PROFILE_SHELL_WIDTH = 0.2
PROFILE_EXTENT = 1.4
#: Gaussian smoothing before the shells are averaged, sigma as a fraction of the particle
#: radius (1 voxel for the devset's ribosomes; on the devset sigma 0.7-2 voxels gave the
#: same gains within 0.02, measured with the absolute profiles).
PROFILE_SMOOTHING = 0.1
#: Profiles of particles larger than this radius (voxels) are taken on the tomogram binned
#: (block means) to a radius of this to twice this: a 4 Å ribosome (radius 31 voxels) is
#: profiled binned by 3; smaller particles unbinned.
PROFILE_RADIUS_VOX = 10.0
#: The cut: this quantile of the labels' own log-likelihood ratios (labels' Gaussian against
#: their tomogram's peaks', leave-one-out); a peak at it is less label-like than 95 % of the
#: labels, and weighs 0.5 (:data:`PROFILE_SOFTNESS`). (The first version cut a one-class
#: Mahalanobis distance at the labels' 95th percentile.)
PROFILE_LABEL_QUANTILE = 0.05
#: How sharply the check weighs a peak (:func:`profile_weights`): the logistic of (ratio -
#: cut) / this, in units of log-likelihood. The previous versions dropped a peak below the
#: cut and kept one above it at its full heat-map score, so a look-alike just above the cut
#: counted as a particle and a particle just below it was lost. Devset, the saved models
#: re-scored, held-out F1 at the automatic threshold (labelled tomogram), cut -> weights:
#: crowded 0.910 / 0.878 / 0.885 (0.844 / 0.878 / 0.897) -> 0.907 / 0.915 / 0.912 (0.929 /
#: 0.929 / 0.923); insitu 0.933 / 0.932 -> 0.933 / 0.946; spikes, 82 labels, 0.844 / 0.839
#: / 0.840 -> 0.863 / 0.862 / 0.842; lost: unattended crowded seed 1 0.695 -> 0.644. With 1
#: (the plain logistic of the ratio): crowded 0.898 / 0.910 / 0.913, insitu labels jittered
#: by 4 voxels 0.819 (0.882 with 0.5). docs/accuracy.md, "Profile weights instead of a cut".
PROFILE_SOFTNESS = 0.5
#: Fewest heat-map peaks for the peaks' Gaussian (12 features): a tomogram with fewer is
#: judged against the labelled tomogram's peaks, and a labelled tomogram with fewer gives no
#: reference. Devset tomograms have 150-310 peaks above the split floor.
MIN_BACKGROUND_PEAKS = 40
#: Fewest labels for a reference: a covariance and its 5 % quantile need several times more
#: samples than features. Measured with the first, one-class check of 6 shells, on the
#: devset (the same 55-label models, references from random subsets, 3 draws each:
#: benchmarks/profile_labels.py): 20 labels kept part of the gain on crowded (held-out
#: 0.803-0.859 against 0.792-0.796 without the check) and 0.887-0.898 on insitu (0.889
#: without); with 10 one insitu draw fell to 0.574. The likelihood-ratio check of 12
#: features, the same way: 20 labels 0.788-0.853 (crowded seed 1), 0.823-0.871 (seed 2),
#: 0.889-0.897 (insitu); 30 labels 0.849-0.862, 0.866-0.890, 0.887-0.922; 55 labels 0.878,
#: 0.885, 0.933.
MIN_PROFILE_LABELS = 20
#: A peak closer than this fraction of the radius to a face of the tomogram is a particle
#: cut by the face (or a maximum at the heat map's edge): its box, mirrored at the face,
#: holds a mirror image of the particle a few voxels off, and its profile is unlike any
#: whole particle's. The check cannot judge it, so it keeps its score
#: (:func:`profile_weights`) and enters the tomogram's threshold split as every peak does
#: (while the check dropped peaks, a face peak entered the split only if its profile
#: passed). On the devset the check had dropped 10 of the 14 ribosomes it dropped
#: above the crowded threshold at a face (55-label model, seed 0). The same models with
#: this: crowded held-out 0.859 / 0.879 / 0.872 -> 0.873 / 0.875 / 0.884, labelled 0.861 /
#: 0.851 / 0.825 -> 0.879 / 0.841 / 0.836; insitu 0.901 / 0.887 -> 0.895 / 0.895, labelled
#: 0.930 / 0.921 -> 0.938 / 0.951; virus 0.821 -> 0.819. The split moved when every peak at
#: a face entered it (crowded held-out 0.890 / 0.877 / 0.830) or none did (0.865 / 0.849 /
#: 0.838). Averaging only the voxels inside the tomogram instead of mirroring did not make
#: those profiles typical (crowded seed 0, without the exemption: 0.839). A peak as near two
#: or three faces is judged (:func:`at_face`): of the demo's heat-map peaks kept unjudged
#: above the threshold, 33 lay at corners and edges of the volume and none at a ribosome
#: (its exploration labels with the check on). The devset's 55-label models with the
#: likelihood-ratio check, held-out F1 (labelled) kept -> judged at an edge or corner: crowded
#: 0.907 / 0.876 / 0.876 -> 0.910 / 0.878 / 0.885, insitu labelled 0.938 / 0.963 -> 0.947 /
#: 0.968, the rest unchanged. Judging every face peak instead lost on labels 4 voxels off
#: centre (insitu 0.851 -> 0.842, labelled 0.929 -> 0.891).
PROFILE_FACE_FRACTION = FACE_RADIUS_FRACTION
#: The cut's quantile is taken over at most this many labels, each left out in turn (one
#: covariance fit each; thousands of labels would take minutes).
MAX_LEAVE_ONE_OUT = 500


def profile_bin(radius_vox: float) -> int:
    """Block-mean binning of the profile grid for a particle of ``radius_vox`` voxels."""
    return max(1, int(radius_vox // PROFILE_RADIUS_VOX))


def _shell_stats(tomogram: np.ndarray, xyz: np.ndarray,
                 radius_vox: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the density in each shell around each point:
    ``(N, shells)`` float64 each, the shells out to :data:`PROFILE_EXTENT` × the radius (see
    :func:`radial_profiles`)."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    stats = intensity_stats(tomogram)
    b = profile_bin(radius_vox)
    radius = radius_vox / b
    n_shells = round(PROFILE_EXTENT / PROFILE_SHELL_WIDTH)
    width = PROFILE_SHELL_WIDTH * radius
    sigma = PROFILE_SMOOTHING * radius
    # binned voxels each side of the centre
    half = int(np.ceil(PROFILE_EXTENT * radius + 3 * sigma)) + 1
    side = 2 * half + 1
    grid = np.indices((side, side, side)) - half
    shell = (np.sqrt((grid**2).sum(axis=0)) / width).astype(int).ravel()
    inside = shell < n_shells
    counts = np.bincount(shell[inside], minlength=n_shells)
    shape = np.array(tomogram.shape)
    means = np.empty((len(xyz), n_shells), dtype=np.float64)
    spreads = np.empty((len(xyz), n_shells), dtype=np.float64)
    for i, centre in enumerate(np.rint(xyz[:, ::-1]).astype(int)):  # z, y, x
        lo = centre - half * b - b // 2
        hi = lo + side * b
        box = np.asarray(tomogram[tuple(slice(max(a, 0), min(c, n))
                                        for a, c, n in zip(lo, hi, shape))])
        pad = [(max(0, -a), max(0, c - n)) for a, c, n in zip(lo, hi, shape)]
        if any(p for pair in pad for p in pair):
            box = np.pad(box, pad, mode="symmetric")
        box = normalize(box, stats)
        if b > 1:
            box = box.reshape(side, b, side, b, side, b).mean(axis=(1, 3, 5))
        if sigma > 0:
            box = ndi.gaussian_filter(box, sigma, mode="nearest")
        values = box.ravel()[inside].astype(np.float64)
        means[i] = np.bincount(shell[inside], weights=values, minlength=n_shells) / counts
        squares = np.bincount(shell[inside], weights=values**2, minlength=n_shells) / counts
        spreads[i] = np.sqrt(np.maximum(squares - means[i] ** 2, 0.0))
    return means, spreads


def radial_profiles(tomogram: np.ndarray, xyz: np.ndarray, radius_vox: float) -> np.ndarray:
    """Rotationally averaged density around each point relative to its surroundings:
    ``(N, 6)`` float64.

    tomogram: [z, y, x] (np.memmap is fine: only a box around each point is read); xyz:
    (N, 3) points in voxels (x, y, z); radius_vox: particle radius in voxels of the
    tomogram. Each box is normalised as the localiser's input is
    (:mod:`milopyp.localize.normalize`), binned by :func:`profile_bin`, smoothed
    (:data:`PROFILE_SMOOTHING`) and averaged over shells :data:`PROFILE_SHELL_WIDTH` × the
    radius wide out to :data:`PROFILE_EXTENT` × the radius; the outermost shell's mean is
    subtracted from the inner ones'. Boxes are mirrored at the tomogram's faces.
    """
    means, _ = _shell_stats(tomogram, xyz, radius_vox)
    return means[:, :-1] - means[:, -1:]


def profile_features(tomogram: np.ndarray, xyz: np.ndarray, radius_vox: float) -> np.ndarray:
    """What the check compares: the radial profile (:func:`radial_profiles`) and the
    density's spread within each of the same inner shells (how lumpy the particle is at that
    radius, which a rotational average cannot see): ``(N, 12)`` float64."""
    means, spreads = _shell_stats(tomogram, xyz, radius_vox)
    return np.hstack([means[:, :-1] - means[:, -1:], spreads[:, :-1]])


def _gaussian(features: np.ndarray) -> dict:
    """A Ledoit-Wolf Gaussian of ``features`` (N, d): mean, precision and the precision's
    log-determinant, as plain lists and floats (stored in the model file)."""
    from sklearn.covariance import LedoitWolf

    fit = LedoitWolf().fit(features)
    return {"mean": fit.location_.tolist(), "precision": fit.precision_.tolist(),
            "logdet": float(np.linalg.slogdet(fit.precision_)[1])}


def _log_density(gaussian: dict, features: np.ndarray) -> np.ndarray:
    """Log-density of ``features`` (N, d) under ``gaussian`` (:func:`_gaussian`), less the
    constant that two Gaussians of the same dimension share: ``(N,)``."""
    diff = np.asarray(features, dtype=np.float64) - np.asarray(gaussian["mean"])
    return 0.5 * (gaussian["logdet"]
                  - np.einsum("ij,jk,ik->i", diff, np.asarray(gaussian["precision"]), diff))


def profile_reference(tomograms: list[np.ndarray], labels: list[np.ndarray],
                      radius_vox: float, peaks: list[np.ndarray],
                      min_score: float = 0.0) -> dict | None:
    """What the labelled particles look like against the peaks around them: a Gaussian of
    the labels' features (:func:`profile_features`), one of the features of ``peaks`` (the
    heat-map peaks of the same tomograms that the check will judge, look-alikes, particles
    and background alike), and the cut: the :data:`PROFILE_LABEL_QUANTILE` quantile of the
    labels' own log-likelihood ratios (each label's density under the labels' Gaussian
    without it, less its density under the peaks'). tomograms: [z, y, x] each; labels and
    peaks: per tomogram (N, 3) x, y, z voxels; radius_vox: particle radius in voxels of the
    tomograms; ``min_score``: the heat-map score above which ``peaks`` were taken (stored:
    a tomogram's peaks are judged among those above it, :func:`profile_weights`). None (and
    a log line) with fewer than :data:`MIN_PROFILE_LABELS` labels or
    :data:`MIN_BACKGROUND_PEAKS` peaks. The dict holds plain lists and floats (it is stored
    in the model file's calibration)."""
    def features(points):
        found = [profile_features(t, xyz, radius_vox) for t, xyz in zip(tomograms, points)
                 if len(xyz)]
        return np.concatenate(found) if found else np.zeros((0, 0))

    profiles, background = features(labels), features(peaks)
    if len(profiles) < MIN_PROFILE_LABELS or len(background) < MIN_BACKGROUND_PEAKS:
        log.info("profile check off: %d labels and %d heat-map peaks, fewer than %d and %d",
                 len(profiles), len(background), MIN_PROFILE_LABELS, MIN_BACKGROUND_PEAKS)
        return None
    target, others = _gaussian(profiles), _gaussian(background)
    held = np.arange(len(profiles))
    if len(held) > MAX_LEAVE_ONE_OUT:  # a large table (copick picks): a seeded subset
        held = np.sort(np.random.default_rng(0).choice(held, MAX_LEAVE_ONE_OUT, replace=False))
    own = np.array([_log_density(_gaussian(np.delete(profiles, i, axis=0)),
                                 profiles[i:i + 1])[0] for i in held])
    own -= _log_density(others, profiles[held])
    cut = float(np.quantile(own, PROFILE_LABEL_QUANTILE))
    log.info("profile check: %d labels against %d heat-map peaks, %d features, log-likelihood "
             "ratio cut %.3g (the labels' %g quantile)", len(profiles), len(background),
             profiles.shape[1], cut, PROFILE_LABEL_QUANTILE)
    return {"target": target, "background": others, "cut": cut,
            "radius_vox": float(radius_vox), "n_labels": len(profiles),
            "n_background": len(background), "min_score": float(min_score)}


def at_face(shape_zyx, xyz: np.ndarray, radius_vox: float) -> np.ndarray:
    """Which points ``xyz`` (N, 3; x, y, z voxels) lie within :data:`PROFILE_FACE_FRACTION`
    × ``radius_vox`` of one face of a tomogram of ``shape_zyx``, and of one only: ``(N,)``
    bool. A point as near two or three faces (an edge or a corner of the volume) is not a
    particle cut by a face but, as a rule, a maximum of the heat map's own edges."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    upper = np.asarray(shape_zyx[::-1], dtype=np.float64) - 1
    near = np.minimum(xyz, upper - xyz) < PROFILE_FACE_FRACTION * radius_vox
    return near.sum(axis=1) == 1


def profile_scores(reference: dict, tomogram: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """How much more each point ``xyz`` (N, 3; x, y, z voxels of ``tomogram`` [z, y, x]) looks
    like the labels than like the peaks ``xyz`` themselves: ``(N,)`` log-likelihood ratios
    (:func:`profile_reference`), the larger the more label-like. The points are the
    tomogram's peaks to judge, so each tomogram is judged against its own look-alikes; with
    fewer than :data:`MIN_BACKGROUND_PEAKS` of them, against the labelled tomogram's peaks
    (the reference's)."""
    return likelihood_ratios(reference, profile_features(tomogram, xyz, reference["radius_vox"]))


def likelihood_ratios(reference: dict, features: np.ndarray) -> np.ndarray:
    """:func:`profile_scores` of points whose :func:`profile_features` are ``features``
    ``(N, 12)``: each judged against the Gaussian of all of them (at least
    :data:`MIN_BACKGROUND_PEAKS`; else the reference's background). ``(N,)``."""
    others = (_gaussian(features) if len(features) >= MIN_BACKGROUND_PEAKS
              else reference["background"])
    return _log_density(reference["target"], features) - _log_density(others, features)


def profile_weights(reference: dict, tomogram: np.ndarray, peaks,
                    min_score: float = 0.0) -> np.ndarray:
    """How label-like each of the heat-map ``peaks`` is (a table with x, y, z in voxels of
    ``tomogram`` [z, y, x] and score): ``(N,)`` weights in [0, 1], the logistic of the
    log-likelihood ratio (:func:`profile_scores`) less the reference's cut, over
    :data:`PROFILE_SOFTNESS`: 0.5 at the cut, towards 1 for label-like peaks, towards 0 for
    look-alikes. The peaks above ``min_score`` are judged among each other; those at or below
    it, and those at a face (:func:`at_face`), which the check cannot judge, weigh 1. A
    reference of an earlier version (one Gaussian of the radial profiles) weighs 1 within its
    squared Mahalanobis distance, 0 beyond."""
    judged = (peaks["score"] > min_score).to_numpy()
    xyz = peaks[["x", "y", "z"]].to_numpy(np.float64)
    weights = np.ones(len(peaks), dtype=np.float64)
    if not judged.any():
        return weights
    if "target" not in reference:  # an earlier version's model file
        diff = radial_profiles(tomogram, xyz[judged], reference["radius_vox"]) - np.asarray(
            reference["mean"])
        distances = np.einsum("ij,jk,ik->i", diff, np.asarray(reference["precision"]), diff)
        weights[judged] = (distances <= reference["cut"]).astype(np.float64)
    else:  # every peak above min_score is one of the others the peaks are judged against
        ratio = profile_scores(reference, tomogram, xyz[judged]) - reference["cut"]
        weights[judged] = 0.5 * (1.0 + np.tanh(0.5 * ratio / PROFILE_SOFTNESS))  # logistic
    weights[at_face(tomogram.shape, xyz, reference["radius_vox"])] = 1.0
    return weights


def weigh_peaks(reference: dict, tomogram: np.ndarray, peaks, min_score: float = 0.0):
    """``peaks`` (as :func:`profile_weights`) with each score multiplied by its weight, highest
    first: ``(peaks, weights)``, the weights in the returned order."""
    weights = profile_weights(reference, tomogram, peaks, min_score)
    weighed = peaks.assign(score=peaks["score"].to_numpy(np.float64) * weights)
    order = np.argsort(-weighed["score"].to_numpy(), kind="stable")
    return weighed.iloc[order].reset_index(drop=True), weights[order]
