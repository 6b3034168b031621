"""Few-shot particle localisation (Methods: "Few-shot particle localization module").

- :mod:`~milopyp.localize.unet`: per-slice 2D UNet + 3D fusion + heat-map/projection heads
- :mod:`~milopyp.localize.targets`: Gaussian (or filament) heat-map targets from labels
- :mod:`~milopyp.localize.focal`, :mod:`~milopyp.localize.pu`,
  :mod:`~milopyp.localize.contrastive`, :mod:`~milopyp.localize.losses`: the losses
- :mod:`~milopyp.localize.train`: :func:`train_localizer` (the epoch loop),
  :func:`load_localizer`; :mod:`~milopyp.localize.data` (crops and targets),
  :mod:`~milopyp.localize.prior` (the PU class prior), :mod:`~milopyp.localize.checkpoint`
  (settings, checkpoint, resume; the file: :mod:`milopyp.io.localizer`)
- :mod:`~milopyp.localize.calibrate`: the automatic pick threshold
- :mod:`~milopyp.localize.profile`: globular picks checked against the labels' radial
  density profiles
- :mod:`~milopyp.localize.infer`: :func:`predict_heatmap` (tiled, bounded memory)
- :mod:`~milopyp.localize.peaks`: :func:`find_peaks` (max-pool NMS -> x, y, z, score),
  :func:`find_ridge_points` (a fibre heat map's centre-line points)
- :mod:`~milopyp.localize.stage`: what ``milopyp train-localize`` and ``milopyp localize`` run
"""

from __future__ import annotations

from milopyp.localize.infer import predict_heatmap
from milopyp.localize.peaks import find_peaks, find_ridge_points
from milopyp.localize.targets import heatmap_target, sigma_from_radius
from milopyp.localize.train import load_localizer, train_localizer
from milopyp.localize.unet import Localizer, LocalizerConfig

__all__ = [
    "Localizer",
    "LocalizerConfig",
    "find_peaks",
    "find_ridge_points",
    "heatmap_target",
    "load_localizer",
    "predict_heatmap",
    "sigma_from_radius",
    "train_localizer",
]
