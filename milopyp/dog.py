"""The difference-of-Gaussians (DoG) response of a tomogram: the first half of the candidate
finder (:mod:`milopyp.candidates`, whose docstring gives the method and the choices made).

The tomogram is Gaussian filtered with increasing standard deviations sigma_1 < ... < sigma_n
(:func:`dog_sigmas`), the levels ``DoG_i = G_i - G_{i+1}`` are formed and the response is
their maximum (:func:`dog_response`), optionally on a block-averaged copy
(:func:`bin_volume`, :func:`auto_bin_factor`). Arrays are ``[z, y, x]``, lengths in voxels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from milopyp.errors import MilopypError
from milopyp.preprocess import _run, available_threads, gaussian_filter3d

#: Default number of Gaussian levels (n); there are n - 1 DoG levels.
DEFAULT_N_LEVELS = 5
#: Sigma range of the pyramid as multiples of the optimal sigma r / sqrt(3).
SIGMA_RANGE = (0.5, 1.5)
#: Largest automatic bin factor.
MAX_AUTO_BIN = 4


def dog_sigmas(
    particle_diameter_vox: float, n_levels: int = DEFAULT_N_LEVELS,
    sigma_range: tuple[float, float] = SIGMA_RANGE,
) -> np.ndarray:
    """Standard deviations (voxels) of the n Gaussian levels for particles of this diameter.

    Geometric from ``sigma_range[0]`` to ``sigma_range[1]`` times ``(diameter / 2) / sqrt(3)``.
    Returns float64 (n_levels,), increasing.
    """
    if not np.isfinite(particle_diameter_vox) or particle_diameter_vox <= 0:
        raise MilopypError(
            f"particle diameter must be > 0 voxels, got {particle_diameter_vox}; "
            "give --particle-diameter-a in Å and check the voxel size"
        )
    if n_levels < 2:
        raise MilopypError(f"the DoG pyramid needs at least 2 levels, got {n_levels}")
    lo, hi = sigma_range
    if not 0 < lo < hi:
        raise MilopypError(f"sigma_range must satisfy 0 < low < high, got {sigma_range}")
    sigma_opt = (particle_diameter_vox / 2.0) / math.sqrt(3.0)
    return sigma_opt * np.geomspace(lo, hi, n_levels)


def auto_bin_factor(sigmas_vox: Sequence[float]) -> int:
    """Bin factor for the pyramid: ``floor(min sigma)`` clipped to [1, MAX_AUTO_BIN].

    After binning by b the smallest level still has a standard deviation of about one binned
    voxel or more, enough to sample the response without aliasing the peaks.
    """
    return int(min(MAX_AUTO_BIN, max(1, math.floor(float(min(sigmas_vox))))))


def bin_volume(volume: np.ndarray, factor: int, *, threads: int | None = None) -> np.ndarray:
    """Block-average [z, y, x] by ``factor`` along every axis (trailing remainders dropped).

    Returns float32 (nz // f, ny // f, nx // f). Works slab by slab (fine on a memmap). Binned
    voxel i covers voxels ``f*i .. f*i + f - 1``; its centre is at ``f*i + (f - 1) / 2``.
    """
    f = int(factor)
    if f < 1:
        raise MilopypError(f"bin factor must be >= 1, got {factor}")
    if f == 1:
        return np.asarray(volume, dtype=np.float32)
    nz, ny, nx = (s // f for s in volume.shape)
    if min(nz, ny, nx) < 1:
        raise MilopypError(f"cannot bin shape {tuple(volume.shape)} by {f}: too small")
    out = np.empty((nz, ny, nx), dtype=np.float32)
    inv = np.float32(1.0 / f**3)

    def work(zb: int) -> None:
        # Plain adds of strided views: several times faster than a multi-axis reduction.
        slab = volume[zb * f:(zb + 1) * f, : ny * f, : nx * f]
        acc = np.array(slab[0], dtype=np.float32)  # (ny f, nx f)
        for k in range(1, f):
            acc += slab[k]
        acc_x = acc.reshape(ny * f, nx, f)
        row = np.array(acc_x[:, :, 0])  # (ny f, nx)
        for k in range(1, f):
            row += acc_x[:, :, k]
        row_y = row.reshape(ny, f, nx)
        o = out[zb]
        np.copyto(o, row_y[:, 0, :])
        for k in range(1, f):
            o += row_y[:, k, :]
        o *= inv

    _run(work, range(nz), available_threads(threads))
    return out


def dog_response(
    tomogram: np.ndarray,
    sigmas_vox: Sequence[float],
    *,
    polarity: str = "bright",
    prior_variance_vox2: float = 0.0,
    threads: int | None = None,
) -> np.ndarray:
    """Maximum over the DoG levels of a Gaussian pyramid.

    Args:
        tomogram: float [z, y, x] (not modified).
        sigmas_vox: increasing standard deviations (voxels) of the n >= 2 Gaussian levels.
        polarity: "bright" (``G_i - G_{i+1}``, the paper's formula: particles brighter than
            the background) or "dark" (``G_{i+1} - G_i``).
        prior_variance_vox2: blur already in the volume (voxels^2, e.g. from binning); it is
            subtracted from each level's variance.
        threads: worker threads.

    Returns:
        float32 [z, y, x]: ``max_i DoG_i``. Memory: three volumes (two Gaussian levels and the
        running maximum) besides the input; levels are built incrementally, each from the last.
    """
    if tomogram.ndim != 3:
        raise MilopypError(
            f"expected a 3-D tomogram [z, y, x], got shape {tuple(tomogram.shape)}"
        )
    sig = np.asarray(sigmas_vox, dtype=np.float64)
    if sig.ndim != 1 or sig.size < 2 or np.any(np.diff(sig) <= 0) or sig[0] < 0:
        raise MilopypError(f"sigmas must be >= 2 increasing values >= 0, got {list(sig)}")
    if polarity not in ("dark", "bright"):
        raise MilopypError(f"polarity must be 'dark' or 'bright', got {polarity!r}")
    var = np.maximum(sig**2 - prior_variance_vox2, 0.0)
    current = gaussian_filter3d(tomogram, math.sqrt(var[0]), threads=threads)
    following = np.empty_like(current)
    response: np.ndarray | None = None
    for i in range(1, sig.size):
        # G_i from G_{i-1}: Gaussians compose, variances add.
        gaussian_filter3d(current, math.sqrt(var[i] - var[i - 1]), out=following,
                          threads=threads)
        if polarity == "dark":
            np.subtract(following, current, out=current)  # current := G_{i} - G_{i-1}
        else:
            np.subtract(current, following, out=current)
        if response is None:
            response = current.copy()
        else:
            np.maximum(response, current, out=response)
        current, following = following, current
    assert response is not None
    return response



def _interior_stats(response: np.ndarray, margin: tuple[int, int, int]) -> tuple[float, float]:
    """Mean and std (float64 accumulation, no full-size temporary) inside the margin."""
    mz, my, mx = margin
    nz, ny, nx = response.shape
    inner = response[mz:nz - mz or None, my:ny - my or None, mx:nx - mx or None]
    if inner.size == 0:
        inner = response
    total = 0.0
    total_sq = 0.0
    step = max(1, (1 << 20) // max(1, inner.shape[1] * inner.shape[2]))
    for z0 in range(0, inner.shape[0], step):
        sl = inner[z0:z0 + step].astype(np.float64)  # a slab of ~1 M voxels
        total += float(sl.sum())
        np.square(sl, out=sl)
        total_sq += float(sl.sum())
    n = inner.size
    mean = total / n
    var = max(total_sq / n - mean * mean, 0.0)
    return mean, math.sqrt(var)
