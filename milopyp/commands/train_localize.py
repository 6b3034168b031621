"""``milopyp train-localize``: train the few-shot localiser on labelled tomograms.

Labels are ``labels/{tomogram}.csv`` tables (x, y, z in voxels of that tomogram); each is
paired with the tomogram of the same name. ``--negatives`` (optional) gives, in the same
order as ``--labels``, one table per tomogram of points that are *not* the target
(``negatives/{tomogram}.csv`` from ``milopyp import-selection``; empty tables allowed),
trained as y = 0. The checkpoint ``<output>.ckpt`` is written each epoch; a killed run
resumes from it when its tomograms, labels, negatives, network and settings are the same
(otherwise it trains afresh and says why), and it is removed once the model file is
written. The finished model (``<output>``) also holds the automatic pick threshold,
calibrated on the heat map at the labels. The work:
:func:`milopyp.localize.stage.train_localize`.
"""

from __future__ import annotations

import argparse

from milopyp.cli import renamed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arg = parser.add_argument
    arg("--tomograms", nargs="+", required=True, help="tomograms (MRC) with labels")
    arg("--labels", nargs="+", required=True,
        help="label tables (tomogram,x,y,z), matched to tomograms by name")
    arg("--negatives", nargs="+", default=None, metavar="CSV",
        help="negatives tables (tomogram,x,y,z), one per --labels file, in the same order "
             "(may be empty)")
    arg("-o", "--output", required=True, help="model file to write (.pt)")
    arg("--particle-diameter-a", *renamed("--particle-diameter"), type=float, required=True,
        help="particle diameter, Å")
    arg("--voxel-size-a", *renamed("--voxel-size"), type=float, default=None,
        help="voxel size in Å (default: header)")
    arg("--shape", choices=["globular", "fiber"], default="globular",
        help="globular particles (Gaussian targets) or fibres (radius-3 tubes)")
    arg("--epochs", type=int, default=18, help="epochs (18)")
    arg("--lr-step-epochs", type=int, default=12,
        help="multiply the learning rate by 0.1 every this many epochs (12)")
    arg("--iterations-per-epoch", type=int, default=100, help="steps per epoch (100)")
    arg("--batch-size", type=int, default=2, help="crops per step (2)")
    arg("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    arg("--crop-xy-vox", *renamed("--crop-xy"), type=int, default=64,
        help="crop side in x, y, voxels of the working (binned) grid (64)")
    arg("--crop-z-vox", *renamed("--crop-z"), type=int, default=16,
        help="crop depth in z, voxels of the working (binned) grid (16)")
    arg("--bin", default="auto",
        help="work on the tomograms binned by this integer factor; auto = the largest that "
             "leaves the particle >= 10 voxels across (fibres: 1)")
    arg("--z-dilations", nargs="*", default=["auto"],
        help="dilations of the z-context layers after the 3D fusion; auto = 1 2 4 for "
             "globular targets, none for fibres; none given = the paper's 3-slice fusion "
             "only (auto)")
    arg("--stride-xy", type=int, choices=[1, 2], default=2,
        help="heat-map stride in x, y on the working grid (2)")
    arg("--n-blocks", type=int, choices=[4, 5], default=4, help="UNet blocks (4)")
    arg("--base-channels", type=int, default=16, help="first UNet block width (16)")
    arg("--class-prior", type=float, default=None,
        help="particle centres per voxel (PU prior); default from --expected-particles")
    arg("--expected-particles", type=float, default=None,
        help="expected particles per tomogram (sets the PU prior)")
    arg("--labels-from-seeds", choices=["auto", "yes", "no"], default="auto",
        help="the labels are a few seeds' picks, a few of many particles: the PU prior's "
             "estimate assumes more unlabelled particles; auto = as the labels' "
             "selection.json says (import-selection)")
    arg("--no-contrastive", action="store_true", help="drop the contrastive terms")
    arg("--no-pu", action="store_true", help="plain focal loss instead of PU")
    arg("--flips", type=int, choices=[1, 2, 4], default=None,
        help="test-time flips of the heat map (default: 4 for globular, 1 for fibre "
             "targets), stored in the model: `localize` uses the same")
    arg("--no-profile-check", action="store_true",
        help="do not store the profile check (the labels' radial density profiles and "
             "spreads against the labelled tomogram's peaks), with which `localize` weighs "
             "down globular look-alikes")
    arg("--recentre-labels", action="store_true",
        help="after 4 epochs move each label to the model's heat-map maximum within half a "
             "particle radius (labels at candidate positions)")
    arg("--seed", type=int, default=0, help="random seed (0)")
    arg("--device", default="auto", help="auto, cpu or cuda (auto)")


def main(args: argparse.Namespace) -> None:
    from milopyp.localize import stage

    stage.train_localize(
        args.tomograms, args.labels, args.output, negative_paths=args.negatives,
        particle_diameter_a=args.particle_diameter_a, voxel_size_a=args.voxel_size_a,
        shape=args.shape, crop_xy_vox=args.crop_xy_vox, crop_z_vox=args.crop_z_vox,
        flips=args.flips, profile_check=not args.no_profile_check, device=args.device,
        epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch, batch_size=args.batch_size,
        lr=args.lr, lr_step_epochs=args.lr_step_epochs, class_prior=args.class_prior,
        expected_particles=args.expected_particles, contrastive=not args.no_contrastive,
        pu=not args.no_pu, seed=args.seed, n_blocks=args.n_blocks,
        base_channels=args.base_channels, stride_xy=args.stride_xy,
        z_dilations=stage.parse_z_dilations(args.z_dilations),
        bin_factor=stage.parse_bin(args.bin), recentre_labels=args.recentre_labels,
        from_seeds={"auto": "auto", "yes": True, "no": False}[args.labels_from_seeds],
    )
