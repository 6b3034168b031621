"""`benchmarks/accuracy.py` with one of the localiser's fixed choices changed (ablations).

Each option replaces one function of the package for this process only, then runs
`accuracy.py` with every argument after ``--`` as given; scoring is unchanged.

``--sigma-divisor D``: the Gaussian training target about each labelled centre has σ =
radius / D (at least 1 voxel, cut at 3σ as before) instead of radius / 3
(:func:`milopyp.localize.targets.sigma_from_radius`; paper: "σ_k is determined by the
particle size"). The training targets and the contrastive loss's count of core voxels
both read that function.

``--negative-weight W``: each known negative's term of the loss
(:func:`milopyp.localize.pu.negative_peak_risk`, which the ``"peaks"`` and ``"ranked"``
forms of ``negative_loss`` use; the default ``"voxels"`` form is left as it is) counts W
times. With W = 1 it is as strong as one labelled centre's; this asks whether the network
can push its own negatives down at all.

    .venv/bin/python benchmarks/ablation.py --sigma-divisor 2 -- \\
        --dataset ../shared/devset/insitu --rows full --train-kwargs '{"seed": 0}'

Stop 40 (docs/accuracy.md, "Tried at stop 40"): divisors 2 and 4.5 on insitu, 4.5 on
crowded; the virus set's 7 free spikes weighted 10 times. No default was changed.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from milopyp.cli import openmp_defaults

openmp_defaults()  # as accuracy.py does, before torch loads

import milopyp.localize.data as localize_data
import milopyp.localize.pu as localize_pu
import milopyp.localize.targets as localize_targets


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    own, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sigma-divisor", type=float, default=None, metavar="D",
                   help="σ of the training target = particle radius / D (the default is 3)")
    p.add_argument("--negative-weight", type=float, default=None, metavar="W",
                   help="each known negative's peak term counts W times (the default is 1); "
                        "only the \"peaks\" and \"ranked\" forms of negative_loss have one")
    args = p.parse_args(own)
    if args.sigma_divisor is None and args.negative_weight is None:
        raise SystemExit("give --sigma-divisor or --negative-weight (or both), then -- and "
                         "accuracy.py's arguments")
    if not rest:
        raise SystemExit("give accuracy.py's arguments after -- (e.g. -- --dataset DIR "
                         "--rows full)")
    if args.sigma_divisor is not None:
        divisor = args.sigma_divisor
        if not divisor > 0:
            raise SystemExit(f"--sigma-divisor: expected a positive number, got {divisor}")

        package_sigma = localize_targets.sigma_from_radius

        def sigma_from_radius(radius_vox: float) -> float:
            package_sigma(radius_vox)  # its check of the radius and its error
            return max(float(radius_vox) / divisor, 1.0)

        # both modules look the function up when called (targets: heatmap_target and
        # core_voxels; data: the reach of a crop's labels)
        localize_targets.sigma_from_radius = sigma_from_radius
        localize_data.sigma_from_radius = sigma_from_radius
        print(f"ablation: Gaussian training target σ = radius / {divisor:g}")
    if args.negative_weight is not None:
        weight = args.negative_weight
        if not weight >= 0:
            raise SystemExit(f"--negative-weight: expected a number ≥ 0, got {weight}")
        peak_risk = localize_pu.negative_peak_risk

        def weighted_peak_risk(logits, target, reference=0.0):
            return weight * peak_risk(logits, target, reference)

        localize_pu.negative_peak_risk = weighted_peak_risk  # pu_focal_loss looks it up
        print(f"ablation: each known negative's peak term × {weight:g}")
    sys.argv = [str(Path(__file__).with_name("accuracy.py"))] + rest
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
