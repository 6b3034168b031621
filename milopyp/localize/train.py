"""Training the localiser on a few labelled particles (Methods: "Model training ...").

The network works on the tomograms binned so that a particle is about 10 voxels across
(:mod:`milopyp.localize.scale`; ``bin_factor``), and its 3D part reaches beyond the paper's
3-slice fusion with dilated z-context layers (``z_dilations``, default 1, 2, 4: ±8 working
slices, a whole ribosome). Random sub-tomogram crops (default 16 × 64 × 64 working voxels,
paper: 5 × 64 × 64, batches of 2) are drawn, half of them centred near a random label
(jittered by up to a quarter crop) and half uniformly (a quarter near known negatives when
any are given), each turned by a random in-plane angle and (globular targets) mirrored in z
half of the time; each crop and an augmented copy (x–y flips / 90° rotations, intensity
jitter) form the Siamese pair. Adam (lr 1e-3), learning rate × 0.1 every ``lr_step_epochs``
(StepLR), each step's gradient (globular targets) clipped to :data:`GRAD_CLIP_FACTOR` × the
median norm of the epoch before (one rare step with a gradient 10-270 × the median could
ruin a training that was going well; fibre training is not clipped, where it cost the
demo's microtubules, see ``grad_clip``). One log line per epoch. On the independent
crowded benchmark (``benchmarks/accuracy.py --dataset ../shared/devset/crowded``), without
the z-context and the binning the heat map never rose above its initial bias (label peaks
0.094, held-out F1 0.16); with them the labelled tomogram's own particles and the
held-out ones are ranked (figures in the README and docs/accuracy.md).

Reproducibility: the model is initialised from ``seed`` inside a forked torch RNG, crops
and augmentations come from a numpy Generator and the contrastive sampling from a torch
Generator, both seeded from ``seed``; no global generator is used, so the same seed gives
the same model on the CPU. A checkpoint written after every epoch (atomically) stores the
epoch, model, optimiser, scheduler, both generator states, the network and training
settings and the loss history (:mod:`milopyp.localize.checkpoint`); training resumes from
it, bit-identical on the CPU. After the last epoch the BatchNorm statistics are
re-estimated over :data:`BATCHNORM_BATCHES` batches drawn as in training
(:func:`reestimate_batchnorm`, from its own generator seeded by ``seed``). The crops:
:mod:`milopyp.localize.data`; the PU prior: :mod:`milopyp.localize.prior`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch

from milopyp.device import resolve_device
from milopyp.errors import MilopypError
from milopyp.io.localizer import read_localizer
from milopyp.localize.augment import flip_rot_index_map, undo_flip_rot
from milopyp.localize.checkpoint import (
    TrainSettings,
    inputs_fingerprint,
    resume_checkpoint,
    save_checkpoint,
)
from milopyp.localize.data import (
    RECENTRE_EPOCH,
    RECENTRE_FRACTION,
    TrainingData,
    check_inputs,
    move_labels_to_maxima,
    sample_crops,
    working_labels,
)
from milopyp.localize.losses import LossSettings, localizer_loss
from milopyp.localize.normalize import intensity_stats
from milopyp.localize.prior import (
    PRIOR_UPDATE_EPOCHS,
    estimate_class_prior,
    resolve_class_prior,
    seed_lower_bound,
    with_prior,
)
from milopyp.localize.pu import check_negative_loss
from milopyp.localize.scale import auto_bin_factor, bin_volume, to_binned
from milopyp.localize.targets import core_voxels
from milopyp.localize.unet import Localizer, LocalizerConfig, LocalizerOutput
from milopyp.shapes import shape as shape_named

log = logging.getLogger(__name__)

__all__ = ["load_localizer", "move_labels_to_maxima", "reestimate_batchnorm",
           "train_localizer"]

#: z-context dilations of a globular target's network when none are given (fibres: none)
DEFAULT_Z_DILATIONS = (1, 2, 4)
#: a step's gradient is clipped to this many times the median gradient norm of the epoch
#: before (none in the first epoch; globular targets, see ``train_localizer(grad_clip=)``)
GRAD_CLIP_FACTOR = 5.0
#: smallest training crop (z, y, x) on the working grid; larger crops are reduced to the
#: (binned) tomogram's size
MIN_CROP_ZYX = (3, 16, 16)
#: Batches, drawn as in training, over which every BatchNorm layer's statistics are
#: re-estimated after the last epoch (:func:`reestimate_batchnorm`; never more than the
#: training's steps). Training keeps an exponential average (momentum 0.1) of the batch
#: statistics, so the statistics that inference uses come from the last ~10-20 batches of 2
#: crops and their pair, which turn with chance; their cumulative average over this many
#: batches is steadier. Saved devset models re-estimated so (``benchmarks/batchnorm.py``;
#: held-out F1 at the automatic threshold): spikes (82 labels) 0.753 -> 0.812 and 0.863 ->
#: 0.874, insitu 0.951 -> 0.972 and 0.959 -> 0.945, crowded 0.918 -> 0.920
#: (docs/accuracy.md). Cost: 22 s at 160 x 512 x 512.
BATCHNORM_BATCHES = 200


def _step(model: Localizer, data: TrainingData, settings: TrainSettings,
          loss_settings: LossSettings, rng: np.random.Generator, gen: torch.Generator,
          opt: torch.optim.Optimizer, device: torch.device,
          max_grad_norm: float) -> dict[str, float]:
    x1, x2, ops, y = sample_crops(data, settings, rng)
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
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.step()
    return {**parts.as_floats(), "grad_norm": float(norm)}


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
    pu_positive_on_clamp: bool = False,
    negative_loss: str = "voxels",
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
    rotate_xy: bool = True,
    flip_z: bool | None = None,
    grad_clip: bool | None = None,
    labels_from_seeds: bool = False,
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
    pu_positive_on_clamp: where the PU loss's bracket goes negative, step on the labelled
        particles' term as well as on the bracket; False (the default): Kiryo's step on the
        bracket alone (:func:`milopyp.localize.pu.pu_focal_loss`).
    negative_loss: how ``negatives`` enter the PU loss: "voxels" (each voxel's focal term,
        the default), "peaks" (each object's highest voxel) or "ranked" (that voxel below
        the labelled centres; :func:`milopyp.localize.pu.pu_focal_loss`). Neither option
        helped on the devset, and "ranked" collapsed one training (crowded, 20 negatives) to
        a heat map of zeros (docs/accuracy.md, "Tried at stop 36").
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
    rotate_xy: cut each training crop at a random in-plane angle instead of the 8 x–y
        flips / quarter turns only (a binned model's crop at full resolution, then binned);
        flip_z: mirror half of the crops in z (None: globular targets yes, fibres no). With
        55 labels the network otherwise sees each particle in 8 poses; on the devset's crowded
        set the two raised the held-out AP from 0.825 to 0.920 (docs/accuracy.md).
    grad_clip: clip each step's gradient to :data:`GRAD_CLIP_FACTOR` × the previous epoch's
        median norm (None: globular targets yes, fibres no). With the turned crops one
        crowded training diverged without it; on the demo's microtubules it lowered the
        traced centre lines' F1 with both seeds tried (0.953 → 0.880, 0.773 → 0.660).
    labels_from_seeds: the labels are a few seeds' picks (the chosen clusters' members
        nearest the clicks): after the first re-estimation of the prior its lower bound
        rises to :func:`~milopyp.localize.prior.seed_lower_bound` hidden particles per label.

    Returns the trained model in eval mode, on ``device``; ``model.history`` lists the
    per-epoch mean losses (total, heat, sup, unsup, consistency), lr, seconds, the median
    gradient norm (``grad_norm``; with ``grad_clip``, each step's gradient is clipped to
    :data:`GRAD_CLIP_FACTOR` × the previous epoch's, ``clipped`` counts those steps) and the PU
    prior in effect after the epoch (``prior``: with neither ``class_prior`` nor
    ``expected_particles`` given, it is re-estimated from the model after the epochs in
    :data:`PRIOR_UPDATE_EPOCHS`, see :func:`estimate_class_prior`; after those epochs
    ``hidden_found`` holds the unlabelled particles its count found per label).
    """
    target = shape_named(shape)  # an unknown shape fails here
    check_negative_loss(negative_loss)
    shape, filament = target.name, target.filament
    crop = tuple(int(c) for c in crop)
    if z_dilations is None:  # filaments: the paper's fusion (z-context not measured on them)
        z_dilations = () if filament else DEFAULT_Z_DILATIONS
    if bin_factor is None:  # filament targets are thin tubes: keep their full resolution
        b = 1 if filament else auto_bin_factor(2.0 * particle_radius_vox)
    else:
        b = int(bin_factor)
    labels = check_inputs(tomograms, labels, tuple(c * b for c in MIN_CROP_ZYX))
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
        labels = working_labels(labels, tomograms, b)
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
    per_particle = 1 if filament else core_voxels(particle_radius_vox)
    loss_settings = LossSettings(prior=prior, contrastive_prior=min(0.5, prior * per_particle),
                                 pu=pu, positive_on_clamp=bool(pu_positive_on_clamp),
                                 negative_loss=str(negative_loss),
                                 contrastive=contrastive, temperature=temperature)
    settings = TrainSettings(
        particle_radius_vox=float(particle_radius_vox), shape=shape, epochs=int(epochs),
        iterations_per_epoch=int(iterations_per_epoch), crop_zyx=crop,
        batch_size=int(batch_size), lr=float(lr), lr_step_epochs=int(lr_step_epochs),
        seed=int(seed), recentre_labels=bool(recentre_labels) and not filament,
        rotate_xy=bool(rotate_xy), flip_z=not filament if flip_z is None else bool(flip_z),
        grad_clip=not filament if grad_clip is None else bool(grad_clip),
        labels_from_seeds=bool(labels_from_seeds),
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
        start, history, working = resume_checkpoint(checkpoint_path, model, opt, sched, rng,
                                                    gen, net_config, settings, inputs, dev)
        if start:
            log.info("resuming from %s after epoch %d", checkpoint_path, start)
    data = TrainingData(tomograms=list(tomograms), labels=working or labels, stats=stats,
                        negatives=negatives, originals=originals, bin_factor=b)
    estimate = ((pu or contrastive) and class_prior is None and expected_particles is None
                and not filament)
    if history and "prior" in history[-1]:  # resumed after a prior update
        loss_settings = with_prior(loss_settings, history[-1]["prior"], per_particle)
    log.info("training localiser: %d tomogram(s), %d labels, %d negatives, π_p = %.3g, %s, "
             "epochs %d-%d", len(tomograms), sum(len(lab) for lab in labels),
             sum(len(n) for n in negatives or []), loss_settings.prior, dev, start + 1, epochs)
    for epoch in range(start, settings.epochs):
        model.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        norms = []
        max_norm = (GRAD_CLIP_FACTOR * history[-1]["grad_norm"]
                    if settings.grad_clip and history and "grad_norm" in history[-1]
                    else float("inf"))
        for _ in range(settings.iterations_per_epoch):
            parts = _step(model, data, settings, loss_settings, rng, gen, opt, dev, max_norm)
            norms.append(parts.pop("grad_norm"))
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v / settings.iterations_per_epoch
        sums["grad_norm"] = float(np.median(norms))
        sums["clipped"] = int(np.sum(np.array(norms) > max_norm))
        lr_now = opt.param_groups[0]["lr"]
        sched.step()
        if estimate and epoch + 1 in PRIOR_UPDATE_EPOCHS and epoch + 1 < settings.epochs:
            t1 = time.perf_counter()
            # a seed selection's bound follows what the first re-estimation found (history,
            # so a resumed run finds it too); the default bound before it and otherwise
            first_found = next((h["hidden_found"] for h in history if "hidden_found" in h),
                               None)
            lower = None
            if settings.labels_from_seeds and first_found is not None:
                lower = seed_lower_bound(first_found)
                log.info("labels from seeds: at least %.2f unlabelled particles per label "
                         "(the first count found %.2f)", lower, first_found)
            new_prior, found = estimate_class_prior(model, originals, original_labels,
                                                    [intensity_stats(t) for t in originals],
                                                    original_radius, dev,
                                                    min_hidden_per_label=lower)
            new_prior = min(0.5, new_prior * b**3)  # per voxel of the binned grid
            log.info("π_p re-estimated from the model: %.3g (was %.3g), %.1f s", new_prior,
                     loss_settings.prior, time.perf_counter() - t1)
            loss_settings = with_prior(loss_settings, new_prior, per_particle)
            sums["hidden_found"] = found
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
            data.labels = working_labels(moved, tomograms, b)
        sums.update(epoch=epoch + 1, lr=lr_now, seconds=time.perf_counter() - t0,
                    prior=loss_settings.prior)
        history.append(sums)
        log.info("epoch %d/%d loss %.4f (heat %.4f sup %.4f unsup %.4f cons %.4f) lr %.1e "
                 "gradient norm %.3g (max %.3g, %d clipped) %.1f s", epoch + 1, settings.epochs,
                 sums["total"], sums["heat"], sums["sup"], sums["unsup"], sums["consistency"],
                 lr_now, sums["grad_norm"], max(norms), sums["clipped"], sums["seconds"])
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, epoch + 1, model, opt, sched, rng, gen,
                            net_config, settings, history, inputs, data.labels)
    t1 = time.perf_counter()
    batches = min(BATCHNORM_BATCHES, settings.epochs * settings.iterations_per_epoch)
    reestimate_batchnorm(model, data, settings, dev, batches)
    # what it cost, read by benchmarks/localize.py
    model.batchnorm_batches, model.batchnorm_seconds = batches, time.perf_counter() - t1
    log.info("BatchNorm statistics re-estimated over %d batches, %.1f s", batches,
             model.batchnorm_seconds)
    model.history = history
    return model


def reestimate_batchnorm(model: Localizer, data: TrainingData, settings: TrainSettings,
                         device: torch.device, batches: int = BATCHNORM_BATCHES) -> None:
    """Set every BatchNorm layer's running mean and variance to their average over
    ``batches`` batches of ``data`` drawn as training draws them (:func:`sample_crops`, each
    crop with its augmented copy), from a generator seeded by ``settings.seed`` alone, so a
    resumed training gets the same; leaves the model in eval mode. No weight changes."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    rng = np.random.default_rng([settings.seed, BATCHNORM_BATCHES])  # a stream of its own
    model.train()
    try:
        with torch.no_grad():
            for _ in range(batches):
                x1, x2, _, _ = sample_crops(data, settings, rng)
                model(torch.from_numpy(np.concatenate([x1, x2])).to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()


def load_localizer(path: str | Path, *, device: str | torch.device = "cpu") -> Localizer:
    """The trained model (eval mode) from a file written by :func:`train_localizer` or
    ``milopyp train-localize`` (:func:`milopyp.io.localizer.read_localizer`: keys and
    versions), with the file's ``settings`` and ``calibration`` (label peak scores and the
    automatic threshold, see :mod:`milopyp.localize.calibrate`), ``history`` and
    ``voxel_size_a`` (None when the file does not say)."""
    dev = resolve_device(device)
    state = read_localizer(path, dev)
    model = Localizer(LocalizerConfig.from_dict(state["network"]))
    model.load_state_dict(state["model"])
    model.settings = dict(state["settings"])
    model.calibration = dict(state["calibration"])
    model.history = list(state["history"])
    model.voxel_size_a = state["voxel_size_a"]
    return model.to(dev).eval()
