"""Training the localiser on a few labelled particles (Methods: "Model training ...").

The network works on the tomograms binned so that a particle is about 10 voxels across
(:mod:`milopyp.localize.scale`; ``bin_factor``), and its 3D part reaches beyond the paper's
3-slice fusion with dilated z-context layers (``z_dilations``, default 1, 2, 4: ±8 working
slices, a whole ribosome). Random sub-tomogram crops (default 16 × 64 × 64 working voxels,
paper: 5 × 64 × 64, batches of 2) are drawn, half of them centred near a random label
(jittered by up to a quarter crop) and half uniformly (a quarter near known negatives when
any are given); each crop and an augmented copy (x–y flips / 90° rotations, intensity
jitter) form the Siamese pair. Adam (lr 1e-3), learning rate × 0.1 every ``lr_step_epochs``
(StepLR). One log line per epoch. On the independent crowded benchmark
(``benchmarks/accuracy.py --dataset ../shared/devset/crowded``), without the z-context and
the binning the heat map never rose above its initial bias (label peaks 0.094, held-out
F1 0.16); with them the labelled tomogram's own particles and the held-out ones are ranked
(figures in the README).

Reproducibility: the model is initialised from ``seed`` inside a forked torch RNG, crops
and augmentations come from a numpy Generator and the contrastive sampling from a torch
Generator, both seeded from ``seed``; no global generator is used, so the same seed gives
the same model on the CPU. A checkpoint written after every epoch (atomically) stores the
epoch, model, optimiser, scheduler, both generator states, the network and training
settings and the loss history; training resumes from it, bit-identical on the CPU.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from milopyp.device import resolve_device
from milopyp.errors import MilopypError
from milopyp.io.atomic import atomic_path
from milopyp.localize.augment import (
    FlipRot,
    apply_flip_rot,
    flip_rot_index_map,
    jitter_intensity,
    random_flip_rot,
    rotated_crop,
    undo_flip_rot,
)
from milopyp.localize.losses import LossSettings, localizer_loss
from milopyp.localize.normalize import intensity_stats, normalize
from milopyp.localize.pu import class_prior_from_count
from milopyp.localize.scale import auto_bin_factor, bin_volume, to_binned
from milopyp.localize.targets import SHAPES, core_voxels, heatmap_target, sigma_from_radius
from milopyp.localize.unet import Localizer, LocalizerConfig, LocalizerOutput

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "milopyp-localizer"
CHECKPOINT_VERSION = 1
#: when neither a class prior nor an expected particle count is given, the labels are
#: assumed to be this fraction of all particles (few-shot labelling) until the prior is
#: re-estimated from the model (:data:`PRIOR_UPDATE_EPOCHS`)
ASSUMED_LABELLED_FRACTION = 0.1
#: after these epochs, an assumed prior is replaced by one estimated from the model: the
#: particles its heat map shows away from the labels in the labelled tomograms (globular
#: particles only; see :func:`estimate_class_prior`)
PRIOR_UPDATE_EPOCHS = (2, 4)
#: bounds of the estimated number of unlabelled particles, in labels
PRIOR_UPDATE_BOUNDS = (0.5, 50.0)
#: tomograms (the most labelled) whose heat maps estimate the prior
PRIOR_TOMOGRAMS = 3
#: z-context dilations of a globular target's network when none are given (fibres: none)
DEFAULT_Z_DILATIONS = (1, 2, 4)
#: after this epoch, labels taken from candidate positions (``recentre_labels``) move to the
#: model's heat-map maximum within :data:`RECENTRE_FRACTION` × the particle radius of each:
#: the network, shared by all particles, centres them more consistently than the DoG peaks
#: they came from (median 3.8 voxels from the true centre on the devset's insitu set)
RECENTRE_EPOCH = 4
RECENTRE_FRACTION = 0.5
#: smallest training crop (z, y, x) on the working grid; larger crops are reduced to the
#: (binned) tomogram's size
MIN_CROP_ZYX = (3, 16, 16)
#: fraction of training crops centred near a known negative (when any are given)
NEGATIVE_CROP_FRACTION = 0.25


@dataclass(frozen=True)
class TrainSettings:
    """Everything besides the network that defines a training run (stored in checkpoints)."""

    particle_radius_vox: float
    shape: str = "globular"
    epochs: int = 6
    iterations_per_epoch: int = 100
    crop_zyx: tuple[int, int, int] = (5, 64, 64)
    batch_size: int = 2
    lr: float = 1e-3
    lr_step_epochs: int = 3
    lr_gamma: float = 0.1
    seed: int = 0
    label_crop_fraction: float = 0.5
    recentre_labels: bool = False
    loss: dict = field(default_factory=dict)  # LossSettings as a dict


@dataclass
class _Data:
    tomograms: list[np.ndarray]
    labels: list[np.ndarray]  # (N, 3) xyz float
    stats: list[tuple[float, float]]
    negatives: list[np.ndarray] | None = None  # (M, 3) xyz float, known non-targets


def resolve_class_prior(
    class_prior: float | None,
    expected_particles: float | None,
    labels: list[np.ndarray],
    shapes_zyx: list[tuple[int, int, int]],
    *,
    shape: str,
) -> float:
    """π_p: given; else the unlabelled particles per voxel, (expected particles per tomogram
    − labels per tomogram) / voxels; else assume the labels are
    :data:`ASSUMED_LABELLED_FRACTION` of the particles (logged; re-estimated during training).

    π_p weighs the labelled particles' loss against the unlabelled voxels (R_u⁻ − π_p·R_p⁻
    estimates the loss of the negatives), so it must count the particles hidden among the
    unlabelled voxels only: the labelled ones are not in U. On the crowded benchmark
    (benchmarks/accuracy.py) the true unlabelled density gave F1 0.989 ± 0.008 (3 seeds), an
    assumed prior 3× too high 0.970 ± 0.017 and one 3× too low 0.947 ± 0.015.
    """
    if class_prior is not None:
        if not 0.0 < class_prior < 1.0:
            raise MilopypError(f"class prior: expected 0 < π_p < 1, got {class_prior}")
        return float(class_prior)
    n_vox = float(np.mean([np.prod(s) for s in shapes_zyx]))
    n_labels = float(np.mean([len(lab) for lab in labels]))
    if expected_particles is not None:
        if not expected_particles > 0:
            raise MilopypError(f"expected particles: expected a positive count, got "
                               f"{expected_particles}")
        hidden = max(float(expected_particles) - n_labels, 0.1 * float(expected_particles))
        return class_prior_from_count(hidden, (int(n_vox),))
    per_label = 1.0
    if shape == "fiber":  # tube voxels per fibre point: radius 3, points ~2 voxels apart
        per_label = math.pi * 3.0**2 * 2.0
    hidden = max(n_labels, 1.0) * (1.0 / ASSUMED_LABELLED_FRACTION - 1.0)
    prior = min(0.5, hidden * per_label / n_vox)
    log.info("no class prior or expected particle count given: assuming the %d labels "
             "are %.0f%% of the particles, π_p = %.3g%s", int(n_labels),
             100 * ASSUMED_LABELLED_FRACTION, prior,
             " until it is estimated from the model" if shape == "globular" else "")
    return prior


def estimate_class_prior(
    model: Localizer,
    tomograms: list[np.ndarray],
    labels: list[np.ndarray],
    stats: list[tuple[float, float]],
    radius_vox: float,
    device: torch.device,
) -> float:
    """π_p from the model: unlabelled particles per voxel in the most labelled tomograms.

    In each of (up to :data:`PRIOR_TOMOGRAMS`) labelled tomograms, the heat map's particles
    above the automatic threshold (:mod:`milopyp.localize.calibrate`, the same rule the
    picks use) and farther than r/2 from every label are counted
    (:func:`milopyp.localize.calibrate.count_particles`), bounded to
    :data:`PRIOR_UPDATE_BOUNDS` × the labels. Why: the assumed fraction of labelled
    particles is a guess (the crowded benchmark's 55 labels were 24% of the particles, not
    10%); the model counts them better after two epochs (estimated 226 unlabelled
    ribosomes for 177 true, where the assumption gave 495).
    """
    from milopyp.localize.calibrate import (
        auto_threshold,
        count_particles,
        label_peak_scores,
        most_labelled,
    )
    from milopyp.localize.infer import predict_heatmap

    hidden, n_vox = 0.0, 0.0
    for i in most_labelled(labels, PRIOR_TOMOGRAMS):
        lab = labels[i]
        heat = predict_heatmap(model, tomograms[i], device=device, stats=stats[i])
        threshold = auto_threshold(label_peak_scores(heat, lab, radius_vox / 2))
        found = count_particles(heat, threshold, radius_vox, exclude_xyz=lab)
        lo, hi = PRIOR_UPDATE_BOUNDS
        hidden += float(np.clip(found, lo * len(lab), hi * len(lab)))
        n_vox += float(heat.size)
        log.info("  tomogram %d: %d particles away from its %d labels (threshold %.3g)", i,
                 found, len(lab), threshold)
    return min(0.5, hidden / n_vox)


def _check_inputs(tomograms: list[np.ndarray], labels: list[np.ndarray],
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


def _working_labels(labels: list[np.ndarray], tomograms: list[np.ndarray],
                    b: int) -> list[np.ndarray]:
    """Labels (voxels of the tomograms) on the working grid binned by ``b``."""
    if b == 1:
        return labels
    return [np.clip(to_binned(lab, b), 0, np.array(t.shape[::-1]) - 1)
            for lab, t in zip(labels, tomograms)]


def _sample_crops(
    data: _Data, settings: TrainSettings, rng: np.random.Generator
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
        z0, y0, x0 = (int(v) for v in origin)
        if settings.shape == "fiber":  # any in-plane direction (see rotated_crop)
            raw, local = rotated_crop(data.tomograms[i], origin, settings.crop_zyx,
                                      rng.uniform(0.0, 2.0 * math.pi), data.labels[i])
            a = normalize(raw, data.stats[i])
            y = _crop_target(local, np.zeros(3, dtype=np.int64), settings)
        else:
            a = normalize(data.tomograms[i][z0:z0 + cz, y0:y0 + cy, x0:x0 + cx], data.stats[i])
            y = _crop_target(data.labels[i], origin, settings, negs[i])
        op = random_flip_rot(rng, square=cy == cx)
        b = jitter_intensity(apply_flip_rot(a, op), rng)
        ys.append(y)
        x1.append(a)
        x2.append(b)
        ops.append(op)
    return np.stack(x1)[:, None], np.stack(x2)[:, None], ops, np.stack(ys)[:, None]


def _crop_target(xyz: np.ndarray, origin_zyx: np.ndarray, settings: TrainSettings,
                 negatives_xyz: np.ndarray | None = None) -> np.ndarray:
    if settings.shape == "globular":
        reach = 3.0 * sigma_from_radius(settings.particle_radius_vox) + 1
    else:
        reach = 4.0
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


def _step(model: Localizer, data: _Data, settings: TrainSettings, loss_settings: LossSettings,
          rng: np.random.Generator, gen: torch.Generator, opt: torch.optim.Optimizer,
          device: torch.device) -> dict[str, float]:
    x1, x2, ops, y = _sample_crops(data, settings, rng)
    x = torch.from_numpy(np.concatenate([x1, x2])).to(device)
    out = model(x, with_features=loss_settings.contrastive)
    b = len(ops)
    logits2 = torch.stack([undo_flip_rot(t, op) for t, op in zip(out.logits[b:], ops)])
    feats1 = feats2 = None
    if loss_settings.contrastive:
        view1 = LocalizerOutput(out.logits[:b], out.proj[:b], out.padded_yx)
        view2 = LocalizerOutput(out.logits[b:], out.proj[b:], out.padded_yx)
        h, w = x1.shape[-2:]
        maps = torch.stack([flip_rot_index_map(op, h, w) for op in ops]).to(device)
        feats1 = view1.voxel_features
        feats2 = partial(view2.voxel_features, index_map=maps)
    parts = localizer_loss(out.logits[:b], logits2, torch.from_numpy(y).to(device),
                           loss_settings, features1=feats1, features2=feats2, generator=gen)
    opt.zero_grad(set_to_none=True)
    parts.total.backward()
    opt.step()
    return parts.as_floats()


def train_localizer(
    tomograms: list[np.ndarray],
    labels: list[np.ndarray],
    *,
    particle_radius_vox: float,
    negatives: list[np.ndarray] | None = None,
    shape: str = "globular",
    epochs: int = 18,
    iterations_per_epoch: int = 100,
    crop: tuple[int, int, int] = (16, 64, 64),
    batch_size: int = 2,
    lr: float = 1e-3,
    lr_step_epochs: int = 12,
    class_prior: float | None = None,
    expected_particles: float | None = None,
    contrastive: bool = True,
    pu: bool = True,
    seed: int = 0,
    device: str | torch.device = "auto",
    checkpoint_path: str | Path | None = None,
    n_blocks: int = 4,
    base_channels: int = 16,
    stride_xy: int = 2,
    fusion_channels: int = 16,
    proj_dim: int = 16,
    z_dilations: tuple[int, ...] | None = None,
    bin_factor: int | None = None,
    temperature: float = 0.07,
    recentre_labels: bool = False,
) -> Localizer:
    """Train the localiser on tomograms with a few labelled particle centres.

    tomograms: [z, y, x] arrays (np.memmap fine: only crops are read), not yet normalised.
    labels: per tomogram an (N, 3) array of x, y, z centres in voxels (N may be 0).
    negatives: per tomogram an (M, 3) array of x, y, z centres of objects that are not the
        target (explicit negatives, M may be 0): y = −2 within the particle radius, a loss
        term of their own (:mod:`milopyp.localize.pu`), and a quarter of the crops near them.
    particle_radius_vox: particle radius (voxels); sets the target Gaussian σ = r/3.
    shape: "globular" or "fiber" (filament targets: radius-3 tubes).
    epochs, iterations_per_epoch, crop (z, y, x), batch_size, lr, lr_step_epochs:
        schedule (lr × 0.1 every ``lr_step_epochs`` epochs).
    class_prior: π_p, particle centres per voxel; or ``expected_particles`` per tomogram.
    contrastive, pu: switch off the contrastive term / the PU loss (paper's ablations).
    seed: all randomness; device: "auto" | "cpu" | "cuda".
    checkpoint_path: written atomically after each epoch; resumed from when it exists and
        was written by a run on the same inputs (:func:`inputs_fingerprint`), network and
        settings (any number of epochs); otherwise training starts afresh, with a warning.
    n_blocks, base_channels, stride_xy, fusion_channels, proj_dim: network
        (:class:`milopyp.localize.unet.LocalizerConfig`); temperature: contrastive t.
    z_dilations: z-context layers after the fusion; None = :data:`DEFAULT_Z_DILATIONS` for
        globular targets, none for fibres.
    bin_factor: working-grid bin; None = :func:`milopyp.localize.scale.auto_bin_factor` of
        the particle diameter for globular targets, 1 for fibres. ``crop`` is in voxels of
        the working grid (reduced to the smallest binned tomogram when larger).
    recentre_labels: after epoch :data:`RECENTRE_EPOCH`, move each label to the model's
        heat-map maximum near it (:func:`move_labels_to_maxima`; globular targets): for labels
        taken from candidate positions, which sit a few voxels off the particles' centres.

    Returns the trained model in eval mode, on ``device``; ``model.history`` lists the
    per-epoch mean losses (total, heat, sup, unsup, consistency), lr, seconds and the PU
    prior in effect after the epoch (``prior``: with neither ``class_prior`` nor
    ``expected_particles`` given, it is re-estimated from the model after the epochs in
    :data:`PRIOR_UPDATE_EPOCHS`, see :func:`estimate_class_prior`).
    """
    if shape not in SHAPES:
        raise MilopypError(f"shape: expected one of {SHAPES}, got {shape!r}")
    crop = tuple(int(c) for c in crop)
    if z_dilations is None:  # filaments: the paper's fusion (z-context not measured on them)
        z_dilations = DEFAULT_Z_DILATIONS if shape == "globular" else ()
    if bin_factor is None:  # filament targets are thin tubes: keep their full resolution
        b = auto_bin_factor(2.0 * particle_radius_vox) if shape == "globular" else 1
    else:
        b = int(bin_factor)
    labels = _check_inputs(tomograms, labels, tuple(c * b for c in MIN_CROP_ZYX))
    if negatives is not None:
        if len(negatives) != len(labels):
            raise MilopypError(f"training: expected one negatives array per tomogram, got "
                               f"{len(negatives)} for {len(labels)} tomograms")
        negatives = [np.asarray(n, dtype=np.float64).reshape(-1, 3) for n in negatives]
        if sum(len(n) for n in negatives) == 0:
            negatives = None
    originals, original_labels, original_radius = list(tomograms), labels, particle_radius_vox
    if b > 1:
        tomograms = [bin_volume(t, b) for t in tomograms]
        labels = _working_labels(labels, tomograms, b)
        if negatives is not None:
            negatives = [to_binned(n, b) for n in negatives]
        particle_radius_vox = particle_radius_vox / b
        log.info("working on the tomograms binned by %d: particle radius %.1f voxels",
                 b, particle_radius_vox)
    smallest = np.min([t.shape for t in tomograms], axis=0)
    if any(c > s for c, s in zip(crop, smallest)):
        fitted = tuple(int(min(c, s)) for c, s in zip(crop, smallest))
        log.info("training crop %s (z, y, x) reduced to %s: the smallest (binned) tomogram is "
                 "%s", crop, fitted, tuple(int(s) for s in smallest))
        crop = fitted
    dev = resolve_device(device)
    prior = resolve_class_prior(class_prior, expected_particles, labels,
                                [t.shape for t in tomograms], shape=shape)
    per_particle = core_voxels(particle_radius_vox) if shape == "globular" else 1
    loss_settings = LossSettings(prior=prior, contrastive_prior=min(0.5, prior * per_particle),
                                 pu=pu, contrastive=contrastive, temperature=temperature)
    settings = TrainSettings(
        particle_radius_vox=float(particle_radius_vox), shape=shape, epochs=int(epochs),
        iterations_per_epoch=int(iterations_per_epoch), crop_zyx=crop,
        batch_size=int(batch_size), lr=float(lr), lr_step_epochs=int(lr_step_epochs),
        seed=int(seed), recentre_labels=bool(recentre_labels) and shape == "globular",
        loss=asdict(loss_settings),
    )
    net_config = LocalizerConfig(n_blocks=n_blocks, base_channels=base_channels,
                                 stride_xy=stride_xy, fusion_channels=fusion_channels,
                                 proj_dim=proj_dim, z_dilations=tuple(z_dilations),
                                 bin_factor=b)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Localizer(net_config)
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=settings.lr_step_epochs,
                                            gamma=settings.lr_gamma)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    start = 0
    stats = [intensity_stats(t) for t in tomograms]
    inputs = inputs_fingerprint(tomograms, stats, labels, negatives)
    working = None
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        start, history, working = _resume(checkpoint_path, model, opt, sched, rng, gen,
                                          net_config, settings, inputs, dev)
    data = _Data(tomograms=list(tomograms), labels=working or labels, stats=stats,
                 negatives=negatives)
    estimate = ((pu or contrastive) and class_prior is None and expected_particles is None
                and shape == "globular")
    if history and "prior" in history[-1]:  # resumed after a prior update
        loss_settings = _with_prior(loss_settings, history[-1]["prior"], per_particle)
    log.info("training localiser: %d tomogram(s), %d labels, %d negatives, π_p = %.3g, %s, "
             "epochs %d-%d", len(tomograms), sum(len(lab) for lab in labels),
             sum(len(n) for n in negatives or []), loss_settings.prior, dev, start + 1, epochs)
    for epoch in range(start, settings.epochs):
        model.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        for _ in range(settings.iterations_per_epoch):
            for k, v in _step(model, data, settings, loss_settings, rng, gen, opt, dev).items():
                sums[k] = sums.get(k, 0.0) + v / settings.iterations_per_epoch
        lr_now = opt.param_groups[0]["lr"]
        sched.step()
        if estimate and epoch + 1 in PRIOR_UPDATE_EPOCHS and epoch + 1 < settings.epochs:
            t1 = time.perf_counter()
            new_prior = estimate_class_prior(model, originals, original_labels,
                                             [intensity_stats(t) for t in originals],
                                             original_radius, dev)
            new_prior = min(0.5, new_prior * b**3)  # per voxel of the binned grid
            log.info("π_p re-estimated from the model: %.3g (was %.3g), %.1f s", new_prior,
                     loss_settings.prior, time.perf_counter() - t1)
            loss_settings = _with_prior(loss_settings, new_prior, per_particle)
        if settings.recentre_labels and epoch + 1 == RECENTRE_EPOCH < settings.epochs:
            t1 = time.perf_counter()
            moved = move_labels_to_maxima(model, originals, original_labels,
                                          [intensity_stats(t) for t in originals],
                                          original_radius, dev)
            shift = np.concatenate([np.linalg.norm(m - o, axis=1)
                                    for m, o in zip(moved, original_labels)])
            log.info("labels moved to the model's maxima within %.1f voxels: median %.1f, "
                     "max %.1f voxels, %.1f s", RECENTRE_FRACTION * original_radius,
                     float(np.median(shift)), float(shift.max()), time.perf_counter() - t1)
            data.labels = _working_labels(moved, tomograms, b)
        sums.update(epoch=epoch + 1, lr=lr_now, seconds=time.perf_counter() - t0,
                    prior=loss_settings.prior)
        history.append(sums)
        log.info("epoch %d/%d loss %.4f (heat %.4f sup %.4f unsup %.4f cons %.4f) lr %.1e "
                 "%.1f s", epoch + 1, settings.epochs, sums["total"], sums["heat"], sums["sup"],
                 sums["unsup"], sums["consistency"], lr_now, sums["seconds"])
        if checkpoint_path is not None:
            _save(checkpoint_path, epoch + 1, model, opt, sched, rng, gen, net_config,
                  settings, history, inputs, data.labels)
    model.eval()
    model.history = history
    return model


def _with_prior(loss_settings: LossSettings, prior: float, per_particle: int) -> LossSettings:
    """``loss_settings`` with PU prior ``prior`` and the matching contrastive prior."""
    return replace(loss_settings, prior=float(prior),
                   contrastive_prior=min(0.5, float(prior) * per_particle))


def _save(path: str | Path, epoch: int, model: Localizer, opt: torch.optim.Optimizer,
          sched: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator,
          gen: torch.Generator, net_config: LocalizerConfig, settings: TrainSettings,
          history: list[dict[str, float]], inputs: str,
          working_labels: list[np.ndarray]) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "inputs": inputs,
        "network": net_config.to_dict(),
        "settings": asdict(settings),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": {"numpy": rng.bit_generator.state, "torch": gen.get_state()},
        "history": history,
        # the labels in training now (moved by recentre_labels), on the working grid
        "working_labels": [torch.from_numpy(np.asarray(lab, dtype=np.float64))
                           for lab in working_labels],
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _read(path: str | Path, device: torch.device) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # any unreadable file gets the same message
        raise MilopypError(f"{path}: cannot read the localiser checkpoint ({exc}); delete it "
                           "to start over") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise MilopypError(f"{path}: not a milopyp localiser checkpoint; give the model.pt "
                           "written by train_localizer")
    return state


def inputs_fingerprint(tomograms: list[np.ndarray], stats: list[tuple[float, float]],
                       labels: list[np.ndarray], negatives: list[np.ndarray] | None) -> str:
    """SHA-256 of what a training run learns from: each (working-grid) tomogram's shape and
    intensity statistics, its labels and its negatives. A checkpoint is resumed only by a
    run with the same fingerprint (and the same network and settings)."""
    h = hashlib.sha256()
    for i, (t, (mean, std), lab) in enumerate(zip(tomograms, stats, labels)):
        h.update(repr((i, tuple(int(s) for s in t.shape), float(mean), float(std))).encode())
        h.update(np.round(np.asarray(lab, dtype=np.float64), 3).tobytes())
        neg = negatives[i] if negatives is not None else np.zeros((0, 3))
        h.update(b"negatives" + np.round(np.asarray(neg, dtype=np.float64), 3).tobytes())
    return h.hexdigest()


def _resume(path, model, opt, sched, rng, gen, net_config, settings, inputs, device):
    """Restore the training state from the checkpoint ``path`` and return (epoch, history,
    the labels in training on the working grid, or None); (0, [], None) and a warning when
    the checkpoint belongs to other inputs, another network or other settings, or cannot be
    read: training starts afresh (and overwrites it)."""
    try:
        state = _read(path, device)
    except MilopypError as exc:
        log.warning("%s; starting afresh", exc)
        return 0, [], None
    old = dict(state["settings"])
    new = asdict(settings)
    old.pop("epochs"), new.pop("epochs")
    old["crop_zyx"] = tuple(old["crop_zyx"])
    why = []
    if state.get("inputs") != inputs:  # checkpoints before the fingerprint have none
        why.append("other tomograms, labels or negatives")
    network = net_config.to_dict()
    if state["network"] != network:
        changed = sorted(k for k, v in network.items() if state["network"].get(k) != v)
        why.append(f"another network ({', '.join(changed)})")
    if old != new:
        changed = sorted(k for k in new if old.get(k) != new[k])
        why.append(f"other settings ({', '.join(changed)})")
    if why:
        log.warning("%s was written by a run with %s: not resuming, training afresh", path,
                    "; ".join(why))
        return 0, [], None
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["rng"]["numpy"]
    gen.set_state(state["rng"]["torch"].cpu())
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    working = state.get("working_labels")
    return (int(state["epoch"]), list(state["history"]),
            None if working is None else [t.cpu().numpy() for t in working])


def load_localizer(path: str | Path, *, device: str | torch.device = "cpu") -> Localizer:
    """The trained model (eval mode) from a checkpoint written by :func:`train_localizer`.

    The checkpoint (``torch.save`` dict, read with ``weights_only=True``) holds: format
    "milopyp-localizer", version, epoch, network (LocalizerConfig fields), settings
    (TrainSettings incl. loss settings), model / optimizer / scheduler state dicts, rng
    (numpy bit-generator state, torch generator state), history (per-epoch losses) and
    working_labels (the labels in training, moved by ``recentre_labels``); the
    finished model file adds calibration (label peak scores and the automatic threshold,
    see :mod:`milopyp.localize.calibrate`), exposed as ``model.calibration``.
    """
    dev = resolve_device(device)
    state = _read(path, dev)
    model = Localizer(LocalizerConfig.from_dict(state["network"]))
    model.load_state_dict(state["model"])
    model.settings = state["settings"]
    model.calibration = state.get("calibration", {})
    return model.to(dev).eval()
