"""Tilt-series geometry self-check on the project's simulator: sign, binning, offset, verdict."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from milopyp.errors import MilopypError
from milopyp.geometry import check_geometry, judge, reproject
from milopyp.patches import project_xyz, tilt_patches
from milopyp.simulate import simulate_tomogram

SHAPE = (40, 112, 128)  # z, y, x: non-cubic so that axis swaps fail


@pytest.fixture(scope="module")
def sim():
    return simulate_tomogram(shape_zyx=SHAPE, voxel_size_a=12.0, seed=1, preset="demo")


def _check(vol, ts, angles, **kw):
    return check_geometry(vol, ts, angles, header_ratio=kw.pop("header_ratio", 1.0), **kw)


def test_simulator_geometry_is_detected_as_plus_one(sim):
    record = _check(sim.tomogram, sim.tilt_series, sim.angles_deg)
    assert record["sign"] == 1 and record["margin"] > 0.2, record
    assert record["bin"] == 1 and record["contrast"] == "same"
    assert abs(record["offset_x_vox"]) < 0.3 and abs(record["offset_y_vox"]) < 0.3
    assert max(abs(row["angle_deg"]) for row in record["per_angle"]) >= 50  # the high tilts
    assert judge(record, name="t", tilt_series="t.st")["verdict"] == "detected"


def test_tomogram_mirrored_in_z_is_detected_as_minus_one(sim):
    plain = _check(sim.tomogram, sim.tilt_series, sim.angles_deg)
    mirrored = _check(sim.tomogram[::-1], sim.tilt_series, sim.angles_deg)
    assert mirrored["sign"] == -1 and mirrored["margin"] > 0.2, mirrored
    assert mirrored["scores"]["-1"] == pytest.approx(plain["scores"]["+1"], abs=1e-3)
    # negated angles are the same choice as the mirror
    assert _check(sim.tomogram, sim.tilt_series, -sim.angles_deg)["sign"] == -1


def test_tilt_patches_of_the_mirror_with_sign_minus_one_equal_the_originals(sim):
    xyz = sim.truth.query("species != 'filament'")[["x", "y", "z"]].to_numpy()
    mirrored_xyz = xyz * [1, 1, -1] + [0, 0, SHAPE[0] - 1]
    kw = {"size": 24, "max_angle_deg": 60.0}  # every tilt: the sign shows most at high angles
    plain = tilt_patches(sim.tilt_series, sim.angles_deg, xyz, SHAPE, **kw)
    mirrored = tilt_patches(sim.tilt_series, sim.angles_deg, mirrored_xyz, SHAPE, sign=-1, **kw)
    np.testing.assert_allclose(mirrored, plain, atol=1e-5)
    wrong = tilt_patches(sim.tilt_series, sim.angles_deg, mirrored_xyz, SHAPE, **kw)
    off_plane = np.abs(xyz[:, 2] - (SHAPE[0] - 1) / 2) > 5
    assert off_plane.any()
    assert np.abs(wrong[off_plane] - plain[off_plane]).max() > 0.5


def test_offset_and_binning_are_detected(sim):
    shifted = ndimage.shift(sim.tilt_series, (0, -3.0, 5.5), order=1, mode="nearest")
    record = _check(sim.tomogram, shifted, sim.angles_deg)
    assert record["offset_x_vox"] == pytest.approx(5.5, abs=0.3)
    assert record["offset_y_vox"] == pytest.approx(-3.0, abs=0.3)
    assert record["sign"] == 1 and record["margin"] > 0.2

    twice = np.repeat(np.repeat(sim.tilt_series, 2, axis=1), 2, axis=2)  # unbinned by 2
    record = _check(sim.tomogram, twice, sim.angles_deg, header_ratio=1.0)  # headers wrong
    assert record["bin"] == 2 and record["bin_scores"]["2"] > 3 * record["bin_scores"]["1"]
    assert record["sign"] == 1
    judged = judge(record, name="t01", tilt_series="t01.st")
    assert any("fit bin 2" in line for line in judged["warnings"]), judged["warnings"]


def test_inverted_contrast_is_recorded_and_does_not_move_the_offset(sim):
    record = _check(sim.tomogram, -sim.tilt_series, sim.angles_deg)
    assert record["contrast"] == "inverted" and record["sign"] == 1
    assert abs(record["offset_x_vox"]) < 0.3 and abs(record["offset_y_vox"]) < 0.3


def test_a_tilt_series_that_fits_no_sign_stops_naming_the_tomogram(sim):
    other = simulate_tomogram(shape_zyx=SHAPE, voxel_size_a=12.0, seed=7, preset="demo")
    record = _check(sim.tomogram, other.tilt_series, sim.angles_deg)
    assert record["margin"] < 0.05, record
    with pytest.raises(MilopypError, match=r"t07: no tilt-series geometry fits .*t07\.st"):
        judge(record, name="t07", tilt_series="data/t07.st")


def test_a_pinned_sign_is_kept_and_a_contradiction_reported(sim):
    record = _check(sim.tomogram, sim.tilt_series, sim.angles_deg, sign=-1)
    judged = judge(record, name="t", tilt_series="t.st")
    assert judged["sign"] == -1 and judged["detected_sign"] == 1
    assert judged["verdict"] == "pinned-disagrees" and "pinned to -1" in judged["warnings"][0]


def test_reproject_matches_project_xyz_for_a_bead():
    vol = np.zeros((20, 30, 40), np.float32)
    vol[4, 11, 30] = 1.0  # off-centre in x and z
    for sign in (1, -1):
        proj, cover = reproject(vol, 40.0, sign, (34, 50), offset_xy=(2.0, -1.0))
        x_t, y_t = project_xyz([[30, 11, 4]], [40.0], vol.shape, (34, 50), sign=sign,
                               offset_xy=(2.0, -1.0))[0, 0]
        iy, ix = np.unravel_index(np.argmax(proj), proj.shape)
        assert (iy, ix) == (round(y_t), round(x_t)), sign
        assert cover.max() == pytest.approx(1.0) and cover.min() == 0.0


def test_cli_check_geometry_then_patches_on_a_mirrored_tomogram(sim, tmp_path):
    """The workflow's two commands: the mirror is detected, and its P_t equals the original's."""
    from milopyp.cli import main
    from milopyp.io.coords import write_coordinates
    from milopyp.io.mrc import write_tilt_series, write_tomogram

    write_tilt_series(tmp_path / "ts.st", sim.tilt_series, sim.angles_deg, 12.0)
    truth = sim.truth.query("species != 'filament'")
    runs = {}
    for tag, vol, z in (("plain", sim.tomogram, truth["z"]),
                        ("mirror", sim.tomogram[::-1], SHAPE[0] - 1 - truth["z"])):
        write_tomogram(tmp_path / f"{tag}.mrc", vol, 12.0)
        write_coordinates(tmp_path / f"{tag}.csv", truth.assign(tomogram=tag, z=z))
        geometry = tmp_path / f"{tag}.json"
        assert main(["check-geometry", "--tomogram", str(tmp_path / f"{tag}.mrc"),
                     "--tilt-series", str(tmp_path / "ts.st"), "-o", str(geometry)]) == 0
        out = tmp_path / f"{tag}.npz"
        assert main(["patches", "--tomogram", str(tmp_path / f"{tag}.mrc"),
                     "--candidates", str(tmp_path / f"{tag}.csv"), "--tilt-series",
                     str(tmp_path / "ts.st"), "--geometry", str(geometry), "--size", "24",
                     "--max-angle", "60", "-o", str(out)]) == 0
        with np.load(out) as f:
            runs[tag] = (json.loads(geometry.read_text()), f["patches"][:, 0])
    assert runs["plain"][0]["sign"] == 1 and runs["mirror"][0]["sign"] == -1
    assert runs["mirror"][0]["verdict"] == "detected" and runs["mirror"][0]["tomogram"] == "mirror"
    np.testing.assert_allclose(runs["mirror"][1], runs["plain"][1], atol=1e-4)


def test_read_geometry_rejects_other_files(tmp_path):
    from milopyp.io.geometry import read_geometry

    (tmp_path / "g.json").write_text(json.dumps({"sign": 2}))
    with pytest.raises(MilopypError, match="g.json: not a milopyp-geometry/1 record"):
        read_geometry(tmp_path / "g.json")
    with pytest.raises(MilopypError, match="run `milopyp check-geometry` first"):
        read_geometry(tmp_path / "missing.json")
