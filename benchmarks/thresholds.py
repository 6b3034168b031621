"""Pick-threshold rules compared on saved picks: held-out and labelled F1 at each rule.

Reads the peaks a ``benchmarks/dataset.py --save-picks DIR`` row wrote (every heat-map
local maximum of every tomogram with its score, plus the median label peak of the labelled
tomogram) and scores, on the held-out tomograms and on the labelled one:

- the label rule of issue 11's baseline: 0.9 × the median label peak (and other fractions);
- the split rule (:func:`milopyp.localize.calibrate.split_threshold`: the background /
  particle-mode mixture, and Otsu's split it falls back to) on the labelled tomogram's
  peaks (the model's stored threshold), and per tomogram on its own peaks as
  ``milopyp localize`` applies it (no truth used);
- the same per-tomogram split at other particle probabilities (``--posteriors``);
- the threshold tuned on the held-out truth (an oracle).

    .venv/bin/python benchmarks/thresholds.py --dataset ../shared/devset/crowded \\
        --picks /tmp/exp/e3/full_model.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.dataset import (
    best_threshold,
    load_saved_peaks,
    metrics_at,
    tomogram_thresholds,
    without_z_face_picks,
)
from milopyp.localize import calibrate
from milopyp.localize.calibrate import split_threshold


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, required=True, help="dataset folder")
    p.add_argument("--picks", type=Path, required=True, help="a --save-picks CSV")
    p.add_argument("--target", default="ribosome", help="species picked (ribosome)")
    p.add_argument("--posteriors", default="", metavar="P,P,...",
                   help="also the per-tomogram split at these particle probabilities "
                        "(milopyp.localize.calibrate.MIXTURE_POSTERIOR; default "
                        f"{calibrate.MIXTURE_POSTERIOR:g})")
    args = p.parse_args(argv)
    saved = load_saved_peaks(args.dataset, args.picks, args.target)
    names, truth, radius, median = saved.names, saved.truth, saved.radius, saved.median
    picks = saved.peaks  # scored as the workflow scores them (weighed by the profile check)
    lab = picks[picks["tomogram"] == names[0]]
    # the fixed thresholds' picks without those `milopyp localize` drops at the z faces
    pickable = without_z_face_picks(picks, saved.depths, radius)
    lab_picks = pickable[pickable["tomogram"] == names[0]]
    held = pickable[pickable["tomogram"].isin(names[1:])]
    held_truth = truth[truth["tomogram"].isin(names[1:])]
    lab_truth = truth[truth["tomogram"] == names[0]]
    split, rule = split_threshold(median, lab["score"].to_numpy())
    rules = {f"{f:g} x label median": f * median for f in (0.9, 0.7, 0.5)}
    otsu, otsu_rule = split_threshold(median, lab["score"].to_numpy(), "otsu")
    rules[f"Otsu split, labelled tomogram ({otsu_rule})"] = otsu
    rules[f"split, labelled tomogram ({rule})"] = split
    rules["tuned on held-out truth (oracle)"] = best_threshold(held, held_truth, radius)
    print(f"{args.picks}: label peak median {median:.3f}")
    rows = {name: (held[held["score"] > t], lab_picks[lab_picks["score"] > t], f"{t:.3f}")
            for name, t in rules.items()}
    calibration = {"threshold": split, "label_peak_median": median, "rule": rule}
    default_posterior = calibrate.MIXTURE_POSTERIOR
    per_tomogram = [("otsu", default_posterior, "per-tomogram Otsu split"),
                    ("mixture", default_posterior, "per-tomogram split (milopyp localize)")]
    per_tomogram += [("mixture", float(v), f"per-tomogram split, particle probability {v}")
                     for v in args.posteriors.split(",") if v.strip()]
    for method, posterior, name in per_tomogram:
        calibrate.MIXTURE_POSTERIOR = posterior  # read by mixture_level at each call
        kept, per = tomogram_thresholds(calibration, picks, names, method,
                                        depths=saved.depths, radius_vox=radius)
        rows[name] = (kept[kept["tomogram"].isin(names[1:])],
                      kept[kept["tomogram"] == names[0]],
                      ", ".join(f"{per[n]:.3f}" for n in names))
    calibrate.MIXTURE_POSTERIOR = default_posterior
    for name, (h_picks, l_picks, shown) in rows.items():
        h = metrics_at(h_picks, held_truth, -np.inf, radius, names[1:])
        lb = metrics_at(l_picks, lab_truth, -np.inf, radius, names[:1])
        print(f"  {name:<52} thr {shown}  held-out F1 {h['f1']:.3f} (P {h['precision']:.3f} "
              f"R {h['recall']:.3f}, {h['n_picks']} picks) | labelled F1 {lb['f1']:.3f}")


if __name__ == "__main__":
    main()
