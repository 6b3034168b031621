"""``milopyp train-localize``: train the few-shot localiser on labelled tomograms.

Labels are ``labels/{tomogram}.csv`` tables (x, y, z in voxels of that tomogram); each is
paired with the tomogram of the same name. ``--negatives`` (optional) gives, in the same
order as ``--labels``, one table per tomogram of points that are *not* the target
(``negatives/{tomogram}.csv`` from ``milopyp import-selection``; empty tables allowed),
trained as y = 0. The checkpoint ``<output>.ckpt`` is written each
epoch; a killed run resumes from it when its tomograms, labels, negatives, network and
settings are the same (otherwise it trains afresh and says why), and it is removed once the
model file is written. The finished model (``<output>``) also holds the
automatic pick threshold, calibrated on the heat map at the labels.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from milopyp.errors import MilopypError

HELP = "train the few-shot localisation network on the labels"
log = logging.getLogger(__name__)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tomograms", nargs="+", required=True, help="tomograms (MRC) with labels")
    parser.add_argument("--labels", nargs="+", required=True,
                        help="label tables (tomogram,x,y,z), matched to tomograms by name")
    parser.add_argument("--negatives", nargs="+", default=None, metavar="CSV",
                        help="negatives tables (tomogram,x,y,z), one per --labels file, in the "
                             "same order (may be empty)")
    parser.add_argument("-o", "--output", required=True, help="model file to write (.pt)")
    parser.add_argument("--particle-diameter", type=float, required=True, help="particle diameter, Å")
    parser.add_argument("--voxel-size", type=float, default=None, help="voxel size in Å (default: header)")
    parser.add_argument("--shape", choices=["globular", "fiber"], default="globular",
                        help="globular particles (Gaussian targets) or fibres (radius-3 tubes)")
    parser.add_argument("--epochs", type=int, default=18, help="epochs (18)")
    parser.add_argument("--lr-step-epochs", type=int, default=12,
                        help="multiply the learning rate by 0.1 every this many epochs (12)")
    parser.add_argument("--iterations-per-epoch", type=int, default=100, help="steps per epoch (100)")
    parser.add_argument("--batch-size", type=int, default=2, help="crops per step (2)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    parser.add_argument("--crop-xy", type=int, default=64,
                        help="crop side in x, y, voxels of the working (binned) grid (64)")
    parser.add_argument("--crop-z", type=int, default=16,
                        help="crop depth in z, voxels of the working (binned) grid (16)")
    parser.add_argument("--bin", default="auto",
                        help="work on the tomograms binned by this integer factor; auto = the "
                             "largest that leaves the particle >= 10 voxels across (fibres: 1)")
    parser.add_argument("--z-dilations", nargs="*", default=["auto"],
                        help="dilations of the z-context layers after the 3D fusion; auto = "
                             "1 2 4 for globular targets, none for fibres; none given = the "
                             "paper's 3-slice fusion only (auto)")
    parser.add_argument("--stride-xy", type=int, choices=[1, 2], default=2,
                        help="heat-map stride in x, y on the working grid (2)")
    parser.add_argument("--n-blocks", type=int, choices=[4, 5], default=4, help="UNet blocks (4)")
    parser.add_argument("--base-channels", type=int, default=16,
                        help="first UNet block width (16)")
    parser.add_argument("--class-prior", type=float, default=None,
                        help="particle centres per voxel (PU prior); default from --expected-particles")
    parser.add_argument("--expected-particles", type=float, default=None,
                        help="expected particles per tomogram (sets the PU prior)")
    parser.add_argument("--no-contrastive", action="store_true", help="drop the contrastive terms")
    parser.add_argument("--no-pu", action="store_true", help="plain focal loss instead of PU")
    parser.add_argument("--flips", type=int, choices=[1, 2, 4], default=None,
                        help="test-time flips of the heat map (default: 4 for globular, 1 "
                             "for fibre targets), stored in the model: `localize` uses the same")
    parser.add_argument("--recentre-labels", action="store_true",
                        help="after 4 epochs move each label to the model's heat-map maximum "
                             "within half a particle radius (labels at candidate positions)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (auto)")


def parse_bin(value: str) -> int | None:
    """``--bin``: "auto" -> None (chosen from the particle size), else a positive integer."""
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


def main(args: argparse.Namespace) -> None:
    import torch

    from milopyp.io.atomic import atomic_path, prepare_outputs
    from milopyp.io.coords import check_inside, read_coordinates, xyz_array
    from milopyp.io.mrc import common_voxel_size, read_tomogram
    from milopyp.localize.calibrate import calibrate_threshold
    from milopyp.localize.infer import default_flips
    from milopyp.localize.train import train_localizer

    checkpoint = Path(f"{args.output}.ckpt")
    # before any training: a read-only or full results folder fails now, in one line
    prepare_outputs(args.output, checkpoint)
    by_name = {Path(p).name.split(".")[0]: p for p in args.tomograms}
    tomograms, labels, voxel_sizes, names_in_order = [], [], [], []
    for label_path in args.labels:
        table = read_coordinates(label_path)
        names = sorted(set(table["tomogram"]))
        if len(names) != 1 or names[0] not in by_name:
            raise MilopypError(
                f"{label_path}: labels name tomogram(s) {names}, expected exactly one of "
                f"{sorted(by_name)}; give one label table per tomogram"
            )
        volume, voxel_size_a = read_tomogram(by_name[names[0]], mmap=True,
                                             voxel_size_a=args.voxel_size)
        check_inside(table, volume.shape, label_path)
        tomograms.append(volume)
        names_in_order.append(names[0])
        labels.append(xyz_array(table))
        voxel_sizes.append(voxel_size_a)
    if sum(len(xyz) for xyz in labels) == 0:
        raise MilopypError(
            f"{', '.join(args.labels)}: no labels to train on; check the selection"
        )
    negatives = (read_negatives(args.negatives, names_in_order, tomograms)
                 if args.negatives else None)
    voxel_size_a = common_voxel_size(dict(zip(names_in_order, voxel_sizes)), "--tomograms")
    radius_vox = args.particle_diameter / 2 / voxel_size_a
    log.info("training on %d tomogram(s), %d labels, %d negatives, particle radius %.1f voxels, "
             "%d torch thread(s)", len(tomograms), sum(len(xyz) for xyz in labels),
             sum(len(xyz) for xyz in negatives or []), radius_vox, torch.get_num_threads())
    model = train_localizer(
        tomograms,
        labels,
        negatives=negatives,
        particle_radius_vox=radius_vox,
        shape=args.shape,
        epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch,
        crop=(args.crop_z, args.crop_xy, args.crop_xy),
        batch_size=args.batch_size,
        lr=args.lr,
        lr_step_epochs=args.lr_step_epochs,
        class_prior=args.class_prior,
        expected_particles=args.expected_particles,
        contrastive=not args.no_contrastive,
        pu=not args.no_pu,
        seed=args.seed,
        device=args.device,
        checkpoint_path=checkpoint,
        n_blocks=args.n_blocks,
        base_channels=args.base_channels,
        stride_xy=args.stride_xy,
        z_dilations=parse_z_dilations(args.z_dilations),
        bin_factor=parse_bin(args.bin),
        recentre_labels=args.recentre_labels,
    )
    calibration = calibrate_threshold(model, tomograms, labels, radius_vox, args.device,
                                      shape=args.shape,
                                      flips=args.flips or default_flips(args.shape))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["calibration"] = calibration
    # the thread count changes float sums, hence the model: recorded for a rerun to match
    state["torch_threads"] = torch.get_num_threads()
    with atomic_path(args.output) as tmp:
        torch.save(state, tmp)
    # the model file holds everything the checkpoint did: a rerun (--forcerun, new labels)
    # must train, not find a finished checkpoint to resume
    checkpoint.unlink(missing_ok=True)
    log.info("wrote %s (automatic pick threshold %.4g)", args.output, calibration["threshold"])
