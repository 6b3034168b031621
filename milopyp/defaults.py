"""Every derived default, defined once.

A derived default is a setting the user may leave unset because it follows from another one
(mostly the particle diameter and the voxel size). The command line's defaults and the
workflow's rule parameters both call these functions, so a command run by hand and the same
step run by Snakemake get the same value (``tests/test_defaults.py`` checks both against
them). Lengths carry their unit in the name: ``_a`` Å, ``_vox`` voxels.
"""

from __future__ import annotations

import math

#: patch side: 1.5 particle diameters, rounded up to a multiple of 16 voxels, at least 32
PATCH_DIAMETERS = 1.5
PATCH_MULTIPLE_VOX = 16
PATCH_MIN_VOX = 32

#: fibre picks closer than this fraction of the filament diameter are linked (picks of a
#: fibre model lie 3-7 voxels apart along a filament; separate filaments' centre lines are
#: at least one diameter apart)
LINK_DIAMETER_FRACTION = 0.6
#: link distance when no filament diameter is known: 0.6 x a 250 Å microtubule at 12 Å/voxel
FALLBACK_LINK_DISTANCE_VOX = 12.0
#: extraction points along a fibre: this many per filament diameter
SEGMENT_SPACING_DIAMETERS = 3.0
#: segment spacing when no filament diameter is known: one tubulin dimer (8 nm)
FALLBACK_SEGMENT_SPACING_A = 80.0

#: radius (voxels) of the tube a fibre target is trained on (the paper's 3)
FIBER_TUBE_RADIUS_VOX = 3.0
#: NMS box side (voxels) for fibre picks: dense points along the centre line
FIBER_NMS_KERNEL_VOX = 3
#: a fibre pick matches the truth within the training tube's radius
FIBER_EVALUATION_RADIUS_VOX = FIBER_TUBE_RADIUS_VOX
#: a globular pick matches the truth within this fraction of the particle diameter
EVALUATION_DIAMETER_FRACTION = 0.5


def patch_size_vox(particle_diameter_a: float, voxel_size_a: float) -> int:
    """Patch side in voxels for particles of ``particle_diameter_a`` Å."""
    diameter_vox = float(particle_diameter_a) / float(voxel_size_a)
    return max(PATCH_MIN_VOX,
               PATCH_MULTIPLE_VOX * math.ceil(PATCH_DIAMETERS * diameter_vox / PATCH_MULTIPLE_VOX))


def link_distance_a(particle_diameter_a: float) -> float:
    """Distance in Å below which fibre picks are linked."""
    return LINK_DIAMETER_FRACTION * float(particle_diameter_a)


def segment_spacing_a(particle_diameter_a: float) -> float:
    """Spacing in Å of the extraction points along a fibre."""
    return float(particle_diameter_a) / SEGMENT_SPACING_DIAMETERS


def nms_kernel_vox(particle_radius_vox: float) -> int:
    """NMS box side for globular particles of ``particle_radius_vox``: the odd integer
    nearest the radius, at least 3."""
    return max(3, round(float(particle_radius_vox)) | 1)


#: A peak closer than this fraction of the particle radius to a face of the tomogram is "at
#: that face": a particle cut by the face, or a maximum of the heat map's own edge. The
#: profile check does not judge such a peak
#: (:data:`milopyp.localize.profile.PROFILE_FACE_FRACTION`), and ``milopyp localize`` drops a
#: globular pick at the top or bottom face (:func:`z_face_margin_vox`). The specimen lies
#: between those two faces, where the x-y edges of a tomogram cut through it (a particle
#: half outside the field of view is still a particle, and x-y faces keep theirs). On the
#: devset, every pick of the 22 saved 55-label and 82-label models within 8 voxels of a z
#: face was false (36 attached-spike picks, none of ribosomes; the truth lies 15 or more
#: voxels inside); held-out F1 docs/accuracy.md, "Stop 43".
FACE_RADIUS_FRACTION = 0.5


def z_face_margin_vox(particle_radius_vox: float) -> float:
    """Distance in voxels from the top and bottom faces of a tomogram within which a
    globular pick of ``particle_radius_vox`` is dropped (:data:`FACE_RADIUS_FRACTION`)."""
    return FACE_RADIUS_FRACTION * float(particle_radius_vox)


def evaluation_radius_a(particle_diameter_a: float) -> float:
    """Match radius in Å of a globular pick against the truth: half a diameter."""
    return EVALUATION_DIAMETER_FRACTION * float(particle_diameter_a)
