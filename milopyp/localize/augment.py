"""Siamese-pair augmentation: flips and 90° rotations in the x–y plane, intensity jitter.

The geometric part is a permutation of voxels, so it can be undone exactly on the network
outputs (:func:`undo_flip_rot`) to align the augmented view with the original crop before
the consistency and contrastive losses. Convention, shared by numpy and torch: flip y, flip
x, then rotate by ``k`` quarter turns with ``rot90(axes=(-2, -1))`` (y towards x).
"""

from __future__ import annotations

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
