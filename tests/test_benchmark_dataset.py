"""benchmarks/dataset.py: a devset-style folder read with another tomogram labelled."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.dataset import load_dataset, load_saved_peaks
from milopyp.io.mrc import write_tomogram


def _dataset(folder):
    (folder / "tomograms").mkdir(parents=True)
    (folder / "truth").mkdir()
    for k, name in enumerate(("TS_01", "TS_02", "TS_03")):
        write_tomogram(folder / "tomograms" / f"{name}.mrc",
                       np.full((8, 16, 16), k, np.float32), 12.0)
        pd.DataFrame({"species": ["ribosome"] * (k + 1), "x": 4.0, "y": 5.0,
                      "z": 3.0}).to_csv(folder / "truth" / f"{name}.csv", index=False)
    (folder / "dataset.json").write_text('{"species_diameter_a": {"ribosome": 240.0}}')


def test_the_labelled_tomogram_comes_first_with_its_own_data_and_truth(tmp_path):
    _dataset(tmp_path)
    assert [v.name for v in load_dataset(tmp_path).tomograms] == ["TS_01", "TS_02", "TS_03"]
    ds = load_dataset(tmp_path, "TS_02")
    assert [v.name for v in ds.tomograms] == ["TS_02", "TS_01", "TS_03"]
    first = ds.tomograms[0]
    assert float(first.data.mean()) == 1.0 and len(first.truth) == 2
    assert set(first.truth["tomogram"]) == {"TS_02"}


def test_saved_peaks_of_a_turned_run_name_its_labelled_tomogram_first(tmp_path):
    _dataset(tmp_path)
    peaks = pd.DataFrame({"tomogram": ["TS_02", "TS_03"], "x": 4, "y": 5, "z": 3,
                          "score": 0.5, "label_peak_median": 0.4})
    named, old = tmp_path / "named.csv", tmp_path / "old.csv"
    peaks.assign(labelled="TS_03").to_csv(named, index=False)  # this version's table
    peaks.iloc[::-1].to_csv(old, index=False)  # an earlier table: the labelled one's rows first
    saved = load_saved_peaks(tmp_path, named, "ribosome")
    assert saved.names == ["TS_03", "TS_01", "TS_02"]
    assert saved.radius == pytest.approx(10.0) and saved.median == pytest.approx(0.4)
    assert load_saved_peaks(tmp_path, old, "ribosome").names == ["TS_03", "TS_01", "TS_02"]


def test_an_unknown_labelled_tomogram_is_named_with_those_there(tmp_path):
    _dataset(tmp_path)
    with pytest.raises(SystemExit, match="--labelled TS_09: no such tomogram .* TS_01, TS_02, TS_03"):
        load_dataset(tmp_path, "TS_09")
