"""Heat maps of several saved localisers averaged: does an ensemble rank particles better?

Reads models that ``benchmarks/accuracy.py --dataset DIR --save-picks OUT`` saved
(``OUT/full_model.pt``, trained on the same labels), averages their heat maps (4 test-time
flips each) on every tomogram of the dataset, picks as ``milopyp localize`` does and prints,
for each model alone and for every combination, the held-out F1 at the threshold tuned on
truth, the held-out AP and the labelled tomogram's tuned F1. An experiment: the workflow
trains one model per target.

    .venv/bin/python benchmarks/ensemble.py --dataset ../shared/devset/crowded \\
        devset-results/a/full_model.pt devset-results/b/full_model.pt
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from milopyp.cli import openmp_defaults

openmp_defaults()  # as every milopyp command (OMP_WAIT_POLICY=PASSIVE), before torch loads

import numpy as np
import pandas as pd
import torch

from benchmarks.dataset import load_dataset, split_scores, target_truth
from milopyp.defaults import nms_kernel_vox
from milopyp.localize import find_peaks, predict_heatmap
from milopyp.localize.train import load_localizer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, required=True, help="dataset folder")
    p.add_argument("--target", default="ribosome", help="species picked (ribosome)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    p.add_argument("models", type=Path, nargs="+", help="saved full_model.pt files")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    names = [v.name for v in ds.tomograms]
    truth = target_truth(ds.tomograms, args.target)
    radius = ds.diameters_a[args.target] / ds.tomograms[0].voxel_size_a / 2
    heats = {}
    for path in args.models:
        model = load_localizer(path)
        heats[path] = [predict_heatmap(model, v.data, device="cpu", flips=4)
                       for v in ds.tomograms]
    for n in range(1, len(args.models) + 1):
        for combo in itertools.combinations(args.models, n):
            picks = [find_peaks(np.mean([heats[m][k] for m in combo], axis=0),
                                kernel_vox=nms_kernel_vox(radius), threshold=0.0,
                                tomogram=v.name)
                     for k, v in enumerate(ds.tomograms)]
            r = split_scores(pd.concat(picks, ignore_index=True), truth, None, radius,
                             names[0], names[1:])
            print(f"{' + '.join(m.parent.name for m in combo)}: held-out F1 (tuned) "
                  f"{r['held']['f1']:.3f}, AP {r['held']['ap']:.3f} | labelled F1 (tuned) "
                  f"{r['lab']['f1']:.3f}", flush=True)


if __name__ == "__main__":
    main()
