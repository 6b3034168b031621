"""What a target's shape changes, in one small object instead of string compares.

``globular``: particles; Gaussian training targets around each label, NMS with a box of the
particle radius, picks matched within half a diameter. ``fiber``: filaments; every voxel of a
tube of :data:`~milopyp.defaults.FIBER_TUBE_RADIUS_VOX` around the labelled centre line is a
target, picks are the heat map's ridge centre-line points
(:func:`milopyp.localize.peaks.find_ridge_points`; box maxima when an NMS kernel is given)
traced into fibres and matched within the tube radius.
"""

from __future__ import annotations

from dataclasses import dataclass

from milopyp import defaults
from milopyp.errors import MilopypError


@dataclass(frozen=True)
class Shape:
    name: str
    #: picks are centre-line points, traced into fibres (fibres CSV/STAR, fibre metrics)
    filament: bool

    def nms_kernel_vox(self, particle_radius_vox: float) -> int:
        """NMS box side (voxels) of this shape's picks."""
        if self.filament:
            return defaults.FIBER_NMS_KERNEL_VOX
        return defaults.nms_kernel_vox(particle_radius_vox)

    def evaluation_radius_a(self, particle_diameter_a: float, voxel_size_a: float) -> float:
        """Match radius in Å of a pick against the truth."""
        if self.filament:
            return defaults.FIBER_EVALUATION_RADIUS_VOX * float(voxel_size_a)
        return defaults.evaluation_radius_a(particle_diameter_a)


GLOBULAR = Shape("globular", filament=False)
FIBER = Shape("fiber", filament=True)
SHAPES = {shape.name: shape for shape in (GLOBULAR, FIBER)}


def shape(name: str | Shape) -> Shape:
    """The :class:`Shape` called ``name`` (a Shape passes through)."""
    if isinstance(name, Shape):
        return name
    try:
        return SHAPES[name]
    except KeyError:
        raise MilopypError(f"shape: expected one of {sorted(SHAPES)}, got {name!r}") from None
