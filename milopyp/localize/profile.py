"""Radial density profiles: globular picks checked against the labelled particles.

The localiser's remaining false positives on crowded data are look-alikes of the target's
size (the devset's dense complexes: every insitu false positive lies within 2.5 voxels
of one). Their rotational average differs from the target's: on the devset a complex is
hollow or denser at the centre and ends within ~8 voxels where a ribosome is still dense,
and a linear discriminant on the two profiles, fitted on one tomogram, told them apart in
the other 95-97 % of the time. No complex is labelled, though, so the check is one-class:
the profiles at the labels (a mean and a Ledoit-Wolf covariance) define what the target
looks like, and a heat-map peak whose profile lies further from them (squared Mahalanobis
distance) than :data:`PROFILE_CUT` × the labels' own 95th percentile (each label against
the others) is not a pick. Being rotationally averaged and of six numbers, the profile
cannot memorise the labelled tomogram as the network can.

``milopyp localize`` drops such peaks before the per-tomogram threshold
(:func:`milopyp.localize.calibrate.tomogram_threshold`): the look-alikes no longer widen the
particle mode of the peaks' mixture, so the threshold can sit lower and keep more of the
particles. Devset, 55 ribosome labels, held-out F1 at the automatic threshold, the same
models without -> with the check: crowded 0.871 / 0.796 / 0.792 -> 0.874 / 0.879 / 0.872
over three training seeds, insitu 0.889 / 0.874 -> 0.901 / 0.887, virus spikes 0.810 ->
0.821 (README). The check can only be as good as the labels are typical: with labels from
the exploration's clusters (a subset of the target's looks, a few voxels off centre) it
dropped real particles (unattended insitu 0.600 -> 0.509), so the workflow applies it to
coordinate tables and copick picks only (``localize.profile_check: auto``). A peak at a
face of the tomogram is not judged (:data:`PROFILE_FACE_FRACTION`).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

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
#: A peak is dropped when its profile's squared Mahalanobis distance to the labels' exceeds
#: this multiple of the 95th percentile of the labels' own (leave-one-out) ones: a peak less
#: typical than 95 % of the labels. On the devset 1.5 kept more look-alikes (crowded held-out
#: 0.861 / 0.843 / 0.860 against 0.874 / 0.879 / 0.872 with 1.0; insitu 0.912 / 0.895
#: against 0.901 / 0.887).
PROFILE_CUT = 1.0
#: Fewest labels for a reference: a covariance of 6 shells and its 95th percentile need
#: several times more samples. On the devset (the same 55-label models, references from
#: random subsets, 3 draws each: benchmarks/profile_labels.py) 20 labels kept part of the
#: gain on crowded (held-out 0.803-0.859 against 0.792-0.796 without the check) and 0.887-
#: 0.898 on insitu (0.889 without); with 10 one insitu draw fell to 0.574.
MIN_PROFILE_LABELS = 20
#: A peak closer than this fraction of the radius to a face of the tomogram is a particle
#: cut by the face (or a maximum at the heat map's edge): its box, mirrored at the face,
#: holds a mirror image of the particle a few voxels off, and its profile is unlike any
#: whole particle's. The check cannot judge it, so it keeps it (:func:`vet`); it enters a
#: tomogram's threshold split only if its profile passes (``milopyp localize``), as all
#: peaks did before. On the devset the check had dropped 10 of the 14 ribosomes it dropped
#: above the crowded threshold at a face (55-label model, seed 0). The same models with
#: this: crowded held-out 0.859 / 0.879 / 0.872 -> 0.873 / 0.875 / 0.884, labelled 0.861 /
#: 0.851 / 0.825 -> 0.879 / 0.841 / 0.836; insitu 0.901 / 0.887 -> 0.895 / 0.895, labelled
#: 0.930 / 0.921 -> 0.938 / 0.951; virus 0.821 -> 0.819. The split moved when every peak at
#: a face entered it (crowded held-out 0.890 / 0.877 / 0.830) or none did (0.865 / 0.849 /
#: 0.838). Averaging only the voxels inside the tomogram instead of mirroring did not make
#: those profiles typical (crowded seed 0, without the exemption: 0.839).
PROFILE_FACE_FRACTION = 0.5
#: The cut's percentile is taken over at most this many labels, each left out in turn (one
#: covariance fit each; thousands of labels would take minutes).
MAX_LEAVE_ONE_OUT = 500


def profile_bin(radius_vox: float) -> int:
    """Block-mean binning of the profile grid for a particle of ``radius_vox`` voxels."""
    return max(1, int(radius_vox // PROFILE_RADIUS_VOX))


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
    out = np.empty((len(xyz), n_shells), dtype=np.float64)
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
        sums = np.bincount(shell[inside], weights=box.ravel()[inside], minlength=n_shells)
        out[i] = sums / counts
    return out[:, :-1] - out[:, -1:]


def profile_reference(tomograms: list[np.ndarray], labels: list[np.ndarray],
                      radius_vox: float) -> dict | None:
    """What the labelled particles look like: the mean and Ledoit-Wolf precision of their
    radial profiles (:func:`radial_profiles`) and the distance beyond which a peak is not a
    particle (:data:`PROFILE_CUT` × the 95th percentile of each label's squared distance to
    the others). tomograms: [z, y, x] each; labels: per tomogram (N, 3) x, y, z voxels;
    radius_vox: particle radius in voxels of the tomograms. None (and a log line) with fewer
    than :data:`MIN_PROFILE_LABELS` labels. The dict holds plain lists and floats (it is
    stored in the model file's calibration)."""
    from sklearn.covariance import LedoitWolf

    profiles = [radial_profiles(t, xyz, radius_vox) for t, xyz in zip(tomograms, labels)
                if len(xyz)]
    profiles = np.concatenate(profiles) if profiles else np.zeros((0, 0))
    if len(profiles) < MIN_PROFILE_LABELS:
        log.info("profile check off: %d labels, fewer than %d", len(profiles),
                 MIN_PROFILE_LABELS)
        return None
    fit = LedoitWolf().fit(profiles)
    held = np.arange(len(profiles))
    if len(held) > MAX_LEAVE_ONE_OUT:  # a large table (copick picks): a seeded subset
        held = np.sort(np.random.default_rng(0).choice(held, MAX_LEAVE_ONE_OUT, replace=False))
    own = np.array([LedoitWolf().fit(np.delete(profiles, i, axis=0)).mahalanobis(
        profiles[i:i + 1])[0] for i in held])  # squared distances
    cut = PROFILE_CUT * float(np.quantile(own, 0.95))
    log.info("profile check: %d labels, %d shells, distance cut %.3g (%g x the labels' 95th "
             "percentile %.3g)", len(profiles), profiles.shape[1], cut, PROFILE_CUT,
             cut / PROFILE_CUT)
    return {"mean": fit.location_.tolist(), "precision": fit.precision_.tolist(),
            "cut": cut, "radius_vox": float(radius_vox), "n_labels": len(profiles)}


def at_face(shape_zyx, xyz: np.ndarray, radius_vox: float) -> np.ndarray:
    """Which points ``xyz`` (N, 3; x, y, z voxels) lie within :data:`PROFILE_FACE_FRACTION`
    × ``radius_vox`` of a face of a tomogram of ``shape_zyx``: ``(N,)`` bool."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    upper = np.asarray(shape_zyx[::-1], dtype=np.float64) - 1
    return np.minimum(xyz, upper - xyz).min(axis=1) < PROFILE_FACE_FRACTION * radius_vox


def profile_distances(reference: dict, profiles: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each profile ``(N, shells)`` to the ``reference``
    (:func:`profile_reference`): ``(N,)``."""
    diff = np.asarray(profiles, dtype=np.float64) - np.asarray(reference["mean"])
    return np.einsum("ij,jk,ik->i", diff, np.asarray(reference["precision"]), diff)


def profile_keep(reference: dict, tomogram: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Which points ``xyz`` (N, 3; x, y, z voxels of ``tomogram`` [z, y, x]) look like the
    labels: ``(N,)`` bool, squared distance within ``reference["cut"]``."""
    if len(xyz) == 0:
        return np.zeros(0, dtype=bool)
    profiles = radial_profiles(tomogram, xyz, reference["radius_vox"])
    return profile_distances(reference, profiles) <= reference["cut"]


def profile_flags(reference: dict, tomogram: np.ndarray, peaks,
                  min_score: float = 0.0) -> np.ndarray:
    """Which heat-map ``peaks`` (a table with x, y, z in voxels of ``tomogram`` [z, y, x] and
    score) the check keeps: ``(N,)`` bool, False for those scoring above ``min_score`` whose
    profile is unlike the labels' (:func:`profile_keep`); peaks at or below ``min_score``
    are not profiled and stay."""
    profiled = (peaks["score"] > min_score).to_numpy()
    keep = np.ones(len(peaks), dtype=bool)
    keep[profiled] = profile_keep(reference, tomogram,
                                  peaks.loc[profiled, ["x", "y", "z"]].to_numpy(np.float64))
    return keep


def vet(reference: dict, tomogram: np.ndarray, peaks,
        min_score: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The check of ``peaks`` (as :func:`profile_flags`): ``(passed, kept)``, ``(N,)`` bool
    each; kept are those that pass and those at a face (:func:`at_face`), which the check
    cannot judge."""
    passed = profile_flags(reference, tomogram, peaks, min_score)
    face = at_face(tomogram.shape, peaks[["x", "y", "z"]].to_numpy(np.float64),
                   reference["radius_vox"])
    return passed, passed | face


def drop_unlike(reference: dict, tomogram: np.ndarray, peaks, min_score: float = 0.0):
    """``peaks`` less those the check rejects (:func:`vet`): ``(peaks, number dropped)``."""
    _, keep = vet(reference, tomogram, peaks, min_score)
    return peaks[keep].reset_index(drop=True), int((~keep).sum())
