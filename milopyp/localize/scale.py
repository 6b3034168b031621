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


def to_binned(xyz: np.ndarray, bin_factor: int) -> np.ndarray:
    """(N, 3) coordinates in voxels of the tomogram -> voxels of the binned tomogram."""
    return (np.asarray(xyz, dtype=np.float64) + 0.5) / bin_factor - 0.5


def from_binned(xyz: np.ndarray, bin_factor: int) -> np.ndarray:
    """(N, 3) coordinates in voxels of the binned tomogram -> voxels of the tomogram (the
    inverse of :func:`to_binned`)."""
    return (np.asarray(xyz, dtype=np.float64) + 0.5) * bin_factor - 0.5


def _source(n_out: int, n_in: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation sources of output positions 0..n_out−1 on a grid binned by b."""
    src = np.clip((np.arange(n_out) + 0.5) / b - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def upsample(binned: np.ndarray, shape_zyx: tuple[int, int, int], bin_factor: int, *,
             out: np.ndarray | None = None, chunk_z: int = 8) -> np.ndarray:
    """Trilinear upsampling of a binned [z, y, x] map back to ``shape_zyx`` (the inverse
    grid of :func:`bin_volume`; positions beyond the last full bin take the edge value).
    Writes into ``out`` (float32, e.g. a np.memmap) slab by slab when given."""
    b = int(bin_factor)
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
