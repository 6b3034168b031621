"""Re-estimate the BatchNorm statistics of a localiser saved by an earlier version, as this
version's training does after its last epoch (:func:`milopyp.localize.train.reestimate_batchnorm`),
and write it as a new model file; ``benchmarks/accuracy.py --dataset DIR --model NEW``
then scores it. The same model before and after is the comparison (a new training would
change the weights, too).

The batches are drawn from the labelled tomogram of ``--dataset`` (its first) with the
labels ``benchmarks/accuracy.py --dataset`` draws (``--labels``, ``--seed``, ``--jitter``
as there, or ``--labels-csv``), the crop settings of ``train_localizer``'s defaults and the
network's working grid (its ``bin_factor``); ``--train-seed`` is the training seed the
model was trained with (it seeds the batches). ``--label-crop-fraction 0`` draws every crop
uniformly instead of half of them near a label (stop 40: not better, see docs/accuracy.md).

    .venv/bin/python benchmarks/batchnorm.py --dataset ../shared/devset/virus --target spike \\
        --labels 82 --train-seed 2 --model DIR/full_model.pt --out DIR/batchnorm.pt

``--model`` may also be a training checkpoint (``benchmarks/accuracy.py --dataset ...
--train-kwargs '{"checkpoint_path": "DIR/run.ckpt"}'`` keeps it): its weights and
statistics are the last epoch's, so this gives the model that training returned (insitu
seed 0: the same held-out and labelled F1 to the digit), or, with a patched training that
changes the weights after the last epoch, the model it would have returned without.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.dataset import first_labels, load_dataset, save_model
from milopyp.localize.checkpoint import TrainSettings
from milopyp.localize.data import TrainingData, working_labels
from milopyp.localize.normalize import intensity_stats
from milopyp.localize.scale import bin_volume
from milopyp.localize.train import (
    BATCHNORM_BATCHES,
    load_localizer,
    reestimate_batchnorm,
    train_localizer,
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, required=True, help="dataset folder")
    p.add_argument("--model", type=Path, required=True, help="a saved full_model.pt")
    p.add_argument("--out", type=Path, required=True, help="the new model file")
    p.add_argument("--target", default="ribosome", help="species the model picks (ribosome)")
    p.add_argument("--labels", type=int, default=55, help="labels of the first tomogram (55)")
    p.add_argument("--labels-csv", type=Path, default=None, metavar="CSV",
                   help="the labels from a table instead (tomogram,x,y,z)")
    p.add_argument("--jitter", type=float, default=1.0, help="label jitter, voxels (1)")
    p.add_argument("--seed", type=int, default=0, help="label seed (0)")
    p.add_argument("--train-seed", type=int, default=0, help="the model's training seed (0)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    p.add_argument("--label-crop-fraction", type=float, default=None, metavar="F",
                   help="fraction of the batches' crops centred near a label (default: the "
                        "training's); 0 draws every crop uniformly, as the tomograms are read "
                        "at inference")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    first = ds.tomograms[0]
    radius = ds.diameters_a[args.target] / first.voxel_size_a / 2
    labels = first_labels(first, args)
    model = load_localizer(args.model)
    b = int(model.config.bin_factor)
    working = [bin_volume(first.data, b)] if b > 1 else [first.data]
    data = TrainingData(tomograms=working, labels=working_labels([labels], working, b),
                        stats=[intensity_stats(t) for t in working],
                        originals=[first.data], bin_factor=b)
    defaults = train_localizer.__kwdefaults__
    settings = TrainSettings(particle_radius_vox=radius / b, crop_zyx=tuple(defaults["crop"]),
                             batch_size=defaults["batch_size"], seed=args.train_seed,
                             rotate_xy=defaults["rotate_xy"], flip_z=True)
    if args.label_crop_fraction is not None:
        if not 0.0 <= args.label_crop_fraction <= 1.0:
            raise SystemExit(f"--label-crop-fraction: expected 0..1, got "
                             f"{args.label_crop_fraction}")
        settings = replace(settings, label_crop_fraction=args.label_crop_fraction)
    t0 = time.perf_counter()
    reestimate_batchnorm(model, data, settings, torch.device("cpu"))
    save_model(args.out, model, model.calibration, voxel_size_a=first.voxel_size_a)
    print(f"{args.model}: BatchNorm statistics re-estimated over {BATCHNORM_BATCHES} batches "
          f"({time.perf_counter() - t0:.0f} s) -> {args.out}")


if __name__ == "__main__":
    main()
