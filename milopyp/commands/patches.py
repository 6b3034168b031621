"""``milopyp patches``: cut the 2D network inputs of every candidate of one tomogram.

Writes ``patches/{tomogram}.npz`` (:mod:`milopyp.io.exploration`); the work is
:func:`milopyp.patches.run`.
"""

from __future__ import annotations

import argparse

from milopyp.cli import renamed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tomogram", required=True, help="tomogram (MRC) the candidates refer to")
    parser.add_argument("--candidates", required=True,
                        help="candidate table (.csv/.tsv/.txt/.star), x y z in tomogram voxels")
    parser.add_argument("--tilt-series", default=None,
                        help="aligned tilt series (MRC stack, tilt axis along y) of this tomogram")
    parser.add_argument("--angles", default=None,
                        help="tilt angles (.tlt); default <tilt-series stem>.tlt/.rawtlt")
    parser.add_argument("--size-vox", *renamed("--size"), type=int, default=None,
                        help="patch side in tomogram voxels (default: from "
                             "--particle-diameter-a by milopyp.defaults.patch_size_vox, else 64)")
    parser.add_argument("--particle-diameter-a", type=float, default=None,
                        help="particle diameter in Å, for the default --size-vox")
    parser.add_argument("--slices", type=int, default=3,
                        help="z-slices averaged for the slice patch (3)")
    parser.add_argument("--max-angle", type=float, default=15.0,
                        help="average tilt images with |angle| <= this, degrees (15)")
    parser.add_argument("--voxel-size-a", *renamed("--voxel-size"), type=float, default=None,
                        help="tomogram voxel size in Å (default: header)")
    parser.add_argument("--tilt-pixel-size-a", *renamed("--tilt-pixel-size"), type=float,
                        default=None, help="tilt-series pixel size in Å (default: header)")
    parser.add_argument(
        "--geometry", default=None, metavar="JSON",
        help="geometry record of `milopyp check-geometry` (projection sign, binning, offset, "
             "contrast); default: sign +1, no offset, binned by the header pixel sizes",
    )
    parser.add_argument(
        "--invert-tilt-series", action="store_true",
        help="negate the tilt series (protein dark -> bright), to match a tomogram that "
             "`milopyp preprocess --invert` inverted",
    )
    parser.add_argument("-o", "--output", required=True, help="patch file to write (.npz)")


def main(args: argparse.Namespace) -> None:
    from milopyp.patches import run

    run(args.tomogram, args.candidates, args.output, tilt_series_path=args.tilt_series,
        angles_path=args.angles, size_vox=args.size_vox,
        particle_diameter_a=args.particle_diameter_a, n_slices=args.slices,
        max_angle_deg=args.max_angle, voxel_size_a=args.voxel_size_a,
        tilt_pixel_size_a=args.tilt_pixel_size_a, geometry_path=args.geometry,
        invert_tilt_series=args.invert_tilt_series)
