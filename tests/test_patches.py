"""Tests of milopyp.patches: eq. 1 geometry against the simulator, patch order, npz output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from milopyp import simulate
from milopyp.cli import main as cli_main
from milopyp.errors import MilopypError
from milopyp.io.coords import write_coordinates
from milopyp.io.mrc import write_tilt_series, write_tomogram
from milopyp.patches import (
    bin_tilt_series,
    normalize_patches,
    project_xyz,
    slice_patches,
    tilt_patches,
)

SHAPE = (24, 40, 56)  # z, y, x: non-cubic so that axis swaps fail
ANGLES = np.arange(-60.0, 60.0 + 1e-9, 3.0)


def _bead_volume(xyz, shape=SHAPE, sigma=0.7) -> np.ndarray:
    """A small Gaussian bead at x, y, z (voxels) in a [z, y, x] volume."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    r2 = (x - xyz[0]) ** 2 + (y - xyz[1]) ** 2 + (z - xyz[2]) ** 2
    return np.exp(-r2 / (2 * sigma**2)).astype(np.float32)


def test_projection_geometry_matches_simulator():
    """The brightest pixel of every tilt image lies where project_xyz says (eq. 1)."""
    bead = (41.0, 13.0, 4.0)  # off-centre in x and y, far below the z centre (11.5)
    ts = simulate.project(_bead_volume(bead), ANGLES)
    assert ts.shape == (ANGLES.size, SHAPE[1], SHAPE[2])
    pred = project_xyz(np.array([bead]), ANGLES, SHAPE, ts.shape[1:])[:, 0, :]
    for i, angle in enumerate(ANGLES):
        yy, xx = np.unravel_index(np.argmax(ts[i]), ts[i].shape)
        assert abs(xx - pred[i, 0]) <= 1.0, f"x at {angle}°: peak {xx}, predicted {pred[i, 0]}"
        assert abs(yy - pred[i, 1]) <= 1.0, f"y at {angle}°: peak {yy}, predicted {pred[i, 1]}"
    # the z term matters: with the sign of sin flipped the prediction is > 1 pixel off
    flipped = project_xyz(np.array([bead]), -ANGLES, SHAPE, ts.shape[1:])[:, 0, 0]
    assert np.max(np.abs(flipped - pred[:, 0])) > 5


def test_project_xyz_formula_and_tilt_shape():
    xyz = np.array([[10.0, 5.0, 20.0], [0.0, 0.0, 0.0]])
    out = project_xyz(xyz, [0.0, 30.0], shape_zyx=(24, 40, 56), tilt_shape_yx=(50, 70))
    assert out.shape == (2, 2, 2)
    cx, cy, cz, px, py = 27.5, 19.5, 11.5, 34.5, 24.5
    t = np.deg2rad(30.0)
    assert out[1, 0, 0] == pytest.approx((10 - cx) * np.cos(t) + (20 - cz) * np.sin(t) + px)
    assert out[0, 1, 0] == pytest.approx(-cx + px)
    assert out[1, 0, 1] == pytest.approx(5 - cy + py)


def test_backprojection_puts_bead_back():
    bead = (41.0, 13.0, 6.0)
    ts = simulate.project(_bead_volume(bead), ANGLES)
    rec = simulate.backproject(ts, ANGLES, SHAPE[0])
    assert rec.shape == SHAPE
    z, y, x = np.unravel_index(np.argmax(rec), rec.shape)
    assert (abs(x - bead[0]), abs(y - bead[1]), abs(z - bead[2])) <= (1, 1, 1)


def test_slice_patches_order_and_averaging():
    vol = np.zeros(SHAPE, dtype=np.float32)
    vol[10, 20, 30] = 3.0  # the candidate voxel
    vol[10, 20, 33] = 2.0  # 3 voxels to +x of it
    vol[11, 21, 30] = 6.0  # one slice up, 1 voxel to +y
    p = slice_patches(vol, np.array([[30.2, 19.8, 10.4]]), size=8, n_slices=3, normalize=False)
    assert p.shape == (1, 8, 8) and p.dtype == np.float32
    assert p[0, 4, 4] == pytest.approx(1.0)  # 3 / 3 slices
    assert p[0, 4, 7] == pytest.approx(2.0 / 3)  # +x is the last axis
    assert p[0, 7, 4] == pytest.approx(0.0)
    assert p[0, 5, 4] == pytest.approx(2.0)  # +y is the row axis, slice z+1 is averaged
    one = slice_patches(vol, np.array([[30, 20, 10]]), size=8, n_slices=1, normalize=False)
    assert one[0, 5, 4] == 0.0 and one[0, 4, 4] == 3.0


def test_slice_patches_pad_with_mean_at_border():
    vol = np.ones(SHAPE, dtype=np.float32)
    vol[0, 0, 0] = 5.0
    p = slice_patches(vol, np.array([[0, 0, 0]]), size=6, n_slices=3, normalize=False)
    fill = vol.mean()
    assert p[0, 3, 3] == pytest.approx((fill + 5.0 + 1.0) / 3)  # slices z = -1 (outside), 0, 1
    assert p[0, 0, 0] == pytest.approx(fill)


def test_tilt_patches_of_bead_peak_at_centre():
    bead = (35.3, 16.6, 17.0)
    ts = simulate.project(_bead_volume(bead), ANGLES)
    p = tilt_patches(ts, ANGLES, np.array([bead, (10.0, 30.0, 5.0)]), SHAPE, size=16)
    assert p.shape == (2, 16, 16)
    assert np.unravel_index(np.argmax(p[0]), p[0].shape) == (8, 8)
    assert p[0].mean() == pytest.approx(0.0, abs=1e-5)
    assert p[0].std() == pytest.approx(1.0, abs=1e-4)
    # a patch away from the bead does not see it at its centre
    assert p[1, 8, 8] < p[0, 8, 8]


def test_tilt_patches_uses_only_low_tilts():
    ts = np.zeros((5, SHAPE[1], SHAPE[2]), dtype=np.float32)
    angles = np.array([-40.0, -10.0, 0.0, 10.0, 40.0])
    ts[0] += 100.0  # a high tilt full of signal must be ignored
    ts[2, 20, 27] = 3.0
    p = tilt_patches(ts, angles, np.array([[27.5, 20.0, 11.5]]), SHAPE, size=4, normalize=False)
    # bilinear sampling at x = 27.5 splits the pixel; 3 tilts are averaged
    assert p[0, 2, 2] == pytest.approx(0.5 * 3.0 / 3)
    assert p.max() < 1.0
    with pytest.raises(MilopypError, match="no tilt image"):
        tilt_patches(ts[[0, 4]], angles[[0, 4]], np.array([[1.0, 1.0, 1.0]]), SHAPE, size=4)


def test_normalize_constant_patch_is_zero():
    p = normalize_patches(np.full((2, 4, 4), 7.0))
    assert np.all(p == 0)


def test_bin_tilt_series_keeps_centre():
    ts = np.zeros((1, 9, 13), dtype=np.float32)
    ts[0, 4, 6] = 1.0  # centre pixel of a 9 x 13 image
    b = bin_tilt_series(ts, 3)
    assert b.shape == (1, 3, 4)
    # centre of the binned image is (1, 1.5); the bead lands in the block covering it
    assert b[0, 1, 1] + b[0, 1, 2] == pytest.approx(1.0 / 9)


def _write_inputs(tmp_path, rng):
    bead = (30.0, 14.0, 9.0)
    vol = _bead_volume(bead) + 0.01 * rng.standard_normal(SHAPE).astype(np.float32)
    ts = simulate.project(vol, ANGLES)
    write_tomogram(tmp_path / "tomo_007.mrc", vol, 10.0)
    write_tilt_series(tmp_path / "tomo_007.st", ts, ANGLES, 10.0)
    cand = pd.DataFrame(
        {
            "x": [30.0, 12.0, 50.0],
            "y": [14.0, 30.0, 2.0],
            "z": [9.0, 5.0, 20.0],
            "score": [3.0, 1.0, 0.5],
        }
    )
    write_coordinates(tmp_path / "cand.csv", cand)
    return cand


def test_patches_command_writes_npz(tmp_path):
    cand = _write_inputs(tmp_path, np.random.default_rng(0))
    out = tmp_path / "patches" / "tomo_007.npz"
    rc = cli_main(
        [
            "patches",
            "--tomogram",
            str(tmp_path / "tomo_007.mrc"),
            "--candidates",
            str(tmp_path / "cand.csv"),
            "--tilt-series",
            str(tmp_path / "tomo_007.st"),
            "--size",
            "16",
            "--slices",
            "3",
            "--max-angle",
            "15",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    with np.load(out, allow_pickle=False) as f:
        assert set(f.files) == {"patches", "channels", "xyz", "score", "tomogram", "voxel_size_a"}
        assert f["patches"].shape == (3, 2, 16, 16) and f["patches"].dtype == np.float32
        assert list(f["channels"]) == ["tilt", "slice"]
        np.testing.assert_allclose(f["xyz"], cand[["x", "y", "z"]].to_numpy())
        np.testing.assert_allclose(f["score"], [3.0, 1.0, 0.5])
        assert str(f["tomogram"]) == "tomo_007"
        assert float(f["voxel_size_a"]) == pytest.approx(10.0)
        p = f["patches"]
    np.testing.assert_allclose(p.mean(axis=(2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(p.std(axis=(2, 3)), 1.0, atol=1e-3)
    # the bead candidate is bright at the centre of both channels
    assert p[0, 0, 8, 8] > 3 and p[0, 1, 8, 8] > 3
    assert not list(tmp_path.joinpath("patches").glob(".*"))  # no temporary file left

    out2 = tmp_path / "slice_only.npz"
    assert (
        cli_main(
            [
                "patches",
                "--tomogram",
                str(tmp_path / "tomo_007.mrc"),
                "--candidates",
                str(tmp_path / "cand.csv"),
                "--size",
                "16",
                "-o",
                str(out2),
            ]
        )
        == 0
    )
    with np.load(out2) as f:
        assert f["patches"].shape == (3, 1, 16, 16)
        assert list(f["channels"]) == ["slice"]
        np.testing.assert_allclose(f["patches"][:, 0], p[:, 1], atol=1e-5)


def test_patches_command_empty_candidates(tmp_path, capsys):
    _write_inputs(tmp_path, np.random.default_rng(1))
    (tmp_path / "empty.csv").write_text("x,y,z,score\n")
    out = tmp_path / "p.npz"
    rc = cli_main(
        [
            "patches",
            "--tomogram",
            str(tmp_path / "tomo_007.mrc"),
            "--candidates",
            str(tmp_path / "empty.csv"),
            "-o",
            str(out),
        ]
    )
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "no candidates in" in err and "empty.csv" in err and "threshold_std" in err


def test_patches_command_rejects_outside_points(tmp_path):
    from milopyp.commands import patches as cmd

    _write_inputs(tmp_path, np.random.default_rng(2))
    write_coordinates(tmp_path / "bad.csv", pd.DataFrame({"x": [5.0], "y": [60.0], "z": [3.0]}))
    parser = __import__("argparse").ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args(
        [
            "--tomogram",
            str(tmp_path / "tomo_007.mrc"),
            "--candidates",
            str(tmp_path / "bad.csv"),
            "-o",
            str(tmp_path / "p.npz"),
        ]
    )
    with pytest.raises(MilopypError, match="outside"):
        cmd.main(args)
