"""``milopyp localize``: heat map of a whole tomogram (tiled), then picks by 3D max-pool NMS.

Writes ``tomogram,x,y,z,score`` (voxels of the tomogram, score = heat-map probability),
highest score first; a tomogram without any peak above the threshold gets an empty table
and a warning (it may simply hold none of the target). A globular model's automatic
threshold is set per tomogram, from the split of its own heat-map peaks
(:func:`milopyp.localize.calibrate.tomogram_threshold`). A fibre model's automatic threshold
is raised to the bulk of each heat map and its picks capped at what filaments can give
(:func:`milopyp.localize.calibrate.guard_fiber_threshold`, ``max_fiber_picks``), with a
warning, so that a flat (saturated) heat map does not turn into the whole tomogram.
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
                        help="keep peaks with heat-map value above this (default: automatic, "
                        "from this tomogram's heat-map peaks and the model's calibration)")
    parser.add_argument("--nms-kernel", type=int, default=None,
                        help="NMS box side in voxels (odd); default: the particle radius")
    parser.add_argument("--max-picks", type=int, default=None, help="keep at most this many picks")
    parser.add_argument("--heatmap", default=None, help="also write the heat map to this MRC")
    parser.add_argument("--memory-mb", type=float, default=512,
                        help="activation memory of one inference tile, MB (512)")
    parser.add_argument("--tomogram-name", default=None, help="name in the table (file stem)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (auto)")
    parser.add_argument("--voxel-size", type=float, default=None, metavar="A",
                        help="voxel size in Å for the heat map's header (default: the MRC "
                             "header's)")


def main(args: argparse.Namespace) -> None:
    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.coords import write_coordinates
    from milopyp.io.mrc import read_tomogram, write_tomogram
    from milopyp.localize.calibrate import tomogram_threshold
    from milopyp.localize.infer import predict_heatmap
    from milopyp.localize.peaks import find_peaks
    from milopyp.localize.train import load_localizer

    prepare_outputs(args.output, args.heatmap)
    name = args.tomogram_name or Path(args.tomogram).name.split(".")[0]
    model = load_localizer(args.model)
    volume, voxel_size_a = read_tomogram(args.tomogram, mmap=True, voxel_size_a=args.voxel_size)
    # the flips the threshold was calibrated with (models before them: none)
    flips = int(model.calibration.get("flips", 1))
    heatmap = predict_heatmap(model, volume, device=args.device, memory_mb=args.memory_mb,
                              flips=flips)
    kernel = args.nms_kernel or nms_kernel_from_model(model)
    threshold = args.threshold
    if threshold is None:
        threshold = model.calibration.get("threshold")
        if threshold is None or not np.isfinite(threshold):
            raise MilopypError(
                f"{args.model}: the model has no automatic threshold (trained without "
                "calibration); pass --threshold"
            )
    max_picks = args.max_picks
    fiber = (getattr(model, "settings", None) or {}).get("shape") == "fiber"
    if fiber and args.threshold is None:
        threshold, max_picks, note = _guard_fiber(heatmap, threshold, model.calibration,
                                                  max_picks)
        if note:
            log.warning("%s: %s", name, note)
    if not fiber and args.threshold is None and "rule" in model.calibration:
        picks = find_peaks(heatmap, kernel_vox=kernel, threshold=0.0, tomogram=name)
        threshold, rule = tomogram_threshold(model.calibration,
                                             picks["score"].to_numpy(dtype=np.float64))
        log.info("%s: automatic threshold %.4g (%s)", name, threshold, rule)
        picks = picks[picks["score"] > threshold].reset_index(drop=True)
    else:
        picks = find_peaks(heatmap, kernel_vox=kernel, threshold=threshold, tomogram=name)
    if max_picks is not None and len(picks) > max_picks:
        if fiber and args.threshold is None and max_picks != args.max_picks:
            log.warning("%s: %d fibre picks above %.4g, more than filaments can give "
                        "(%d in %s voxels); keeping the %d highest-scoring: check the heat map "
                        "(--heatmap) and the model", name, len(picks), threshold, max_picks,
                        "x".join(map(str, heatmap.shape)), max_picks)
        picks = picks.iloc[:max_picks]
    if picks.empty:
        log.warning("%s: no heat-map peak above %.4g; lower --threshold if the target is there",
                    args.tomogram, threshold)
    log.info("%s: %d picks (NMS kernel %d voxels, threshold %.4g)", name, len(picks), kernel,
             threshold)
    if args.heatmap:
        write_tomogram(args.heatmap, heatmap, voxel_size_a)
    write_coordinates(args.output, picks)


def _guard_fiber(heatmap, threshold: float, calibration: dict, max_picks):
    """A fibre model's automatic threshold on this heat map and the most picks to keep:
    :func:`milopyp.localize.calibrate.guard_fiber_threshold` (not below the bulk of the heat
    map) and :func:`~milopyp.localize.calibrate.max_fiber_picks` (``--max-picks`` if lower).
    Returns ``(threshold, max_picks, note)``."""
    from milopyp.localize.calibrate import guard_fiber_threshold, max_fiber_picks

    threshold, note = guard_fiber_threshold(heatmap, threshold, calibration)
    cap = max_fiber_picks(heatmap.shape)
    return threshold, cap if max_picks is None else min(max_picks, cap), note


def nms_kernel_from_model(model) -> int:
    """Odd NMS box side from the training settings: the particle radius, 3 for fibres."""
    from milopyp.localize.peaks import nms_kernel_vox

    settings = getattr(model, "settings", None) or {}
    if settings.get("shape") == "fiber":
        return 3
    # training stores the radius on its working grid; picks are on the tomogram's grid
    return nms_kernel_vox(float(settings.get("particle_radius_vox", 3.0))
                          * model.config.bin_factor)

