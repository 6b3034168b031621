"""Heat-map training targets from labelled particle centres (positive-unlabelled setting).

Methods, "Framework for particle detection": around each labelled centre p̃ (rounded to the
nearest voxel) a Gaussian ``exp(−|v − p̃|² / 2σ²)`` is splatted, so the centre voxel is
exactly 1 (true positive) and its neighbours are soft positives (0 < y < 1); every other
voxel is unlabelled, y = −1. Overlapping Gaussians take the maximum. Known negatives
(points the user marked as not the target) make the voxels within the particle radius of
them y = −2 (:data:`NEGATIVE`) wherever no positive reaches. For filaments
(``shape="fiber"``) every voxel within ``fiber_radius_vox`` (paper: 3,
:data:`milopyp.defaults.FIBER_TUBE_RADIUS_VOX`) of a label is 1, with no Gaussian.

σ follows the particle size: ``sigma_vox = radius_vox / 3`` (at least 1 voxel), and the
Gaussian is cut at 3σ, i.e. at the particle radius, so the soft positives are exactly the
voxels inside the labelled particle (paper: "σ_k is determined by the particle size").
"""

from __future__ import annotations

import numpy as np

from milopyp.defaults import FIBER_TUBE_RADIUS_VOX
from milopyp.errors import MilopypError
from milopyp.shapes import shape as shape_named

#: target value of voxels known not to be the target (explicit negatives)
NEGATIVE = -2.0


def sigma_from_radius(radius_vox: float) -> float:
    """Gaussian σ (voxels) for a particle of radius ``radius_vox`` (voxels): r / 3, ≥ 1."""
    if not radius_vox > 0:
        raise MilopypError(f"particle radius: expected a positive number of voxels, got "
                           f"{radius_vox}; give the particle diameter in Å and the voxel size")
    return max(float(radius_vox) / 3.0, 1.0)


def _check_xyz(xyz: np.ndarray) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3) if np.size(xyz) else np.zeros((0, 3))
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise MilopypError(f"labels: expected an (N, 3) array of x, y, z, got shape {xyz.shape}")
    return xyz


def heatmap_target(
    xyz: np.ndarray,
    shape_zyx: tuple[int, int, int],
    *,
    radius_vox: float,
    shape: str = "globular",
    origin_zyx: tuple[int, int, int] = (0, 0, 0),
    fiber_radius_vox: float = FIBER_TUBE_RADIUS_VOX,
    negatives_xyz: np.ndarray | None = None,
) -> np.ndarray:
    """Target heat map for the box ``[origin, origin + shape_zyx)`` of a tomogram.

    xyz: (N, 3) label centres x, y, z in voxels of the whole tomogram (labels outside the
        box still contribute their tails inside it).
    shape_zyx: size of the box (z, y, x); origin_zyx: its first voxel in the tomogram.
    radius_vox: particle radius in voxels (globular: σ = r/3, cut at r).
    shape: "globular" (Gaussian, centre exactly 1) or "fiber" (1 within fiber_radius_vox).
    negatives_xyz: (M, 3) centres of known non-target objects, x, y, z in voxels of the whole
        tomogram; voxels within ``radius_vox`` of them are −2 unless a positive covers them.

    Returns float32 [z, y, x]: 1 at centres, 0 < y < 1 soft positives, −1 unlabelled,
    −2 known negatives.
    """
    filament = shape_named(shape).filament  # an unknown shape fails here
    xyz = _check_xyz(xyz)
    shape_zyx = tuple(int(s) for s in shape_zyx)
    out = np.full(shape_zyx, -1.0, dtype=np.float32)
    if negatives_xyz is not None and np.size(negatives_xyz):
        neg = _check_xyz(negatives_xyz)
        reach_n = max(1, int(np.floor(radius_vox)))
        off = np.arange(-reach_n, reach_n + 1)
        dz, dy, dx = np.meshgrid(off, off, off, indexing="ij")
        ball = np.where(dz**2 + dy**2 + dx**2 <= radius_vox**2, NEGATIVE, -1.0)
        _splat(out, np.rint(neg[:, ::-1]).astype(np.int64) - np.asarray(origin_zyx),
               ball.astype(np.float32), reach_n, np.minimum)
    if len(xyz) == 0:
        return out
    centres_zyx = np.rint(xyz[:, ::-1]).astype(np.int64) - np.asarray(origin_zyx, dtype=np.int64)
    if filament:
        reach = int(np.floor(fiber_radius_vox))
    else:
        sigma = sigma_from_radius(radius_vox)
        reach = int(np.floor(3.0 * sigma))
    off = np.arange(-reach, reach + 1)
    dz, dy, dx = np.meshgrid(off, off, off, indexing="ij")
    d2 = (dz**2 + dy**2 + dx**2).astype(np.float64)
    if filament:
        kernel = np.where(d2 <= fiber_radius_vox**2, 1.0, -1.0)
    else:
        kernel = np.exp(-d2 / (2.0 * sigma**2))
        kernel[d2 > (3.0 * sigma) ** 2] = -1.0
    _splat(out, centres_zyx, kernel.astype(np.float32), reach, np.maximum)
    return out


def _splat(out: np.ndarray, centres_zyx: np.ndarray, kernel: np.ndarray, reach: int,
           combine) -> None:
    """Combine (np.maximum / np.minimum) ``kernel`` into ``out`` at each centre, in place."""
    size = np.asarray(out.shape)
    for c in centres_zyx:
        lo = c - reach
        hi = c + reach + 1
        if np.any(hi <= 0) or np.any(lo >= size):
            continue
        a = np.maximum(lo, 0)
        b = np.minimum(hi, size)
        ka, kb = a - lo, b - lo
        region = out[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
        combine(region, kernel[ka[0]:kb[0], ka[1]:kb[1], ka[2]:kb[2]], out=region)


def core_voxels(radius_vox: float, threshold: float = 0.5) -> int:
    """Voxels per globular particle whose Gaussian target exceeds ``threshold``.

    Converts a prior "particle centres per voxel" into "positive (core) voxels per voxel"
    for the contrastive loss, whose positives are the voxels with y > threshold.
    """
    sigma = sigma_from_radius(radius_vox)
    reach = int(np.floor(3.0 * sigma))
    off = np.arange(-reach, reach + 1)
    dz, dy, dx = np.meshgrid(off, off, off, indexing="ij")
    g = np.exp(-(dz**2 + dy**2 + dx**2) / (2.0 * sigma**2))
    return int(max(1, np.count_nonzero(g > threshold)))
