"""2D network inputs per candidate: tilt-series patch averages (P_t) and central slices (P_s).

Geometry (eq. 1, tilt axis parallel to y): a tomogram point ``(x, y, z)`` (voxels, 0-based)
appears in the tilt image at angle θ at

    x_θ = (x - cx) cos θ + sign · (z - cz) sin θ + px + ox,        y_θ = y - cy + py + oy,

with tomogram centre ``(cx, cy, cz) = ((nx-1)/2, (ny-1)/2, (nz-1)/2)``, image centre
``(px, py) = ((tx-1)/2, (ty-1)/2)``, ``sign`` = +1 (a tomogram mirrored in z, or angles of
the opposite sign: -1) and a constant offset ``(ox, oy)`` (pixels); :mod:`milopyp.geometry`
detects sign, offset and binning from the data. Tilt images must have the tomogram's pixel
size.

Patches are ``(N, size, size)`` arrays indexed ``[y, x]``; the candidate sits at pixel
``[size // 2, size // 2]``. Tilt patches are sampled bilinearly at the sub-pixel position
``(x_θ, y_θ)``; slice patches use the nearest voxel. Outside the image/volume the patch is
padded with the mean of the image/volume. Each patch is then normalised to zero mean and unit
standard deviation (a constant patch becomes zeros).

:func:`run` is the ``milopyp patches`` stage: it reads a tomogram, its candidates and
optionally its tilt series and geometry record, and writes the patch file
(:mod:`milopyp.io.exploration`).
"""

from __future__ import annotations

import logging

import numpy as np

from milopyp.errors import MilopypError
from milopyp.io.mrc import tomogram_name

log = logging.getLogger(__name__)

_CHUNK = 512  # candidates processed at once (bounds the memory of the gathers)


def _as_xyz(xyz) -> np.ndarray:
    arr = np.asarray(xyz, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise MilopypError(
            f"expected candidate coordinates (N, 3) in x, y, z order, got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise MilopypError("candidate coordinates contain NaN/Inf; fix the candidate table")
    return arr


def _check_size(size: int) -> int:
    size = int(size)
    if size < 2:
        raise MilopypError(f"patch size must be >= 2 pixels, got {size}")
    return size


def normalize_patches(patches: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per patch (last two axes) zero mean and unit std; float32, same shape."""
    p = np.asarray(patches, dtype=np.float32)
    mean = p.mean(axis=(-2, -1), keepdims=True)
    std = p.std(axis=(-2, -1), keepdims=True)
    return ((p - mean) / np.where(std > eps, std, 1.0)).astype(np.float32)


def project_xyz(
    xyz, angles_deg, shape_zyx, tilt_shape_yx, *, sign: int = 1, offset_xy=(0.0, 0.0)
) -> np.ndarray:
    """Positions ``(x_θ, y_θ)`` of tomogram points in each tilt image (eq. 1).

    xyz: ``(N, 3)`` x, y, z voxels of a tomogram of shape ``shape_zyx``; angles_deg: ``(n,)``;
    tilt_shape_yx: ``(ty, tx)``; sign: ±1, the sign of the ``(z - cz) sin θ`` term;
    offset_xy: ``(ox, oy)`` pixels added to every position. Returns float64 ``(n, N, 2)`` with
    ``[..., 0] = x_θ`` and ``[..., 1] = y_θ`` in pixels of the tilt image.
    """
    if sign not in (1, -1):
        raise MilopypError(f"projection sign must be +1 or -1, got {sign!r}")
    pts = _as_xyz(xyz)
    nz, ny, nx = (int(v) for v in shape_zyx)
    ty, tx = (int(v) for v in tilt_shape_yx)
    theta = np.deg2rad(np.atleast_1d(np.asarray(angles_deg, dtype=np.float64)))[:, None]
    cx, cy, cz = (nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2
    px, py = (tx - 1) / 2, (ty - 1) / 2
    ox, oy = (float(v) for v in offset_xy)
    x_t = (pts[:, 0] - cx) * np.cos(theta) + sign * (pts[:, 2] - cz) * np.sin(theta) + px + ox
    y_t = np.broadcast_to(pts[:, 1] - cy + py + oy, x_t.shape)
    return np.stack([x_t, y_t], axis=-1)


def _bilinear_patches(image: np.ndarray, centres_xy: np.ndarray, size: int) -> np.ndarray:
    """``(N, size, size)`` patches of a 2-D ``[y, x]`` image around sub-pixel centres.

    Pixel ``[j, i]`` of a patch samples position ``(x - size//2 + i, y - size//2 + j)``
    bilinearly; outside the image the image mean is used.
    """
    half = size // 2
    pad = size + 2
    fill = float(image.mean())
    padded = np.pad(image.astype(np.float32, copy=False), pad, constant_values=fill)
    ph, pw = padded.shape
    out = np.empty((len(centres_xy), size, size), dtype=np.float32)
    ar = np.arange(size + 1)
    for s in range(0, len(centres_xy), _CHUNK):
        c = centres_xy[s : s + _CHUNK]
        x0 = np.floor(c[:, 0])
        y0 = np.floor(c[:, 1])
        fx = (c[:, 0] - x0).astype(np.float32)[:, None, None]
        fy = (c[:, 1] - y0).astype(np.float32)[:, None, None]
        ix = x0.astype(np.int64) - half + pad
        iy = y0.astype(np.int64) - half + pad
        # a window that leaves the padded image lies wholly outside the image: all fill
        outside = (ix < 0) | (iy < 0) | (ix > pw - size - 1) | (iy > ph - size - 1)
        ix = np.clip(ix, 0, pw - size - 1)
        iy = np.clip(iy, 0, ph - size - 1)
        win = padded[iy[:, None, None] + ar[None, :, None], ix[:, None, None] + ar[None, None, :]]
        block = (1 - fy) * ((1 - fx) * win[:, :-1, :-1] + fx * win[:, :-1, 1:]) + fy * (
            (1 - fx) * win[:, 1:, :-1] + fx * win[:, 1:, 1:]
        )
        block[outside] = fill
        out[s : s + _CHUNK] = block
    return out


def tilt_patches(
    tilt_series: np.ndarray,
    angles_deg,
    xyz,
    shape_zyx,
    *,
    size: int = 64,
    max_angle_deg: float = 15.0,
    normalize: bool = True,
    sign: int = 1,
    offset_xy=(0.0, 0.0),
) -> np.ndarray:
    """Mean of the tilt-image patches at ``(x_θ, y_θ)`` over tilts with ``|θ| <= max_angle_deg``.

    tilt_series: ``[n, ty, tx]`` (same pixel size as the tomogram); angles_deg: ``(n,)``;
    xyz: ``(N, 3)`` x, y, z voxels of a tomogram of shape ``shape_zyx``; sign, offset_xy: the
    geometry of :func:`project_xyz`. Returns float32 ``(N, size, size)`` indexed ``[y, x]``
    (bilinear sampling; normalised if ``normalize``).
    """
    size = _check_size(size)
    ts = np.asarray(tilt_series)
    if ts.ndim != 3:
        raise MilopypError(f"expected a tilt series [n, y, x], got shape {ts.shape}")
    angles = np.atleast_1d(np.asarray(angles_deg, dtype=np.float64))
    if angles.size != ts.shape[0]:
        raise MilopypError(
            f"tilt series has {ts.shape[0]} images but {angles.size} angles were given"
        )
    pts = _as_xyz(xyz)
    use = np.flatnonzero(np.abs(angles) <= max_angle_deg + 1e-9)
    if use.size == 0:
        raise MilopypError(
            f"no tilt image within ±{max_angle_deg:g}° (angles {angles.min():g}.."
            f"{angles.max():g}); raise max_angle_deg"
        )
    pos = project_xyz(pts, angles[use], shape_zyx, ts.shape[1:], sign=sign, offset_xy=offset_xy)
    acc = np.zeros((len(pts), size, size), dtype=np.float32)
    for k, i in enumerate(use):
        acc += _bilinear_patches(np.asarray(ts[i], dtype=np.float32), pos[k], size)
    acc /= np.float32(use.size)
    return normalize_patches(acc) if normalize else acc


def slice_patches(
    tomogram: np.ndarray, xyz, *, size: int = 64, n_slices: int = 3, normalize: bool = True
) -> np.ndarray:
    """Mean of ``n_slices`` z-slices centred on each candidate, cut ``size x size`` around it.

    tomogram: ``[z, y, x]``; xyz: ``(N, 3)`` x, y, z voxels (rounded to the nearest voxel).
    Slices ``z - (n_slices-1)//2 .. z + n_slices//2``. Returns float32 ``(N, size, size)``
    indexed ``[y, x]`` with the candidate at ``[size//2, size//2]``; voxels outside the volume
    count as the volume mean.
    """
    size = _check_size(size)
    n_slices = int(n_slices)
    if n_slices < 1:
        raise MilopypError(f"n_slices must be >= 1, got {n_slices}")
    vol = np.asarray(tomogram)
    if vol.ndim != 3:
        raise MilopypError(f"expected a tomogram [z, y, x], got shape {vol.shape}")
    pts = np.rint(_as_xyz(xyz)).astype(np.int64)
    nz, ny, nx = vol.shape
    fill = np.float32(vol.mean(dtype=np.float64))
    off = np.arange(size) - size // 2
    zoff = np.arange(n_slices) - (n_slices - 1) // 2
    out = np.empty((len(pts), size, size), dtype=np.float32)
    for s in range(0, len(pts), _CHUNK):
        p = pts[s : s + _CHUNK]
        zi = p[:, 2:3] + zoff  # (M, S)
        yi = p[:, 1:2] + off  # (M, size)
        xi = p[:, 0:1] + off
        zok, yok, xok = (zi >= 0) & (zi < nz), (yi >= 0) & (yi < ny), (xi >= 0) & (xi < nx)
        vals = vol[
            np.clip(zi, 0, nz - 1)[:, :, None, None],
            np.clip(yi, 0, ny - 1)[:, None, :, None],
            np.clip(xi, 0, nx - 1)[:, None, None, :],
        ].astype(np.float32, copy=False)
        ok = zok[:, :, None, None] & yok[:, None, :, None] & xok[:, None, None, :]
        out[s : s + _CHUNK] = np.where(ok, vals, fill).mean(axis=1)
    return normalize_patches(out) if normalize else out


def bin_tilt_series(tilt_series: np.ndarray, factor: int) -> np.ndarray:
    """Bin ``[n, ty, tx]`` images by an integer factor (block mean, centre-aligned crop).

    The output keeps the image centre: ``(t - 1) / 2`` maps to ``(t // factor - 1) / 2``
    when the cropped remainder is split evenly between both sides.
    """
    f = int(factor)
    ts = np.asarray(tilt_series, dtype=np.float32)
    if f == 1:
        return ts
    n, ty, tx = ts.shape
    my, mx = ty // f, tx // f
    oy, ox = (ty - my * f) // 2, (tx - mx * f) // 2
    crop = ts[:, oy : oy + my * f, ox : ox + mx * f]
    return crop.reshape(n, my, f, mx, f).mean(axis=(2, 4), dtype=np.float32)


def make_patches(
    tomogram: np.ndarray,
    xyz,
    *,
    size: int = 64,
    n_slices: int = 3,
    tilt_series: np.ndarray | None = None,
    angles_deg=None,
    max_angle_deg: float = 15.0,
    sign: int = 1,
    offset_xy=(0.0, 0.0),
) -> tuple[np.ndarray, list[str]]:
    """Stack the inputs of each candidate: ``(N, C, size, size)`` float32 and channel names.

    Channels are ``["tilt", "slice"]`` (P_t, P_s) with a tilt series, else ``["slice"]``.
    Every channel is normalised per patch. ``sign``, ``offset_xy``: see :func:`project_xyz`.
    """
    slices = slice_patches(tomogram, xyz, size=size, n_slices=n_slices)
    if tilt_series is None:
        return slices[:, None], ["slice"]
    tilts = tilt_patches(
        tilt_series, angles_deg, xyz, np.shape(tomogram), size=size, max_angle_deg=max_angle_deg,
        sign=sign, offset_xy=offset_xy,
    )
    return np.stack([tilts, slices], axis=1), ["tilt", "slice"]


# --------------------------------------------------------------------------- the stage

#: patch side (voxels) when neither a size nor a particle diameter is given
DEFAULT_SIZE_VOX = 64


def _match_pixel_size(stack: np.ndarray, tilt_px_a: float, tomo_px_a: float, path) -> np.ndarray:
    """Bin the tilt series to the tomogram's voxel size (integer factors only)."""
    ratio = tomo_px_a / tilt_px_a
    if abs(ratio - 1) <= 0.01:
        return stack
    factor = round(ratio)
    if factor >= 2 and abs(ratio - factor) <= 0.02 * factor:
        log.info("binning %s by %d (%.3g Å -> %.3g Å per pixel)", path, factor, tilt_px_a,
                 tomo_px_a)
        return bin_tilt_series(stack, factor)
    raise MilopypError(
        f"{path}: tilt-series pixel size {tilt_px_a:g} Å does not match the tomogram voxel size "
        f"{tomo_px_a:g} Å (ratio {ratio:.3g}, not a whole number); bin the tilt series to the "
        f"tomogram's pixel size, or pass --tilt-pixel-size-a / --voxel-size-a if a header is "
        "wrong"
    )


def _apply_geometry(stack: np.ndarray, path) -> tuple[np.ndarray, dict]:
    """Bin (and, for inverted contrast, negate) the tilt series as the geometry record says;
    return it with the projection settings for :func:`make_patches`."""
    from milopyp.io.geometry import read_geometry

    record = read_geometry(path)
    if record["contrast"] == "inverted":
        stack = -stack
    stack = bin_tilt_series(stack, int(record["bin"]))
    log.info(
        "%s: sign %+d, bin %d, offset %.2f, %.2f voxels, contrast %s", path, record["sign"],
        record["bin"], record["offset_x_vox"], record["offset_y_vox"], record["contrast"],
    )
    offset = (float(record["offset_x_vox"]), float(record["offset_y_vox"]))
    return stack, {"sign": int(record["sign"]), "offset_xy": offset}


def run(
    tomogram_path,
    candidates_path,
    output,
    *,
    tilt_series_path=None,
    angles_path=None,
    size_vox: int | None = None,
    particle_diameter_a: float | None = None,
    n_slices: int = 3,
    max_angle_deg: float = 15.0,
    voxel_size_a: float | None = None,
    tilt_pixel_size_a: float | None = None,
    geometry_path=None,
    invert_tilt_series: bool = False,
) -> None:
    """The ``patches`` stage: cut the inputs of every candidate of one tomogram and write
    the patch file ``output`` (:func:`milopyp.io.exploration.write_patches`).

    size_vox: patch side in voxels; None: :func:`milopyp.defaults.patch_size_vox` of
    ``particle_diameter_a`` (Å) when given, else :data:`DEFAULT_SIZE_VOX`. voxel_size_a,
    tilt_pixel_size_a: Å, None = from the headers. geometry_path: the record of ``milopyp
    check-geometry`` (else sign +1, no offset, binned by the pixel sizes).
    """
    from milopyp.defaults import patch_size_vox
    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.coords import check_inside, read_coordinates, xyz_array
    from milopyp.io.exploration import write_patches
    from milopyp.io.mrc import read_tilt_series, read_tomogram

    if size_vox is not None and size_vox < 8:
        raise MilopypError(f"--size-vox must be >= 8 pixels, got {size_vox}")
    if n_slices < 1:
        raise MilopypError(f"--slices must be >= 1, got {n_slices}")
    if particle_diameter_a is not None and particle_diameter_a <= 0:
        raise MilopypError(f"--particle-diameter-a must be > 0 Å, got {particle_diameter_a}")
    prepare_outputs(output)
    name = tomogram_name(tomogram_path)
    tomogram, voxel_size_a = read_tomogram(tomogram_path, voxel_size_a=voxel_size_a)
    if size_vox is None:
        size_vox = (DEFAULT_SIZE_VOX if particle_diameter_a is None
                    else patch_size_vox(particle_diameter_a, voxel_size_a))
    cand = read_coordinates(
        candidates_path, tomogram=name, voxel_size_a=voxel_size_a, shape_zyx=tomogram.shape
    )
    if len(cand) == 0:
        raise MilopypError(
            f"{candidates_path}: no candidates in {candidates_path}; lower "
            f"candidates.threshold_std or check particle_diameter"
        )
    names = cand["tomogram"].unique()
    if len(names) == 1 and names[0] != name:  # e.g. a preprocessed copy with another stem
        log.info("%s: using the candidates' tomogram name %r", tomogram_path, names[0])
        name = str(names[0])
    check_inside(cand, tomogram.shape, candidates_path)
    xyz = xyz_array(cand)
    score = cand["score"].to_numpy(dtype=np.float64) if "score" in cand.columns else None

    stack = angles = None
    geometry = {"sign": 1, "offset_xy": (0.0, 0.0)}
    if tilt_series_path is not None:
        stack, angles, tilt_px_a = read_tilt_series(
            tilt_series_path, angles_path, pixel_size_a=tilt_pixel_size_a
        )
        if invert_tilt_series:
            stack = -stack
        if geometry_path is not None:
            stack, geometry = _apply_geometry(stack, geometry_path)
        else:
            stack = _match_pixel_size(stack, tilt_px_a, voxel_size_a, tilt_series_path)
    elif angles_path is not None or geometry_path is not None:
        raise MilopypError(
            "--angles/--geometry given without --tilt-series; give the tilt series too"
        )

    patches, channels = make_patches(
        tomogram, xyz, size=size_vox, n_slices=n_slices, tilt_series=stack, angles_deg=angles,
        max_angle_deg=max_angle_deg, **geometry,
    )
    write_patches(output, patches, channels, xyz, score, name, voxel_size_a)
    log.info("%s: %d patches %s (%s) -> %s", name, len(xyz), patches.shape[1:],
             ", ".join(channels), output)
