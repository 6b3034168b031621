"""``milopyp copick-tomogram``: write one run's tomogram of a copick project as an MRC file.

The workflow reads a copick campaign's tomograms through this step (one MRC per run, named
after the run), so that every later step reads MRC as usual. The voxel size written is the
project's voxel spacing of that tomogram (never assumed). The MRC is a float32 copy of the
OME-Zarr's full-resolution level: it needs ``4 * nz * ny * nx`` bytes of disk and memory.
"""

from __future__ import annotations

import argparse
import logging

HELP = "write a copick project's tomogram (one run) as MRC"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--copick-config", required=True, metavar="JSON",
                        help="the copick project's config.json")
    parser.add_argument("--run", required=True, help="run name (= the tomogram's name)")
    parser.add_argument("--voxel-spacing", type=float, required=True, metavar="A",
                        help="voxel spacing of the tomogram in Å")
    parser.add_argument("--tomo-type", required=True, help="tomogram type, e.g. wbp or denoised")
    parser.add_argument("-o", "--output", required=True, help="MRC file to write")


def main(args: argparse.Namespace) -> None:
    from milopyp.io import copick as cp
    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.mrc import check_axes, write_tomogram

    prepare_outputs(args.output)
    root = cp.open_project(args.copick_config)
    data, voxel_size_a = cp.read_tomogram(root, args.run, args.voxel_spacing, args.tomo_type,
                                          args.copick_config)
    message = check_axes(data.shape, f"{args.copick_config} run {args.run}")
    if message:
        log.warning("%s", message)
    write_tomogram(args.output, data, voxel_size_a)
    log.info("%s run %s (%s, %g Å, shape %s) -> %s", args.copick_config, args.run,
             args.tomo_type, voxel_size_a, data.shape, args.output)
