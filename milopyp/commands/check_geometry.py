"""``milopyp check-geometry``: which tilt-series geometry fits a tomogram, from the data.

Reprojects the tomogram at a few high tilts under both projection signs and correlates with
the tilt images; also finds the binning and the x/y offset (see :mod:`milopyp.geometry`).
Writes ``geometry/{tomogram}.json`` (read by ``milopyp patches --geometry``); stops with one
line naming the tomogram and what to check when no sign fits by ``--min-margin``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from milopyp.errors import MilopypError

HELP = "check the tilt-series geometry (projection sign, binning, x/y offset) against the tomogram"
log = logging.getLogger(__name__)


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
    parser.add_argument("--voxel-size", type=float, default=None,
                        help="tomogram voxel size in Å (default: header)")
    parser.add_argument("--tilt-pixel-size", type=float, default=None,
                        help="tilt-series pixel size in Å (default: header)")
    parser.add_argument("--sign", type=_sign, default=None, metavar="auto|+1|-1",
                        help="pin the projection sign (default auto: detect)")
    parser.add_argument("--bin", type=_bin, default=None, metavar="auto|N",
                        help="pin tilt-series pixels per tomogram voxel (default auto: detect)")
    parser.add_argument("--offset", type=float, nargs=2, default=None, metavar=("X", "Y"),
                        help="pin the tilt series' x/y offset in tomogram voxels (default: detect)")
    parser.add_argument("--min-margin", type=float, default=MIN_MARGIN,
                        help=f"smallest NCC margin of the best sign over the other ({MIN_MARGIN})")
    parser.add_argument("-o", "--output", required=True, help="geometry record to write (.json)")


def main(args: argparse.Namespace) -> None:
    from milopyp.geometry import check_geometry, judge
    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.geometry import write_geometry
    from milopyp.io.mrc import read_tilt_series, read_tomogram

    if not 0 <= args.min_margin < 1:
        raise MilopypError(f"--min-margin: expected a value in [0, 1), got {args.min_margin}")
    prepare_outputs(args.output)
    tomo_path = Path(args.tomogram)
    name = args.name or tomo_path.name.split(".")[0]
    tomogram, voxel_size_a = read_tomogram(tomo_path, voxel_size_a=args.voxel_size)
    # memory-mapped where the mode allows: only a few tilt images are read
    stack, angles, tilt_px = read_tilt_series(args.tilt_series, args.angles, mmap=True,
                                              check_finite=False,
                                              pixel_size_a=args.tilt_pixel_size)
    record = check_geometry(
        tomogram, stack, angles, header_ratio=voxel_size_a / tilt_px, bin_factor=args.bin,
        sign=args.sign, offset_xy=args.offset,
    )
    record = judge(record, name=name, tilt_series=str(args.tilt_series),
                   min_margin=args.min_margin)
    record.update(tomogram=name, tomogram_path=str(tomo_path),
                  tilt_series_path=str(args.tilt_series), voxel_size_a=voxel_size_a,
                  tilt_pixel_size_a=tilt_px)
    for line in record["warnings"]:
        log.warning("%s", line)
    write_geometry(args.output, record)
    log.info(
        "%s: sign %+d (%s; NCC %s, margin %.3f), bin %d, offset %.2f, %.2f voxels, contrast %s"
        " -> %s", name, record["sign"], record["verdict"], record["scores"], record["margin"],
        record["bin"], record["offset_x_vox"], record["offset_y_vox"], record["contrast"],
        args.output,
    )
