"""``milopyp localize``: heat map of a whole tomogram (tiled), then picks by 3D max-pool NMS.

Writes ``tomogram,x,y,z,score`` (voxels of the tomogram, score = heat-map probability),
highest score first; a tomogram without any peak above the threshold gets an empty table
and a warning (it may simply hold none of the target).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from milopyp.errors import MilopypError

HELP = "predict a heat map for a tomogram and pick particle centres"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model from `milopyp train-localize`")
    parser.add_argument("--tomogram", required=True, help="tomogram (MRC, [z, y, x])")
    parser.add_argument("-o", "--output", required=True, help="pick table to write (.csv)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="keep peaks with heat-map value above this (default: the "
                        "model's automatic threshold, calibrated on its labels)")
    parser.add_argument("--nms-kernel", type=int, default=None,
                        help="NMS box side in voxels (odd); default: the particle radius")
    parser.add_argument("--max-picks", type=int, default=None, help="keep at most this many picks")
    parser.add_argument("--heatmap", default=None, help="also write the heat map to this MRC")
    parser.add_argument("--memory-mb", type=float, default=512,
                        help="activation memory of one inference tile, MB (512)")
    parser.add_argument("--tomogram-name", default=None, help="name in the table (file stem)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (auto)")


def main(args: argparse.Namespace) -> None:
    from milopyp.io.coords import write_coordinates
    from milopyp.io.mrc import read_tomogram, write_tomogram
    from milopyp.localize.infer import predict_heatmap
    from milopyp.localize.peaks import find_peaks
    from milopyp.localize.train import load_localizer

    name = args.tomogram_name or Path(args.tomogram).name.split(".")[0]
    model = load_localizer(args.model)
    volume, voxel_size_a = read_tomogram(args.tomogram, mmap=True)
    heatmap = predict_heatmap(model, volume, device=args.device, memory_mb=args.memory_mb)
    kernel = args.nms_kernel or nms_kernel_from_model(model)
    threshold = args.threshold
    if threshold is None:
        threshold = model.calibration.get("threshold")
        if threshold is None or not np.isfinite(threshold):
            raise MilopypError(
                f"{args.model}: the model has no automatic threshold (trained without "
                "calibration); pass --threshold"
            )
    picks = find_peaks(heatmap, kernel_vox=kernel, threshold=threshold,
                       max_peaks=args.max_picks, tomogram=name)
    if picks.empty:
        log.warning("%s: no heat-map peak above %.4g; lower --threshold if the target is there",
                    args.tomogram, threshold)
    log.info("%s: %d picks (NMS kernel %d voxels, threshold %.4g)", name, len(picks), kernel,
             threshold)
    if args.heatmap:
        write_tomogram(args.heatmap, heatmap, voxel_size_a)
    write_coordinates(args.output, picks)


def nms_kernel_from_model(model) -> int:
    """Odd NMS box side from the training settings: the particle radius, 3 for fibres."""
    settings = getattr(model, "settings", None) or {}
    if settings.get("shape") == "fiber":
        return 3
    radius = float(settings.get("particle_radius_vox", 3.0))
    return max(3, round(radius) | 1)
