"""What a saved localiser's false picks are, and how far the profile check can tell the
target from a look-alike species.

Reads a ``benchmarks/accuracy.py --dataset DIR --save-picks OUT`` run: ``OUT/full_model.csv``
(every heat-map peak, weighed by the profile check) and ``OUT/full_model.pt`` (its
calibration: the label median and the profile check's reference). Prints:

- per tomogram, the picks above its automatic threshold (recomputed from the saved scores
  as ``milopyp localize`` computes it: :func:`benchmarks.dataset.tomogram_thresholds`), the
  targets found and missed, and each false pick's nearest truth particle by species
  (``none`` when no particle lies within the match radius);
- the target against ``--look-alike`` among the heat-map peaks that the check judges
  (above its floor, within ``--near`` voxels of a particle of either species), in the
  held-out tomograms: the area under the ROC curve of the profile check's log-likelihood
  ratio (:func:`milopyp.localize.profile.likelihood_ratios`, the model's own reference), and of
  a linear discriminant on the same features (:func:`milopyp.localize.profile.profile_features`)
  fitted on the labelled tomogram's truth: what those features can do when told which peak
  is which, the check without that.

    .venv/bin/python benchmarks/false_picks.py --dataset ../shared/devset/insitu \\
        --run OUT [--target ribosome --look-alike complex]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from benchmarks.dataset import load_saved_peaks, nearest_species, tomogram_thresholds
from milopyp.evaluate.metrics import match


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positive`` (sklearn's; ties
    count half); NaN without both classes, where sklearn raises."""
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, np.asarray(scores, dtype=np.float64)))


def false_pick_rows(saved, thresholds: dict[str, float], kept: pd.DataFrame) -> list[str]:
    rows = []
    for v in saved.ds.tomograms:
        picks = kept[kept["tomogram"] == v.name]
        true = saved.truth[saved.truth["tomogram"] == v.name]
        xyz = picks[["x", "y", "z"]].to_numpy(np.float64)
        matched, _ = match(xyz, true[["x", "y", "z"]].to_numpy(np.float64), saved.radius)
        false = np.ones(len(picks), dtype=bool)
        false[matched] = False
        kinds = pd.Series(nearest_species(xyz[false], v.truth, saved.radius)).value_counts()
        what = ", ".join(f"{k} {n}" for k, n in kinds.items()) or "-"
        role = "labelled" if v.name == saved.names[0] else "held-out"
        rows.append(f"  {v.name} ({role}): threshold {thresholds[v.name]:.4g}, {len(picks)} picks, "
                    f"{len(matched)} of {len(true)} found, {len(true) - len(matched)} missed; "
                    f"false picks by nearest particle: {what}")
    return rows


def separability(saved, reference: dict, target: str, look_alike: str,
                 near_vox: float) -> list[str]:
    """The ROC areas of the module doc, over the held-out tomograms."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from milopyp.localize.profile import likelihood_ratios, profile_features

    floor = float(reference.get("min_score", 0.0))

    def judged(v):
        """The features and log-likelihood ratios of the peaks of tomogram ``v`` the check
        judges (each judged among all of them, as `milopyp localize` judges), and which are
        the target (True) or the look-alike (False); peaks of neither dropped."""
        peaks = saved.peaks[(saved.peaks["tomogram"] == v.name)
                            & (saved.peaks["heat_score"] > floor)]
        xyz = peaks[["x", "y", "z"]].to_numpy(np.float64)
        features = profile_features(saved.volumes[v.name], xyz, reference["radius_vox"])
        ratio = likelihood_ratios(reference, features) if len(xyz) else np.zeros(0)
        kind = nearest_species(xyz, v.truth, near_vox)
        keep = np.isin(kind, [target, look_alike])
        return features[keep], ratio[keep], kind[keep] == target

    first = saved.ds.tomograms[0]
    f_train, _, y_train = judged(first)
    held = [judged(v) for v in saved.ds.tomograms[1:]]
    if not held:
        return ["  no held-out tomogram"]
    features = np.concatenate([h[0] for h in held])
    ratio = np.concatenate([h[1] for h in held])
    is_target = np.concatenate([h[2] for h in held])
    out = [(f"  {target} against {look_alike} among the held-out peaks the check judges "
            f"(heat map > {floor:.4g}, within {near_vox:g} voxels of one): "
            f"{int(is_target.sum())} and {int((~is_target).sum())}")]
    out.append(f"  the model's profile check (labels against the tomogram's peaks): "
               f"AUC {auc(ratio, is_target):.3f}")
    if y_train.all() or not y_train.any():
        out.append(f"  no discriminant: {first.name}'s judged peaks are not of both species")
    else:
        lda = LinearDiscriminantAnalysis().fit(f_train, y_train)
        out.append(f"  a linear discriminant on the same features fitted on {first.name}'s truth "
                   f"({int(y_train.sum())} and {int((~y_train).sum())}): "
                   f"AUC {auc(lda.decision_function(features), is_target):.3f}")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, required=True, help="dataset folder")
    p.add_argument("--run", type=Path, required=True,
                   help="a --save-picks folder (full_model.csv, full_model.pt)")
    p.add_argument("--target", default="ribosome", help="species the model picks (ribosome)")
    p.add_argument("--look-alike", default="complex",
                   help="species to tell the target from (complex)")
    p.add_argument("--near", type=float, default=4.0,
                   help="a peak within this many voxels of a particle is that particle's (4)")
    args = p.parse_args(argv)
    for name in ("full_model.csv", "full_model.pt"):
        if not (args.run / name).exists():
            raise SystemExit(f"{args.run / name}: missing; give the --save-picks folder of a "
                             f"benchmarks/accuracy.py --dataset run")
    from milopyp.io.localizer import read_localizer

    calibration = read_localizer(args.run / "full_model.pt")["calibration"]
    saved = load_saved_peaks(args.dataset, args.run / "full_model.csv", args.target)
    kept, thresholds = tomogram_thresholds(calibration, saved.peaks, saved.names,
                                           depths=saved.depths, radius_vox=saved.radius)
    print(f"{args.run}: {args.target} on {args.dataset} (match radius {saved.radius:.1f} voxels)")
    print("\n".join(false_pick_rows(saved, thresholds, kept)))
    reference = calibration.get("profile")
    if reference is None or "target" not in reference:
        print("  no profile check of this version in the model: no separability")
    else:
        print("\n".join(separability(saved, reference, args.target, args.look_alike, args.near)))


if __name__ == "__main__":
    main()
