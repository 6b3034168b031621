"""Siamese-pair augmentation: flips and 90° rotations in the x–y plane, intensity jitter.

The geometric part is a permutation of voxels, so it can be undone exactly on the network
outputs (:func:`undo_flip_rot`) to align the augmented view with the original crop before
the consistency and contrastive losses. Convention, shared by numpy and torch: flip y, flip
x, then rotate by ``k`` quarter turns with ``rot90(axes=(-2, -1))`` (y towards x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FlipRot:
    """A flip/rotation of the last two axes (y, x): flip y, flip x, then rot90 by ``k``."""

    k: int = 0
    flip_y: bool = False
    flip_x: bool = False


def random_flip_rot(rng: np.random.Generator, *, square: bool = True) -> FlipRot:
    """Draw one of the 8 (square y–x) or 4 (non-square: k ∈ {0, 2}) symmetries."""
    k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    return FlipRot(k=k, flip_y=bool(rng.integers(2)), flip_x=bool(rng.integers(2)))


def apply_flip_rot(a: np.ndarray, op: FlipRot) -> np.ndarray:
    """Apply ``op`` to the last two axes (y, x) of a numpy array (returns a copy)."""
    if op.flip_y:
        a = np.flip(a, axis=-2)
    if op.flip_x:
        a = np.flip(a, axis=-1)
    return np.ascontiguousarray(np.rot90(a, op.k, axes=(-2, -1)))


def undo_flip_rot(t: torch.Tensor, op: FlipRot) -> torch.Tensor:
    """Invert ``op`` on the last two axes of a tensor (differentiable)."""
    t = torch.rot90(t, -op.k, dims=(-2, -1))
    dims = [d for d, f in ((-2, op.flip_y), (-1, op.flip_x)) if f]
    return torch.flip(t, dims=dims) if dims else t


def jitter_intensity(a: np.ndarray, rng: np.random.Generator, *, scale: float = 0.2,
                     shift: float = 0.2, noise: float = 0.1) -> np.ndarray:
    """``a · U(1 ± scale) + U(±shift) + N(0, U(0, noise)²)`` for a normalised crop (float32)."""
    s = 1.0 + rng.uniform(-scale, scale)
    b = rng.uniform(-shift, shift)
    sd = rng.uniform(0.0, noise)
    out = a * s + b + rng.normal(0.0, 1.0, size=a.shape) * sd
    return out.astype(np.float32)


def flip_rot_index_map(op: FlipRot, h: int, w: int) -> torch.Tensor:
    """(h·w,) long tensor: for each voxel (y, x) of the original crop (flat y·w + x), the flat
    position of the same voxel in the augmented crop (``apply_flip_rot`` output).

    ``undo_flip_rot(b, op)[v] == b.flatten()[map[v]]`` for any augmented image ``b``.
    """
    grid = torch.arange(h * w).reshape(h, w)
    return undo_flip_rot(grid, op).reshape(-1)


def rotated_crop(
    volume: np.ndarray,
    origin_zyx: np.ndarray,
    crop_zyx: tuple[int, int, int],
    angle_rad: float,
    xyz: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The crop ``[origin, origin + crop)`` of ``volume`` [z, y, x] rotated in the x–y plane
    by ``angle_rad`` about the crop's centre (linear interpolation; voxels beyond the volume
    repeat its edge), and the points ``xyz`` ((N, 3) x, y, z voxels of the volume) in the
    rotated crop's own voxel coordinates (x, y, z from its first voxel).

    Used for filament targets: a filament has one direction per tomogram, so a few labels
    along one filament would otherwise teach only that direction (and the 90° multiples of
    :func:`random_flip_rot`). Returns (crop float32 [cz, cy, cx], (N, 3) float64).
    """
    from scipy.ndimage import map_coordinates

    cz, cy, cx = (int(c) for c in crop_zyx)
    z0 = int(origin_zyx[0])
    centre_yx = np.array([origin_zyx[1] + (cy - 1) / 2, origin_zyx[2] + (cx - 1) / 2])
    reach = int(np.ceil(0.5 * math.hypot(cy, cx))) + 2
    lo = np.maximum(np.floor(centre_yx).astype(int) - reach, 0)
    hi = np.minimum(np.floor(centre_yx).astype(int) + reach + 2, volume.shape[1:])
    box = np.asarray(volume[z0:z0 + cz, lo[0]:hi[0], lo[1]:hi[1]], dtype=np.float32)
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    v, u = np.meshgrid(np.arange(cy) - (cy - 1) / 2, np.arange(cx) - (cx - 1) / 2,
                       indexing="ij")  # v: rows (y), u: columns (x) of the output
    src_x = centre_yx[1] + c * u - s * v - lo[1]
    src_y = centre_yx[0] + s * u + c * v - lo[0]
    out = np.empty((cz, cy, cx), dtype=np.float32)
    for k in range(cz):
        out[k] = map_coordinates(box[k], [src_y, src_x], order=1, mode="nearest")
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    dx, dy = xyz[:, 0] - centre_yx[1], xyz[:, 1] - centre_yx[0]
    local = np.stack([c * dx + s * dy + (cx - 1) / 2, -s * dx + c * dy + (cy - 1) / 2,
                      xyz[:, 2] - z0], axis=1)
    return out, local
