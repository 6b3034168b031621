"""The training data: inputs checked, labels on the working grid, crops and their targets.

Random sub-tomogram crops are drawn, a fraction centred near a random label (jittered by up
to a quarter crop), a fraction near known negatives (when any are given) and the rest
uniformly. Each crop is cut at a random in-plane angle
(:func:`milopyp.localize.augment.rotated_crop`) and, for globular targets, mirrored in z half
of the time (the z mirror keeps the missing wedge; the turn keeps it along z but turns the
tilt axis with the crop, as the quarter turns do); the crop and an augmented copy (x–y
flips / 90° rotations, intensity jitter) form the Siamese pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from milopyp.errors import MilopypError
from milopyp.localize.augment import (
    FlipRot,
    apply_flip_rot,
    jitter_intensity,
    random_flip_rot,
    rotated_crop,
)
from milopyp.localize.checkpoint import TrainSettings
from milopyp.localize.normalize import normalize
from milopyp.localize.scale import bin_volume, from_binned, to_binned
from milopyp.localize.targets import heatmap_target, sigma_from_radius
from milopyp.localize.unet import Localizer
from milopyp.shapes import shape as shape_named

#: after this epoch, labels taken from candidate positions (``recentre_labels``) move to the
#: model's heat-map maximum within :data:`RECENTRE_FRACTION` × the particle radius of each:
#: the network, shared by all particles, centres them more consistently than the DoG peaks
#: they came from (median 3.8 voxels from the true centre on the devset's insitu set)
RECENTRE_EPOCH = 4
RECENTRE_FRACTION = 0.5
#: fraction of training crops centred near a known negative (when any are given)
NEGATIVE_CROP_FRACTION = 0.25


@dataclass
class TrainingData:
    """The tomograms ([z, y, x], working grid), their labels and intensity statistics."""

    tomograms: list[np.ndarray]
    labels: list[np.ndarray]  # (N, 3) xyz float
    stats: list[tuple[float, float]]
    negatives: list[np.ndarray] | None = None  # (M, 3) xyz float, known non-targets
    #: the tomograms before binning by ``bin_factor`` (turned crops are cut from them)
    originals: list[np.ndarray] | None = None
    bin_factor: int = 1


def check_inputs(tomograms: list[np.ndarray], labels: list[np.ndarray],
                  crop: tuple[int, int, int]) -> list[np.ndarray]:
    if len(tomograms) == 0 or len(tomograms) != len(labels):
        raise MilopypError(f"training: expected one label array per tomogram, got "
                           f"{len(tomograms)} tomograms and {len(labels)} label arrays")
    out = []
    for i, (t, lab) in enumerate(zip(tomograms, labels)):
        if t.ndim != 3:
            raise MilopypError(f"tomogram {i}: expected 3-D [z, y, x], got shape {t.shape}")
        if any(s < c for s, c in zip(t.shape, crop)):
            raise MilopypError(f"tomogram {i}: shape {t.shape} is smaller than the training "
                               f"crop {crop} (z, y, x); it is too small to train on")
        lab = np.asarray(lab, dtype=np.float64).reshape(-1, 3)
        hi = np.array(t.shape[::-1]) - 0.5
        if len(lab) and (np.any(lab < -0.5) or np.any(lab > hi)):
            raise MilopypError(f"labels of tomogram {i}: coordinates outside the tomogram "
                               f"(x, y, z must lie within 0..{tuple(t.shape[::-1])}, got "
                               f"min {lab.min(0).round(1).tolist()}, max "
                               f"{lab.max(0).round(1).tolist()}); check the axis order")
        out.append(lab)
    if sum(len(lab) for lab in out) == 0:
        raise MilopypError("training: no labelled particles; give at least one label")
    return out


def move_labels_to_maxima(model: Localizer, tomograms: list[np.ndarray],
                          labels: list[np.ndarray], stats: list[tuple[float, float]],
                          radius_vox: float, device: torch.device) -> list[np.ndarray]:
    """Each label moved to the heat map's maximum within :data:`RECENTRE_FRACTION` ×
    ``radius_vox`` of it (voxels of the tomogram; the first maximum in z, y, x order on ties).
    """
    from milopyp.localize.infer import predict_heatmap

    reach = max(1.0, RECENTRE_FRACTION * radius_vox)
    k = math.ceil(reach)
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    offsets = grid[(grid ** 2).sum(axis=1) <= reach ** 2]  # dz, dy, dx
    moved = []
    for volume, lab, st in zip(tomograms, labels, stats):
        if len(lab) == 0:
            moved.append(lab)
            continue
        heat = predict_heatmap(model, volume, device=device, stats=st)
        limit = np.array(heat.shape) - 1
        out = np.empty_like(lab, dtype=np.float64)
        for n, xyz in enumerate(lab):
            points = np.clip(np.rint(xyz[::-1]).astype(np.int64) + offsets, 0, limit)
            best = points[int(np.argmax(heat[points[:, 0], points[:, 1], points[:, 2]]))]
            out[n] = best[::-1]
        moved.append(out)
    return moved


def working_labels(labels: list[np.ndarray], tomograms: list[np.ndarray],
                    b: int) -> list[np.ndarray]:
    """Labels (voxels of the tomograms) on the working grid binned by ``b``."""
    if b == 1:
        return labels
    return [np.clip(to_binned(lab, b), 0, np.array(t.shape[::-1]) - 1)
            for lab, t in zip(labels, tomograms)]


def sample_crops(
    data: TrainingData, settings: TrainSettings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[FlipRot], np.ndarray]:
    """A batch: crops (B, 1, D, H, W), augmented copies, their flips/rotations, targets."""
    cz, cy, cx = settings.crop_zyx
    crop = np.array(settings.crop_zyx)
    all_labels = [(i, j) for i, lab in enumerate(data.labels) for j in range(len(lab))]
    negs = data.negatives or [np.zeros((0, 3))] * len(data.labels)
    all_negatives = [(i, j) for i, neg in enumerate(negs) for j in range(len(neg))]
    sizes = np.array([np.prod(t.shape) for t in data.tomograms], dtype=np.float64)
    x1, x2, ops, ys = [], [], [], []
    for _ in range(settings.batch_size):
        u = rng.random()
        if u < settings.label_crop_fraction or (
                all_negatives and u < settings.label_crop_fraction + NEGATIVE_CROP_FRACTION):
            near_label = u < settings.label_crop_fraction
            pool, points = (all_labels, data.labels) if near_label else (all_negatives, negs)
            i, j = pool[int(rng.integers(len(pool)))]
            centre = np.rint(points[i][j, ::-1]).astype(int)
            jitter = rng.integers(-(crop // 4), crop // 4 + 1)
            origin = centre + jitter - crop // 2
        else:
            i = int(rng.choice(len(sizes), p=sizes / sizes.sum()))
            origin = rng.integers(0, np.array(data.tomograms[i].shape) - crop + 1)
        shape = np.array(data.tomograms[i].shape)
        origin = np.clip(origin, 0, shape - crop)
        if settings.rotate_xy:  # any in-plane direction (see rotated_crop)
            a, y = _rotated_crop(data, i, origin, negs[i], settings, rng)
        else:
            z0, y0, x0 = (int(v) for v in origin)
            a = normalize(data.tomograms[i][z0:z0 + cz, y0:y0 + cy, x0:x0 + cx], data.stats[i])
            y = crop_target(data.labels[i], origin, settings, negs[i])
        if settings.flip_z and rng.random() < 0.5:
            a, y = np.ascontiguousarray(a[::-1]), np.ascontiguousarray(y[::-1])
        op = random_flip_rot(rng, square=cy == cx)
        b = jitter_intensity(apply_flip_rot(a, op), rng)
        ys.append(y)
        x1.append(a)
        x2.append(b)
        ops.append(op)
    return np.stack(x1)[:, None], np.stack(x2)[:, None], ops, np.stack(ys)[:, None]


def _rotated_crop(data: TrainingData, i: int, origin: np.ndarray, negatives: np.ndarray,
                  settings: TrainSettings, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The crop at working-grid ``origin`` of tomogram ``i`` turned by a random in-plane
    angle (normalised) and its target. A binned model's crop is cut from the tomogram before
    binning and binned afterwards: turning the binned grid itself interpolates between its
    voxels and smooths the noise of the training crops only (on the devset's crowded set
    that fitted the labelled tomogram worse: F1 0.820 against 0.846)."""
    n = len(data.labels[i])
    points = np.concatenate([data.labels[i], negatives])
    angle = rng.uniform(0.0, 2.0 * math.pi)
    b = data.bin_factor
    if b > 1:
        raw, local = rotated_crop(data.originals[i], origin * b,
                                  tuple(int(c) * b for c in settings.crop_zyx), angle,
                                  from_binned(points, b))
        raw, local = bin_volume(raw, b), to_binned(local, b)
    else:
        raw, local = rotated_crop(data.tomograms[i], origin, settings.crop_zyx, angle, points)
    filament = shape_named(settings.shape).filament
    y = crop_target(local[:n], np.zeros(3, dtype=np.int64), settings,
                    None if filament else local[n:])
    return normalize(raw, data.stats[i]), y


def crop_target(xyz: np.ndarray, origin_zyx: np.ndarray, settings: TrainSettings,
                 negatives_xyz: np.ndarray | None = None) -> np.ndarray:
    if shape_named(settings.shape).filament:
        reach = 4.0
    else:
        reach = 3.0 * sigma_from_radius(settings.particle_radius_vox) + 1
    lo = origin_zyx[::-1] - reach
    hi = origin_zyx[::-1] + np.array(settings.crop_zyx[::-1]) + reach
    near = xyz[np.all((xyz >= lo) & (xyz <= hi), axis=1)]
    neg = None
    if negatives_xyz is not None and len(negatives_xyz):
        r = settings.particle_radius_vox + 1
        neg = negatives_xyz[np.all((negatives_xyz >= lo - r) & (negatives_xyz <= hi + r), axis=1)]
    return heatmap_target(near, settings.crop_zyx, radius_vox=settings.particle_radius_vox,
                          shape=settings.shape, origin_zyx=tuple(int(v) for v in origin_zyx),
                          negatives_xyz=neg)


