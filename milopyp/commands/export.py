"""``milopyp export``: options -> :func:`milopyp.export.run`.

``--picks`` are per-tomogram tables (``tomogram, x, y, z, score[, fiber_id]``; voxels; a
table without a ``tomogram`` column is named after its file); each tomogram's shape and voxel
size come from its MRC among ``--tomograms`` (matched by the file name up to the first dot,
or the stem). Writes ``--csv`` (every pick), ``-o`` a RELION-5 STAR file (``# version
50001``, one ``data_particles`` loop: ``rlnTomoName``, ``rlnCoordinateX/Y/Z`` voxels,
``rlnCenteredCoordinateX/Y/ZAngst``, ``rlnAutopickFigureOfMerit``, for fibres
``rlnHelicalTubeID``) and the picks into a copick project (``--copick-config``, user
milopyp). An empty pick file (0 bytes: a cut-off write) is an error, not "no picks".
"""

from __future__ import annotations

import argparse

from milopyp.cli import renamed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--picks", nargs="+", required=True, metavar="FILE",
        help="per-tomogram pick tables (picks/{tomogram}.csv or fibres)")
    add("--tomograms", nargs="+", required=True, metavar="MRC",
        help="tomogram MRC files (shape and voxel size for RELION-5 Å)")
    add("-o", "--output", default=None, help="STAR file to write (picks.star); -o and/or --csv")
    add("--csv", default=None, metavar="FILE", help="also write all picks as one CSV (picks.csv)")
    add("--voxel-size-a", *renamed("--voxel-size"), type=float, default=None, metavar="A",
        help="voxel size in Å for every tomogram (default: each MRC header)")
    add("--copick-config", default=None, metavar="JSON",
        help="also write the picks into this copick project (its config.json)")
    add("--copick-object", default=None, metavar="NAME",
        help="pickable object the picks are of (the target's name)")
    add("--copick-session", default="0", metavar="ID",
        help="session_id of the copick picks (0); user_id is milopyp")
    add("--copick-summary", default=None, metavar="JSON",
        help="write the copick picks per run as JSON")


def main(args: argparse.Namespace) -> None:
    from milopyp.export import run

    run(args.picks, args.tomograms, output=args.output, csv=args.csv,
        voxel_size_a=args.voxel_size_a, copick_config=args.copick_config,
        copick_object=args.copick_object, copick_session=args.copick_session,
        copick_summary=args.copick_summary)
