"""Picks from a heat map: non-maximum suppression by 3D max pooling (particles), or the
centre-line points of its ridges (filaments, :func:`find_ridge_points`).

Methods: "NMS is applied to the predicted heat map using 3D maximum pooling with a
user-defined kernel size" (the paper's 3 for filaments, which ``milopyp localize`` now
replaces by :func:`find_ridge_points`; the defaults:
:meth:`milopyp.shapes.Shape.nms_kernel_vox`). A voxel is a pick when it equals the maximum of
the ``kernel`` box around it (``F.max_pool3d``, stride 1, −inf beyond the volume) and its
score exceeds ``threshold``. Voxels tied on a plateau are all kept, as in CenterNet. The
box maximum is computed separably (the same numbers as one ``F.max_pool3d`` pass, which the
tests check, about 10× faster on the CPU for a 7³ kernel).

The heat map is processed in z-chunks with a halo of ``kernel_z // 2`` slices, so memory is
bounded by a few copies of one chunk and the result equals the unchunked one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import gaussian_filter

from milopyp.errors import MilopypError

#: voxels per chunk when ``chunk_z`` is not given (≈ 64 MB per float32 copy)
CHUNK_VOXELS = 1 << 24


def _kernel(kernel_vox: int | tuple[int, int, int]) -> tuple[int, int, int]:
    k = (kernel_vox,) * 3 if np.isscalar(kernel_vox) else tuple(kernel_vox)
    k = tuple(int(v) for v in k)
    if len(k) != 3 or any(v < 1 or v % 2 == 0 for v in k):
        raise MilopypError(f"NMS kernel: expected an odd size in voxels (or odd z, y, x), got "
                           f"{kernel_vox}")
    return k


def _box_max(volume: torch.Tensor, kernel: tuple[int, int, int]) -> torch.Tensor:
    """Maximum over a (kz, ky, kx) box around every voxel, ignoring voxels beyond the edges:
    ``F.max_pool3d(volume, kernel, stride=1, padding=kernel // 2)`` (−inf padding), computed
    separably (a box maximum is one) with shifted element-wise maxima along z, y and x —
    kz + ky + kx − 3 vectorised passes instead of kz·ky·kx comparisons per voxel."""
    out = volume.clone()
    for axis, k in enumerate(kernel):
        src = out.clone() if k > 1 else out
        for shift in range(1, k // 2 + 1):
            n = out.shape[axis]
            if shift >= n:
                break
            lo = out.narrow(axis, shift, n - shift)
            torch.maximum(lo, src.narrow(axis, 0, n - shift), out=lo)
            hi = out.narrow(axis, 0, n - shift)
            torch.maximum(hi, src.narrow(axis, shift, n - shift), out=hi)
    return out


def find_peaks(
    heatmap: np.ndarray,
    *,
    kernel_vox: int | tuple[int, int, int] = 3,
    threshold: float = 0.25,
    chunk_z: int | None = None,
    max_peaks: int | None = None,
    tomogram: str | None = None,
) -> pd.DataFrame:
    """Local maxima of a heat map [z, y, x] above ``threshold``.

    kernel_vox: NMS box size in voxels, odd, one int or (z, y, x).
    threshold: keep voxels with score > threshold.
    chunk_z: z-slices per chunk (None: about 16 M voxels per chunk).
    max_peaks: keep only the best this many.
    tomogram: when given, a ``tomogram`` column with this name is added first.

    Returns a DataFrame with columns x, y, z (int voxel indices) and score (float), sorted
    by score, highest first (ties in z, y, x raster order).
    """
    if heatmap.ndim != 3:
        raise MilopypError(f"heat map: expected a 3-D array [z, y, x], got shape {heatmap.shape}")
    kz, ky, kx = _kernel(kernel_vox)
    nz, ny, nx = heatmap.shape
    if chunk_z is None:
        chunk_z = max(1, CHUNK_VOXELS // max(1, ny * nx))
    hz = kz // 2
    zs, ys, xs, scores = [], [], [], []
    for z0 in range(0, nz, chunk_z):
        z1 = min(z0 + chunk_z, nz)
        a, b = max(0, z0 - hz), min(nz, z1 + hz)
        sub = torch.from_numpy(np.ascontiguousarray(heatmap[a:b], dtype=np.float32))
        pooled = _box_max(sub, (kz, ky, kx))
        keep = (sub == pooled) & (sub > threshold)
        keep[: z0 - a] = False
        keep[z1 - a:] = False
        idx = torch.nonzero(keep)
        if idx.numel():
            zs.append(idx[:, 0].numpy() + a)
            ys.append(idx[:, 1].numpy())
            xs.append(idx[:, 2].numpy())
            scores.append(sub[keep].numpy())
    cat = (lambda v, dt: np.concatenate(v).astype(dt) if v else np.zeros(0, dtype=dt))
    z, y, x = cat(zs, np.int64), cat(ys, np.int64), cat(xs, np.int64)
    return _pick_table(z, y, x, cat(scores, np.float64), tomogram, max_peaks)


def clear_of_z_faces(z: np.ndarray, depth: int | np.ndarray,
                     margin_vox: float) -> np.ndarray:
    """Which pick centres ``z`` (voxels) lie at least ``margin_vox`` from both the first and
    the last slice of a tomogram ``depth`` slices deep (one depth, or one per pick): ``(N,)``
    bool (all True for a margin of 0). The default margin:
    :func:`milopyp.defaults.z_face_margin_vox`."""
    z = np.asarray(z, dtype=np.float64)
    return (z >= margin_vox) & (z <= depth - 1 - margin_vox)


def _pick_table(z: np.ndarray, y: np.ndarray, x: np.ndarray, score: np.ndarray,
                tomogram: str | None, max_picks: int | None = None) -> pd.DataFrame:
    """Picks given in z, y, x raster order as the table of :func:`find_peaks`: highest
    score first (ties kept in raster order), at most ``max_picks``, ``tomogram`` first
    when given."""
    order = np.argsort(-score, kind="stable")
    if max_picks is not None:
        order = order[:max_picks]
    df = pd.DataFrame({"x": x[order], "y": y[order], "z": z[order], "score": score[order]})
    if tomogram is not None:
        df.insert(0, "tomogram", tomogram)
    return df


#: voxels above the threshold whose Hessian is taken at once (≈ 100 bytes each)
RIDGE_BATCH = 1 << 20

#: the 18 neighbours a voxel's gradient and Hessian are read from, (dz, dy, dx)
_NEIGHBOURS = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
               if 0 < abs(a) + abs(b) + abs(c) <= 2]


def find_ridge_points(
    heatmap: np.ndarray,
    *,
    threshold: float = 0.25,
    smooth_vox: float = 1.0,
    max_offset_vox: float = 0.5,
    tomogram: str | None = None,
) -> pd.DataFrame:
    """Centre-line points of the ridges of a fibre heat map [z, y, x] above ``threshold``.

    A fibre heat map is a tube of high scores along each filament, smooth along its length.
    Local maxima of a box (:func:`find_peaks`) fall only where that ridge happens to bump,
    one every 2-10 voxels, so a bright but smooth filament can give too few picks to trace.
    Here a voxel is a pick when it is the heat map's maximum *across* the ridge: the
    Hessian's two most negative eigenvalues are both negative (curved down in both
    directions across the filament) and the Newton step towards the maximum along each of
    their eigenvectors is at most ``max_offset_vox``. Along the ridge (the third
    eigenvector) nothing is suppressed, so a filament gives about one pick per voxel of
    length. Derivatives are central differences of the 18 nearest neighbours of the heat map
    smoothed by a Gaussian of σ = ``smooth_vox`` (0: none; one float32 copy of the heat map),
    whose voxels above ``threshold`` are the candidates and whose values are the scores (on
    the demo's microtubules the smoothing keeps single bright voxels beside a filament from
    starting a second, false fibre). The outermost voxel layer gives no picks.

    Returns the columns of :func:`find_peaks` (x, y, z int voxel indices, score; highest
    score first; ``tomogram`` first when given).
    """
    if heatmap.ndim != 3:
        raise MilopypError(f"heat map: expected a 3-D array [z, y, x], got shape {heatmap.shape}")
    heat = np.asarray(heatmap, dtype=np.float32)
    if smooth_vox > 0:
        heat = gaussian_filter(heat, float(smooth_vox), mode="nearest")
    found = [np.zeros((0, 3), np.int64)]
    if min(heat.shape) >= 3:
        idx = np.argwhere(heat[1:-1, 1:-1, 1:-1] > threshold) + 1
        for start in range(0, len(idx), RIDGE_BATCH):
            batch = idx[start:start + RIDGE_BATCH]
            found.append(batch[_on_ridge(heat, batch, float(max_offset_vox))])
    z, y, x = np.concatenate(found).T  # raster order: argwhere's, batch after batch
    return _pick_table(z, y, x, heat[z, y, x].astype(np.float64), tomogram)


def _on_ridge(heat: np.ndarray, zyx: np.ndarray, max_offset: float) -> np.ndarray:
    """Whether each voxel ``zyx`` (K, 3), none on the outer layer, is a ridge centre point
    (see :func:`find_ridge_points`)."""
    z, y, x = zyx.T
    at = {d: heat[z + d[0], y + d[1], x + d[2]] for d in _NEIGHBOURS}
    c = heat[z, y, x]
    unit = np.eye(3, dtype=int)
    grad = np.stack([(at[tuple(unit[a])] - at[tuple(-unit[a])]) / 2 for a in range(3)], axis=1)
    hess = np.empty((len(zyx), 3, 3), np.float32)
    for a in range(3):
        hess[:, a, a] = at[tuple(unit[a])] - 2 * c + at[tuple(-unit[a])]
        for b in range(a + 1, 3):
            p, q = unit[a], unit[b]
            hess[:, a, b] = hess[:, b, a] = (at[tuple(p + q)] - at[tuple(p - q)]
                                             - at[tuple(q - p)] + at[tuple(-p - q)]) / 4
    values, vectors = np.linalg.eigh(hess)  # ascending: the two across the ridge first
    keep = (values[:, 0] < 0) & (values[:, 1] < 0)
    for k in (0, 1):
        slope = np.einsum("ij,ij->i", grad, vectors[:, :, k])
        curvature = np.where(values[:, k] < 0, values[:, k], -1.0)
        keep &= np.abs(slope / curvature) <= max_offset
    return keep
