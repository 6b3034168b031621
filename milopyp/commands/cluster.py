"""``milopyp cluster``: over-cluster the embeddings of all tomograms, project them with UMAP,
draw the figures and write the explorer into one folder (the files are listed in
:mod:`milopyp.explore.mapping`, whose :func:`~milopyp.explore.mapping.run` does the work).
"""

from __future__ import annotations

import argparse

from milopyp.cli import renamed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embeddings", nargs="+", required=True,
                        help="embedding files embeddings/{tomogram}.npz from `milopyp embed`")
    parser.add_argument("--patches", nargs="+", required=True,
                        help="patch files patches/{tomogram}.npz (matched by their `tomogram`)")
    parser.add_argument("-o", "--output", required=True, help="output folder (e.g. explore)")
    parser.add_argument("--tomograms", nargs="*", default=[],
                        help="tomogram MRC files for the colour maps (matched by file stem)")
    parser.add_argument("--k", type=int, default=200,
                        help="k-means centres for over-clustering (200; clipped to N/4)")
    parser.add_argument("--classes", type=int, default=10,
                        help="classes after spectral re-clustering of the centres (10)")
    parser.add_argument("--umap-neighbors", type=int, default=40,
                        help="UMAP k-nearest-neighbour graph size (40, as in the paper)")
    parser.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist (0.1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--channel", default="last",
                        help="patch channel shown in figures: name (e.g. from the patch file's "
                             "`channels`), index, or 'last' (= P_s, the default)")
    parser.add_argument("--grid-size", type=int, default=20,
                        help="cells per side of grid.png (20)")
    parser.add_argument("--grid-layout", choices=("fill", "bin"), default="fill",
                        help="grid.png: 'fill' assigns a sample of points one-to-one to all "
                             "cells (default); 'bin' shows one patch per occupied UMAP bin")
    parser.add_argument("--gallery-members", type=int, default=8,
                        help="patches per cluster in gallery.png besides the mean (8)")
    parser.add_argument("--max-explorer-points", type=int, default=5000,
                        help="points shown in explorer.html; more are sampled per cluster (5000)")
    parser.add_argument("--particle-diameter-a", *renamed("--particle-diameter"), type=float,
                        default=None,
                        help="particle diameter in Å: sphere size in colour maps and the "
                             "cluster MRC (default: half the patch size)")
    parser.add_argument("--colormap-slices", type=int, default=1,
                        help="slabs per colour-map PNG, at candidate-z quantiles (1: the median)")
    parser.add_argument("--profile-weight", type=float, default=None,
                        help="weight of each candidate's radial density profile (read from "
                             "--tomograms, needs --particle-diameter-a) beside its embedding "
                             "in the clustering and UMAP (default 4; 0: embeddings alone)")
    parser.add_argument("--no-cluster-mrc", action="store_true",
                        help="do not write colormaps/{tomogram}_clusters.mrc")


def main(args: argparse.Namespace) -> None:
    from milopyp.explore.mapping import PROFILE_WEIGHT, run

    run(args.embeddings, args.patches, args.output, tomogram_paths=args.tomograms or [],
        k=args.k, n_classes=args.classes, umap_neighbors=args.umap_neighbors,
        min_dist=args.min_dist, seed=args.seed, channel=args.channel,
        grid_size=args.grid_size, grid_layout=args.grid_layout,
        gallery_members=args.gallery_members, max_explorer_points=args.max_explorer_points,
        particle_diameter_a=args.particle_diameter_a, colormap_slices=args.colormap_slices,
        cluster_mrc=not args.no_cluster_mrc,
        profile_weight=PROFILE_WEIGHT if args.profile_weight is None else args.profile_weight)
