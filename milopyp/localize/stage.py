"""The localisation stage as the commands run it: files in, files out.

:func:`train_localize` (``milopyp train-localize``) reads the tomograms and their label
tables, trains (:func:`milopyp.localize.train.train_localizer`), calibrates the automatic
pick threshold and writes the model file (:mod:`milopyp.io.localizer`). :func:`localize`
(``milopyp localize``) predicts a tomogram's heat map and writes its picks. Lengths carry
their unit in the name: ``_a`` Å, ``_vox`` voxels of the tomogram.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from milopyp import defaults
from milopyp.errors import MilopypError
from milopyp.io.mrc import tomogram_name as io_tomogram_name
from milopyp.shapes import shape as shape_named

log = logging.getLogger(__name__)


def parse_bin(value: str) -> int | None:
    """``--bin`` / config ``bin``: "auto" -> None (chosen from the particle size), else a
    positive integer."""
    if str(value).lower() == "auto":
        return None
    try:
        b = int(value)
    except ValueError:
        b = 0
    if b < 1:
        raise MilopypError(f"--bin: expected auto or a positive integer, got {value!r}")
    return b


def parse_z_dilations(values: list[str]) -> tuple[int, ...] | None:
    """``--z-dilations``: ["auto"] -> None (chosen from the shape), else positive integers."""
    if [str(v).lower() for v in values] == ["auto"]:
        return None
    try:
        dilations = tuple(int(v) for v in values)
    except ValueError:
        dilations = (0,)
    if any(d < 1 for d in dilations):
        raise MilopypError(f"--z-dilations: expected auto or positive integers, got "
                           f"{' '.join(map(str, values))}")
    return dilations


def read_negatives(paths: list[str], label_names: list[str], tomograms: list) -> list:
    """One ``(M, 3)`` float64 x, y, z array (voxels) per negatives table; table i must be of
    tomogram ``label_names[i]`` (or empty) and lie inside ``tomograms[i]`` ([z, y, x])."""
    from milopyp.io.coords import check_inside, read_coordinates, xyz_array

    if len(paths) != len(label_names):
        raise MilopypError(
            f"--negatives: {len(paths)} file(s) for {len(label_names)} --labels file(s); give "
            f"one negatives table per label table, in the same order"
        )
    arrays = []
    for path, name, volume in zip(paths, label_names, tomograms):
        table = read_coordinates(path)
        names = sorted(set(table["tomogram"]))
        if names and names != [name]:
            raise MilopypError(
                f"{path}: negatives of tomogram(s) {names}, but the label table in the same "
                f"position is of {name}; give --negatives in the order of --labels"
            )
        check_inside(table, volume.shape, path)
        arrays.append(xyz_array(table))
        log.info("%s: %d negatives", path, len(table))
    return arrays


def read_labelled_tomograms(tomogram_paths: list[str], label_paths: list[str],
                            voxel_size_a: float | None):
    """Per label table (one tomogram each, matched by name): the tomogram ([z, y, x],
    memory-mapped), its name, its (N, 3) x, y, z labels (voxels) and its voxel size (Å)."""
    from milopyp.io.coords import check_inside, read_coordinates, xyz_array
    from milopyp.io.mrc import read_tomogram

    by_name = {io_tomogram_name(p): p for p in tomogram_paths}
    tomograms, names_in_order, labels, voxel_sizes = [], [], [], []
    for label_path in label_paths:
        table = read_coordinates(label_path)
        names = sorted(set(table["tomogram"]))
        if len(names) != 1 or names[0] not in by_name:
            raise MilopypError(
                f"{label_path}: labels name tomogram(s) {names}, expected exactly one of "
                f"{sorted(by_name)}; give one label table per tomogram"
            )
        volume, size_a = read_tomogram(by_name[names[0]], mmap=True, voxel_size_a=voxel_size_a)
        check_inside(table, volume.shape, label_path)
        tomograms.append(volume)
        names_in_order.append(names[0])
        labels.append(xyz_array(table))
        voxel_sizes.append(size_a)
    return tomograms, names_in_order, labels, voxel_sizes


def labels_from_seeds(label_paths: list[str]) -> tuple[bool, str]:
    """Whether the label tables that ``milopyp import-selection`` wrote are a few seeds'
    picks, and why: ``(from_seeds, reason)``. True when the folder's ``selection.json`` says
    every label came from seeds (each seed's candidate and the chosen clusters' members
    nearest the seeds, ``seed_labels: nearest``); False for labels a user placed (a
    coordinate table, copick picks), whole clusters, clusters listed beside the seeds, and
    tables without a summary."""
    from milopyp.io.labels import read_labels_summary

    folders = {Path(p).parent for p in label_paths}
    if len(folders) != 1:
        return False, "label tables from several folders"
    summary = read_labels_summary(folders.pop())
    if summary is None:
        return False, "labels without a selection summary"
    from_seeds = summary.get("labels_from_seeds", 0) + summary.get("labels_from_clusters", 0)
    if summary.get("seed_labels") == "nearest" and from_seeds == summary.get("n_selected"):
        return True, f"{summary.get('n_labels')} labels from {summary.get('n_seeds')} seeds"
    return False, f"labels of a {summary.get('format', 'selection')} selection"


def train_localize(
    tomogram_paths: list[str],
    label_paths: list[str],
    output: str,
    *,
    particle_diameter_a: float,
    crop_xy_vox: int,
    crop_z_vox: int,
    voxel_size_a: float | None = None,
    negative_paths: list[str] | None = None,
    shape: str = "globular",
    flips: int | None = None,
    profile_check: bool = True,
    device: str = "auto",
    from_seeds: bool | str = "auto",
    **training,
) -> None:
    """Train the localiser on ``label_paths`` (one table per tomogram of
    ``tomogram_paths``), calibrate its automatic threshold and write the model file
    ``output``. The checkpoint ``<output>.ckpt`` is written each epoch and resumed from
    (:mod:`milopyp.localize.checkpoint`), and removed once the model file is written.
    ``crop_xy_vox``, ``crop_z_vox``: training crop, voxels of the working (binned) grid;
    ``flips``: test-time flips of the calibration (None: by shape); ``profile_check``: store
    the labels' radial profiles, against which ``milopyp localize`` checks globular picks
    (:mod:`milopyp.localize.profile`); ``from_seeds``: the labels are a few seeds' picks
    (``labels_from_seeds`` of the training; "auto": :func:`labels_from_seeds` of the label
    tables); ``training``: the other keywords of
    :func:`milopyp.localize.train.train_localizer`."""
    import torch

    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.localizer import read_localizer, write_localizer
    from milopyp.io.mrc import common_voxel_size
    from milopyp.localize.calibrate import calibrate_threshold
    from milopyp.localize.infer import default_flips
    from milopyp.localize.train import train_localizer

    checkpoint = Path(f"{output}.ckpt")
    # before any training: a read-only or full results folder fails now, in one line
    prepare_outputs(output, checkpoint)
    tomograms, names, labels, voxel_sizes = read_labelled_tomograms(
        tomogram_paths, label_paths, voxel_size_a)
    if sum(len(xyz) for xyz in labels) == 0:
        raise MilopypError(f"{', '.join(label_paths)}: no labels to train on; check the "
                           "selection")
    negatives = read_negatives(negative_paths, names, tomograms) if negative_paths else None
    voxel_size_a = common_voxel_size(dict(zip(names, voxel_sizes)), "--tomograms")
    radius_vox = particle_diameter_a / 2 / voxel_size_a
    if from_seeds == "auto":
        from_seeds, why = labels_from_seeds(label_paths)
        log.info("labels from seeds: %s (%s)", "yes" if from_seeds else "no", why)
    log.info("training on %d tomogram(s), %d labels, %d negatives, particle radius %.1f voxels, "
             "%d torch thread(s)", len(tomograms), sum(len(xyz) for xyz in labels),
             sum(len(xyz) for xyz in negatives or []), radius_vox, torch.get_num_threads())
    model = train_localizer(tomograms, labels, negatives=negatives,
                            particle_radius_vox=radius_vox, shape=shape,
                            crop=(crop_z_vox, crop_xy_vox, crop_xy_vox), device=device,
                            checkpoint_path=checkpoint, labels_from_seeds=bool(from_seeds),
                            **training)
    calibration = calibrate_threshold(model, tomograms, labels, radius_vox, device,
                                      shape=shape, flips=flips or default_flips(shape),
                                      profile_check=profile_check)
    state = read_localizer(checkpoint, "cpu")
    # the model the calibration was made with (BatchNorm statistics re-estimated after the
    # last epoch, train_localizer), not the checkpoint's last epoch
    state["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state["calibration"] = calibration  # torch_threads: recorded by each checkpoint save
    state["voxel_size_a"] = float(voxel_size_a)
    write_localizer(output, state)
    # the model file holds everything the checkpoint did: a rerun (--forcerun, new labels)
    # must train, not find a finished checkpoint to resume
    checkpoint.unlink(missing_ok=True)
    log.info("wrote %s (automatic pick threshold %.4g)", output, calibration["threshold"])


def nms_kernel_from_model(model, rescale: float = 1.0) -> int:
    """Odd NMS box side (voxels of the tomogram) from the model's training settings
    (:meth:`milopyp.shapes.Shape.nms_kernel_vox`: the particle radius, 3 for fibres);
    ``rescale``: voxels of the tomogram per voxel of the model's training tomograms
    (:func:`model_rescale`)."""
    target = shape_named(model.settings.get("shape", "globular"))
    if target.filament:  # the box does not follow the radius (nor the network's bin)
        return target.nms_kernel_vox(0.0)
    return target.nms_kernel_vox(particle_radius_from_model(model, rescale))


def particle_radius_from_model(model, rescale: float = 1.0) -> float:
    """The particle radius in voxels of the tomogram: training stores it on the network's
    working grid, picks are on the tomogram's; ``rescale`` as in
    :func:`nms_kernel_from_model`."""
    return (float(model.settings.get("particle_radius_vox", 3.0)) * model.config.bin_factor
            * rescale)


#: Largest relative difference between a tomogram's voxel size and its model's that
#: `milopyp localize` takes as the same (headers round: 11.98 against 12.0 Å)
VOXEL_SIZE_TOLERANCE = 0.01
#: Largest ratio of voxel sizes (either way) at which `milopyp localize` resamples a
#: tomogram to its model's scale; beyond it, it stops (a particle 4 times smaller or larger
#: in voxels than in training is more likely a wrong header than another binning).
MAX_RESCALE = 4.0
#: Most voxels the network's grid may hold per voxel of a tomogram coarser than it (the
#: resampled tomogram and its heat map are held in memory).
MAX_GRID_GROWTH = 8.0


def model_rescale(model, voxel_size_a: float, shape_zyx, model_path, tomogram_path) -> float:
    """Voxels of the tomogram per voxel of the tomograms ``model`` was trained on: 1.0 when
    the voxel sizes agree within :data:`VOXEL_SIZE_TOLERANCE` or the model file does not
    record one (written before it was stored). Otherwise the model's particle size, working
    grid and NMS box are in its training voxels, so `localize` reads the tomogram resampled
    to the model's working grid and finds the picks on the tomogram's own grid (one log
    line says so). Beyond :data:`MAX_RESCALE` either way, or when the model's grid would
    hold more than :data:`MAX_GRID_GROWTH` times the voxels of the tomogram (``shape_zyx``),
    stop in one line naming both files and the fix."""
    trained_a = getattr(model, "voxel_size_a", None)
    if trained_a is None or abs(voxel_size_a - trained_a) <= VOXEL_SIZE_TOLERANCE * trained_a:
        return 1.0
    rescale = float(trained_a) / float(voxel_size_a)
    if not 1.0 / MAX_RESCALE <= rescale <= MAX_RESCALE:
        raise MilopypError(
            f"{tomogram_path}: {voxel_size_a:g} Å per voxel, but {model_path} was trained on "
            f"tomograms of {trained_a:g} Å per voxel, more than {MAX_RESCALE:g} times "
            f"{'finer' if rescale > 1 else 'coarser'}; fix its header (or --voxel-size) if "
            f"{voxel_size_a:g} Å is wrong, bin or rescale the tomogram towards "
            f"{trained_a:g} Å, or train a model at {voxel_size_a:g} Å")
    from milopyp.localize.scale import resampled_shape

    grid = resampled_shape(shape_zyx, model.config.bin_factor * rescale)
    growth = float(np.prod(grid, dtype=np.float64) / np.prod(shape_zyx, dtype=np.float64))
    if growth > MAX_GRID_GROWTH:
        raise MilopypError(
            f"{tomogram_path}: {voxel_size_a:g} Å per voxel, coarser than the "
            f"{trained_a * model.config.bin_factor:g} Å grid {model_path} works on: "
            f"resampled to it, it would hold {growth:.0f} times its voxels; bin or "
            f"rescale the tomogram to about {trained_a:g} Å, or train a model at "
            f"{voxel_size_a:g} Å")
    return rescale


def localize(
    model_path: str,
    tomogram_path: str,
    output: str,
    *,
    threshold: float | None = None,
    nms_kernel_vox: int | None = None,
    max_picks: int | None = None,
    heatmap_path: str | None = None,
    memory_mb: float = 512,
    tomogram_name: str | None = None,
    device: str = "auto",
    voxel_size_a: float | None = None,
    z_face_margin_vox: float | None = None,
    contrast_matching: bool = True,
) -> None:
    """Heat map of the tomogram ``tomogram_path`` by the model ``model_path`` and its picks
    (``tomogram, x, y, z, score``, voxels) in ``output``, highest score first; the heat map
    too when ``heatmap_path`` is given (its header's voxel size: ``voxel_size_a`` or the
    tomogram's). ``threshold`` None: automatic (see ``milopyp localize``); ``nms_kernel_vox``
    None: :func:`nms_kernel_from_model`, except for a fibre target, whose picks are then its
    heat map's ridge centre-line points (:func:`milopyp.localize.peaks.find_ridge_points`).
    A globular target's picks closer than ``z_face_margin_vox`` to the tomogram's first or
    last slice are dropped after the threshold (None:
    :func:`milopyp.defaults.z_face_margin_vox` of the particle radius; 0 keeps them).
    A globular target's tomogram is first raised, at each spatial frequency where it is
    weaker, to the labelled tomograms' spectrum
    (:func:`milopyp.localize.spectrum.match_contrast`; the heat map and the profile check
    read the raised copy, a float32 copy of the tomogram on a temporary file in
    ``$TMPDIR``, memory-mapped), unless ``contrast_matching`` is False. A tomogram at
    another voxel size than the model's is read on the model's working grid
    (:func:`model_rescale`), its picks and heat map on the tomogram's grid, without contrast
    matching; the profile check judges a finer tomogram's peaks (the particle radius in its
    voxels) and leaves a coarser one's alone (docs/accuracy.md, "Stop 38: a model at another
    voxel size")."""
    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.coords import write_coordinates
    from milopyp.io.mrc import read_tomogram, write_tomogram
    from milopyp.localize.calibrate import (
        not_learned_note,
        profile_floor,
        tomogram_threshold,
    )
    from milopyp.localize.infer import predict_heatmap
    from milopyp.localize.peaks import clear_of_z_faces, find_peaks, find_ridge_points
    from milopyp.localize.profile import MIN_BACKGROUND_PEAKS, MIN_PROFILE_LABELS
    from milopyp.localize.spectrum import match_contrast
    from milopyp.localize.train import load_localizer

    prepare_outputs(output, heatmap_path)
    name = tomogram_name or io_tomogram_name(tomogram_path)
    model = load_localizer(model_path)
    volume, voxel_size_a = read_tomogram(tomogram_path, mmap=True, voxel_size_a=voxel_size_a)
    rescale = model_rescale(model, voxel_size_a, volume.shape, model_path, tomogram_path)
    bin_factor = None  # the model's own
    if rescale != 1.0:
        bin_factor = model.config.bin_factor * rescale
        log.info("%s: %g Å per voxel, the model's training tomograms %g Å: its network reads "
                 "the tomogram resampled to %g Å voxels (%.3g of its voxels), its particle "
                 "size and NMS box scaled by %.3g; picks in the tomogram's voxels", name,
                 voxel_size_a, model.voxel_size_a, model.voxel_size_a * model.config.bin_factor,
                 bin_factor, rescale)
    filament = shape_named(model.settings.get("shape", "globular")).filament
    if not filament:  # fibres are read as they are (their matching was not measured)
        if not contrast_matching:
            log.info("%s: contrast not matched (switched off)", name)
        elif rescale == 1.0:  # raised where weaker than the labelled tomograms
            volume = match_contrast(model.calibration.get("spectrum"), volume, name,
                                    on_disk=True)
        elif model.calibration.get("spectrum") is not None:
            log.info("%s: contrast not matched (the labelled tomograms' spectrum is of %g Å "
                     "voxels)", name, model.voxel_size_a)
    # the flips the threshold was calibrated with (models before them: none)
    flips = int(model.calibration.get("flips", 1))
    heatmap = predict_heatmap(model, volume, device=device, memory_mb=memory_mb, flips=flips,
                              bin_factor=bin_factor)
    kernel = nms_kernel_vox or nms_kernel_from_model(model, rescale)
    automatic, limit = threshold is None, max_picks
    if automatic:
        threshold = model.calibration.get("threshold")
        if threshold is None or not np.isfinite(threshold):
            raise MilopypError(
                f"{model_path}: the model has no automatic threshold (trained without "
                "calibration); pass --threshold"
            )
    ridge = filament and nms_kernel_vox is None  # a fibre's centre lines, for the tracer
    if filament and automatic:
        threshold, limit, note = _guard_fiber(heatmap, threshold, model.calibration, limit)
        if note:
            log.warning("%s: %s", name, note)
    note = "" if filament else not_learned_note(model.calibration, "globular")  # fibres: the guard's
    if note:
        log.warning("%s: %s", name, note)
    reference = None if filament else model.calibration.get("profile")
    # The labels' profiles were taken at the training voxel size. Compared with the radius
    # scaled to this tomogram's voxels they hold on finer tomograms, not on coarser ones
    # (devset, Fourier-resampled copies, saved 12 Å models, held-out F1 with / without the
    # check, benchmarks/voxel_size.py: crowded 6, 9, 10 Å 0.882 / 0.869, 0.886 / 0.860,
    # 0.876 / 0.856, insitu 9, 10 Å 0.917 / 0.895, 0.940 / 0.880; but crowded 16, 24 Å
    # 0.389 / 0.816, 0.107 / 0.801, insitu 16 Å 0.735 / 0.908: most peaks weigh below half).
    if reference is not None and rescale < 1.0:
        reference = None
        log.info("%s: no profile check (the labels' profiles were taken at %g Å per voxel, "
                 "finer than this tomogram's %g Å)", name, model.voxel_size_a, voxel_size_a)
    elif reference is not None and rescale > 1.0:  # its radius in this tomogram's voxels
        reference = {**reference, "radius_vox": reference["radius_vox"] * rescale}
    elif not filament and reference is None:
        log.info("%s: no profile check (the model holds no label profiles: trained with "
                 "--no-profile-check, with fewer than %d labels or %d heat-map peaks, or by "
                 "an earlier version)", name, MIN_PROFILE_LABELS, MIN_BACKGROUND_PEAKS)
    if not filament and automatic and "rule" in model.calibration:
        picks = find_peaks(heatmap, kernel_vox=kernel, threshold=0.0, tomogram=name)
        if reference is not None:  # before the split: look-alikes weigh less, out of its mode
            picks = _weigh(name, reference, volume, picks, profile_floor(model.calibration))
        threshold, rule = tomogram_threshold(model.calibration,
                                             picks["score"].to_numpy(np.float64))
        log.info("%s: automatic threshold %.4g (%s)", name, threshold, rule)
        picks = picks[picks["score"] > threshold].reset_index(drop=True)
    elif ridge:
        picks = find_ridge_points(heatmap, threshold=threshold, tomogram=name)
    elif reference is None:
        picks = find_peaks(heatmap, kernel_vox=kernel, threshold=threshold, tomogram=name)
    else:  # judged among the peaks the split would see, as the labels were at calibration
        floor = min(threshold, profile_floor(model.calibration))
        picks = find_peaks(heatmap, kernel_vox=kernel, threshold=floor, tomogram=name)
        picks = _weigh(name, reference, volume, picks, floor)
        picks = picks[picks["score"] > threshold].reset_index(drop=True)
    if not filament:  # after the threshold, which every peak informs
        margin = (z_face_margin_vox if z_face_margin_vox is not None
                  else defaults.z_face_margin_vox(particle_radius_from_model(model, rescale)))
        inside = clear_of_z_faces(picks["z"].to_numpy(), volume.shape[0], margin)
        if not inside.all():
            log.info("%s: %d picks closer than %.3g voxels to the tomogram's first or last "
                     "slice dropped (a particle cut by the face, or the heat map's edge)",
                     name, int((~inside).sum()), margin)
            picks = picks[inside].reset_index(drop=True)
    if limit is not None and len(picks) > limit:
        if filament and automatic and limit != max_picks:
            log.warning("%s: %d fibre picks above %.4g, more than filaments can give "
                        "(%d in %s voxels); keeping the %d highest-scoring: check the heat map "
                        "(--heatmap) and the model", name, len(picks), threshold, limit,
                        "x".join(map(str, heatmap.shape)), limit)
        picks = picks.iloc[:limit]
    if picks.empty:
        log.warning("%s: no heat-map peak above %.4g; lower --threshold if the target is there",
                    tomogram_path, threshold)
    how = "ridge centre-line points" if ridge else f"NMS kernel {kernel} voxels"
    log.info("%s: %d picks (%s, threshold %.4g)", name, len(picks), how, threshold)
    if heatmap_path:
        write_tomogram(heatmap_path, heatmap, voxel_size_a)
    write_coordinates(output, picks)


def _weigh(name: str, reference: dict, volume, picks, min_score: float = 0.0):
    """``picks`` with their scores weighed by how label-like their radial profiles are
    (:func:`milopyp.localize.profile.weigh_peaks`, judged above ``min_score``), highest
    first, with a log line."""
    from milopyp.localize.profile import weigh_peaks

    judged = int((picks["score"] > min_score).sum())
    picks, weights = weigh_peaks(reference, volume, picks, min_score)
    log.info("%s: %d heat-map peaks above %.4g weighed by their radial profile against the "
             "labels' (the model's profile check): %d unlike them (weight below 0.5)", name,
             judged, min_score, int((weights < 0.5).sum()))
    return picks


def _guard_fiber(heatmap, threshold: float, calibration: dict, max_picks):
    """A fibre model's automatic threshold on this heat map and the most picks to keep:
    :func:`milopyp.localize.calibrate.guard_fiber_threshold` (not below the bulk of the heat
    map) and :func:`~milopyp.localize.calibrate.max_fiber_picks` (``max_picks`` if lower).
    Returns ``(threshold, max_picks, note)``."""
    from milopyp.localize.calibrate import guard_fiber_threshold, max_fiber_picks

    threshold, note = guard_fiber_threshold(heatmap, threshold, calibration)
    cap = max_fiber_picks(heatmap.shape)
    return threshold, cap if max_picks is None else min(max_picks, cap), note
