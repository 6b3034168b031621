"""The profile check with fewer labels: held-out F1 at the automatic threshold when the
profile reference (:func:`milopyp.localize.profile.profile_reference`) comes from random
subsets of the labels, on the saved peaks of a model.

Reads a ``benchmarks/dataset.py --save-picks DIR`` CSV (every heat-map peak of every
tomogram, with its heat-map score), draws the run's labels again (same ``--labels``,
``--seed``, ``--jitter``), builds the reference from ``--draws`` random subsets of each size
in ``--sizes``, weighs the peaks by it and applies each tomogram's automatic
threshold (:func:`milopyp.localize.calibrate.tomogram_threshold`), as ``milopyp localize``
does. The model is the one trained on all the labels; only the reference changes.

    .venv/bin/python benchmarks/profile_labels.py --dataset ../shared/devset/crowded \\
        --picks DIR/full_model.csv --sizes 55,30,20,10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from benchmarks.dataset import (
    draw_labels,
    load_saved_peaks,
    metrics_at,
    tomogram_thresholds,
    weigh_peaks,
)
from milopyp.localize.calibrate import (
    SPLIT_FLOOR_FRACTION,
    label_pick_scores,
    split_threshold,
)
from milopyp.localize.profile import profile_reference


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, required=True, help="dataset folder")
    p.add_argument("--picks", type=Path, required=True, help="a --save-picks CSV")
    p.add_argument("--target", default="ribosome", help="species picked (ribosome)")
    p.add_argument("--labels", type=int, default=55, help="labels of the run (55)")
    p.add_argument("--seed", type=int, default=0, help="label seed of the run (0)")
    p.add_argument("--jitter", type=float, default=1.0, help="label jitter of the run (1)")
    p.add_argument("--sizes", default="55,30,20,10", help="reference sizes (55,30,20,10)")
    p.add_argument("--draws", type=int, default=3, help="random subsets per size (3)")
    args = p.parse_args(argv)
    saved = load_saved_peaks(args.dataset, args.picks, args.target)
    names, truth, radius = saved.names, saved.truth, saved.radius
    peaks, first = saved.peaks, saved.ds.tomograms[0]
    labels = draw_labels(first.truth, args.target, args.labels, jitter_vox=args.jitter,
                         seed=args.seed, shape_zyx=first.data.shape)
    volumes = saved.volumes  # as the run's model read them
    peaks = peaks.assign(score=peaks["heat_score"])  # the heat map's own scores
    # the labelled tomogram's peaks the split sees: what the labels are judged against
    lab_peaks = peaks[peaks["tomogram"] == names[0]]
    floor = SPLIT_FLOOR_FRACTION * float(np.median(label_pick_scores(lab_peaks, labels,
                                                                     radius / 2)))
    background = lab_peaks.loc[lab_peaks["score"] > floor, ["x", "y", "z"]].to_numpy(np.float64)
    for size in (int(v) for v in args.sizes.split(",")):
        scores = []
        for draw in range(args.draws if size < len(labels) else 1):
            subset = labels[np.random.default_rng(draw).permutation(len(labels))[:size]]
            reference = profile_reference([first.data], [subset], radius, [background], floor)
            weighed = pd.concat([weigh_peaks(reference, volumes[name], g, floor)
                                 for name, g in peaks.groupby("tomogram")])
            lab = weighed[weighed["tomogram"] == names[0]]
            median = float(np.median(label_pick_scores(lab, labels, radius / 2)))
            split, rule = split_threshold(median, lab["score"].to_numpy(np.float64))
            calibration = {"threshold": split, "label_peak_median": median, "rule": rule}
            picked, _ = tomogram_thresholds(calibration, weighed, names, depths=saved.depths,
                                            radius_vox=radius)
            held = metrics_at(picked[picked["tomogram"].isin(names[1:])],
                              truth[truth["tomogram"].isin(names[1:])], -np.inf, radius,
                              names[1:])
            scores.append(held["f1"])
        print(f"  reference from {size} labels: held-out F1 "
              + " / ".join(f"{f:.3f}" for f in scores), flush=True)


if __name__ == "__main__":
    main()
