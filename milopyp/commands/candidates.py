"""``milopyp candidates``: DoG-pyramid candidate positions of one (preprocessed) tomogram.

Writes a point table ``tomogram, x, y, z, score`` (voxels of the input tomogram; format by
suffix, normally CSV), strongest first.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from milopyp.errors import MilopypError

HELP = "find candidate particle positions (DoG pyramid + greedy NMS)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from milopyp.candidates import DEFAULT_N_LEVELS, DEFAULT_THRESHOLD_STD

    parser.add_argument("--tomogram", required=True,
                        help="(preprocessed) tomogram, MRC [z, y, x]")
    parser.add_argument("-o", "--output", required=True,
                        help="candidate table to write (.csv, .tsv, .star, .txt)")
    parser.add_argument("--particle-diameter", type=float, required=True, metavar="A",
                        help="expected particle diameter in Å")
    parser.add_argument("--voxel-size", type=float, default=None, metavar="A",
                        help="voxel size in Å (default: from the MRC header)")
    parser.add_argument("--nms-radius", type=float, default=None, metavar="A",
                        help="NMS radius in Å (default: half the particle diameter)")
    parser.add_argument("--threshold-std", type=float, default=DEFAULT_THRESHOLD_STD,
                        help="keep peaks above mean + this many std of the DoG response "
                             f"({DEFAULT_THRESHOLD_STD})")
    parser.add_argument("--levels", type=int, default=DEFAULT_N_LEVELS,
                        help=f"Gaussian levels of the pyramid ({DEFAULT_N_LEVELS})")
    parser.add_argument("--max-candidates", type=int, default=None, metavar="N",
                        help="keep at most N candidates, highest scores first")
    parser.add_argument("--border", type=float, default=None, metavar="A",
                        help="drop candidates closer than this to a face, Å "
                             "(default: a quarter of the particle diameter)")
    parser.add_argument("--polarity", choices=("bright", "dark"), default="bright",
                        help="particles brighter than the background (milopyp's convention, "
                             "see `preprocess --invert`) or darker (bright)")
    parser.add_argument("--bin", type=int, default=None, metavar="B",
                        help="compute the pyramid on a B-times binned copy "
                             "(default: automatic, 1-4 from the particle size)")
    parser.add_argument("--tomogram-name", default=None, metavar="NAME",
                        help="value of the `tomogram` column (default: the file stem)")
    parser.add_argument("--threads", type=int, default=None,
                        help="worker threads (default: the usable CPUs, at most "
                             "$OMP_NUM_THREADS, which Snakemake sets to the rule's threads)")


def main(args: argparse.Namespace) -> None:
    from milopyp.candidates import find_candidates
    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.coords import write_coordinates
    from milopyp.io.mrc import read_tomogram

    prepare_outputs(args.output)
    t0 = time.perf_counter()
    tomogram, voxel_size_a = read_tomogram(args.tomogram, mmap=True, voxel_size_a=args.voxel_size)
    if not args.particle_diameter > 0:
        raise MilopypError(
            f"--particle-diameter must be > 0 Å, got {args.particle_diameter}"
        )
    diameter_vox = args.particle_diameter / voxel_size_a
    if diameter_vox < 2:
        raise MilopypError(
            f"{args.tomogram}: particle diameter {args.particle_diameter} Å is "
            f"{diameter_vox:.2f} voxels at {voxel_size_a} Å/voxel; expected >= 2 voxels; check "
            "--particle-diameter (Å) and the voxel size"
        )
    if diameter_vox > min(tomogram.shape):
        raise MilopypError(
            f"{args.tomogram}: particle diameter {args.particle_diameter} Å is "
            f"{diameter_vox:.1f} voxels at {voxel_size_a} Å/voxel, larger than the tomogram "
            f"(shape z,y,x {tuple(tomogram.shape)}); check --particle-diameter (Å) and the "
            "voxel size"
        )
    name = args.tomogram_name or Path(args.tomogram).name.split(".")[0]
    table = find_candidates(
        tomogram,
        particle_diameter_vox=diameter_vox,
        nms_radius_vox=None if args.nms_radius is None else args.nms_radius / voxel_size_a,
        threshold_std=args.threshold_std,
        n_levels=args.levels,
        exclude_border_vox=None if args.border is None else args.border / voxel_size_a,
        max_candidates=args.max_candidates,
        polarity=args.polarity,
        bin_factor=args.bin,
        threads=args.threads,
    )
    if table.empty:
        raise MilopypError(
            f"{args.tomogram}: no candidate passed the threshold (mean + {args.threshold_std} "
            f"std of the DoG response) and the border margin; lower --threshold-std, check "
            f"--particle-diameter ({args.particle_diameter} Å = {diameter_vox:.1f} voxels at "
            f"{voxel_size_a} Å/voxel), the voxel size and --polarity"
        )
    table.insert(0, "tomogram", name)
    write_coordinates(args.output, table, voxel_size_a=voxel_size_a,
                      shape_zyx=tuple(tomogram.shape))
    log.info(
        "%s -> %s: %d candidates (diameter %.1f vox), %.2f s",
        args.tomogram, args.output, len(table), diameter_vox, time.perf_counter() - t0,
    )
