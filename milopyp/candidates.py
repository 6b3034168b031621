"""Candidate particle positions: a difference-of-Gaussians (DoG) pyramid and greedy 3-D NMS.

Method (paper, "Preprocessing, coordinate generation and filtering"): the tomogram is Gaussian
filtered with increasing standard deviations sigma_1 < ... < sigma_n, the levels
``DoG_i = G_i - G_{i+1}`` are formed, and the response is the maximum over levels. Voxels above
``mean + threshold_std * std`` of the response are candidates; greedy non-maximum suppression
(strongest first, nothing kept within ``nms_radius_vox`` of a kept point) thins them out.

Choices made here (the paper does not give them):

* sigma schedule: a solid ball of radius r gives its strongest scale-normalised Laplacian
  response at ``sigma = r / sqrt(3)`` in 3-D. The n levels are spaced geometrically from
  ``0.5`` to ``1.5`` times that sigma; with a constant ratio k = sigma_{i+1} / sigma_i every
  DoG level equals ``(k - 1) * sigma^2 * Laplacian`` to first order, so the levels are on the
  same (scale-normalised) footing and their maximum is meaningful.
* polarity: ``"bright"`` (default) uses the paper's ``G_i - G_{i+1}``, which responds to
  particles brighter than their surroundings: the project's convention (``milopyp.simulate``
  writes protein bright; ``milopyp preprocess --invert`` makes real, dark-protein tomograms so).
  ``"dark"`` uses ``G_{i+1} - G_i`` for protein-dark volumes without inverting them.
* speed: the pyramid is computed on a block-averaged (binned) copy when the smallest sigma is
  at least two voxels: bin factor ``floor(sigma_1)``, capped at 4. The box average is itself a
  blur of variance ``(b^2 - 1) / 12`` voxels^2, which is subtracted from every level's variance,
  and peaks are refined to sub-voxel precision (a parabola through the neighbours on each axis)
  before they are mapped back to full-resolution voxels; the border filter and the NMS then
  run on those full-resolution positions. Particle positions agree with the unbinned pyramid
  to the voxel (tests), and recall on simulations is unchanged; the weak background peaks
  (noise) differ somewhat, since the response is sampled more coarsely. ``bin_factor=1``
  (``--bin 1``) gives the unbinned result, ~10x slower for ribosome-sized particles.
* centring: each peak then moves to the maximum, nearby, of the one DoG level at the
  particle's own scale (:data:`CENTRE_FRACTION`), since the maximum over levels peaks on a
  dense part of a large particle (a ribosome's subunit) rather than at its centre; the NMS
  runs on the centred positions and merges peaks that were one particle.
* NMS works on the local maxima (3x3x3) of the response, not on every voxel (see
  :func:`greedy_nms`); the radius defaults to the particle radius.
* the threshold statistics (mean, std) are over the response inside the border margin;
  peaks closer than the margin (default a quarter of the diameter) to a face are dropped.

The pyramid itself (sigma schedule, binning, response) is in :mod:`milopyp.dog`; this module
finds, refines and thins its peaks. :func:`run` is the stage of ``milopyp candidates``: it
reads the tomogram and writes the table through :mod:`milopyp.io`; the rest is arrays in,
arrays out.
"""

from __future__ import annotations

import logging
import math
import os
import time

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from milopyp.dog import (
    DEFAULT_N_LEVELS,
    _interior_stats,
    auto_bin_factor,
    bin_volume,
    dog_response,
    dog_sigmas,
)
from milopyp.errors import MilopypError
from milopyp.io.mrc import tomogram_name as io_tomogram_name
from milopyp.preprocess import gaussian_filter3d

log = logging.getLogger(__name__)

#: Default threshold: mean + this many standard deviations of the tomogram's own DoG response
#: (paper: 0.5). At 0.5 nearly every local maximum passes (~2,500 per 96x320x320 devset
#: tomogram for ~80 ribosomes) and buries the target in the exploration; at 3 the devset
#: keeps 91-94 % of its ribosomes and spikes (0.5: 92-94 %) with 2.4-3.7x fewer candidates,
#: the project's simulator all of them with 4-12x fewer, and insitu's exploration gets a
#: ribosome cluster (purity 0.81; at 0.5 the best was 0.25). 3.5 loses crowded ribosomes.
DEFAULT_THRESHOLD_STD = 3.0
#: Candidates are centred at the particle's own scale. The DoG response is the maximum over
#: levels from 0.5 to 1.5 x the scale of a ball of the particle's size, and its finest levels
#: peak on a part of a large particle (a ribosome's subunit): on the devset's tomograms the
#: DoG peaks lay a median 5.3-6.1 (crowded) and 4.3-4.5 (insitu) voxels from the ribosome
#: centres (radius 10.4 voxels). Each peak moves to the maximum, within a cube of half-side
#: CENTRE_FRACTION x the particle radius, of the one DoG level at that scale (sigma r/sqrt(3)
#: / CENTRE_SCALE_RATIO minus sigma r/sqrt(3) x CENTRE_SCALE_RATIO): 1.9-2.4 and 1.7 voxels
#: then (benchmarks/candidates_offset.py), with ribosome recall 0.92 / 0.89 / 0.97 -> 0.88 /
#: 0.89 / 0.95 (crowded) and 0.88 / 0.96 -> 0.87 / 0.89 (insitu). The devset's membrane
#: spikes (radius 8.4 voxels) move a little off instead, 1.4 -> 2.1-2.2 voxels, towards their
#: membrane; a Gaussian of sigma 0.5 x the radius instead of the DoG level centred ribosomes
#: as well (1.9-2.0) and spikes worse (3.0-3.5). ``--no-centre`` keeps the DoG peaks.
CENTRE_FRACTION = 0.5
CENTRE_SCALE_RATIO = 1.25


def local_maxima(
    score_zyx: np.ndarray, threshold: float, *, size: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Voxels that are the maximum of their ``size``^3 neighbourhood and above ``threshold``.

    Returns (zyx (N, 3) intp, scores (N,) float32), in raster order. Voxels equal to
    -inf (masked) are never returned.
    """
    mx = ndimage.maximum_filter(score_zyx, size=size, mode="nearest")
    mask = (score_zyx == mx) & (score_zyx > threshold)
    del mx
    zyx = np.argwhere(mask)
    return zyx, score_zyx[mask]


def _greedy_suppress(points: np.ndarray, radius: float, max_keep: int | None) -> np.ndarray:
    """Indices kept by greedy NMS over ``points`` already sorted strongest first."""
    n = len(points)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    tree = cKDTree(points)
    alive = np.ones(n, dtype=bool)
    keep: list[int] = []
    limit = n if max_keep is None else max_keep
    for i in range(n):  # a Python loop over peaks, not voxels; kd-tree query per kept peak
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        alive[tree.query_ball_point(points[i], radius, return_sorted=False)] = False
    return np.asarray(keep, dtype=np.intp)


def _inside(zyx: np.ndarray, shape, border: float) -> np.ndarray:
    """(N,) bool: points at least ``border`` voxels from every face of ``shape``."""
    upper = np.asarray(shape) - 1 - border
    return np.all((zyx >= border) & (zyx <= upper), axis=1)


def _nms_points(
    zyx: np.ndarray, scores: np.ndarray, radius: float, max_candidates: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy suppression of scored points: (zyx, scores) kept, strongest first."""
    order = np.argsort(-scores, kind="stable")
    zyx, scores = zyx[order], scores[order]
    keep = _greedy_suppress(zyx.astype(np.float64), float(radius), max_candidates)
    return zyx[keep], scores[keep]


def greedy_nms(
    score_zyx: np.ndarray,
    *,
    radius_vox: float,
    threshold: float,
    max_candidates: int | None = None,
    exclude_border_vox: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy 3-D non-maximum suppression of a score volume.

    Only local maxima (3x3x3, ties kept) above ``threshold`` are considered, so the work is
    over peaks, not voxels, and a kept point is always a peak of the score (greedy NMS over
    all voxels could keep the shoulder of a peak whose top was suppressed). Peaks closer than
    ``exclude_border_vox`` to a face are dropped first. The rest are taken strongest first
    (ties: raster order); every peak within ``radius_vox`` (Euclidean, inclusive) of a kept
    peak is dropped.

    Args:
        score_zyx: [z, y, x] scores.
        radius_vox: suppression radius in voxels (0 keeps every local maximum).
        threshold: only scores strictly above it are kept.
        max_candidates: stop after this many (None: no cap).
        exclude_border_vox: minimum distance (voxels) of a peak from every face.

    Returns:
        (xyz (N, 3) int64, ordered x, y, z; scores (N,) float32), sorted by score descending.
    """
    if radius_vox < 0:
        raise MilopypError(f"NMS radius must be >= 0 voxels, got {radius_vox}")
    zyx, scores = local_maxima(score_zyx, threshold)
    inside = _inside(zyx, score_zyx.shape, exclude_border_vox)
    zyx, scores = _nms_points(zyx[inside], scores[inside], radius_vox, max_candidates)
    return zyx[:, ::-1].astype(np.int64), scores


def _refine_subvoxel(score_zyx: np.ndarray, zyx: np.ndarray) -> np.ndarray:
    """Sub-voxel peak positions (N, 3) float, zyx: a parabola through each peak's neighbours."""
    pos = zyx.astype(np.float64)
    if len(zyx) == 0:
        return pos
    shape = np.asarray(score_zyx.shape)
    f0 = score_zyx[tuple(zyx.T)].astype(np.float64)
    for axis in range(3):
        lo = zyx.copy()
        hi = zyx.copy()
        lo[:, axis] -= 1
        hi[:, axis] += 1
        ok = (lo[:, axis] >= 0) & (hi[:, axis] < shape[axis])
        fm = np.full(len(zyx), np.nan)
        fp = np.full(len(zyx), np.nan)
        fm[ok] = score_zyx[tuple(lo[ok].T)]
        fp[ok] = score_zyx[tuple(hi[ok].T)]
        denom = fm - 2.0 * f0 + fp
        good = ok & np.isfinite(denom) & (denom < 0)
        delta = np.zeros(len(zyx))
        delta[good] = 0.5 * (fm[good] - fp[good]) / denom[good]
        pos[:, axis] += np.clip(delta, -0.5, 0.5)
    return pos


def centre_points(level_zyx: np.ndarray, zyx: np.ndarray, half: int) -> np.ndarray:
    """Each point (N, 3) zyx float moved to the maximum of ``level_zyx`` (a DoG level) within
    a cube of half-side ``half`` voxels around it (clipped at the faces), refined to sub-voxel
    precision (:func:`_refine_subvoxel`): (N, 3) float."""
    if len(zyx) == 0 or half < 1:
        return zyx.astype(np.float64)
    shape = np.asarray(level_zyx.shape)
    start = np.clip(np.rint(zyx).astype(np.int64), 0, shape - 1)
    moved = np.empty_like(start)
    for i, centre in enumerate(start):  # a Python loop over candidates, not voxels
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, shape)
        box = level_zyx[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        moved[i] = lo + np.unravel_index(int(np.argmax(box)), box.shape)
    return _refine_subvoxel(level_zyx, moved)


def find_candidates(
    tomogram: np.ndarray,
    *,
    particle_diameter_vox: float,
    nms_radius_vox: float | None = None,
    threshold_std: float = DEFAULT_THRESHOLD_STD,
    n_levels: int = DEFAULT_N_LEVELS,
    exclude_border_vox: float | None = None,
    max_candidates: int | None = None,
    polarity: str = "bright",
    bin_factor: int | None = None,
    threads: int | None = None,
    centre: bool = True,
) -> pd.DataFrame:
    """Candidate particle centres of a (preprocessed) tomogram.

    Args:
        tomogram: float [z, y, x] (a read-only memmap is fine; not modified).
        particle_diameter_vox: expected particle diameter in voxels; sets the sigma schedule
            (:func:`dog_sigmas`).
        nms_radius_vox: NMS radius in voxels; default half the diameter (the particle radius).
        threshold_std: keep peaks above ``mean + threshold_std * std`` of the DoG response.
        n_levels: number of Gaussian levels (n - 1 DoG levels).
        exclude_border_vox: drop peaks closer than this to any face; default a quarter of the
            diameter (half the particle radius).
        max_candidates: keep at most this many (strongest first); None for no cap.
        polarity: "dark" or "bright" particles (see module docstring).
        bin_factor: pyramid bin factor; None chooses :func:`auto_bin_factor`.
        threads: worker threads.
        centre: move each peak to the maximum of the DoG level at the particle's scale
            nearby (:data:`CENTRE_FRACTION`, on the binned grid) before the border filter
            and the NMS; False keeps the DoG peaks.

    Returns:
        DataFrame with int64 columns ``x, y, z`` (voxels, 0-based) and float ``score`` (the DoG
        response at the peak), sorted by score descending; empty if nothing passes.
    """
    if tomogram.ndim != 3:
        raise MilopypError(
            f"expected a 3-D tomogram [z, y, x], got shape {tuple(tomogram.shape)}"
        )
    sigmas = dog_sigmas(particle_diameter_vox, n_levels)
    radius = particle_diameter_vox / 2.0 if nms_radius_vox is None else float(nms_radius_vox)
    border = particle_diameter_vox / 4.0 if exclude_border_vox is None else exclude_border_vox
    if border < 0:
        raise MilopypError(f"border exclusion must be >= 0 voxels, got {border}")
    if not radius >= 0:
        raise MilopypError(f"NMS radius must be >= 0 voxels, got {radius}")
    if max_candidates is not None and max_candidates < 1:
        raise MilopypError(f"max_candidates must be >= 1, got {max_candidates}")
    b = auto_bin_factor(sigmas) if bin_factor is None else int(bin_factor)
    if b < 1:
        raise MilopypError(f"bin factor must be >= 1, got {bin_factor}")
    b = max(1, min(b, min(tomogram.shape) // 4))  # keep a few binned voxels along every axis
    shape = np.asarray(tomogram.shape)

    binned = bin_volume(tomogram, b, threads=threads)
    prior_var = (b * b - 1) / 12.0  # variance of the box average, full-resolution voxels^2
    response = dog_response(
        binned, sigmas / b, polarity=polarity, prior_variance_vox2=prior_var / (b * b),
        threads=threads,
    )
    particle_radius_b = particle_diameter_vox / 2.0 / b
    half_b = round(CENTRE_FRACTION * particle_radius_b)
    if centre and half_b >= 1:
        signed = binned if polarity == "bright" else -binned
        scale = particle_radius_b / math.sqrt(3.0)  # a ball's strongest DoG scale
        level = gaussian_filter3d(signed, scale / CENTRE_SCALE_RATIO, threads=threads)
        level -= gaussian_filter3d(signed, scale * CENTRE_SCALE_RATIO, threads=threads)
        del signed
    del binned
    # Threshold statistics over the interior (binned voxels, rounded outwards).
    margin_b = tuple(min(math.ceil(border / b), (n - 1) // 2) for n in response.shape)
    mean, std = _interior_stats(response, margin_b)  # type: ignore[arg-type]
    threshold = mean + threshold_std * std
    log.info(
        "DoG: sigmas %s vox, bin %d, response mean %.4g std %.4g, threshold %.4g",
        np.round(sigmas, 2).tolist(), b, mean, std, threshold,
    )
    # Peaks of the whole response (no masking, which would create false maxima at the mask
    # edge), refined, centred and mapped to full-resolution voxels, then the border filter and the
    # greedy NMS at full resolution.
    zyx_b, scores = local_maxima(response, threshold)
    if b > 1:
        zyx_b = _refine_subvoxel(response, zyx_b)
    if centre and half_b >= 1:
        zyx_b = centre_points(level, zyx_b, half_b)
        del level
    zyx_f = zyx_b * b + (b - 1) / 2.0
    zyx_i = np.clip(np.rint(zyx_f), 0, shape - 1).astype(np.int64)
    inside = _inside(zyx_i, shape, border)
    zyx_i, scores = _nms_points(zyx_i[inside], scores[inside], radius, max_candidates)
    log.info("DoG: %d candidates (NMS radius %.3g vox, border %.3g vox)", len(scores), radius,
             border)
    return pd.DataFrame(
        {
            "x": zyx_i[:, 2],
            "y": zyx_i[:, 1],
            "z": zyx_i[:, 0],
            "score": scores.astype(np.float64),
        }
    )


def run(
    tomogram_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    particle_diameter_a: float,
    voxel_size_a: float | None = None,
    nms_radius_a: float | None = None,
    threshold_std: float = DEFAULT_THRESHOLD_STD,
    n_levels: int = DEFAULT_N_LEVELS,
    max_candidates: int | None = None,
    border_a: float | None = None,
    polarity: str = "bright",
    bin_factor: int | None = None,
    centre: bool = True,
    tomogram_name: str | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """The ``candidates`` stage: :func:`find_candidates` of one MRC tomogram, written as a point
    table ``tomogram, x, y, z, score`` (voxels of the tomogram; format by the suffix of
    ``output``), strongest first; returns that table.

    Lengths in Å (``particle_diameter_a``, ``nms_radius_a``, ``border_a``; None: the defaults
    of :func:`find_candidates`) are converted with ``voxel_size_a`` (Å; default: the MRC
    header's). ``tomogram_name`` fills the ``tomogram`` column (default: the file name up to
    its first dot). Raises MilopypError when the diameter is not 2 voxels to the tomogram's
    size, or when no candidate passes.
    """
    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.coords import write_coordinates
    from milopyp.io.mrc import read_tomogram

    prepare_outputs(output)
    t0 = time.perf_counter()
    tomogram, voxel_size_a = read_tomogram(tomogram_path, mmap=True, voxel_size_a=voxel_size_a)
    if not particle_diameter_a > 0:
        raise MilopypError(f"--particle-diameter-a must be > 0 Å, got {particle_diameter_a}")
    diameter_vox = particle_diameter_a / voxel_size_a
    where = f"{tomogram_path}: particle diameter {particle_diameter_a} Å is"
    if diameter_vox < 2:
        raise MilopypError(
            f"{where} {diameter_vox:.2f} voxels at {voxel_size_a} Å/voxel; expected >= 2 voxels; "
            "check --particle-diameter-a (Å) and the voxel size"
        )
    if diameter_vox > min(tomogram.shape):
        raise MilopypError(
            f"{where} {diameter_vox:.1f} voxels at {voxel_size_a} Å/voxel, larger than the "
            f"tomogram (shape z,y,x {tuple(tomogram.shape)}); check --particle-diameter-a (Å) "
            "and the voxel size"
        )
    table = find_candidates(
        tomogram,
        particle_diameter_vox=diameter_vox,
        nms_radius_vox=None if nms_radius_a is None else nms_radius_a / voxel_size_a,
        threshold_std=threshold_std,
        n_levels=n_levels,
        exclude_border_vox=None if border_a is None else border_a / voxel_size_a,
        max_candidates=max_candidates,
        polarity=polarity,
        bin_factor=bin_factor,
        threads=threads,
        centre=centre,
    )
    if table.empty:
        raise MilopypError(
            f"{tomogram_path}: no candidate passed the threshold (mean + {threshold_std} std of "
            f"the DoG response) and the border margin; lower --threshold-std, check "
            f"--particle-diameter-a ({particle_diameter_a} Å = {diameter_vox:.1f} voxels at "
            f"{voxel_size_a} Å/voxel), the voxel size and --polarity"
        )
    table.insert(0, "tomogram", tomogram_name or io_tomogram_name(tomogram_path))
    write_coordinates(output, table, voxel_size_a=voxel_size_a, shape_zyx=tuple(tomogram.shape))
    log.info("%s -> %s: %d candidates (diameter %.1f vox), %.2f s", tomogram_path, output,
             len(table), diameter_vox, time.perf_counter() - t0)
    return table
