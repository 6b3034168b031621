"""benchmarks/false_picks.py: what the false picks are, and ROC areas with ties."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from benchmarks.false_picks import auc, false_pick_rows, nearest_species


def _truth(name: str) -> pd.DataFrame:
    return pd.DataFrame({"tomogram": name, "species": ["ribosome", "complex", "ribosome"],
                         "x": [10.0, 40.0, 70.0], "y": [10.0, 40.0, 70.0],
                         "z": [5.0, 5.0, 5.0]})


def test_nearest_species_names_the_particle_within_the_radius_and_none_beyond():
    points = np.array([[11.0, 10.0, 5.0], [40.0, 43.0, 5.0], [25.0, 25.0, 5.0]])
    kinds = nearest_species(points, _truth("a"), radius=4.0)
    assert kinds.tolist() == ["ribosome", "complex", "none"]
    assert nearest_species(np.zeros((0, 3)), _truth("a"), 4.0).shape == (0,)


def test_auc_matches_sklearn_with_ties_and_is_nan_without_both_classes():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    positive = rng.random(200) < 0.3 + 0.1 * scores
    assert np.isclose(auc(scores, positive), roc_auc_score(positive, scores))
    assert np.isnan(auc(scores, np.ones(200, dtype=bool)))


def test_false_pick_rows_count_found_missed_and_false_picks_by_species():
    truth = pd.concat([_truth("TS_01"), _truth("TS_02")], ignore_index=True)
    tomograms = [SimpleNamespace(name=n, truth=truth[truth["tomogram"] == n])
                 for n in ("TS_01", "TS_02")]
    ribosomes = truth[truth["species"] == "ribosome"][["tomogram", "x", "y", "z"]]
    saved = SimpleNamespace(ds=SimpleNamespace(tomograms=tomograms), names=["TS_01", "TS_02"],
                            truth=ribosomes, radius=5.0)
    # TS_02: one ribosome found, one missed, a pick on the complex, one on nothing
    kept = pd.DataFrame({"tomogram": ["TS_01", "TS_01", "TS_02", "TS_02", "TS_02"],
                         "x": [10.0, 70.0, 71.0, 41.0, 90.0], "y": [10.0, 70.0, 70.0, 40.0, 20.0],
                         "z": [5.0, 5.0, 5.0, 5.0, 5.0], "score": 1.0})
    rows = false_pick_rows(saved, {"TS_01": 0.5, "TS_02": 0.4}, kept)
    assert "TS_01 (labelled)" in rows[0] and "2 of 2 found, 0 missed" in rows[0]
    assert rows[0].endswith("false picks by nearest particle: -")
    assert "TS_02 (held-out): threshold 0.4, 3 picks, 1 of 2 found, 1 missed" in rows[1]
    assert "complex 1" in rows[1] and "none 1" in rows[1]
