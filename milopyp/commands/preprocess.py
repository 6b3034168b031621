"""``milopyp preprocess``: translates the command line into :func:`milopyp.preprocess.run`."""

from __future__ import annotations

import argparse

from milopyp.cli import renamed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from milopyp.preprocess import DEFAULT_N_BINS, DEFAULT_SIGMA_VOX

    parser.add_argument("--tomogram", required=True, help="input tomogram (MRC, [z, y, x])")
    parser.add_argument("-o", "--output", required=True, help="preprocessed tomogram to write")
    sigma = parser.add_mutually_exclusive_group()
    sigma.add_argument("--sigma-vox", *renamed("--sigma"), type=float, default=None,
                       metavar="VOX",
                       help=f"denoising Gaussian sigma in voxels ({DEFAULT_SIGMA_VOX}; 0 = off)")
    sigma.add_argument("--sigma-a", type=float, default=None, metavar="A",
                       help="denoising Gaussian sigma in Å (converted with the voxel size)")
    parser.add_argument("--no-equalize", action="store_true",
                        help="skip histogram equalisation")
    parser.add_argument("--invert", action="store_true",
                        help="negate the contrast (for tomograms with dark protein; milopyp "
                             "expects protein brighter than the background)")
    parser.add_argument("--bins", type=int, default=DEFAULT_N_BINS,
                        help=f"histogram bins for equalisation ({DEFAULT_N_BINS})")
    parser.add_argument("--voxel-size-a", *renamed("--voxel-size"), type=float, default=None,
                        metavar="A", help="voxel size in Å (default: from the MRC header)")
    parser.add_argument("--threads", type=int, default=None,
                        help="worker threads (default: the usable CPUs, at most "
                             "$OMP_NUM_THREADS, which Snakemake sets to the rule's threads)")


def main(args: argparse.Namespace) -> None:
    from milopyp.preprocess import run

    run(args.tomogram, args.output, sigma_vox=args.sigma_vox, sigma_a=args.sigma_a,
        equalize=not args.no_equalize, invert=args.invert, n_bins=args.bins,
        voxel_size_a=args.voxel_size_a, threads=args.threads)
