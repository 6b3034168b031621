"""How far the candidates lie from the particles' centres, with and without centring.

For every tomogram of a devset-style folder (``tomograms/*.rec``, ``truth/*.csv``), the
workflow's preprocessing (Gaussian sigma 1 voxel, inverted: the devset's protein is dark,
histogram-equalised) and `milopyp candidates` with its defaults, once keeping the DoG peaks
(``centre=False``, `--no-centre`) and once centred at the particle's scale (the default,
:data:`milopyp.candidates.CENTRE_FRACTION`). Prints per tomogram: candidates, recall of the
species (a candidate within half its diameter) and the median distance of the candidates
within half a diameter of one to its centre.

    .venv/bin/python benchmarks/candidates_offset.py --dataset ../shared/devset/crowded
    .venv/bin/python benchmarks/candidates_offset.py --dataset ../shared/devset/virus \\
        --species spike
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from scipy.spatial import cKDTree

from benchmarks._common import format_table, machine_line
from benchmarks.dataset import load_dataset
from milopyp.candidates import find_candidates
from milopyp.preprocess import preprocess


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True, help="devset-style folder")
    ap.add_argument("--species", default="ribosome", help="truth species (ribosome)")
    args = ap.parse_args(argv)
    print(machine_line())
    data = load_dataset(args.dataset)
    diameter_vox = data.diameters_a[args.species] / data.tomograms[0].voxel_size_a
    radius = diameter_vox / 2.0
    rows = []
    for tomo in data.tomograms:
        truth = tomo.truth.loc[tomo.truth["species"] == args.species, ["x", "y", "z"]]
        truth = truth.to_numpy(np.float64)
        volume = preprocess(tomo.data, sigma_vox=1.0, invert=True)
        for centre in (False, True):
            t0 = time.perf_counter()
            found = find_candidates(volume, particle_diameter_vox=diameter_vox, centre=centre)
            seconds = time.perf_counter() - t0
            xyz = found[["x", "y", "z"]].to_numpy(np.float64)
            near, _ = cKDTree(truth).query(xyz)
            nearest, _ = cKDTree(xyz).query(truth)
            rows.append({"tomogram": tomo.name, "kind": "centred" if centre else "DoG peaks",
                         "n": len(found), "recall": f"{np.mean(nearest <= radius):.3f}",
                         "offset": float(np.median(near[near <= radius])), "s": seconds})
    print(f"{args.dataset}, {args.species}: diameter {diameter_vox:.1f} voxels")
    print(format_table(rows, [("tomogram", "tomogram"), ("kind", "candidates"),
                              ("n", "number"), ("recall", "recall"),
                              ("offset", "median offset (voxels)"), ("s", "seconds")]))


if __name__ == "__main__":
    main()
