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

1. **Phantom** ``[z, y, x]`` (:mod:`milopyp.simulation.phantom`, filaments in
   :mod:`milopyp.simulation.filaments`): density 1 = protein, 0 =
   vitreous ice (gold beads denser). Particles (``ribosome``, ``decoy``, ``small``, ``gold``,
   ``free_spike``) are small template maps rotated by a uniformly random 3-D rotation
   (``scipy.ndimage.affine_transform``, order 1) and added at sub-voxel centres without
   overlap; ``vesicle`` (a bilayer shell) and ``filament`` (a hollow, gently curved tube) are
   drawn directly into the volume; ``spike`` (a ~200 Å stalk + head membrane protein, the
   template of ``free_spike``) stands on a vesicle, axis along the outward normal.
2. **Tilt series**: line integrals with :func:`project` (tilt axis parallel to y, eq. 1 of the
   contract; :mod:`milopyp.simulation.projection`), weak-phase-object image formation
   (:mod:`milopyp.simulation.imaging`) with a CTF (defocus, 300 kV, Cs 2.7 mm,
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

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from milopyp.errors import MilopypError
from milopyp.simulation.imaging import _image_tilts, ctf_2d  # noqa: F401  (re-exported)
from milopyp.simulation.parameters import (  # noqa: F401  (re-exported)
    _DEFAULTS,
    GLOBULAR_SPECIES,
    PARTICLE_SPECIES,
    PRESETS,
    SPECIES,
    SPIKE_SPECIES,
    default_angles,
    parse_counts,
    preset_parameters,
    species_counts,
)
from milopyp.simulation.phantom import _build_phantom
from milopyp.simulation.projection import backproject, project
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


def run(
    output: str | os.PathLike,
    *,
    n_tomograms: int = 2,
    shape_zyx_vox=(64, 256, 256),
    voxel_size_a: float = 12.0,
    preset: str = "demo",
    seed: int = 0,
    counts: dict[str, int] | None = None,
    dose_per_tilt: float | None = None,
    protein_contrast: str = "dark",
    write_tilt_series: bool = True,
) -> list[str]:
    """The ``simulate`` stage: check the settings, then :func:`simulate_dataset` into the folder
    ``output``; returns the tomograms' names.

    ``shape_zyx_vox``: voxels, at least 8 per axis; ``voxel_size_a``: Å; ``counts``: objects
    per species and tomogram (None: the preset's densities); ``dose_per_tilt``: e/Å² per tilt
    image (None: the preset's).
    """
    from milopyp.io.atomic import check_writable

    if n_tomograms < 1:
        raise MilopypError(f"--n-tomograms must be >= 1, got {n_tomograms}")
    if min(shape_zyx_vox) < 8:
        raise MilopypError(f"--shape-vox must be >= 8 voxels per axis, got {list(shape_zyx_vox)}")
    if not voxel_size_a > 0:
        raise MilopypError(f"--voxel-size-a must be > 0 Å, got {voxel_size_a}")
    overrides = {}
    if dose_per_tilt is not None:
        if not dose_per_tilt > 0:
            raise MilopypError(f"--dose must be > 0 e/Å² per tilt, got {dose_per_tilt}")
        overrides["dose_per_tilt"] = dose_per_tilt
    check_writable(output, folder=True)
    names = simulate_dataset(
        output, n_tomograms=n_tomograms, shape_zyx=tuple(shape_zyx_vox),
        voxel_size_a=voxel_size_a, seed=seed, preset=preset,
        write_tilt_series=write_tilt_series, protein_contrast=protein_contrast,
        counts=counts or None, **overrides,
    )
    log.info("wrote %d tomograms to %s: %s", len(names), output, ", ".join(names))
    return names
