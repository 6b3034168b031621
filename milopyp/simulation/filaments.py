"""Filaments of the simulator's phantom: centre lines (x,y,z voxels) that cross the volume in
the x-y plane, gently curved, and the hollow tubes drawn around them into a ``[z, y, x]``
density. Used by :mod:`milopyp.simulation.phantom`.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy.spatial import cKDTree

log = logging.getLogger(__name__)


def _filament_curve(rng, shape_zyx, radius_vox: float, spacing: float) -> np.ndarray:
    """Centre line (x,y,z voxels) crossing the volume in the x-y plane, gently curved."""
    nz, ny, nx = shape_zyx
    zlo, zhi = radius_vox + 1, nz - 1 - radius_vox - 1
    z0 = rng.uniform(zlo, zhi) if zhi > zlo else (nz - 1) / 2
    phi = rng.uniform(0, np.pi)
    d = np.array([np.cos(phi), np.sin(phi), 0.0])
    perp = np.array([-d[1], d[0], 0.0])
    half_len = 0.5 * math.hypot(nx, ny) + radius_vox
    start = np.array([(nx - 1) / 2, (ny - 1) / 2, z0]) + perp * rng.uniform(-0.25, 0.25) * min(
        nx, ny
    )
    sagitta = rng.uniform(-0.08, 0.08) * 2 * half_len  # gentle bend
    t = np.arange(-half_len, half_len + spacing, spacing)
    bend = sagitta * (1.0 - (t / half_len) ** 2)
    return start + t[:, None] * d + bend[:, None] * perp


def _draw_filament(volume, points: np.ndarray, r_out: float, r_in: float, width: float) -> None:
    """Add a hollow tube (radii in voxels) around the centre line ``points`` (x,y,z)."""
    shape = np.asarray(volume.shape)
    spacing = max(1, int(r_out))  # anchor every ~r_out / 2 voxels (points are 0.5 apart)
    reach = math.ceil(1.25 * r_out + 3)
    anchors = np.rint(points[::spacing][:, ::-1]).astype(np.int64)  # z,y,x
    mask = np.zeros(volume.shape, dtype=bool)
    for a in anchors:  # mark a cube around each anchor (clipped to the volume)
        lo = np.maximum(a - reach, 0)
        hi = np.minimum(a + reach + 1, shape)
        if np.all(hi > lo):
            mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    flat = np.flatnonzero(mask)
    zyx = np.stack(np.unravel_index(flat, volume.shape), axis=1)
    dist, _ = cKDTree(points).query(zyx[:, ::-1].astype(np.float64))
    dens = 0.5 * (1 - np.tanh((dist - r_out) / width)) - 0.5 * (1 - np.tanh((dist - r_in) / width))
    volume.reshape(-1)[flat] += dens.astype(volume.dtype)


def _steered_curve(
    rng, shape_zyx, radius_vox: float, spacing: float, z0: float, phi: float, slope: float
) -> np.ndarray:
    """Like :func:`_filament_curve` with a given height ``z0`` (at the middle), direction
    ``phi`` (radians in x-y) and z slope (voxels of z per voxel along the filament)."""
    _nz, ny, nx = shape_zyx
    d = np.array([np.cos(phi), np.sin(phi), 0.0])
    perp = np.array([-d[1], d[0], 0.0])
    half_len = 0.5 * math.hypot(nx, ny) + radius_vox
    offset = rng.uniform(-0.25, 0.25) * min(nx, ny)
    start = np.array([(nx - 1) / 2, (ny - 1) / 2, z0]) + perp * offset
    sagitta = rng.uniform(-0.08, 0.08) * 2 * half_len
    t = np.arange(-half_len, half_len + spacing, spacing)
    bend = sagitta * (1.0 - (t / half_len) ** 2)
    pts = start + t[:, None] * d + bend[:, None] * perp
    pts[:, 2] += slope * t
    return pts


def _inside(points: np.ndarray, shape_zyx, margin: float) -> np.ndarray:
    """The rows of ``points`` (x,y,z) within ``margin`` voxels of the volume (or inside)."""
    upper = np.asarray(shape_zyx)[::-1] - 1 + margin
    return points[np.all((points >= -margin) & (points <= upper), axis=1)]


def _crosses_in_projection(a: np.ndarray, b: np.ndarray, shape_zyx, margin: float) -> bool:
    """True when the x-y projections of two centre lines meet inside the volume."""
    a_in, b_in = _inside(a, shape_zyx, -margin), _inside(b, shape_zyx, -margin)
    if not len(a_in) or not len(b_in):
        return False
    dist, _ = cKDTree(b_in[:, :2]).query(a_in[:, :2])
    return bool(dist.min() < 1.0)


def _crossing_filaments(
    rng, shape_zyx, n: int, radius_vox: float, gap_vox: float, spacing: float = 0.5
) -> list[np.ndarray]:
    """Centre lines (x,y,z voxels, ``spacing`` apart) of ``n`` filaments lying roughly in x-y.

    The first two cross in projection, one above the other: flat (constant z), their heights
    ``2 * radius_vox + gap_vox`` plus 0.5-3 voxels apart (when the slab is thick enough). The
    others have random directions and a gentle z slope; no two centre lines come closer than
    ``2 * radius_vox + gap_vox`` inside the volume (curves that cannot be placed are skipped).
    """
    nz = shape_zyx[0]
    zlo, zhi = radius_vox + 1, nz - 2 - radius_vox
    sep = 2 * radius_vox + gap_vox
    curves: list[np.ndarray] = []
    if n >= 2 and zhi - zlo >= sep + 0.5:
        for _attempt in range(50):
            dz = sep + rng.uniform(0.5, min(3.0, zhi - zlo - sep))
            z0 = rng.uniform(zlo, zhi - dz)
            phi = rng.uniform(0, np.pi)
            pair = [
                _steered_curve(rng, shape_zyx, radius_vox, spacing, z0, phi, 0.0),
                _steered_curve(
                    rng, shape_zyx, radius_vox, spacing, z0 + dz,
                    phi + rng.uniform(np.pi / 3, 2 * np.pi / 3), 0.0,
                ),
            ]
            if _crosses_in_projection(*pair, shape_zyx, radius_vox):
                curves.extend(pair)
                break
    half_len = 0.5 * math.hypot(shape_zyx[1], shape_zyx[2])
    best = list(curves)
    for _restart in range(10):  # a bad early curve can block the rest: start them again
        trial = list(curves)
        while len(trial) < n:
            pts = _free_curve(rng, shape_zyx, trial, radius_vox, sep, spacing, half_len)
            if pts is None:
                break
            trial.append(pts)
        if len(trial) > len(best):
            best = trial
        if len(best) == n:
            break
    if len(best) < n:
        log.warning("could place only %d of %d filaments without touching", len(best), n)
    return best


def _free_curve(rng, shape_zyx, curves, radius_vox, sep, spacing, half_len, tries=200):
    """A gently sloped curve at least ``sep`` voxels from ``curves`` in the volume, or None."""
    nz = shape_zyx[0]
    zlo, zhi = radius_vox + 1, nz - 2 - radius_vox
    trees = [cKDTree(_inside(c, shape_zyx, radius_vox)) for c in curves]
    for _attempt in range(tries):
        slope = rng.uniform(-0.04, 0.04)
        lo, hi = zlo + abs(slope) * half_len, zhi - abs(slope) * half_len
        if hi < lo:
            slope, lo, hi = 0.0, zlo, max(zlo, zhi)
        pts = _steered_curve(
            rng, shape_zyx, radius_vox, spacing, rng.uniform(lo, hi), rng.uniform(0, np.pi), slope
        )
        inside = _inside(pts, shape_zyx, radius_vox)
        if len(inside) and all(tree.query(inside)[0].min() >= sep for tree in trees):
            return pts
    return None
