"""``milopyp candidates``: translates the command line into :func:`milopyp.candidates.run`."""

from __future__ import annotations

import argparse

from milopyp.cli import renamed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from milopyp.candidates import DEFAULT_N_LEVELS, DEFAULT_THRESHOLD_STD

    parser.add_argument("--tomogram", required=True,
                        help="(preprocessed) tomogram, MRC [z, y, x]")
    parser.add_argument("-o", "--output", required=True,
                        help="candidate table to write (.csv, .tsv, .star, .txt)")
    parser.add_argument("--particle-diameter-a", *renamed("--particle-diameter"), type=float,
                        required=True, metavar="A", help="expected particle diameter in Å")
    parser.add_argument("--voxel-size-a", *renamed("--voxel-size"), type=float, default=None,
                        metavar="A", help="voxel size in Å (default: from the MRC header)")
    parser.add_argument("--nms-radius-a", *renamed("--nms-radius"), type=float, default=None,
                        metavar="A", help="NMS radius in Å (default: half the particle diameter)")
    parser.add_argument("--threshold-std", type=float, default=DEFAULT_THRESHOLD_STD,
                        help="keep peaks above mean + this many std of the DoG response "
                             f"({DEFAULT_THRESHOLD_STD})")
    parser.add_argument("--levels", type=int, default=DEFAULT_N_LEVELS,
                        help=f"Gaussian levels of the pyramid ({DEFAULT_N_LEVELS})")
    parser.add_argument("--max-candidates", type=int, default=None, metavar="N",
                        help="keep at most N candidates, highest scores first")
    parser.add_argument("--border-a", *renamed("--border"), type=float, default=None,
                        metavar="A", help="drop candidates closer than this to a face, Å "
                                          "(default: a quarter of the particle diameter)")
    parser.add_argument("--polarity", choices=("bright", "dark"), default="bright",
                        help="particles brighter than the background (milopyp's convention, "
                             "see `preprocess --invert`) or darker (bright)")
    parser.add_argument("--bin", type=int, default=None, metavar="B",
                        help="compute the pyramid on a B-times binned copy "
                             "(default: automatic, 1-4 from the particle size)")
    parser.add_argument("--no-centre", action="store_true",
                        help="keep the DoG peaks where they are instead of centring each on "
                             "the DoG level at the particle's scale")
    parser.add_argument("--tomogram-name", default=None, metavar="NAME",
                        help="value of the `tomogram` column (default: the file stem)")
    parser.add_argument("--threads", type=int, default=None,
                        help="worker threads (default: the usable CPUs, at most "
                             "$OMP_NUM_THREADS, which Snakemake sets to the rule's threads)")


def main(args: argparse.Namespace) -> None:
    from milopyp.candidates import run

    run(args.tomogram, args.output, particle_diameter_a=args.particle_diameter_a,
        voxel_size_a=args.voxel_size_a, nms_radius_a=args.nms_radius_a,
        threshold_std=args.threshold_std, n_levels=args.levels,
        max_candidates=args.max_candidates, border_a=args.border_a, polarity=args.polarity,
        bin_factor=args.bin, centre=not args.no_centre, tomogram_name=args.tomogram_name,
        threads=args.threads)
