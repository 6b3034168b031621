"""Projection and weighted back-projection of the simulator (tilt axis parallel to y, eq. 1
of the contract): :func:`project` makes the tilt series' line integrals of a ``[z, y, x]``
volume, :func:`backproject` reconstructs a ``[z, y, x]`` tomogram from ``[n, y, x]`` images.
Both share one sparse geometry matrix, so projector and back-projector agree exactly.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import fft as sfft
from scipy import sparse

from milopyp.errors import MilopypError


@functools.lru_cache(maxsize=1)
def _backprojection_matrix(
    nz: int, nx: int, tx: int, angles: tuple[float, ...]
) -> sparse.csr_array:
    """Sparse ``(nz * nx, n_tilts * tx)`` matrix: eq. 1 with linear interpolation along x_θ.

    Row ``z * nx + x`` is voxel (x, z) of an x-z section; column ``a * tx + i`` is pixel i of
    tilt a. ``M @ images`` back-projects (gathers with linear interpolation); its transpose
    ``M.T @ sections`` projects (splats each voxel onto the two nearest pixels), so projector
    and back-projector share one geometry. Built directly in CSR form: every row holds two
    entries per tilt (weight 0 where the ray leaves the image). Cached for the last geometry.
    """
    theta = np.deg2rad(np.asarray(angles, dtype=np.float64))
    n = theta.size
    cx, cz, px = (nx - 1) / 2, (nz - 1) / 2, (tx - 1) / 2
    x = np.arange(nx) - cx
    z = np.arange(nz) - cz
    xt = (
        np.cos(theta)[None, None, :] * x[None, :, None]
        + np.sin(theta)[None, None, :] * z[:, None, None]
        + px
    )  # (nz, nx, n)
    i0 = np.floor(xt)
    frac = (xt - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    base = np.arange(n, dtype=np.int64) * tx
    idx = np.stack([i0, i0 + 1], axis=-1)  # (nz, nx, n, 2)
    weights = np.stack([1.0 - frac, frac], axis=-1)
    weights[(idx < 0) | (idx >= tx)] = 0.0
    indices = (np.clip(idx, 0, tx - 1) + base[:, None]).reshape(-1)
    indptr = np.arange(0, nz * nx * 2 * n + 1, 2 * n, dtype=np.int64)
    return sparse.csr_array((weights.reshape(-1), indices, indptr), shape=(nz * nx, n * tx))


def project(volume_zyx: np.ndarray, angles_deg, tilt_shape_yx=None) -> np.ndarray:
    """Line-integral projections of a volume, tilt axis parallel to y (eq. 1).

    volume_zyx: ``[z, y, x]``. angles_deg: ``(n,)``. tilt_shape_yx: ``(ty, tx)`` of each
    image, default ``(ny, nx)``; ty must equal ny. A voxel at (x, y, z) lands at
    ``x_θ = (x - cx) cos θ + (z - cz) sin θ + px``, ``y_θ = y - cy + py`` (centres
    ``(n - 1) / 2``), split linearly between the two nearest pixels along x.
    Returns float32 ``[n, ty, tx]`` in units of density x voxels.
    """
    vol = np.asarray(volume_zyx, dtype=np.float32)
    if vol.ndim != 3:
        raise MilopypError(f"project: expected a 3-D volume [z, y, x], got shape {vol.shape}")
    nz, ny, nx = vol.shape
    ty, tx = (ny, nx) if tilt_shape_yx is None else (int(v) for v in tilt_shape_yx)
    if ty != ny:
        raise MilopypError(f"project: tilt images must have ty == ny == {ny}, got ty={ty}")
    angles = np.atleast_1d(np.asarray(angles_deg, dtype=np.float64))
    mat = _backprojection_matrix(nz, nx, tx, tuple(angles.tolist()))
    sections = np.ascontiguousarray(vol.transpose(0, 2, 1)).reshape(nz * nx, ny)
    out = (mat.T @ sections).reshape(len(angles), tx, ny)  # (n*tx, ny) -> (n, tx, ny)
    return np.ascontiguousarray(out.transpose(0, 2, 1), dtype=np.float32)


def _ramp_filter(n_pad: int, filter_name: str) -> np.ndarray:
    """Real ``(n_pad // 2 + 1,)`` frequency response: ramp (Kak & Slaney), optionally x Hann."""
    k = np.arange(n_pad)
    k = np.where(k <= n_pad // 2, k, n_pad - k)
    h = np.zeros(n_pad)
    h[0] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    response = 2.0 * np.real(np.fft.rfft(h))  # ~ 2|f|, f in cycles/pixel, DC > 0
    f = np.fft.rfftfreq(n_pad)
    if filter_name == "hann":
        response = response * 0.5 * (1.0 + np.cos(np.pi * f / 0.5))
    elif filter_name != "ramp":
        raise MilopypError(f"unknown reconstruction filter {filter_name!r}; use ramp or hann")
    return response


def backproject(
    tilt_series: np.ndarray, angles_deg, thickness: int, *, filter_name: str = "hann"
) -> np.ndarray:
    """Weighted back-projection of a ``[n, ty, tx]`` tilt series into ``[thickness, ty, tx]``.

    Each image row is ramp-filtered along x (``filter_name`` "ramp" or "hann": ramp x Hann
    taper) and smeared back along the rays of eq. 1 (transpose of :func:`project`).
    Scaled by the mean angular step (radians) / 2 so that with full angular coverage the
    result approximates the projected density; a limited tilt range leaves the missing wedge.
    """
    ts = np.asarray(tilt_series, dtype=np.float32)
    if ts.ndim != 3:
        raise MilopypError(f"backproject: expected a tilt series [n, y, x], got {ts.shape}")
    angles = np.atleast_1d(np.asarray(angles_deg, dtype=np.float64))
    n, ty, tx = ts.shape
    if angles.size != n:
        raise MilopypError(f"backproject: {n} tilt images but {angles.size} angles")
    nz = int(thickness)
    n_pad = max(64, 1 << math.ceil(math.log2(2 * tx)))
    response = _ramp_filter(n_pad, filter_name).astype(np.float32)
    centred = ts - ts.mean(axis=(1, 2), keepdims=True)
    spec = sfft.rfft(centred, n=n_pad, axis=2)
    filtered = sfft.irfft(spec * response, n=n_pad, axis=2)[:, :, :tx].astype(np.float32)
    mat = _backprojection_matrix(nz, tx, tx, tuple(angles.tolist()))
    rows = np.ascontiguousarray(filtered.transpose(0, 2, 1)).reshape(n * tx, ty)
    vol = (mat @ rows).reshape(nz, tx, ty).transpose(0, 2, 1)
    step = np.deg2rad(np.mean(np.abs(np.diff(np.sort(angles))))) if n > 1 else np.pi
    return np.ascontiguousarray(vol * np.float32(step / 2.0), dtype=np.float32)
