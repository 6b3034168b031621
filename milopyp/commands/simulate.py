"""``milopyp simulate``: write a synthetic dataset with exact ground truth.

Writes ``OUT/tomograms/tomo_000.mrc``, ``OUT/tiltseries/tomo_000.st`` + ``.tlt`` and
``OUT/truth/tomo_000.csv`` per tomogram (see :mod:`milopyp.simulate`; protein is bright).
"""

from __future__ import annotations

import argparse
import logging

from milopyp.errors import MilopypError

HELP = "make a synthetic dataset with ground truth (tomograms, tilt series, truth)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from milopyp.simulate import PRESETS, SPECIES

    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--n-tomograms", type=int, default=2, help="number of tomograms (2)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=[64, 256, 256],
        metavar=("Z", "Y", "X"),
        help="tomogram shape in voxels (64 256 256)",
    )
    parser.add_argument(
        "--voxel-size",
        type=float,
        default=12.0,
        help="voxel size in Å (12; the ribosome is ~22 voxels wide)",
    )
    parser.add_argument(
        "--preset",
        default="demo",
        choices=sorted(PRESETS),
        help="demo (all species but decoys), crowded (ribosomes among decoys), two_species, "
        "membrane (vesicles with spikes + free spikes) or filament (crossing filaments) (demo)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--count",
        action="append",
        default=[],
        metavar="SPECIES=N",
        help=f"number of objects of a species per tomogram, repeatable; "
        f"species: {', '.join(SPECIES)}",
    )
    parser.add_argument(
        "--dose", type=float, default=None, help="electrons per Å² per tilt image (preset value)"
    )
    parser.add_argument(
        "--bright-protein",
        action="store_true",
        help="write protein brighter than the background (default: dark, as real reconstructions)",
    )
    parser.add_argument(
        "--no-tilt-series",
        action="store_true",
        help="do not write the tilt series (the tomogram is still reconstructed)",
    )


def _parse_counts(items: list[str]) -> dict[str, int]:
    from milopyp.simulate import SPECIES

    counts = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in SPECIES or not value.strip().isdigit():
            raise MilopypError(
                f"--count {item!r}: expected SPECIES=N with SPECIES one of {', '.join(SPECIES)} "
                f"and N a whole number, e.g. --count ribosome=40"
            )
        counts[name] = int(value)
    return counts


def main(args: argparse.Namespace) -> None:
    from milopyp.io.atomic import check_writable
    from milopyp.simulate import simulate_dataset

    if args.n_tomograms < 1:
        raise MilopypError(f"--n-tomograms must be >= 1, got {args.n_tomograms}")
    if min(args.shape) < 8:
        raise MilopypError(f"--shape must be >= 8 voxels per axis, got {args.shape}")
    if not args.voxel_size > 0:
        raise MilopypError(f"--voxel-size must be > 0 Å, got {args.voxel_size}")
    overrides = {}
    if args.dose is not None:
        if not args.dose > 0:
            raise MilopypError(f"--dose must be > 0 e/Å² per tilt, got {args.dose}")
        overrides["dose_per_tilt"] = args.dose
    check_writable(args.output, folder=True)
    names = simulate_dataset(
        args.output,
        n_tomograms=args.n_tomograms,
        shape_zyx=tuple(args.shape),
        voxel_size_a=args.voxel_size,
        seed=args.seed,
        preset=args.preset,
        write_tilt_series=not args.no_tilt_series,
        protein_contrast="bright" if args.bright_protein else "dark",
        counts=_parse_counts(args.count) or None,
        **overrides,
    )
    log.info("wrote %d tomograms to %s: %s", len(names), args.output, ", ".join(names))
