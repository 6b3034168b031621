"""The demo's shipped selection must stay true to the demo data the simulator makes."""

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.spatial import cKDTree

from milopyp.simulate import simulate_tomogram, tomogram_seed

REPO = Path(__file__).resolve().parents[1]


def _demo_truth():
    # scripts/demo.sh: --n-tomograms 4 --shape 64 256 256 --voxel-size 12 --preset demo --seed 0
    sim = simulate_tomogram(shape_zyx=(64, 256, 256), voxel_size_a=12, seed=tomogram_seed(0, 0),
                            preset="demo", name="tomo_000")
    return sim.truth


def test_demo_seeds_are_ribosome_centres_of_demo_tomogram():
    seeds = yaml.safe_load((REPO / "config" / "demo-seeds.yaml").read_text())["seeds"]
    truth = _demo_truth()
    ribosomes = truth[truth["species"] == "ribosome"][["x", "y", "z"]].to_numpy()
    others = truth[truth["species"] != "ribosome"][["x", "y", "z"]].to_numpy()
    clicked = np.array([[s["x"], s["y"], s["z"]] for s in seeds], dtype=float)
    assert {s["tomogram"] for s in seeds} == {"tomo_000"}
    distance, _ = cKDTree(ribosomes).query(clicked)
    assert (distance <= 1.0).all(), distance
    assert (cKDTree(others).query(clicked)[0] > 5).all()


def test_demo_microtubule_labels_lie_on_the_demo_filament():
    labels = pd.read_csv(REPO / "config" / "demo-microtubule.csv")
    truth = _demo_truth()
    line = truth[truth["species"] == "filament"][["x", "y", "z"]].to_numpy()
    assert set(labels["tomogram"]) == {"tomo_000"} and 30 <= len(labels) < len(line)
    distance, _ = cKDTree(line).query(labels[["x", "y", "z"]].to_numpy())
    assert (distance <= 0.2).all(), distance.max()
