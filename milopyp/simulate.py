"""Synthetic cryo-ET data with exact ground truth: phantom, tilt series, WBP tomogram.

Used by the tests, the demo and the accuracy benchmarks. Everything is numpy/scipy and
seeded (``np.random.default_rng``); a 64 x 256 x 256 tomogram takes 1-2 s on one core,
128 x 512 x 512 about 5-10 s. A voxel size of 10-14 Å suits a 64 x 256 x 256 volume (12 Å:
the ribosome is ~22 voxels wide, the slab 768 Å thick).

Pipeline of :func:`simulate_tomogram`:

1. **Phantom** ``[z, y, x]``: density 1 = protein, 0 = vitreous ice (gold beads denser).
   Particles (``ribosome``, ``decoy``, ``small``, ``gold``) are small template maps rotated by a
   uniformly random 3-D rotation (``scipy.ndimage.affine_transform``, order 1) and added at
   sub-voxel centres without overlap; ``vesicle`` (a bilayer shell) and ``filament`` (a
   hollow, gently curved tube) are drawn directly into the volume.
2. **Tilt series**: line integrals with :func:`project` (tilt axis parallel to y, eq. 1 of the
   contract), weak-phase-object image formation with a CTF (defocus, 300 kV, Cs 2.7 mm,
   amplitude contrast 0.07), a radiation-damage B-factor that grows with accumulated dose
   (dose-symmetric order), ice attenuation ``exp(-t / (mfp cos θ))`` and shot noise (Poisson,
   Gaussian approximation above 50 e/pixel).
3. **Tomogram**: optional phase flipping, then :func:`backproject` (weighted back-projection,
   ramp x Hann filter) over the same limited tilt range, so the missing wedge is real.

Contrast convention: the raw images have protein DARK (as recorded at underfocus). The
simulator stores the tilt series and the tomogram contrast-INVERTED, so **protein is bright
(higher value) in both outputs**, as the candidate finder expects. The stored tilt series is the
relative contrast ``-(I / I0 - 1)`` (phase-flipped when ``phase_flip``); the tomogram is
standardised to zero mean and unit standard deviation. Real tomograms usually have dark
protein and must be inverted before candidate finding.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import fft as sfft
from scipy import ndimage, sparse
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from milopyp.errors import MilopypError

log = logging.getLogger(__name__)

#: Species that are rigid particles placed from a template.
PARTICLE_SPECIES = ("ribosome", "decoy", "small", "gold")
#: Every species the simulator knows.
SPECIES = (*PARTICLE_SPECIES, "vesicle", "filament")

_DEFAULTS: dict = {
    # nominal sizes (Å): particle diameter (max extent); filament outer diameter
    # (decoy None = the ribosome's mean width, so both look the same size)
    "sizes_a": {"ribosome": 260.0, "decoy": None, "small": 120.0, "gold": 100.0, "filament": 250.0},
    "filament_inner_diameter_a": 170.0,
    "vesicle_radius_a": (250.0, 420.0),  # range of vesicle radii (to the bilayer middle)
    "membrane_thickness_a": 40.0,  # bilayer, leaflets ~ 30 Å apart
    "gold_density": 6.0,  # relative to protein = 1
    # particles per µm³ of tomogram (converted to counts with at least 1 when > 0)
    "per_um3": {},
    # absolute counts (override per_um3); vesicles and filaments are counted here
    "counts": {},
    "min_gap_a": 10.0,  # extra clearance between any two objects
    "background_std": 0.0,  # std of smooth random density added everywhere (crowding/ice)
    # imaging
    "tilt_range_deg": (-60.0, 60.0),
    "tilt_step_deg": 3.0,
    "dose_per_tilt": 2.5,  # electrons per Å² per tilt image
    "defocus_um": -3.0,  # negative = underfocus
    "voltage_kv": 300.0,
    "cs_mm": 2.7,
    "amplitude_contrast": 0.07,
    "phase_per_a": 1.0e-3,  # phase shift (rad) per Å of protein along the beam
    "bfactor_per_dose": 4.0,  # Å² of B-factor per e/Å² of accumulated dose
    "ice_mfp_a": 3500.0,  # inelastic mean free path; ice thickness = tomogram thickness
    "phase_flip": True,
    "recon_filter": "hann",  # "ramp" or "hann"
}

#: Preset parameter dictionaries (merged over the defaults by :func:`preset_parameters`).
PRESETS: dict[str, dict] = {
    # moderate density and SNR, every species except the decoy
    "demo": {
        "per_um3": {"ribosome": 5000.0, "small": 4000.0, "gold": 500.0},
        "counts": {"vesicle": 1, "filament": 1},
        "dose_per_tilt": 2.5,
    },
    # dense ribosomes + as many same-size decoys + small particles, low dose
    "crowded": {
        "per_um3": {"ribosome": 8000.0, "decoy": 8000.0, "small": 6000.0},
        "min_gap_a": 5.0,
        "dose_per_tilt": 1.0,
        "background_std": 0.1,
    },
    # two clearly different species, well separated, moderate SNR (exploration test)
    "two_species": {
        "per_um3": {"ribosome": 4000.0, "small": 6000.0},
        "min_gap_a": 60.0,
        "dose_per_tilt": 3.0,
    },
}


@dataclass
class SimulatedTomogram:
    """One simulated tomogram with its tilt series and ground truth.

    tomogram: float32 ``[z, y, x]`` (protein bright, zero mean, unit std).
    tilt_series: float32 ``[n_tilts, y, x]`` (protein bright, relative contrast).
    angles_deg: float64 ``(n_tilts,)``.
    truth: DataFrame with ``tomogram, species, x, y, z`` (voxels) and ``rot, tilt, psi``
    (intrinsic ZYZ Euler angles in degrees, scipy ``as_euler("ZYZ")``, of the rotation
    applied to the template in x,y,z coordinates; particles only),
    ``radius_a`` (vesicles), ``fiber_id`` (filament centre-line points); NaN where absent.
    phantom: float32 ``[z, y, x]`` noise-free density (protein = 1, ice = 0).
    """

    tomogram: np.ndarray
    tilt_series: np.ndarray
    angles_deg: np.ndarray
    truth: pd.DataFrame
    voxel_size_a: float
    phantom: np.ndarray | None = None
    params: dict = field(default_factory=dict)


# ============================================================================ parameters


def preset_parameters(preset: str = "demo", **overrides) -> dict:
    """Parameters of ``preset`` merged over the defaults, then ``overrides`` (same keys).

    ``counts`` and ``per_um3`` overrides are merged species by species.
    """
    if preset not in PRESETS:
        raise MilopypError(f"unknown simulation preset {preset!r}; use one of {', '.join(PRESETS)}")
    params = copy.deepcopy(_DEFAULTS)
    for source in (PRESETS[preset], overrides):
        for key, value in source.items():
            if key not in params:
                raise MilopypError(
                    f"unknown simulation parameter {key!r}; known: {', '.join(sorted(params))}"
                )
            if key in ("counts", "per_um3", "sizes_a") and value is not None:
                bad = set(value) - set(SPECIES)
                if bad:
                    raise MilopypError(
                        f"unknown species {sorted(bad)} in {key}; use {', '.join(SPECIES)}"
                    )
                params[key] = {**params[key], **copy.deepcopy(value)}
            elif value is not None:
                params[key] = copy.deepcopy(value)
    return params


def species_counts(params: dict, shape_zyx, voxel_size_a: float) -> dict[str, int]:
    """Number of objects per species for a volume: ``counts`` else ``per_um3`` x volume."""
    volume_um3 = float(np.prod(shape_zyx)) * (voxel_size_a * 1e-4) ** 3
    counts = {}
    for name in SPECIES:
        if name in params["counts"]:
            counts[name] = int(params["counts"][name])
        elif params["per_um3"].get(name, 0.0) > 0:
            counts[name] = max(1, round(params["per_um3"][name] * volume_um3))
        else:
            counts[name] = 0
    return counts


def default_angles(params: dict | None = None) -> np.ndarray:
    """Tilt angles (degrees) from ``tilt_range_deg`` and ``tilt_step_deg``."""
    params = params or _DEFAULTS
    lo, hi = params["tilt_range_deg"]
    step = params["tilt_step_deg"]
    n = math.floor((hi - lo) / step + 1e-6) + 1
    return lo + step * np.arange(n, dtype=np.float64)


# ============================================================================ projection


@functools.lru_cache(maxsize=1)
def _backprojection_matrix(
    nz: int, nx: int, tx: int, angles: tuple[float, ...]
) -> sparse.csr_array:
    """Sparse ``(nz * nx, n_tilts * tx)`` matrix: eq. 1 with linear interpolation along x_θ.

    Row ``z * nx + x`` is voxel (x, z) of an x-z section; column ``a * tx + i`` is pixel i of
    tilt a. ``M @ images`` back-projects (gathers with linear interpolation); its transpose
    ``M.T @ sections`` projects (splats each voxel onto the two nearest pixels), so projector
    and back-projector share one geometry. Built directly in CSR form: every row holds two
    entries per tilt (weight 0 where the ray leaves the image). Cached for the last geometry.
    """
    theta = np.deg2rad(np.asarray(angles, dtype=np.float64))
    n = theta.size
    cx, cz, px = (nx - 1) / 2, (nz - 1) / 2, (tx - 1) / 2
    x = np.arange(nx) - cx
    z = np.arange(nz) - cz
    xt = (
        np.cos(theta)[None, None, :] * x[None, :, None]
        + np.sin(theta)[None, None, :] * z[:, None, None]
        + px
    )  # (nz, nx, n)
    i0 = np.floor(xt)
    frac = (xt - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    base = np.arange(n, dtype=np.int64) * tx
    idx = np.stack([i0, i0 + 1], axis=-1)  # (nz, nx, n, 2)
    weights = np.stack([1.0 - frac, frac], axis=-1)
    weights[(idx < 0) | (idx >= tx)] = 0.0
    indices = (np.clip(idx, 0, tx - 1) + base[:, None]).reshape(-1)
    indptr = np.arange(0, nz * nx * 2 * n + 1, 2 * n, dtype=np.int64)
    return sparse.csr_array((weights.reshape(-1), indices, indptr), shape=(nz * nx, n * tx))


def project(volume_zyx: np.ndarray, angles_deg, tilt_shape_yx=None) -> np.ndarray:
    """Line-integral projections of a volume, tilt axis parallel to y (eq. 1).

    volume_zyx: ``[z, y, x]``. angles_deg: ``(n,)``. tilt_shape_yx: ``(ty, tx)`` of each
    image, default ``(ny, nx)``; ty must equal ny. A voxel at (x, y, z) lands at
    ``x_θ = (x - cx) cos θ + (z - cz) sin θ + px``, ``y_θ = y - cy + py`` (centres
    ``(n - 1) / 2``), split linearly between the two nearest pixels along x.
    Returns float32 ``[n, ty, tx]`` in units of density x voxels.
    """
    vol = np.asarray(volume_zyx, dtype=np.float32)
    if vol.ndim != 3:
        raise MilopypError(f"project: expected a 3-D volume [z, y, x], got shape {vol.shape}")
    nz, ny, nx = vol.shape
    ty, tx = (ny, nx) if tilt_shape_yx is None else (int(v) for v in tilt_shape_yx)
    if ty != ny:
        raise MilopypError(f"project: tilt images must have ty == ny == {ny}, got ty={ty}")
    angles = np.atleast_1d(np.asarray(angles_deg, dtype=np.float64))
    mat = _backprojection_matrix(nz, nx, tx, tuple(angles.tolist()))
    sections = np.ascontiguousarray(vol.transpose(0, 2, 1)).reshape(nz * nx, ny)
    out = (mat.T @ sections).reshape(len(angles), tx, ny)  # (n*tx, ny) -> (n, tx, ny)
    return np.ascontiguousarray(out.transpose(0, 2, 1), dtype=np.float32)


def _ramp_filter(n_pad: int, filter_name: str) -> np.ndarray:
    """Real ``(n_pad // 2 + 1,)`` frequency response: ramp (Kak & Slaney), optionally x Hann."""
    k = np.arange(n_pad)
    k = np.where(k <= n_pad // 2, k, n_pad - k)
    h = np.zeros(n_pad)
    h[0] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    response = 2.0 * np.real(np.fft.rfft(h))  # ~ 2|f|, f in cycles/pixel, DC > 0
    f = np.fft.rfftfreq(n_pad)
    if filter_name == "hann":
        response = response * 0.5 * (1.0 + np.cos(np.pi * f / 0.5))
    elif filter_name != "ramp":
        raise MilopypError(f"unknown reconstruction filter {filter_name!r}; use ramp or hann")
    return response


def backproject(
    tilt_series: np.ndarray, angles_deg, thickness: int, *, filter_name: str = "hann"
) -> np.ndarray:
    """Weighted back-projection of a ``[n, ty, tx]`` tilt series into ``[thickness, ty, tx]``.

    Each image row is ramp-filtered along x (``filter_name`` "ramp" or "hann": ramp x Hann
    taper) and smeared back along the rays of eq. 1 (transpose of :func:`project`).
    Scaled by the mean angular step (radians) / 2 so that with full angular coverage the
    result approximates the projected density; a limited tilt range leaves the missing wedge.
    """
    ts = np.asarray(tilt_series, dtype=np.float32)
    if ts.ndim != 3:
        raise MilopypError(f"backproject: expected a tilt series [n, y, x], got {ts.shape}")
    angles = np.atleast_1d(np.asarray(angles_deg, dtype=np.float64))
    n, ty, tx = ts.shape
    if angles.size != n:
        raise MilopypError(f"backproject: {n} tilt images but {angles.size} angles")
    nz = int(thickness)
    n_pad = max(64, 1 << math.ceil(math.log2(2 * tx)))
    response = _ramp_filter(n_pad, filter_name).astype(np.float32)
    centred = ts - ts.mean(axis=(1, 2), keepdims=True)
    spec = sfft.rfft(centred, n=n_pad, axis=2)
    filtered = sfft.irfft(spec * response, n=n_pad, axis=2)[:, :, :tx].astype(np.float32)
    mat = _backprojection_matrix(nz, tx, tx, tuple(angles.tolist()))
    rows = np.ascontiguousarray(filtered.transpose(0, 2, 1)).reshape(n * tx, ty)
    vol = (mat @ rows).reshape(nz, tx, ty).transpose(0, 2, 1)
    step = np.deg2rad(np.mean(np.abs(np.diff(np.sort(angles))))) if n > 1 else np.pi
    return np.ascontiguousarray(vol * np.float32(step / 2.0), dtype=np.float32)


# ============================================================================ templates


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
    differ only in shape).
    """
    p = params or _DEFAULTS
    sizes = p["sizes_a"]
    ribo = _ribosome(voxel_size_a, sizes["ribosome"])
    decoy_a = sizes.get("decoy") or mean_width_a(ribo, voxel_size_a)
    return {
        "ribosome": ribo.astype(np.float32),
        "decoy": _decoy(voxel_size_a, decoy_a, float(ribo.sum())).astype(np.float32),
        "small": _small(voxel_size_a, sizes["small"]).astype(np.float32),
        "gold": _gold(voxel_size_a, sizes["gold"], p["gold_density"]).astype(np.float32),
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


# ============================================================================ phantom


@dataclass
class _Filament:
    points: np.ndarray  # (M, 3) x,y,z voxels, spacing ~0.5 voxel
    tree: cKDTree
    radius_vox: float


@dataclass
class _Vesicle:
    centre: np.ndarray  # (3,) x,y,z
    radius_vox: float


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


def _draw_vesicle(
    volume, centre_xyz, radius_vox: float, thickness_vox: float, voxel_size_a: float
) -> None:
    """Add a bilayer shell: two Gaussian leaflets ``0.75 * thickness`` apart."""
    shape = np.asarray(volume.shape)
    c = np.asarray(centre_xyz)[::-1]
    reach = radius_vox + thickness_vox + 2
    lo = np.maximum(np.floor(c - reach).astype(int), 0)
    hi = np.minimum(np.ceil(c + reach).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return
    z, y, x = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    r = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
    sep = 0.375 * thickness_vox
    sigma = max(0.6, 8.0 / voxel_size_a)
    dens = np.exp(-((r - radius_vox - sep) ** 2) / (2 * sigma**2))
    dens += np.exp(-((r - radius_vox + sep) ** 2) / (2 * sigma**2))
    volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += dens.astype(volume.dtype)


class _Placer:
    """Rejection sampling of non-overlapping spheres among filaments and vesicles.

    Placed spheres are indexed by a KD-tree (rebuilt every ``_REBUILD`` placements; the newest
    ones are checked directly), so a batch of candidates is tested in one vectorised step.
    """

    _REBUILD = 64

    def __init__(self, rng, shape_zyx, gap_vox: float):
        self.rng = rng
        self.shape = np.asarray(shape_zyx)
        self.gap = gap_vox
        self.centres = np.zeros((0, 3))
        self.radii = np.zeros(0)
        self.tree: cKDTree | None = None
        self.n_tree = 0  # centres[:n_tree] are in the tree
        self.filaments: list[_Filament] = []
        self.vesicles: list[tuple[_Vesicle, float]] = []  # (vesicle, half thickness)

    def _touches_spheres(self, cand: np.ndarray, radius: float) -> np.ndarray:
        """Boolean ``(M,)``: candidates closer to a placed sphere than the radii + gap."""
        bad = np.zeros(len(cand), dtype=bool)
        if self.tree is not None:
            reach = radius + float(self.radii[: self.n_tree].max()) + self.gap
            lists = self.tree.query_ball_point(cand, reach, return_sorted=False)
            lengths = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
            if lengths.sum():
                ci = np.repeat(np.arange(len(cand)), lengths)
                ni = np.concatenate([np.asarray(v, dtype=np.int64) for v in lists if v])
                d2 = ((cand[ci] - self.centres[ni]) ** 2).sum(-1)
                hit = d2 < (self.radii[ni] + radius + self.gap) ** 2
                bad |= np.bincount(ci[hit], minlength=len(cand)) > 0
        tail = self.centres[self.n_tree :]
        if len(tail):
            d2 = ((cand[:, None, :] - tail[None]) ** 2).sum(-1)
            bad |= np.any(d2 < (self.radii[self.n_tree :][None] + radius + self.gap) ** 2, axis=1)
        return bad

    def clear(self, cand: np.ndarray, radius: float) -> np.ndarray:
        """Boolean ``(M,)``: candidates (x,y,z) of ``radius`` that touch nothing placed."""
        ok = ~self._touches_spheres(cand, radius)
        for fil in self.filaments:
            dist, _ = fil.tree.query(cand, distance_upper_bound=fil.radius_vox + radius + self.gap)
            ok &= ~np.isfinite(dist)
        for ves, half_t in self.vesicles:
            r = np.sqrt(((cand - ves.centre) ** 2).sum(-1))
            ok &= np.abs(r - ves.radius_vox) >= half_t + radius + self.gap
        return ok

    def place(self, radius: float, *, tries: int = 4000, batch: int = 64) -> np.ndarray | None:
        """A random centre (x,y,z) with the sphere fully inside the volume, or None."""
        upper = self.shape[::-1] - 1 - radius
        if np.any(upper < radius):
            return None
        for _ in range(max(1, tries // batch)):
            cand = self.rng.uniform(radius, upper, size=(batch, 3))
            ok = np.flatnonzero(self.clear(cand, radius))
            if ok.size:
                centre = cand[ok[0]]
                self.centres = np.vstack([self.centres, centre])
                self.radii = np.append(self.radii, radius)
                if len(self.centres) - self.n_tree >= self._REBUILD:
                    self.tree = cKDTree(self.centres)
                    self.n_tree = len(self.centres)
                return centre
        return None


def _build_phantom(rng, shape_zyx, voxel_size_a: float, params: dict, counts: dict[str, int]):
    """Density ``[z, y, x]`` float32 and the truth rows (list of dicts)."""
    nz, ny, nx = shape_zyx
    vol = np.zeros(shape_zyx, dtype=np.float32)
    rows: list[dict] = []
    placer = _Placer(rng, shape_zyx, params["min_gap_a"] / voxel_size_a)
    width = 0.35

    # filaments first (they cross the whole volume)
    r_out = params["sizes_a"]["filament"] / 2 / voxel_size_a
    r_in = params["filament_inner_diameter_a"] / 2 / voxel_size_a
    for fid in range(counts["filament"]):
        pts = _filament_curve(rng, shape_zyx, r_out, 0.5)
        _draw_filament(vol, pts, r_out, r_in, width)
        placer.filaments.append(_Filament(pts, cKDTree(pts), r_out))
        truth_pts = pts[::4]  # every 2 voxels
        margin = r_out
        lim = np.array([nx, ny, nz]) - 1 - margin
        keep = np.all((truth_pts >= margin) & (truth_pts <= lim), axis=1)
        for x, y, z in truth_pts[keep]:
            rows.append({"species": "filament", "x": x, "y": y, "z": z, "fiber_id": fid})

    # vesicles: shell must not cut a filament; centre inside, shell may leave the slab in z
    half_t = params["membrane_thickness_a"] / 2 / voxel_size_a
    rmin, rmax = (v / voxel_size_a for v in params["vesicle_radius_a"])
    for _ in range(counts["vesicle"]):
        for _attempt in range(200):
            radius = rng.uniform(rmin, rmax)
            lo = np.array(
                [min(radius, (nx - 1) / 2), min(radius, (ny - 1) / 2), min(radius, (nz - 1) / 2)]
            )
            hi = np.array([nx - 1, ny - 1, nz - 1]) - lo
            centre = rng.uniform(lo, hi)
            ok = True
            for fil in placer.filaments:
                d = np.sqrt(((fil.points - centre) ** 2).sum(-1))
                ok &= bool(np.all(np.abs(d - radius) >= half_t + fil.radius_vox + placer.gap))
            for ves, ht in placer.vesicles:
                d = float(np.sqrt(((ves.centre - centre) ** 2).sum()))
                ok &= d >= ves.radius_vox + radius + ht + half_t + placer.gap
            if ok:
                break
        else:
            log.warning("could not place a vesicle without overlap; skipped")
            continue
        _draw_vesicle(vol, centre, radius, 2 * half_t, voxel_size_a)
        placer.vesicles.append((_Vesicle(centre, radius), half_t))
        rows.append(
            {
                "species": "vesicle",
                "x": centre[0],
                "y": centre[1],
                "z": centre[2],
                "radius_a": radius * voxel_size_a,
            }
        )

    # particles: all instances shuffled, so no species gets the better spots
    templates = species_templates(voxel_size_a, params)
    names = [s for s in PARTICLE_SPECIES for _ in range(counts[s])]
    order = rng.permutation(len(names))
    rotations = _random_rotations(rng, len(names))
    mats = rotations.as_matrix()
    eulers = rotations.as_euler("ZYZ", degrees=True) if len(names) else np.zeros((0, 3))
    radii = {s: _extent_radius_vox(t) for s, t in templates.items()}  # = particle_radii_vox
    missing: dict[str, int] = {}
    for i in order:
        name = names[i]
        centre = placer.place(radii[name])
        if centre is None:
            missing[name] = missing.get(name, 0) + 1
            continue
        _add_rotated(vol, templates[name], centre, mats[i])
        rot, tilt, psi = eulers[i]
        rows.append(
            {
                "species": name,
                "x": centre[0],
                "y": centre[1],
                "z": centre[2],
                "rot": rot,
                "tilt": tilt,
                "psi": psi,
            }
        )
    if missing:
        log.warning("volume too small or too crowded: could not place %s", missing)

    if params["background_std"] > 0:
        noise = rng.standard_normal(shape_zyx, dtype=np.float32)
        noise = ndimage.gaussian_filter(noise, 1.0, truncate=2.5)
        noise *= params["background_std"] / max(float(noise.std()), 1e-12)
        vol += noise
    return vol, rows


# ============================================================================ imaging


def _wavelength_a(voltage_kv: float) -> float:
    v = voltage_kv * 1e3
    return 12.2643 / math.sqrt(v * (1 + 0.97845e-6 * v))


def ctf_2d(
    shape_yx,
    voxel_size_a: float,
    *,
    defocus_um: float = -3.0,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
) -> np.ndarray:
    """Phase-contrast transfer ``sqrt(1-A²) sin χ + A cos χ`` on an rfft2 grid ``(ty, tx//2+1)``.

    Positive at low frequency for underfocus (``defocus_um < 0``); the recorded image is
    ``1 - 2 * F⁻¹[ctf * F[phase]]``, so protein is dark in raw images.
    """
    ty, tx = shape_yx
    lam = _wavelength_a(voltage_kv)
    ky = np.fft.fftfreq(ty, d=voxel_size_a)[:, None]
    kx = np.fft.rfftfreq(tx, d=voxel_size_a)[None, :]
    k2 = kx**2 + ky**2
    underfocus_a = -defocus_um * 1e4
    chi = np.pi * lam * underfocus_a * k2 - 0.5 * np.pi * cs_mm * 1e7 * lam**3 * k2**2
    a = amplitude_contrast
    return math.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)


def _image_tilts(
    projections: np.ndarray,
    angles: np.ndarray,
    voxel_size_a: float,
    thickness_a: float,
    params: dict,
    rng: np.random.Generator,
) -> np.ndarray:
    """Noisy relative-contrast tilt images (protein bright), phase-flipped if asked."""
    n, ty, tx = projections.shape
    ctf = ctf_2d(
        (ty, tx),
        voxel_size_a,
        defocus_um=params["defocus_um"],
        voltage_kv=params["voltage_kv"],
        cs_mm=params["cs_mm"],
        amplitude_contrast=params["amplitude_contrast"],
    ).astype(np.float32)
    k2 = (
        np.fft.fftfreq(ty, d=voxel_size_a)[:, None] ** 2
        + np.fft.rfftfreq(tx, d=voxel_size_a)[None, :] ** 2
    ).astype(np.float32)
    # dose-symmetric acquisition: 0, +step, -step, ...; accumulated dose before each image
    order = np.lexsort((-angles, np.abs(angles)))
    prior = np.empty(n)
    prior[order] = np.arange(n) * params["dose_per_tilt"]
    phase = projections * np.float32(voxel_size_a * params["phase_per_a"])
    spec = sfft.rfft2(phase, axes=(1, 2))
    out = np.empty_like(projections)
    sign = np.sign(ctf).astype(np.float32)
    for i in range(n):
        damp = np.exp(-params["bfactor_per_dose"] * prior[i] * k2 / 4.0).astype(np.float32)
        image = 1.0 - 2.0 * sfft.irfft2(spec[i] * (ctf * damp), s=(ty, tx))
        cos = max(math.cos(math.radians(angles[i])), 0.05)
        electrons = (
            params["dose_per_tilt"]
            * voxel_size_a**2
            * math.exp(-thickness_a / (params["ice_mfp_a"] * cos))
        )
        mean_counts = np.clip(image, 0, None) * electrons
        if electrons >= 50:
            counts = mean_counts + np.sqrt(mean_counts) * rng.standard_normal(
                (ty, tx), dtype=np.float32
            )
        else:
            counts = rng.poisson(mean_counts).astype(np.float32)
        contrast = (1.0 - counts / electrons).astype(np.float32)  # inverted: protein bright
        if params["phase_flip"]:
            contrast = sfft.irfft2(sfft.rfft2(contrast) * sign, s=(ty, tx))
        out[i] = contrast
    return out


# ============================================================================ public API


def simulate_tomogram(
    *,
    shape_zyx=(64, 256, 256),
    voxel_size_a: float = 12.0,
    seed: int = 0,
    preset: str = "demo",
    name: str = "tomo_000",
    counts: dict[str, int] | None = None,
    angles_deg=None,
    **overrides,
) -> SimulatedTomogram:
    """Simulate one tomogram (``[z, y, x]``) with its tilt series and ground truth.

    shape_zyx: tomogram shape (voxels); voxel_size_a: Å per voxel (also the tilt-image pixel
    size); preset: "demo", "crowded" or "two_species"; counts: absolute numbers per species
    (override the preset's densities); angles_deg: tilt angles (default from the preset,
    -60..60 step 3); overrides: any key of :func:`preset_parameters`. The phantom, the
    rotations and the noise come from independent streams of ``seed``, so changing the dose
    does not move the particles.
    """
    shape = tuple(int(v) for v in shape_zyx)
    if len(shape) != 3 or min(shape) < 4:
        raise MilopypError(f"simulate: shape_zyx must be 3 sizes >= 4 (z, y, x), got {shape_zyx}")
    if not voxel_size_a > 0:
        raise MilopypError(f"simulate: voxel size must be > 0 Å, got {voxel_size_a}")
    params = preset_parameters(preset, counts=counts, **overrides)
    n_per = species_counts(params, shape, voxel_size_a)
    phantom_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2)
    )
    phantom, rows = _build_phantom(phantom_rng, shape, voxel_size_a, params, n_per)

    angles = default_angles(params) if angles_deg is None else np.asarray(angles_deg, float)
    proj = project(phantom, angles)
    tilts = _image_tilts(proj, angles, voxel_size_a, shape[0] * voxel_size_a, params, noise_rng)
    tomo = backproject(tilts, angles, shape[0], filter_name=params["recon_filter"])
    tomo -= tomo.mean()
    tomo /= max(float(tomo.std()), 1e-12)

    columns = ["tomogram", "species", "x", "y", "z", "rot", "tilt", "psi", "radius_a", "fiber_id"]
    truth = pd.DataFrame(rows, columns=columns[1:])
    truth.insert(0, "tomogram", name)
    for c in columns[2:]:
        truth[c] = truth[c].astype(np.float64)
    truth["species"] = truth["species"].astype(str)
    log.info("simulated %s %s: %s", name, shape, truth["species"].value_counts().to_dict())
    return SimulatedTomogram(
        tomogram=tomo.astype(np.float32),
        tilt_series=tilts.astype(np.float32),
        angles_deg=angles,
        truth=truth,
        voxel_size_a=float(voxel_size_a),
        phantom=phantom,
        params=params,
    )


def tomogram_seed(seed: int, index: int) -> int:
    """Seed of tomogram ``index`` of a dataset: independent of how many tomograms there are."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def simulate_dataset(
    out_dir: str | os.PathLike,
    *,
    n_tomograms: int = 2,
    shape_zyx=(64, 256, 256),
    voxel_size_a: float = 12.0,
    seed: int = 0,
    preset: str = "demo",
    write_tilt_series: bool = True,
    protein_contrast: str = "dark",
    **kwargs,
) -> list[str]:
    """Write ``n_tomograms`` simulated tomograms under ``out_dir``; return their names.

    Files: ``tomograms/tomo_000.mrc``, ``tiltseries/tomo_000.st`` + ``.tlt`` and
    ``truth/tomo_000.csv`` (columns as :class:`SimulatedTomogram`.truth). Tomogram ``i`` is
    seeded from ``(seed, i)``. ``kwargs`` go to :func:`simulate_tomogram`.

    ``protein_contrast="dark"`` (default) writes protein darker than the background, as real
    reconstructions (IMOD, AreTomo, Warp) have it and as the workflow's default
    ``preprocess.invert: true`` expects; ``"bright"`` writes the arrays as simulated.
    """
    if protein_contrast not in ("dark", "bright"):
        raise ValueError(f"protein_contrast must be 'dark' or 'bright', got {protein_contrast!r}")
    sign = np.float32(-1.0 if protein_contrast == "dark" else 1.0)
    from milopyp.io import mrc
    from milopyp.io.coords import write_coordinates

    out = Path(out_dir)
    names = []
    for i in range(int(n_tomograms)):
        name = f"tomo_{i:03d}"
        sim = simulate_tomogram(
            shape_zyx=shape_zyx,
            voxel_size_a=voxel_size_a,
            seed=tomogram_seed(seed, i),
            preset=preset,
            name=name,
            **kwargs,
        )
        mrc.write_tomogram(out / "tomograms" / f"{name}.mrc", sign * sim.tomogram, voxel_size_a)
        if write_tilt_series:
            mrc.write_tilt_series(
                out / "tiltseries" / f"{name}.st",
                sign * sim.tilt_series,
                sim.angles_deg,
                voxel_size_a,
            )
        write_coordinates(out / "truth" / f"{name}.csv", sim.truth)
        names.append(name)
    return names
