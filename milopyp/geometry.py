"""Tilt-series geometry self-check: which projection convention, binning and offset fit.

:mod:`milopyp.patches` maps a tomogram point ``(x, y, z)`` (voxels) into the tilt image at
angle θ by (eq. 1, tilt axis along y)

    x_θ = (x - cx) cos θ + sign · (z - cz) sin θ + px + offset_x,
    y_θ = y - cy + py + offset_y,

on the tilt series binned by ``bin`` (tilt-series pixels per tomogram voxel). ``sign`` is
the tomogram's handedness along z: a tomogram mirrored in z (IMOD ``trimvol -yz`` against
``-rx``, other packages' conventions) needs ``-1``. Negating every angle (a .tlt of the
opposite sign) changes only the ``sin`` term, so it is the same choice: one sign covers both.

The check reprojects the tomogram (line sums along the rays of each candidate geometry,
binned to about :data:`WORK_SIZE_PX` pixels) and compares it with the tilt images after a
band-pass:

1. **Scale**: the tilt image nearest 0° (where the sign plays no part), binned by each
   candidate factor, against the tomogram's sum along z; the best normalised
   cross-correlation (NCC, over all shifts) gives ``bin``.
2. **Offset**: phase correlation of the same pair at full resolution (sub-pixel peak) gives
   the constant ``(offset_x, offset_y)`` in tomogram voxels, and the NCC's sign the contrast
   (``inverted`` when the tilt series and the tomogram have opposite contrast).
3. **Sign**: at a few high tilts (where the sign matters most: a particle ``d`` voxels off the
   mid-plane moves by ``2 d sin θ`` between the two conventions) the reprojection under
   each sign against the tilt image, NCC over rays that run wholly through the volume (best
   of ±:data:`SEARCH_PX` working pixels); the mean over angles scores each sign, and the
   **margin** is the best score minus the other.

Everything here is pure (arrays in, dict out); the command ``milopyp check-geometry`` reads
the files, decides whether the margin suffices and writes ``geometry/{tomogram}.json``.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from milopyp.errors import MilopypError
from milopyp.patches import bin_tilt_series

log = logging.getLogger(__name__)

#: working size (pixels along the longer of y, x) of the reprojection test
WORK_SIZE_PX = 192
#: residual shift searched around the offset in the sign test (working pixels)
SEARCH_PX = 2
#: tilt angles (degrees) whose nearest tilts test the sign
SIGN_TEST_ANGLES_DEG = (-55.0, -40.0, -25.0, 25.0, 40.0, 55.0)
#: a ray counts when at least this fraction of its length lies inside the volume
MIN_COVERAGE = 0.8
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


def candidate_bins(ratio: float | None, tilt_shape_yx, shape_zyx) -> list[int]:
    """Bin factors to test: 1, 2, 4 and round(header ratio), those that still leave the tilt
    images at least 3/4 of the tomogram's y size (a tilt series covers its tomogram)."""
    bins = {1, 2, 4}
    if ratio is not None and ratio >= 0.75:
        bins.add(max(1, int(np.rint(ratio))))
    ty = int(tilt_shape_yx[0])
    return sorted(b for b in bins if ty // b >= 0.75 * int(shape_zyx[1]))


def sign_test_indices(angles_deg, targets_deg=SIGN_TEST_ANGLES_DEG, min_abs_deg: float = 15.0):
    """Indices of the tilts nearest each target angle, ``|θ| >= min_abs_deg``, no repeats."""
    angles = np.asarray(angles_deg, dtype=np.float64)
    usable = np.flatnonzero(np.abs(angles) >= min_abs_deg)
    picked: list[int] = []
    for target in targets_deg:
        if usable.size == 0:
            break
        i = int(usable[np.argmin(np.abs(angles[usable] - target))])
        if abs(angles[i] - target) <= 10 and i not in picked:
            picked.append(i)
    return sorted(picked, key=lambda i: angles[i])


def check_geometry(
    tomogram_zyx: np.ndarray,
    tilt_series: np.ndarray,
    angles_deg,
    *,
    header_ratio: float | None = None,
    bin_factor: int | None = None,
    sign: int | None = None,
    offset_xy=None,
    work_size_px: int = WORK_SIZE_PX,
) -> dict:
    """Score the candidate geometries of one tomogram against its tilt series.

    tomogram_zyx: ``[z, y, x]``; tilt_series: ``[n, ty, tx]`` at its own pixel size; angles:
    ``(n,)`` degrees; header_ratio: tomogram voxel size / tilt-series pixel size from the
    headers (None: unknown). ``bin_factor``, ``sign`` and ``offset_xy`` (voxels) pin those
    parts (None: detect). Returns a JSON-ready dict: ``bin``, ``offset_x_vox``,
    ``offset_y_vox``, ``contrast`` (same | inverted), ``sign``, ``scores`` (sign -> mean NCC),
    ``margin`` (best score minus the other's), ``per_angle``, ``bin_scores`` and what was
    pinned (``pinned``). Detection of the sign does not depend on a pinned sign: the scores
    are always computed, so a pinned value that the data contradicts can be reported.
    """
    vol = np.asarray(tomogram_zyx, dtype=np.float32)
    ts = np.asarray(tilt_series)
    angles = np.asarray(angles_deg, dtype=np.float64)
    if vol.ndim != 3 or ts.ndim != 3 or ts.shape[0] != angles.size:
        raise MilopypError(
            f"check_geometry: expected a tomogram [z, y, x] and a tilt series [n, y, x] with n "
            f"angles, got {vol.shape}, {ts.shape} and {angles.size} angles"
        )
    nz, ny, nx = vol.shape
    zero = int(np.argmin(np.abs(angles)))
    top = vol.mean(axis=0)  # the tomogram seen at 0°, [y, x]

    # 1. scale: each bin factor at 0°, tilt image centred onto the tomogram's field of view
    if bin_factor:
        bins = [int(bin_factor)]
    else:
        bins = candidate_bins(header_ratio, ts.shape[1:], vol.shape)
    if not bins:
        raise MilopypError(
            f"check_geometry: tilt images {ts.shape[1:]} are smaller than the tomogram's y, x "
            f"{(ny, nx)}; give the tilt series of this tomogram"
        )
    coarse = max(1, int(np.ceil(max(ny, nx) / work_size_px)))
    top_work = bandpass(bin_tilt_series(top[None], coarse)[0])
    bin_scores = {}
    for b in bins:
        image = bin_tilt_series(np.asarray(ts[zero : zero + 1], np.float32), b)[0]
        image = bin_tilt_series(_fit_to(image, (ny, nx))[None], coarse)[0]
        bin_scores[b] = abs(phase_correlation(top_work, bandpass(image))[2])
    best_bin = int(bin_factor) if bin_factor else max(bin_scores, key=bin_scores.get)

    # 2. offset and contrast at full resolution (tomogram voxels), band-passed at the working
    # scale's sigmas so the noise weighs as in the sign test
    image0 = bin_tilt_series(np.asarray(ts[zero : zero + 1], np.float32), best_bin)[0]
    sig = tuple(s * coarse for s in BANDPASS_SIGMA_PX)
    dx, dy, ncc0 = phase_correlation(bandpass(top, sig), bandpass(_fit_to(image0, (ny, nx)), sig))
    if offset_xy is not None:
        dx, dy = (float(v) for v in offset_xy)
    contrast = 1.0 if ncc0 >= 0 else -1.0

    # 3. sign: high tilts, both signs, working resolution (only those images are converted)
    work_vol = bin_volume(vol, coarse)
    off_work = (dx / coarse, dy / coarse)
    per_angle = []
    scores = {1: [], -1: []}
    for i in sign_test_indices(angles):
        tilt = bin_tilt_series(np.asarray(ts[i : i + 1], np.float32), best_bin * coarse)[0]
        image = bandpass(contrast * tilt)
        row = {"angle_deg": float(angles[i])}
        for s in (1, -1):
            proj, cover = reproject(work_vol, angles[i], s, image.shape, off_work)
            mask = cover >= MIN_COVERAGE
            if mask.sum() < 64:  # too few whole rays at this angle: skip it
                break
            ncc, _ = masked_ncc(bandpass(proj), image, mask)
            row[f"ncc_{s:+d}"] = round(ncc, 4)
            scores[s].append(ncc)
        else:
            per_angle.append(row)
            continue
        scores[1] = scores[1][: len(per_angle)]
        scores[-1] = scores[-1][: len(per_angle)]
    if not per_angle:
        raise MilopypError(
            f"check_geometry: no tilt with |angle| >= 15° leaves whole rays through a "
            f"{nz} x {ny} x {nx} volume (angles {angles.min():g}..{angles.max():g})"
        )
    mean = {s: float(np.mean(v)) for s, v in scores.items()}
    detected = max(mean, key=mean.get)
    return {
        "sign": int(sign) if sign else detected,
        "detected_sign": detected,
        "scores": {f"{s:+d}": round(v, 4) for s, v in mean.items()},
        "margin": round(mean[detected] - mean[-detected], 4),
        "bin": best_bin,
        "bin_scores": {str(b): round(v, 4) for b, v in bin_scores.items()},
        "header_ratio": None if header_ratio is None else round(float(header_ratio), 4),
        "offset_x_vox": round(float(dx), 3),
        "offset_y_vox": round(float(dy), 3),
        "contrast": "same" if contrast > 0 else "inverted",
        "ncc_0deg": round(float(ncc0), 4),
        "per_angle": per_angle,
        "work_bin": coarse,
        "pinned": {"sign": sign is not None, "bin": bin_factor is not None,
                   "offset": offset_xy is not None},
    }


#: smallest accepted margin (mean NCC of the best sign minus the other's)
MIN_MARGIN = 0.05


def judge(record: dict, *, name: str, tilt_series: str, min_margin: float = MIN_MARGIN) -> dict:
    """Add the verdict to a :func:`check_geometry` record, or raise when no sign fits.

    ``verdict``: ``detected`` (the data decide, margin >= ``min_margin``), ``pinned`` (sign
    set in the config, the data agree or cannot tell) or ``pinned-disagrees`` (the data
    prefer the other sign by >= ``min_margin``; kept, as asked, with a warning in the record).
    ``warnings``: one line each (pinned sign contradicted; header pixel sizes contradicted by
    the detected binning). Raises MilopypError naming the tomogram and what to check when the
    sign is not pinned and the margin is below ``min_margin``.
    """
    out = dict(record, min_margin=float(min_margin), warnings=[])
    scores = ", ".join(f"sign {s} NCC {v:.3f}" for s, v in record["scores"].items())
    if not record["pinned"]["sign"]:
        if record["margin"] < min_margin:
            raise MilopypError(
                f"{name}: no tilt-series geometry fits its tilt series {tilt_series} ({scores}; "
                f"margin {record['margin']:.3f} < {min_margin:g}): check that it is the aligned "
                "stack this tomogram was reconstructed from (tilt axis along y, not flipped in "
                "y, .tlt in stack order, tomogram not shifted or trimmed off-centre in z), or pin "
                "tiltseries_geometry.sign"
            )
        out["verdict"] = "detected"
    elif record["detected_sign"] != record["sign"] and record["margin"] >= min_margin:
        out["verdict"] = "pinned-disagrees"
        out["warnings"].append(
            f"{name}: tiltseries_geometry.sign is pinned to {record['sign']:+d} but the data "
            f"prefer {record['detected_sign']:+d} ({scores}); check the pin"
        )
    else:
        out["verdict"] = "pinned"
    ratio = record.get("header_ratio")
    pinned_bin = record["pinned"]["bin"]
    if ratio is not None and not pinned_bin and abs(ratio - record["bin"]) > 0.02 * ratio:
        out["warnings"].append(
            f"{name}: the headers say {ratio:g} tilt-series pixels per tomogram voxel, the "
            f"images fit bin {record['bin']} (NCC by bin {record['bin_scores']}); using "
            f"{record['bin']}: fix the pixel size in a header, or pin tiltseries_geometry.bin"
        )
    return out
