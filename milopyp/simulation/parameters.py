"""Species, default parameters and presets of the simulator (see :mod:`milopyp.simulate`)."""

from __future__ import annotations

import copy
import math

import numpy as np

from milopyp.errors import MilopypError

#: Rigid particles placed from a template at a random orientation, in the order they are drawn.
GLOBULAR_SPECIES = ("ribosome", "decoy", "small", "gold")
#: The spike-like membrane protein: ``spike`` sits on a vesicle (axis along the outward
#: membrane normal), ``free_spike`` is the same template at a random orientation away from
#: membranes. Drawn after everything else, from their own random stream.
SPIKE_SPECIES = ("spike", "free_spike")
#: Species that are rigid particles placed from a template.
PARTICLE_SPECIES = (*GLOBULAR_SPECIES, *SPIKE_SPECIES)
#: Every species the simulator knows.
SPECIES = (*PARTICLE_SPECIES, "vesicle", "filament")

_DEFAULTS: dict = {
    # nominal sizes (Å): particle diameter (max extent); filament outer diameter; spike
    # length from the membrane to the tip of the head (decoy None = the ribosome's mean
    # width, so both look the same size)
    "sizes_a": {
        "ribosome": 260.0,
        "decoy": None,
        "small": 120.0,
        "gold": 100.0,
        "spike": 200.0,
        "filament": 250.0,
    },
    "filament_inner_diameter_a": 170.0,
    # "random": independent curves (may touch each other; fine for one filament);
    # "crossing": pairs crossing in projection and one pair crossing in 3-D one filament
    # diameter + min_gap_a apart in z, no two filaments closer than that
    "filament_layout": "random",
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
#: Densities are per µm³: a 64 x 256 x 256 tomogram at 12 Å is 0.00725 µm³.
PRESETS: dict[str, dict] = {
    # moderate density and SNR, every globular species except the decoy
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
    # vesicles carrying spikes + as many free spikes (same template: only the membrane
    # tells them apart) + a few ribosomes and small particles; moderate-low dose.
    # 64 x 256 x 256 at 12 Å: 4 vesicles, 24 spikes, 24 free spikes, 8 ribosomes, 12 small
    "membrane": {
        "per_um3": {
            "vesicle": 552.0,
            "spike": 3312.0,
            "free_spike": 3312.0,
            "ribosome": 1104.0,
            "small": 1656.0,
        },
        "vesicle_radius_a": (300.0, 500.0),
        "min_gap_a": 20.0,
        "dose_per_tilt": 1.5,
    },
    # 4 gently curved filaments in x-y, crossing in projection and one pair in 3-D (one
    # diameter + gap apart in z), + ribosomes and small particles as distractors.
    # 64 x 256 x 256 at 12 Å: 4 filaments, 10 ribosomes, 15 small
    "filament": {
        "counts": {"filament": 4},
        "per_um3": {"ribosome": 1380.0, "small": 2070.0},
        "filament_layout": "crossing",
        "min_gap_a": 20.0,
        "dose_per_tilt": 2.0,
    },
}


def preset_parameters(preset: str = "demo", **overrides) -> dict:
    """Parameters of ``preset`` merged over the defaults, then ``overrides`` (same keys).

    ``counts``, ``per_um3`` and ``sizes_a`` overrides are merged species by species.
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
    if params["filament_layout"] not in ("random", "crossing"):
        raise MilopypError(
            f"unknown filament_layout {params['filament_layout']!r}; use random or crossing"
        )
    return params


def parse_counts(items) -> dict[str, int]:
    """``SPECIES=N`` strings (``--count ribosome=40``) -> ``{species: N}``; MilopypError on an
    unknown species or an N that is not a whole number."""
    counts = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in SPECIES or not value.strip().isdigit():
            raise MilopypError(
                f"--count {item!r}: expected SPECIES=N with SPECIES one of {', '.join(SPECIES)} "
                f"and N a whole number, e.g. --count ribosome=40"
            )
        counts[name] = int(value)
    return counts


def species_counts(params: dict, shape_zyx, voxel_size_a: float) -> dict[str, int]:
    """Number of objects per species for a volume: ``counts`` else ``per_um3`` x volume.

    ``spike`` counts the spikes attached to vesicles (shared out over the vesicles),
    ``free_spike`` the ones floating away from membranes.
    """
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
