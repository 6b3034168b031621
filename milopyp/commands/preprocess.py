"""``milopyp preprocess``: Gaussian denoising and histogram equalisation of one tomogram.

Reads the input memory-mapped (never all at once unless it is not float32), writes a float32
MRC (in [0, 1] when equalised) with the input's voxel size (or ``--voxel-size``).
"""

from __future__ import annotations

import argparse
import logging
import time

from milopyp.errors import MilopypError

HELP = "denoise and histogram-equalise a tomogram"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from milopyp.preprocess import DEFAULT_N_BINS, DEFAULT_SIGMA_VOX

    parser.add_argument("--tomogram", required=True, help="input tomogram (MRC, [z, y, x])")
    parser.add_argument("-o", "--output", required=True, help="preprocessed tomogram to write")
    sigma = parser.add_mutually_exclusive_group()
    sigma.add_argument("--sigma", type=float, default=None, metavar="VOX",
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
    parser.add_argument("--voxel-size", type=float, default=None, metavar="A",
                        help="voxel size in Å (default: from the MRC header)")
    parser.add_argument("--threads", type=int, default=None,
                        help="worker threads (default: the usable CPUs, at most "
                             "$OMP_NUM_THREADS, which Snakemake sets to the rule's threads)")


def main(args: argparse.Namespace) -> None:
    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.mrc import read_tomogram, write_tomogram
    from milopyp.preprocess import DEFAULT_SIGMA_VOX, preprocess

    prepare_outputs(args.output)
    t0 = time.perf_counter()
    tomogram, voxel_size_a = read_tomogram(args.tomogram, mmap=True, voxel_size_a=args.voxel_size)
    if args.sigma_a is not None:
        if args.sigma_a < 0:
            raise MilopypError(f"--sigma-a must be >= 0 Å, got {args.sigma_a}")
        sigma_vox = args.sigma_a / voxel_size_a
    elif args.sigma is not None:
        if args.sigma < 0:
            raise MilopypError(f"--sigma must be >= 0 voxels, got {args.sigma}")
        sigma_vox = args.sigma
    else:
        sigma_vox = DEFAULT_SIGMA_VOX
    result = preprocess(
        tomogram, sigma_vox=sigma_vox, equalize=not args.no_equalize, invert=args.invert,
        n_bins=args.bins,
        threads=args.threads,
    )
    del tomogram
    write_tomogram(args.output, result, voxel_size_a)
    log.info(
        "%s -> %s: shape %s, sigma %.3g vox, inverted %s, equalised %s, %.2f s",
        args.tomogram, args.output, tuple(result.shape), sigma_vox, args.invert,
        not args.no_equalize, time.perf_counter() - t0,
    )
