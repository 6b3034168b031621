"""Particle density templates of the simulator (see :mod:`milopyp.simulate`).

Templates are cubes ``[z, y, x]`` of odd size with the particle centred; points inside are
handled in x,y,z order (Å) like the rest of the package. Protein density is 1 with smooth
edges ~0.35 voxel wide.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from milopyp.simulation.parameters import _DEFAULTS


def _ellipsoid(points: np.ndarray, centre, semi_axes, width: float) -> np.ndarray:
    """Smooth indicator of an ellipsoid; points ``(..., 3)`` x,y,z in the same unit as axes."""
    q = (points - np.asarray(centre)) / np.asarray(semi_axes)
    r = np.sqrt(np.sum(q * q, axis=-1))
    signed = (r - 1.0) * min(semi_axes)  # approximate signed distance (negative inside)
    return 0.5 * (1.0 - np.tanh(signed / width))


def _shell(points: np.ndarray, r_out: float, r_in: float, width: float) -> np.ndarray:
    r = np.sqrt(np.sum(points * points, axis=-1))
    outer = 0.5 * (1.0 - np.tanh((r - r_out) / width))
    inner = 0.5 * (1.0 - np.tanh((r - r_in) / width)) if r_in > 0 else 0.0
    return outer - inner


def _template_grid(radius_a: float, voxel_size_a: float) -> tuple[np.ndarray, int]:
    """Points (Å, x,y,z order, shape ``(b, b, b, 3)`` indexed z,y,x) of a cube around 0."""
    half = math.ceil(radius_a / voxel_size_a) + 2
    ax = (np.arange(2 * half + 1) - half) * voxel_size_a
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    return np.stack([x, y, z], axis=-1), half


# Ribosome-like components for a 260 Å particle (Å, x,y,z): large subunit, small subunit
# sitting on top and off-centre, and a stalk -- clearly asymmetric (no mirror plane).
_RIBOSOME_PARTS = (
    ((0.0, 0.0, -22.0), (118.0, 100.0, 82.0)),  # large subunit
    ((18.0, -12.0, 68.0), (92.0, 62.0, 42.0)),  # small subunit
    ((92.0, 58.0, -8.0), (36.0, 22.0, 24.0)),  # stalk
)


def _ribosome(voxel_size_a: float, diameter_a: float) -> np.ndarray:
    scale = diameter_a / 260.0
    width = 0.35 * voxel_size_a
    pts, half = _template_grid(0.62 * diameter_a, voxel_size_a)
    dens = np.zeros(pts.shape[:3])
    for centre, axes in _RIBOSOME_PARTS:
        c = np.asarray(centre) * scale
        a = np.asarray(axes) * scale
        dens = np.maximum(dens, _ellipsoid(pts, c, a, width))
    # re-centre on the centre of mass (sub-voxel shift, linear interpolation)
    com = np.asarray(ndimage.center_of_mass(dens))
    dens = ndimage.shift(dens, half - com, order=1, mode="constant")
    return dens


def _small(voxel_size_a: float, diameter_a: float) -> np.ndarray:
    pts, _half = _template_grid(0.55 * diameter_a, voxel_size_a)
    a = np.array([0.5, 0.38, 0.34]) * diameter_a
    return _ellipsoid(pts, (0.0, 0.0, 0.0), a, 0.35 * voxel_size_a)


def _gold(voxel_size_a: float, diameter_a: float, density: float) -> np.ndarray:
    pts, _half = _template_grid(0.55 * diameter_a, voxel_size_a)
    return density * _shell(pts, diameter_a / 2, 0.0, 0.35 * voxel_size_a)


def _decoy(voxel_size_a: float, diameter_a: float, target_sum: float) -> np.ndarray:
    """Hollow sphere of outer diameter ``diameter_a`` whose integrated density is target_sum."""
    pts, _half = _template_grid(0.55 * diameter_a, voxel_size_a)
    r_out = diameter_a / 2
    width = 0.35 * voxel_size_a
    lo, hi = 0.0, r_out
    for _ in range(40):  # bisection: the integrated density decreases as r_in grows
        mid = 0.5 * (lo + hi)
        if _shell(pts, r_out, mid, width).sum() > target_sum:
            lo = mid
        else:
            hi = mid
    dens = _shell(pts, r_out, lo, width)
    return dens * (target_sum / dens.sum())


# Spike-like membrane protein (Å, for a 200 Å spike; axis +z, base on the membrane at z = 0):
# a stalk (cylinder) and an elongated head wider in x than in y (so the spin about the axis
# is visible), ~110 x 90 x 120 Å; the stalk ends inside the head.
_SPIKE_STALK = (0.0, 100.0, 20.0)  # z from, z to, radius
_SPIKE_HEAD = ((0.0, 0.0, 140.0), (55.0, 45.0, 60.0))  # centre, semi-axes


def _spike_density(points: np.ndarray, scale: float, base_z: float, width: float) -> np.ndarray:
    """Smooth spike density at ``points`` (..., 3) x,y,z Å with the base at ``z = base_z``."""
    z0, z1, radius = (v * scale for v in _SPIKE_STALK)
    rho = np.sqrt(points[..., 0] ** 2 + points[..., 1] ** 2)
    u = points[..., 2] - base_z
    stalk = (
        0.5 * (1.0 - np.tanh((rho - radius) / width))
        * 0.5 * (1.0 - np.tanh((z0 - u) / width))
        * 0.5 * (1.0 - np.tanh((u - z1) / width))
    )
    centre, axes = _SPIKE_HEAD
    head_centre = np.asarray(centre) * scale + np.array([0.0, 0.0, base_z])
    head = _ellipsoid(points, head_centre, np.asarray(axes) * scale, width)
    return np.maximum(stalk, head)


@functools.lru_cache(maxsize=8)
def spike_template(voxel_size_a: float, length_a: float = 200.0) -> tuple[np.ndarray, float]:
    """Spike template ``[z, y, x]`` float32 centred on its centre of mass, and the distance
    (voxels) from that centre to the base along -z.

    The spike is ``length_a`` long from its base (the membrane) to the tip of its head, the
    head ~0.55 x 0.45 x 0.6 ``length_a`` wide (x, y, z), on a stalk 0.2 ``length_a`` wide.
    Placed with a rotation ``R``, its axis points along ``R @ (0, 0, 1)`` and its base lies at
    ``centre - base_offset * R @ (0, 0, 1)``. Cached; do not modify the returned array.
    """
    scale = length_a / 200.0
    width = 0.35 * voxel_size_a
    pts, _half = _template_grid(0.75 * length_a, voxel_size_a)
    dens = _spike_density(pts, scale, -0.5 * length_a, width)
    com_z = float((dens * pts[..., 2]).sum() / dens.sum())  # Å, base at -length / 2
    base_a = 0.5 * length_a + com_z
    reach = max(base_a, length_a - base_a) + _SPIKE_STALK[2] * scale
    pts, _half = _template_grid(reach, voxel_size_a)
    dens = _spike_density(pts, scale, -base_a, width).astype(np.float32)
    dens.setflags(write=False)
    return dens, base_a / voxel_size_a


def mean_width_a(template: np.ndarray, voxel_size_a: float, n_directions: int = 256) -> float:
    """Mean caliper width (Å) of the voxels above half maximum, over uniform directions."""
    idx = np.argwhere(template > 0.5 * template.max())[:, ::-1].astype(np.float64)  # x,y,z
    k = np.arange(n_directions) + 0.5  # Fibonacci sphere
    cos_t = 1 - 2 * k / n_directions
    phi = np.pi * (1 + 5**0.5) * k
    sin_t = np.sqrt(1 - cos_t**2)
    dirs = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)
    proj = idx @ dirs.T
    return float(np.mean(proj.max(axis=0) - proj.min(axis=0) + 1.0) * voxel_size_a)


def species_templates(voxel_size_a: float, params: dict | None = None) -> dict[str, np.ndarray]:
    """Density templates ``[z, y, x]`` (cubes, odd size, particle centred) per particle species.

    Protein density 1 (smooth edges ~0.35 voxel wide), gold ``gold_density``. The decoy is a
    hollow sphere with the ribosome's integrated density whose outer diameter is, by default,
    the ribosome's mean caliper width (so the two have the same size and mean contrast and
    differ only in shape). ``spike`` and ``free_spike`` share one template (see
    :func:`spike_template`), centred on its centre of mass, axis along +z.
    """
    p = params or _DEFAULTS
    sizes = p["sizes_a"]
    ribo = _ribosome(voxel_size_a, sizes["ribosome"])
    decoy_a = sizes.get("decoy") or mean_width_a(ribo, voxel_size_a)
    spike, _base = spike_template(voxel_size_a, sizes.get("spike") or 200.0)
    return {
        "ribosome": ribo.astype(np.float32),
        "decoy": _decoy(voxel_size_a, decoy_a, float(ribo.sum())).astype(np.float32),
        "small": _small(voxel_size_a, sizes["small"]).astype(np.float32),
        "gold": _gold(voxel_size_a, sizes["gold"], p["gold_density"]).astype(np.float32),
        "spike": spike,
        "free_spike": spike,
    }


def _extent_radius_vox(template: np.ndarray) -> float:
    """Radius (voxels) around the box centre containing every voxel with density > 0.3 max."""
    half = (template.shape[0] - 1) / 2
    idx = np.argwhere(template > 0.3 * template.max())
    return float(np.sqrt(((idx - half) ** 2).sum(axis=1)).max()) + 0.5


def particle_radii_vox(voxel_size_a: float, params: dict | None = None) -> dict[str, float]:
    """Exclusion radius (voxels) of each particle species: no two particles come closer than
    the sum of their radii (+ ``min_gap_a``), and each lies this far from every border."""
    return {s: _extent_radius_vox(t) for s, t in species_templates(voxel_size_a, params).items()}


def _add_rotated(volume: np.ndarray, template: np.ndarray, centre_xyz, rot: np.ndarray) -> None:
    """Add ``template`` rotated by ``rot`` (3x3, x,y,z) with its centre at ``centre_xyz``."""
    b = template.shape[0]
    half = (b - 1) // 2
    centre_zyx = np.asarray(centre_xyz, dtype=np.float64)[::-1]
    base = np.floor(centre_zyx).astype(int)
    frac = centre_zyx - base
    perm = np.eye(3)[::-1]
    m = perm @ rot.T @ perm  # output (zyx, relative) -> template (zyx, relative)
    offset = half - m @ (half + frac)
    box = ndimage.affine_transform(template, m, offset=offset, order=1, mode="constant")
    lo = base - half
    hi = lo + b
    src_lo = np.maximum(0, -lo)
    src_hi = b - np.maximum(0, hi - np.asarray(volume.shape))
    dst_lo = np.maximum(lo, 0)
    dst_hi = dst_lo + (src_hi - src_lo)
    if np.any(src_hi <= src_lo):
        return
    volume[dst_lo[0] : dst_hi[0], dst_lo[1] : dst_hi[1], dst_lo[2] : dst_hi[2]] += box[
        src_lo[0] : src_hi[0], src_lo[1] : src_hi[1], src_lo[2] : src_hi[2]
    ]


def _random_rotations(rng: np.random.Generator, n: int) -> Rotation:
    """Uniformly distributed 3-D rotations (normalised Gaussian quaternions)."""
    q = rng.standard_normal((max(n, 1), 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return Rotation.from_quat(q[:n] if n else q[:0])

