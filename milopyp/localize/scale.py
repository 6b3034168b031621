"""The localiser's working scale: tomograms binned so that a particle spans ~10 voxels.

A network trained at one scale sees particles of one size in voxels; the voxel size of a
campaign (and the particle) decides how many voxels that is. The localiser therefore works
on the tomogram binned by an integer factor chosen from the particle diameter
(:func:`auto_bin_factor`), and reports heat maps on the tomogram's own grid (trilinear
upsampling, :func:`upsample`), so picks, labels and thresholds never change units.

Binning by ``b`` is the mean of ``b × b × b`` blocks (the trailing voxels that do not fill a
block are dropped); binned voxel ``k`` covers original voxels ``b·k … b·k + b − 1``, so an
original coordinate ``u`` is ``(u + 0.5) / b − 0.5`` on the binned grid
(:func:`to_binned`). On the independent crowded benchmark (ribosomes 21 voxels across at
12 Å) binning by 2 gave the network twice the context for the same cost.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from milopyp.errors import MilopypError

#: particle diameter, in binned voxels, that :func:`auto_bin_factor` aims for (at least)
TARGET_DIAMETER_VOX = 10.0
MAX_BIN = 8


def auto_bin_factor(diameter_vox: float) -> int:
    """Largest integer bin that leaves the particle at least :data:`TARGET_DIAMETER_VOX`
    voxels across (1 for particles smaller than that), at most :data:`MAX_BIN`."""
    if not diameter_vox > 0:
        raise MilopypError(f"particle diameter: expected a positive number of voxels, got "
                           f"{diameter_vox}")
    return int(min(MAX_BIN, max(1, math.floor(diameter_vox / TARGET_DIAMETER_VOX))))


def binned_shape(shape_zyx: tuple[int, ...], bin_factor: int) -> tuple[int, int, int]:
    out = tuple(int(s) // bin_factor for s in shape_zyx)
    if min(out) < 1:
        raise MilopypError(f"tomogram of shape {tuple(shape_zyx)} is smaller than one "
                           f"{bin_factor}×{bin_factor}×{bin_factor} bin; use a smaller bin")
    return out  # type: ignore[return-value]


def bin_volume(volume: np.ndarray, bin_factor: int, *, chunk_z: int = 16) -> np.ndarray:
    """Mean of ``b × b × b`` blocks of a [z, y, x] array (np.memmap fine: read slab by slab)
    as float32 [z // b, y // b, x // b]; ``b = 1`` returns a float32 view or copy."""
    b = int(bin_factor)
    if b == 1:
        return np.asarray(volume, dtype=np.float32)
    nz, ny, nx = binned_shape(volume.shape, b)
    out = np.empty((nz, ny, nx), dtype=np.float32)
    step = max(1, chunk_z)
    for z0 in range(0, nz, step):
        z1 = min(nz, z0 + step)
        slab = np.asarray(volume[z0 * b:z1 * b, :ny * b, :nx * b], dtype=np.float32)
        out[z0:z1] = slab.reshape(z1 - z0, b, ny, b, nx, b).mean(axis=(1, 3, 5))
    return out


def is_whole(factor: float) -> bool:
    """Whether a bin factor is an integer (to 1e-6): those bin by block means."""
    return abs(float(factor) - round(float(factor))) < 1e-6


def resampled_shape(shape_zyx: tuple[int, ...], factor: float) -> tuple[int, int, int]:
    """Shape of a [z, y, x] grid whose voxels are ``factor`` voxels of ``shape_zyx`` wide
    (a partial voxel at the far end is dropped, as :func:`bin_volume` drops one)."""
    out = tuple(int(np.floor(int(s) / factor + 1e-9)) for s in shape_zyx)
    if min(out) < 1:
        raise MilopypError(f"tomogram of shape {tuple(shape_zyx)} is smaller than one voxel "
                           f"of {factor:g} of its voxels")
    return out  # type: ignore[return-value]


def _axis_weights(n_in: int, n_out: int, factor: float) -> np.ndarray:
    """(n_out, n_in) float32: output voxel k from the input voxels. Coarser output
    (``factor`` ≥ 1): the mean over the input voxels it covers, ``[k·f, (k + 1)·f)``,
    partial voxels weighed by their overlap (block means for an integer ``f``); finer
    output: linear interpolation at its centre ``(k + 0.5)·f − 0.5`` (edge voxels repeat)."""
    w = np.zeros((n_out, n_in), dtype=np.float64)
    k = np.arange(n_out)
    if factor >= 1.0:
        lo, hi = k * factor, (k + 1) * factor
        for i in range(int(np.floor(lo.min())), min(n_in, int(np.ceil(hi.max())))):
            w[:, i] = np.clip(np.minimum(hi, i + 1) - np.maximum(lo, i), 0.0, None)
        w /= w.sum(axis=1, keepdims=True)
    else:
        src = np.clip((k + 0.5) * factor - 0.5, 0.0, n_in - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        np.add.at(w, (k, i0), 1.0 - (src - i0))
        np.add.at(w, (k, i1), src - i0)
    return w.astype(np.float32)


def resample_volume(volume: np.ndarray, factor: float, *, chunk_z: int = 16) -> np.ndarray:
    """A [z, y, x] array (np.memmap fine: read slab by slab) on a grid of voxels ``factor``
    of its voxels wide, any positive ``factor`` (:func:`resampled_shape`; float32): the
    area-weighted mean where the new grid is coarser, linear interpolation where finer
    (:func:`_axis_weights`), axis by axis. For an integer ``factor`` this is
    :func:`bin_volume`'s block mean; coordinates map as with :func:`to_binned`."""
    shape = tuple(int(s) for s in volume.shape)
    nz, ny, nx = resampled_shape(shape, factor)
    wz = _axis_weights(shape[0], nz, factor)
    wy = _axis_weights(shape[1], ny, factor)
    wx_t = _axis_weights(shape[2], nx, factor).T.copy()
    out = np.empty((nz, ny, nx), dtype=np.float32)
    for k0 in range(0, nz, max(1, chunk_z)):
        k1 = min(nz, k0 + max(1, chunk_z))
        used = np.flatnonzero(wz[k0:k1].any(axis=0))
        i0, i1 = int(used[0]), int(used[-1]) + 1
        slab = np.asarray(volume[i0:i1], dtype=np.float32) @ wx_t  # (z, y, nx)
        slab = np.matmul(wy, slab)  # (z, ny, nx)
        out[k0:k1] = np.tensordot(wz[k0:k1, i0:i1], slab, axes=(1, 0))
    return out


def to_binned(xyz: np.ndarray, bin_factor: int) -> np.ndarray:
    """(N, 3) coordinates in voxels of the tomogram -> voxels of the binned tomogram."""
    return (np.asarray(xyz, dtype=np.float64) + 0.5) / bin_factor - 0.5


def from_binned(xyz: np.ndarray, bin_factor: int) -> np.ndarray:
    """(N, 3) coordinates in voxels of the binned tomogram -> voxels of the tomogram (the
    inverse of :func:`to_binned`)."""
    return (np.asarray(xyz, dtype=np.float64) + 0.5) * bin_factor - 0.5


def _source(n_out: int, n_in: int, b: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation sources of output positions 0..n_out−1 on a grid binned by b."""
    src = np.clip((np.arange(n_out) + 0.5) / b - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def upsample(binned: np.ndarray, shape_zyx: tuple[int, int, int], bin_factor: float, *,
             out: np.ndarray | None = None, chunk_z: int = 8) -> np.ndarray:
    """Trilinear upsampling of a binned [z, y, x] map back to ``shape_zyx`` (the inverse
    grid of :func:`bin_volume`, or of :func:`resample_volume` for a factor that is not an
    integer; positions beyond the last full bin take the edge value). Writes into ``out``
    (float32, e.g. a np.memmap) slab by slab when given."""
    b = round(bin_factor) if is_whole(bin_factor) else float(bin_factor)
    shape_zyx = tuple(int(s) for s in shape_zyx)
    if out is None:
        out = np.empty(shape_zyx, dtype=np.float32)
    if b == 1:
        out[...] = binned
        return out
    (z0s, z1s, wz), (y0s, y1s, wy), (x0s, x1s, wx) = (
        _source(n, m, b) for n, m in zip(shape_zyx, binned.shape))
    src = torch.from_numpy(np.ascontiguousarray(binned, dtype=np.float32))
    ty0, ty1 = torch.from_numpy(y0s), torch.from_numpy(y1s)
    tx0, tx1 = torch.from_numpy(x0s), torch.from_numpy(x1s)
    twy, twx = torch.from_numpy(wy)[:, None], torch.from_numpy(wx)
    for a in range(0, shape_zyx[0], chunk_z):
        e = min(shape_zyx[0], a + chunk_z)
        w = torch.from_numpy(wz[a:e])[:, None, None]
        s = src[z0s[a:e]] * (1 - w) + src[z1s[a:e]] * w  # (k, ny_b, nx_b)
        s = s[:, ty0] * (1 - twy) + s[:, ty1] * twy  # (k, ny, nx_b)
        s = s[:, :, tx0] * (1 - twx) + s[:, :, tx1] * twx  # (k, ny, nx)
        out[a:e] = s.numpy()
    return out
