"""Image formation of the simulator: a weak-phase object through the CTF, radiation damage
(a B-factor growing with the accumulated dose), ice attenuation and shot noise. Images are
``[n, y, x]``; lengths in Å, the voxel size also the pixel size of the tilt images.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft


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
