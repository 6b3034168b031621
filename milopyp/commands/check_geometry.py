"""``milopyp check-geometry``: translates the command line into :func:`milopyp.geometry.run`
(writes ``geometry/{tomogram}.json``, read by ``milopyp patches --geometry``)."""

from __future__ import annotations

import argparse

from milopyp.cli import renamed


def _sign(text: str) -> int | None:
    if text == "auto":
        return None
    if text in ("1", "+1", "-1"):
        return int(text)
    raise argparse.ArgumentTypeError(f"expected auto, +1 or -1, got {text!r}")


def _bin(text: str) -> int | None:
    if text == "auto":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected auto or a whole number >= 1, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from milopyp.geometry import MIN_MARGIN

    parser.add_argument("--tomogram", required=True, help="tomogram (MRC), as reconstructed")
    parser.add_argument("--tilt-series", required=True,
                        help="aligned tilt series (MRC stack) the tomogram was reconstructed from")
    parser.add_argument("--angles", default=None,
                        help="tilt angles (.tlt); default <tilt-series stem>.tlt/.rawtlt")
    parser.add_argument("--name", default=None, help="tomogram name (default: file stem)")
    parser.add_argument("--voxel-size-a", *renamed("--voxel-size"), type=float, default=None,
                        metavar="A", help="tomogram voxel size in Å (default: header)")
    parser.add_argument("--tilt-pixel-size-a", *renamed("--tilt-pixel-size"), type=float,
                        default=None, metavar="A",
                        help="tilt-series pixel size in Å (default: header)")
    parser.add_argument("--sign", type=_sign, default=None, metavar="auto|+1|-1",
                        help="pin the projection sign (default auto: detect)")
    parser.add_argument("--bin", type=_bin, default=None, metavar="auto|N",
                        help="pin tilt-series pixels per tomogram voxel (default auto: detect)")
    parser.add_argument("--offset-vox", *renamed("--offset"), type=float, nargs=2, default=None,
                        metavar=("X", "Y"),
                        help="pin the tilt series' x/y offset in tomogram voxels (default: detect)")
    parser.add_argument("--min-margin", type=float, default=MIN_MARGIN,
                        help=f"smallest NCC margin of the best sign over the other ({MIN_MARGIN})")
    parser.add_argument("-o", "--output", required=True, help="geometry record to write (.json)")


def main(args: argparse.Namespace) -> None:
    from milopyp.geometry import run

    run(args.tomogram, args.tilt_series, args.output, angles_path=args.angles, name=args.name,
        voxel_size_a=args.voxel_size_a, tilt_pixel_size_a=args.tilt_pixel_size_a,
        sign=args.sign, bin_factor=args.bin, offset_xy_vox=args.offset_vox,
        min_margin=args.min_margin)
