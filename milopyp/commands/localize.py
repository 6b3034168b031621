"""``milopyp localize``: heat map of a whole tomogram (tiled), then picks by 3D max-pool NMS.

Writes ``tomogram,x,y,z,score`` (voxels of the tomogram, score = heat-map probability,
weighed by the profile check where the model has one), highest score first; a tomogram
without any peak above the threshold gets an empty table and a warning (it may simply hold
none of the target). A globular model's automatic threshold is set per tomogram, from the
split of its own heat-map peaks (:func:`milopyp.localize.calibrate.tomogram_threshold`);
when the model holds its labels' profile check (``train-localize`` without
``--no-profile-check``, >= 20 labels), each peak's score is first weighed by how much its
radial density profile and spread look like the labels' rather than like the tomogram's
other peaks (:mod:`milopyp.localize.profile`; a given ``--threshold`` applies to the
weighed score too), and the log says how many peaks weigh less than half. A fibre model's
automatic threshold is raised to the bulk of each heat map and its picks capped at what
filaments can give (:func:`milopyp.localize.calibrate.guard_fiber_threshold`,
``max_fiber_picks``), with a warning, so that a flat (saturated) heat map does not turn into
the whole tomogram. A tomogram at another voxel size than the model's training tomograms
(more than 1 % off, at most 4 times) is read resampled to the model's grid, with the
profile check on finer tomograms only, and its picks are in the tomogram's voxels
(:func:`milopyp.localize.stage.model_rescale`). A globular target's picks within half a
particle radius of the tomogram's top or bottom face are dropped (``--z-face-margin-vox``;
:data:`milopyp.defaults.FACE_RADIUS_FRACTION`). A globular target's tomogram is first
raised at the spatial frequencies where it is weaker than the labelled tomograms
(:mod:`milopyp.localize.spectrum`; ``--no-contrast-matching`` reads it as it is); the
raised copy lies on a temporary file in ``$TMPDIR``, 4 bytes per voxel. The work:
:func:`milopyp.localize.stage.localize`.
"""

from __future__ import annotations

import argparse

from milopyp.cli import renamed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arg = parser.add_argument
    arg("--model", required=True, help="model from `milopyp train-localize`")
    arg("--tomogram", required=True, help="tomogram (MRC, [z, y, x])")
    arg("-o", "--output", required=True, help="pick table to write (.csv)")
    arg("--threshold", type=float, default=None,
        help="keep peaks with heat-map value above this (default: automatic, from this "
             "tomogram's heat-map peaks and the model's calibration)")
    arg("--nms-kernel-vox", *renamed("--nms-kernel"), type=int, default=None,
        help="NMS box side in voxels (odd); default: the particle radius (a fibre "
             "target: its heat map's ridge centre-line points instead of NMS)")
    arg("--z-face-margin-vox", type=float, default=None, metavar="VOX",
        help="drop a globular target's picks closer than this to the tomogram's first or "
             "last slice (default: half the particle radius; 0 keeps them)")
    arg("--no-contrast-matching", action="store_true",
        help="read a globular target's tomogram as it is, not raised at the spatial "
             "frequencies where it is weaker than the labelled tomograms")
    arg("--max-picks", type=int, default=None, help="keep at most this many picks")
    arg("--heatmap", default=None, help="also write the heat map to this MRC")
    arg("--memory-mb", type=float, default=512,
        help="activation memory of one inference tile, MB (512)")
    arg("--tomogram-name", default=None, help="name in the table (file stem)")
    arg("--device", default="auto", help="auto, cpu or cuda (auto)")
    arg("--voxel-size-a", *renamed("--voxel-size"), type=float, default=None, metavar="A",
        help="the tomogram's voxel size in Å (default: the MRC header's): the heat map's "
             "header, and compared with the model's (resampled to it when they differ)")


def main(args: argparse.Namespace) -> None:
    from milopyp.localize.stage import localize

    localize(args.model, args.tomogram, args.output, threshold=args.threshold,
             nms_kernel_vox=args.nms_kernel_vox, max_picks=args.max_picks,
             heatmap_path=args.heatmap, memory_mb=args.memory_mb,
             tomogram_name=args.tomogram_name, device=args.device,
             voxel_size_a=args.voxel_size_a, z_face_margin_vox=args.z_face_margin_vox,
             contrast_matching=not args.no_contrast_matching)
