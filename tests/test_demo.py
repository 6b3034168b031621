"""The demo's shipped selection must stay true to the demo data the simulator makes."""

from pathlib import Path

import numpy as np
import yaml
from scipy.spatial import cKDTree

from milopyp.simulate import simulate_tomogram, tomogram_seed

REPO = Path(__file__).resolve().parents[1]


def test_demo_seeds_are_ribosome_centres_of_demo_tomogram():
    seeds = yaml.safe_load((REPO / "config" / "demo-seeds.yaml").read_text())["seeds"]
    # scripts/demo.sh: --n-tomograms 4 --shape 64 256 256 --voxel-size 12 --preset demo --seed 0
    sim = simulate_tomogram(shape_zyx=(64, 256, 256), voxel_size_a=12, seed=tomogram_seed(0, 0),
                            preset="demo", name="tomo_000")
    truth = sim.truth
    ribosomes = truth[truth["species"] == "ribosome"][["x", "y", "z"]].to_numpy()
    others = truth[truth["species"] != "ribosome"][["x", "y", "z"]].to_numpy()
    clicked = np.array([[s["x"], s["y"], s["z"]] for s in seeds], dtype=float)
    assert {s["tomogram"] for s in seeds} == {"tomo_000"}
    distance, _ = cKDTree(ribosomes).query(clicked)
    assert (distance <= 1.0).all(), distance
    assert (cKDTree(others).query(clicked)[0] > 5).all()
