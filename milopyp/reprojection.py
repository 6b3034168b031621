"""Reprojection of a tomogram along the rays of eq. 1 and the image comparisons of the
tilt-series geometry check (:mod:`milopyp.geometry`): band-pass, masked NCC over small shifts,
phase correlation. Images are ``[y, x]``, volumes ``[z, y, x]``; shifts in pixels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from milopyp.patches import bin_tilt_series

#: residual shift searched around the offset in the sign test (working pixels)
SEARCH_PX = 2
#: band-pass of every compared image: Gaussian sigmas in working pixels (noise, background)
BANDPASS_SIGMA_PX = (1.0, 8.0)


def bin_volume(volume_zyx: np.ndarray, factor: int) -> np.ndarray:
    """Block mean of a ``[z, y, x]`` volume by ``factor`` along every axis (centred crop).

    The centre ``(n - 1) / 2`` of each axis maps to ``(n // factor - 1) / 2``, as in
    :func:`milopyp.patches.bin_tilt_series`. Returns float32 ``[z/f, y/f, x/f]``.
    """
    f = int(factor)
    vol = np.asarray(volume_zyx, dtype=np.float32)
    if f == 1:
        return vol
    nz = vol.shape[0]
    mz = max(nz // f, 1)
    oz = max((nz - mz * f) // 2, 0)
    planes = bin_tilt_series(vol[oz : oz + mz * f], f)  # y, x
    return planes.reshape(mz, f, *planes.shape[1:]).mean(axis=1, dtype=np.float32)


def bandpass(image: np.ndarray, sigmas_px=BANDPASS_SIGMA_PX) -> np.ndarray:
    """Difference of Gaussians of a 2-D image (sigmas in pixels: fine, coarse); float32."""
    img = np.asarray(image, dtype=np.float32)
    fine, coarse = sigmas_px
    return ndimage.gaussian_filter(img, fine, mode="reflect") - ndimage.gaussian_filter(
        img, coarse, mode="reflect"
    )


def reproject(
    volume_zyx: np.ndarray,
    angle_deg: float,
    sign: int,
    tilt_shape_yx,
    offset_xy=(0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Line sums of a volume along the rays of eq. 1, on a tilt image of shape ``tilt_shape_yx``.

    volume_zyx: ``[z, y, x]``; ``offset_xy`` moves the projection in the image (pixels =
    voxels). Returns the projection ``[ty, tx]`` (float32, mean along the ray, linear
    interpolation along x) and the fraction ``[ty, tx]`` of each ray inside the volume.
    """
    vol = np.asarray(volume_zyx, dtype=np.float32)
    nz, ny, nx = vol.shape
    ty, tx = (int(v) for v in tilt_shape_yx)
    theta = np.deg2rad(float(angle_deg))
    cx, cy, cz = (nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2
    px, py = (tx - 1) / 2, (ty - 1) / 2
    z = np.arange(nz, dtype=np.float64)[:, None]
    u = np.arange(tx, dtype=np.float64)[None, :]
    x = cx + (u - px - offset_xy[0] - sign * (z - cz) * np.sin(theta)) / np.cos(theta)  # (nz, tx)
    y = np.arange(ty, dtype=np.float64) - py - offset_xy[1] + cy  # (ty,)
    inside_x = (x >= 0) & (x <= nx - 1)
    inside_y = (y >= 0) & (y <= ny - 1)
    # linear interpolation along x (rays stay in one x-z plane), nearest along y
    x0 = np.clip(np.floor(x).astype(np.int64), 0, nx - 2)
    fx = np.clip(x - x0, 0.0, 1.0).astype(np.float32)
    yi = np.clip(np.rint(y).astype(np.int64), 0, ny - 1)
    planes = vol[:, yi, :]  # (nz, ty, nx)
    zi = np.arange(nz)[:, None]
    left = planes[zi, :, x0]  # (nz, tx, ty)
    right = planes[zi, :, x0 + 1]
    w = (inside_x.astype(np.float32))[:, :, None]
    samples = (left * (1 - fx[:, :, None]) + right * fx[:, :, None]) * w
    count = inside_x.sum(axis=0).astype(np.float32)  # (tx,)
    proj = (samples.sum(axis=0) / np.maximum(count, 1)[:, None]).T  # (ty, tx)
    coverage = np.outer(inside_y, count / nz).astype(np.float32)
    return proj.astype(np.float32), coverage


def _normalise_on(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    vals = image[mask]
    std = vals.std()
    out = np.zeros_like(image, dtype=np.float64)
    out[mask] = (vals - vals.mean()) / (std if std > 0 else 1.0)
    return out


def masked_ncc(reference: np.ndarray, image: np.ndarray, mask: np.ndarray,
               search_px: int = SEARCH_PX) -> tuple[float, tuple[int, int]]:
    """Best NCC of ``image`` against ``reference`` over ``mask``, for integer shifts of the
    image within ±``search_px`` (both axes). Returns (ncc, (dy, dx)); arrays ``[y, x]``."""
    r = int(search_px)
    ny, nx = reference.shape
    ref = _normalise_on(reference, mask)
    padded = np.pad(np.asarray(image, dtype=np.float64), r, mode="edge")
    best, best_shift = -np.inf, (0, 0)
    n = mask.sum()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            window = padded[r + dy : r + dy + ny, r + dx : r + dx + nx]
            vals = window[mask]
            std = vals.std()
            if std == 0:
                continue
            ncc = float(np.sum(ref[mask] * (vals - vals.mean())) / (std * n))
            if ncc > best:
                best, best_shift = ncc, (dy, dx)
    return (best if np.isfinite(best) else 0.0), best_shift


def _fit_to(image: np.ndarray, shape_yx) -> np.ndarray:
    """Centre-crop or pad (with the mean) a 2-D image to ``shape_yx``, keeping its centre."""
    out = np.full(shape_yx, float(image.mean()), dtype=np.float32)
    (iy, ix), (oy, ox) = image.shape, shape_yx
    sy, sx = min(iy, oy), min(ix, ox)
    a_y, a_x = (iy - sy) // 2, (ix - sx) // 2
    b_y, b_x = (oy - sy) // 2, (ox - sx) // 2
    out[b_y : b_y + sy, b_x : b_x + sx] = image[a_y : a_y + sy, a_x : a_x + sx]
    return out


def phase_correlation(reference: np.ndarray, image: np.ndarray) -> tuple[float, float, float]:
    """Shift ``(dx, dy)`` (pixels, sub-pixel) that moves ``reference`` onto ``image`` (same
    shape ``[y, x]``), and the NCC of the two images at the nearest integer shift (circular;
    negative when the contrast is inverted, the peak being found on ``|correlation|``).
    """
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(image, dtype=np.float64)
    a = (a - a.mean()) / (a.std() or 1.0)
    b = (b - b.mean()) / (b.std() or 1.0)
    window = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    fa, fb = np.fft.fft2(a * window), np.fft.fft2(b * window)
    cross = fb * np.conj(fa)
    pc = np.real(np.fft.ifft2(cross / np.maximum(np.abs(cross), 1e-12)))
    iy, ix = np.unravel_index(int(np.argmax(np.abs(pc))), pc.shape)
    pc = pc * np.sign(pc[iy, ix])  # inverted contrast: the peak is a trough
    sub = []
    for axis, i in ((0, iy), (1, ix)):
        n = pc.shape[axis]
        idx = [iy, ix]
        idx[axis] = (i - 1) % n
        lo = pc[tuple(idx)]
        idx[axis] = (i + 1) % n
        hi = pc[tuple(idx)]
        c = pc[iy, ix]
        denom = lo - 2 * c + hi
        frac = 0.5 * (lo - hi) / denom if denom < 0 else 0.0
        shift = i + float(np.clip(frac, -0.5, 0.5))
        sub.append(shift - n if shift > n / 2 else shift)
    ncc = float(np.mean(np.roll(a, (iy, ix), axis=(0, 1)) * b))
    return sub[1], sub[0], ncc
