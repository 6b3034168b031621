"""benchmarks/resample_dataset.py: a devset-style folder at another voxel size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from milopyp.io.mrc import read_tomogram, write_tomogram

ROOT = Path(__file__).resolve().parents[1]


def _dataset(folder: Path) -> np.ndarray:
    (folder / "tomograms").mkdir(parents=True)
    (folder / "truth").mkdir()
    volume = np.zeros((16, 32, 32), np.float32)
    volume[8, 20, 12] = 1.0  # one bright voxel at x 12, y 20, z 8
    write_tomogram(folder / "tomograms" / "TS_01.mrc", volume, 10.0)
    pd.DataFrame({"species": ["ribosome"], "x": [12.0], "y": [20.0], "z": [8.0]}).to_csv(
        folder / "truth" / "TS_01.csv", index=False)
    (folder / "dataset.json").write_text(json.dumps(
        {"voxel_size_a": 10.0, "shape_zyx": [16, 32, 32], "tilt_series_shape": [41, 32, 34],
         "species_diameter_a": {"ribosome": 250.0}}))
    return volume


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "resample_dataset.py"),
                           *args], check=False, capture_output=True, text=True, cwd=ROOT)


def test_resampled_folder_moves_truth_with_the_density_and_records_the_voxel_size(tmp_path):
    source, out = tmp_path / "set", tmp_path / "set20"
    volume = _dataset(source)
    done = _run("--dataset", str(source), "--voxel-size", "20", "--out", str(out))
    assert done.returncode == 0, done.stderr
    data, voxel_a = read_tomogram(out / "tomograms" / "TS_01.mrc", mmap=False)
    assert voxel_a == 20.0 and data.shape == (8, 16, 16)
    # same field of view: the mean density is kept, and the truth follows the blob
    assert np.isclose(data.mean(), volume.mean(), rtol=1e-4)
    truth = pd.read_csv(out / "truth" / "TS_01.csv")
    assert list(truth.columns) == ["species", "x", "y", "z"]
    assert np.allclose(truth[["x", "y", "z"]].to_numpy(), [[5.75, 9.75, 3.75]])
    k, j, i = np.unravel_index(np.argmax(data), data.shape)
    assert abs(i - 5.75) <= 1 and abs(j - 9.75) <= 1 and abs(k - 3.75) <= 1
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["voxel_size_a"] == 20.0 and meta["shape_zyx"] == [8, 16, 16]
    assert meta["species_diameter_a"] == {"ribosome": 250.0}
    assert "tilt_series_shape" not in meta
    assert not out.with_name("set20.partial").exists()


def test_resampling_refuses_a_folder_that_exists(tmp_path):
    source, out = tmp_path / "set", tmp_path / "out"
    _dataset(source)
    out.mkdir()
    done = _run("--dataset", str(source), "--voxel-size", "20", "--out", str(out))
    assert done.returncode != 0
    assert f"{out}: exists" in done.stderr
    assert list(out.iterdir()) == []
