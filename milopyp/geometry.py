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

The reprojection and the image comparisons are in :mod:`milopyp.reprojection`. Everything
here is pure (arrays in, dict out) but :func:`run`, the stage of ``milopyp check-geometry``:
it reads the files, decides whether the margin suffices and writes
``geometry/{tomogram}.json``, all through :mod:`milopyp.io`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from milopyp.errors import MilopypError
from milopyp.io.mrc import tomogram_name
from milopyp.patches import bin_tilt_series
from milopyp.reprojection import (  # noqa: F401  (SEARCH_PX re-exported)
    BANDPASS_SIGMA_PX,
    SEARCH_PX,
    _fit_to,
    bandpass,
    bin_volume,
    masked_ncc,
    phase_correlation,
    reproject,
)

log = logging.getLogger(__name__)

#: working size (pixels along the longer of y, x) of the reprojection test
WORK_SIZE_PX = 192
#: tilt angles (degrees) whose nearest tilts test the sign
SIGN_TEST_ANGLES_DEG = (-55.0, -40.0, -25.0, 25.0, 40.0, 55.0)
#: a ray counts when at least this fraction of its length lies inside the volume
MIN_COVERAGE = 0.8


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


def run(
    tomogram_path: str | os.PathLike,
    tilt_series_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    angles_path: str | os.PathLike | None = None,
    name: str | None = None,
    voxel_size_a: float | None = None,
    tilt_pixel_size_a: float | None = None,
    sign: int | None = None,
    bin_factor: int | None = None,
    offset_xy_vox=None,
    min_margin: float = MIN_MARGIN,
) -> dict:
    """The ``check-geometry`` stage: :func:`check_geometry` and :func:`judge` of one tomogram
    (MRC) against its tilt series (MRC stack + angles), written as a geometry record (JSON,
    :func:`milopyp.io.geometry.write_geometry`); returns the record.

    ``angles_path``: default ``<tilt series stem>.tlt``/``.rawtlt``; ``name``: default the file
    name up to its first dot; ``voxel_size_a`` / ``tilt_pixel_size_a`` (Å) replace the
    headers'; ``sign``, ``bin_factor`` and ``offset_xy_vox`` (tomogram voxels) pin those parts.
    Raises MilopypError when no sign fits by ``min_margin`` (in [0, 1)).
    """
    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.geometry import write_geometry
    from milopyp.io.mrc import read_tilt_series, read_tomogram

    if not 0 <= min_margin < 1:
        raise MilopypError(f"--min-margin: expected a value in [0, 1), got {min_margin}")
    prepare_outputs(output)
    tomogram_path = Path(tomogram_path)
    name = name or tomogram_name(tomogram_path)
    tomogram, voxel_size_a = read_tomogram(tomogram_path, voxel_size_a=voxel_size_a)
    # memory-mapped where the mode allows: only a few tilt images are read
    stack, angles, tilt_px = read_tilt_series(tilt_series_path, angles_path, mmap=True,
                                              check_finite=False, pixel_size_a=tilt_pixel_size_a)
    record = check_geometry(tomogram, stack, angles, header_ratio=voxel_size_a / tilt_px,
                            bin_factor=bin_factor, sign=sign, offset_xy=offset_xy_vox)
    record = judge(record, name=name, tilt_series=str(tilt_series_path), min_margin=min_margin)
    record.update(tomogram=name, tomogram_path=str(tomogram_path),
                  tilt_series_path=str(tilt_series_path), voxel_size_a=voxel_size_a,
                  tilt_pixel_size_a=tilt_px)
    for line in record["warnings"]:
        log.warning("%s", line)
    write_geometry(output, record)
    log.info(
        "%s: sign %+d (%s; NCC %s, margin %.3f), bin %d, offset %.2f, %.2f voxels, contrast %s"
        " -> %s", name, record["sign"], record["verdict"], record["scores"], record["margin"],
        record["bin"], record["offset_x_vox"], record["offset_y_vox"], record["contrast"], output,
    )
    return record
