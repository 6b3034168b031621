"""``milopyp simulate``: translates the command line into :func:`milopyp.simulate.run`.

Writes ``OUT/tomograms/tomo_000.mrc``, ``OUT/tiltseries/tomo_000.st`` + ``.tlt`` and
``OUT/truth/tomo_000.csv`` per tomogram (see :mod:`milopyp.simulate`).
"""

from __future__ import annotations

import argparse

from milopyp.cli import renamed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from milopyp.simulate import PRESETS, SPECIES

    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--n-tomograms", type=int, default=2, help="number of tomograms (2)")
    parser.add_argument("--shape-vox", *renamed("--shape"), type=int, nargs=3,
                        default=[64, 256, 256], metavar=("Z", "Y", "X"),
                        help="tomogram shape in voxels (64 256 256)")
    parser.add_argument("--voxel-size-a", *renamed("--voxel-size"), type=float, default=12.0,
                        metavar="A", help="voxel size in Å (12; the ribosome is ~22 voxels wide)")
    parser.add_argument(
        "--preset", default="demo", choices=sorted(PRESETS),
        help="demo (all species but decoys), crowded (ribosomes among decoys), two_species, "
        "membrane (vesicles with spikes + free spikes) or filament (crossing filaments) (demo)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--count", action="append", default=[], metavar="SPECIES=N",
                        help="number of objects of a species per tomogram, repeatable; "
                             f"species: {', '.join(SPECIES)}")
    parser.add_argument("--dose", type=float, default=None,
                        help="electrons per Å² per tilt image (preset value)")
    parser.add_argument("--bright-protein", action="store_true",
                        help="write protein brighter than the background (default: dark, as "
                             "real reconstructions)")
    parser.add_argument("--no-tilt-series", action="store_true",
                        help="do not write the tilt series (the tomogram is still reconstructed)")


def main(args: argparse.Namespace) -> None:
    from milopyp.simulate import parse_counts, run

    run(args.output, n_tomograms=args.n_tomograms, shape_zyx_vox=args.shape_vox,
        voxel_size_a=args.voxel_size_a, preset=args.preset, seed=args.seed,
        counts=parse_counts(args.count), dose_per_tilt=args.dose,
        protein_contrast="bright" if args.bright_protein else "dark",
        write_tilt_series=not args.no_tilt_series)
