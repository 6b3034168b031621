"""Synthetic cryo-ET data with exact ground truth: phantom, tilt series, WBP tomogram.

Used by the tests, the demo and the accuracy benchmarks. Everything is numpy/scipy and
seeded (``np.random.default_rng``); a 64 x 256 x 256 tomogram takes 1-2 s on one core,
128 x 512 x 512 about 5-10 s. A voxel size of 10-14 Å suits a 64 x 256 x 256 volume (12 Å:
the ribosome is ~22 voxels wide, the slab 768 Å thick).

Presets (:data:`PRESETS`): ``demo``, ``crowded`` (ribosomes among same-size hollow decoys),
``two_species``, ``membrane`` (vesicles with spikes, free spikes, a few ribosomes and small
particles) and ``filament`` (crossing filaments among ribosomes and small particles). Species
added after the first three presets (the spikes) come from their own random stream, so the
older presets give the same output for the same seed as before.

Pipeline of :func:`simulate_tomogram`:

1. **Phantom** ``[z, y, x]`` (:mod:`milopyp.simulation.phantom`): density 1 = protein, 0 =
   vitreous ice (gold beads denser). Particles (``ribosome``, ``decoy``, ``small``, ``gold``,
   ``free_spike``) are small template maps rotated by a uniformly random 3-D rotation
   (``scipy.ndimage.affine_transform``, order 1) and added at sub-voxel centres without
   overlap; ``vesicle`` (a bilayer shell) and ``filament`` (a hollow, gently curved tube) are
   drawn directly into the volume; ``spike`` (a ~200 Å stalk + head membrane protein, the
   template of ``free_spike``) stands on a vesicle, axis along the outward normal.
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

import functools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import fft as sfft
from scipy import sparse

from milopyp.errors import MilopypError
from milopyp.simulation.parameters import (  # noqa: F401  (re-exported)
    _DEFAULTS,
    GLOBULAR_SPECIES,
    PARTICLE_SPECIES,
    PRESETS,
    SPECIES,
    SPIKE_SPECIES,
    default_angles,
    preset_parameters,
    species_counts,
)
from milopyp.simulation.phantom import _build_phantom
from milopyp.simulation.templates import (  # noqa: F401  (re-exported)
    _add_rotated,
    _random_rotations,
    mean_width_a,
    particle_radii_vox,
    species_templates,
    spike_template,
)

log = logging.getLogger(__name__)

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
    Spikes: x, y, z is the template's centre of mass, the spike axis ``R @ (0, 0, 1)`` with
    ``R`` from rot, tilt, psi; when spikes are attached (``spike`` count > 0) a
    ``vesicle_id`` column numbers the vesicles (0, 1, ...) and gives each spike its vesicle.
    phantom: float32 ``[z, y, x]`` noise-free density (protein = 1, ice = 0).
    """

    tomogram: np.ndarray
    tilt_series: np.ndarray
    angles_deg: np.ndarray
    truth: pd.DataFrame
    voxel_size_a: float
    phantom: np.ndarray | None = None
    params: dict = field(default_factory=dict)


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
    size); preset: a key of :data:`PRESETS` ("demo", "crowded", "two_species", "membrane",
    "filament"); counts: absolute numbers per species (override the preset's densities);
    angles_deg: tilt angles (default from the preset, -60..60 step 3); overrides: any key of
    :func:`preset_parameters`. The phantom, the spikes and the noise come from independent
    streams of ``seed``, so changing the dose does not move the particles.
    """
    shape = tuple(int(v) for v in shape_zyx)
    if len(shape) != 3 or min(shape) < 4:
        raise MilopypError(f"simulate: shape_zyx must be 3 sizes >= 4 (z, y, x), got {shape_zyx}")
    if not voxel_size_a > 0:
        raise MilopypError(f"simulate: voxel size must be > 0 Å, got {voxel_size_a}")
    params = preset_parameters(preset, counts=counts, **overrides)
    n_per = species_counts(params, shape, voxel_size_a)
    # spawn(3)[:2] == spawn(2): the spike stream leaves the older streams as they were
    phantom_rng, noise_rng, spike_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3)
    )
    phantom, rows = _build_phantom(
        phantom_rng, shape, voxel_size_a, params, n_per, spike_rng=spike_rng
    )

    angles = default_angles(params) if angles_deg is None else np.asarray(angles_deg, float)
    proj = project(phantom, angles)
    tilts = _image_tilts(proj, angles, voxel_size_a, shape[0] * voxel_size_a, params, noise_rng)
    tomo = backproject(tilts, angles, shape[0], filter_name=params["recon_filter"])
    tomo -= tomo.mean()
    tomo /= max(float(tomo.std()), 1e-12)

    columns = ["tomogram", "species", "x", "y", "z", "rot", "tilt", "psi", "radius_a", "fiber_id"]
    if n_per["spike"]:
        columns.append("vesicle_id")
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
