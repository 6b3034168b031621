"""``milopyp import-selection``: turn a user's selection into per-tomogram label files.

A translator: options -> :func:`milopyp.selection.run`, which documents the formats, the
seed expansion, the negatives and the output folder.
"""

from __future__ import annotations

import argparse

from milopyp.cli import renamed
from milopyp.selection.seeds import SEED_LABEL_MODES, SEED_RADIUS_VOX


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--selection", required=True, metavar="FILE",
        help="selection: explorer selection.json, YAML/JSON {clusters: [..]} or {seeds: ..}, a "
             "coordinate table (CSV/TSV/STAR/.txt, x y z in voxels), or "
             "copick:OBJECT:USER:SESSION with --copick-config")
    add("--copick-config", default=None, metavar="JSON",
        help="copick project (config.json) of a copick:OBJECT:USER:SESSION selection")
    add("--points", default=None, metavar="CSV",
        help="explore/points.csv from `milopyp cluster` (needed unless the selection is a "
             "coordinate table)")
    add("--tomograms", nargs="+", required=True, metavar="NAME",
        help="the campaign's tomograms: names or MRC paths (paths enable inside checks and "
             "RELION-5 Å coordinates)")
    add("-o", "--output", required=True, help="output folder (e.g. labels)")
    add("--voxel-size-a", *renamed("--voxel-size"), type=float, default=None, metavar="A",
        help="voxel size in Å of every tomogram, for RELION-5 Å coordinates and copick picks "
             "(default: each MRC header)")
    add("--seed-radius-vox", *renamed("--seed-radius"), type=float, default=SEED_RADIUS_VOX,
        metavar="VOX",
        help=f"a seed must lie within this many voxels of a candidate ({SEED_RADIUS_VOX:g}); "
             f"negatives this close to a label are dropped")
    add("--max-labels-per-tomogram", type=int, default=None, metavar="N",
        help="keep at most N labels per tomogram (highest score first, else a seeded random "
             "sample); default: all")
    add("--label-tomograms", nargs="+", default=None, metavar="NAME",
        help="keep labels of these tomograms only (e.g. train on one tomogram)")
    add("--seed-labels", choices=SEED_LABEL_MODES, default="nearest",
        help="labels from seed-chosen clusters: the members nearest to the seeds, up to "
             "--max-seed-labels (nearest), or every member (clusters); default nearest")
    add("--max-seed-labels", type=int, default=None, metavar="N",
        help="most labels from seeds, seeds included (nearest mode); default max(20, 10 x "
             "seeds)")
    add("--embeddings", nargs="+", default=None, metavar="NPZ",
        help="the space in which cluster members are ranked by distance to the seeds: "
             "explore/features/{tomogram}.npz written by `milopyp cluster` (what it clustered "
             "by; the workflow's choice) or embeddings/{tomogram}.npz (default: UMAP of "
             "points.csv)")
    add("--negatives-output", default=None, metavar="DIR",
        help="folder for the negatives, one {tomogram}.csv per campaign tomogram (e.g. "
             "negatives); default: not written")
    add("--seed", type=int, default=0, help="random seed for sampling (0)")


def main(args: argparse.Namespace) -> None:
    from milopyp.selection import run

    run(args.selection, args.tomograms, args.output, points=args.points,
        copick_config=args.copick_config, voxel_size_a=args.voxel_size_a,
        seed_radius_vox=args.seed_radius_vox,
        max_labels_per_tomogram=args.max_labels_per_tomogram,
        label_tomograms=args.label_tomograms, seed_labels=args.seed_labels,
        max_seed_labels=args.max_seed_labels, embeddings=args.embeddings,
        negatives_output=args.negatives_output, seed=args.seed)
