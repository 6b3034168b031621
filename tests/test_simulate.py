"""Tests of milopyp.simulate: determinism, shapes, ground truth, species, contrast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from milopyp import simulate
from milopyp.cli import main as cli_main
from milopyp.errors import MilopypError

SHAPE = (32, 64, 96)  # z, y, x: non-cubic
VOXEL = 20.0  # Å: ribosome ~13 voxels wide


@pytest.fixture(scope="module")
def demo() -> simulate.SimulatedTomogram:
    return simulate.simulate_tomogram(shape_zyx=SHAPE, voxel_size_a=VOXEL, seed=3, preset="demo")


def test_shapes_and_dtypes(demo):
    assert demo.tomogram.shape == SHAPE and demo.tomogram.dtype == np.float32
    n = demo.angles_deg.size
    assert n == 41 and demo.angles_deg[0] == -60 and demo.angles_deg[-1] == 60
    assert demo.tilt_series.shape == (n, SHAPE[1], SHAPE[2])
    assert demo.tilt_series.dtype == np.float32
    assert demo.phantom.shape == SHAPE
    assert abs(float(demo.tomogram.mean())) < 1e-3
    assert float(demo.tomogram.std()) == pytest.approx(1.0, abs=1e-3)
    assert list(demo.truth.columns[:5]) == ["tomogram", "species", "x", "y", "z"]


def test_same_seed_same_output_other_seed_differs(demo):
    again = simulate.simulate_tomogram(shape_zyx=SHAPE, voxel_size_a=VOXEL, seed=3, preset="demo")
    np.testing.assert_array_equal(again.tomogram, demo.tomogram)
    np.testing.assert_array_equal(again.tilt_series, demo.tilt_series)
    pd.testing.assert_frame_equal(again.truth, demo.truth)
    other = simulate.simulate_tomogram(shape_zyx=SHAPE, voxel_size_a=VOXEL, seed=4, preset="demo")
    assert not np.array_equal(other.tomogram, demo.tomogram)
    assert not np.allclose(
        other.truth[["x", "y", "z"]].to_numpy()[:5], demo.truth[["x", "y", "z"]].to_numpy()[:5]
    )


def test_dose_changes_noise_not_particles(demo):
    low = simulate.simulate_tomogram(
        shape_zyx=SHAPE, voxel_size_a=VOXEL, seed=3, preset="demo", dose_per_tilt=0.5
    )
    pd.testing.assert_frame_equal(low.truth, demo.truth)
    np.testing.assert_array_equal(low.phantom, demo.phantom)
    assert not np.array_equal(low.tilt_series, demo.tilt_series)


def test_every_demo_species_present(demo):
    counts = demo.truth["species"].value_counts()
    for species in ("ribosome", "small", "gold", "vesicle", "filament"):
        assert counts.get(species, 0) >= 1, species
    assert "decoy" not in counts
    fil = demo.truth[demo.truth["species"] == "filament"]
    assert (
        fil["fiber_id"].notna().all()
        and demo.truth.loc[demo.truth["species"] != "filament", "fiber_id"].isna().all()
    )
    steps = np.linalg.norm(np.diff(fil[["x", "y", "z"]].to_numpy(), axis=0), axis=1)
    assert np.median(steps) == pytest.approx(2.0, abs=0.2)  # a point every ~2 voxels
    ves = demo.truth[demo.truth["species"] == "vesicle"]
    assert ((ves["radius_a"] >= 250) & (ves["radius_a"] <= 420)).all()


def test_truth_inside_volume_and_away_from_border(demo):
    xyz = demo.truth[["x", "y", "z"]].to_numpy()
    upper = np.array(SHAPE[::-1]) - 1
    assert np.all(xyz >= 0) and np.all(xyz <= upper)
    radii = simulate.particle_radii_vox(VOXEL)
    part = demo.truth[demo.truth["species"].isin(simulate.PARTICLE_SPECIES)]
    r = part["species"].map(radii).to_numpy()[:, None]
    p = part[["x", "y", "z"]].to_numpy()
    assert np.all(p >= r - 1e-9) and np.all(p <= upper - r + 1e-9)


def test_particles_do_not_overlap():
    sim = simulate.simulate_tomogram(
        shape_zyx=SHAPE, voxel_size_a=VOXEL, seed=5, preset="crowded", background_std=0.0
    )
    part = sim.truth
    assert set(part["species"]) == {"ribosome", "decoy", "small"}
    radii = simulate.particle_radii_vox(VOXEL)
    p = part[["x", "y", "z"]].to_numpy()
    r = part["species"].map(radii).to_numpy()
    d = np.linalg.norm(p[:, None] - p[None], axis=-1) + np.eye(len(p)) * 1e9
    assert np.all(d >= r[:, None] + r[None, :])
    # independent check on the density: overlapping proteins would add up above 1
    assert sim.phantom.max() <= 1.01
    assert sim.phantom.max() >= 0.9


def test_decoy_same_integrated_density_different_shape():
    for voxel in (10.0, 20.0):
        t = simulate.species_templates(voxel)
        ribo, decoy = t["ribosome"], t["decoy"]
        assert decoy.sum() == pytest.approx(ribo.sum(), rel=0.05)
        w_r = simulate.mean_width_a(ribo, voxel)
        w_d = simulate.mean_width_a(decoy, voxel)
        assert w_d == pytest.approx(w_r, rel=0.1)  # same size
        c, cr = decoy.shape[0] // 2, ribo.shape[0] // 2
        assert decoy[c, c, c] < 0.1 and ribo[cr, cr, cr] > 0.9  # hollow vs. solid
    # the ribosome is asymmetric: not equal to its own point reflection
    assert np.abs(ribo - ribo[::-1, ::-1, ::-1]).sum() > 0.2 * ribo.sum()


def test_species_sizes():
    t = simulate.species_templates(10.0)
    widths = {k: simulate.mean_width_a(v, 10.0) for k, v in t.items()}
    assert 200 < widths["ribosome"] < 260
    assert 80 < widths["small"] < 130
    assert 90 < widths["gold"] < 120
    assert t["gold"].max() > 3 * t["ribosome"].max()  # gold is much denser


def test_protein_is_bright(demo):
    smooth = ndimage.gaussian_filter(demo.tomogram, 1.5)
    ribo = demo.truth[demo.truth["species"].isin(["ribosome", "gold"])]
    idx = np.rint(ribo[["z", "y", "x"]].to_numpy()).astype(int)
    at_particles = smooth[idx[:, 0], idx[:, 1], idx[:, 2]]
    assert np.median(at_particles) > smooth.mean() + 1.0 * smooth.std()


def test_two_species_preset_and_counts_override():
    sim = simulate.simulate_tomogram(
        shape_zyx=SHAPE, voxel_size_a=VOXEL, seed=1, preset="two_species", counts={"small": 4}
    )
    counts = sim.truth["species"].value_counts()
    assert set(counts.index) == {"ribosome", "small"} and counts["small"] == 4
    with pytest.raises(MilopypError, match="preset"):
        simulate.simulate_tomogram(shape_zyx=SHAPE, voxel_size_a=VOXEL, preset="nope")
    with pytest.raises(MilopypError, match="species"):
        simulate.simulate_tomogram(shape_zyx=SHAPE, voxel_size_a=VOXEL, counts={"ribosom": 2})


def test_dataset_files_and_per_index_seeds(tmp_path):
    from milopyp.io.coords import read_coordinates
    from milopyp.io.mrc import read_tilt_series, read_tomogram

    small = {"shape_zyx": (24, 40, 56), "voxel_size_a": 25.0, "seed": 7, "preset": "two_species"}
    names = simulate.simulate_dataset(tmp_path / "a", n_tomograms=2, **small)
    assert names == ["tomo_000", "tomo_001"]
    simulate.simulate_dataset(tmp_path / "b", n_tomograms=1, write_tilt_series=False, **small)
    t0, vox = read_tomogram(tmp_path / "a" / "tomograms" / "tomo_000.mrc")
    t0b, _ = read_tomogram(tmp_path / "b" / "tomograms" / "tomo_000.mrc")
    t1, _ = read_tomogram(tmp_path / "a" / "tomograms" / "tomo_001.mrc")
    assert t0.shape == (24, 40, 56) and vox == pytest.approx(25.0)
    np.testing.assert_array_equal(t0, t0b)  # adding tomograms does not change tomo_000
    assert not np.array_equal(t0, t1)
    stack, angles, _ = read_tilt_series(tmp_path / "a" / "tiltseries" / "tomo_000.st")
    assert stack.shape == (41, 40, 56) and angles[0] == -60
    assert not (tmp_path / "b" / "tiltseries").exists()
    truth = read_coordinates(tmp_path / "a" / "truth" / "tomo_001.csv")
    assert set(truth["tomogram"]) == {"tomo_001"} and len(truth) > 0


def test_simulate_command(tmp_path, capsys):
    out = tmp_path / "sim"
    rc = cli_main(
        [
            "simulate",
            "-o",
            str(out),
            "--n-tomograms",
            "1",
            "--shape",
            "24",
            "40",
            "56",
            "--voxel-size",
            "25",
            "--preset",
            "demo",
            "--seed",
            "2",
            "--count",
            "ribosome=3",
            "--count",
            "gold=0",
            "--no-tilt-series",
        ]
    )
    assert rc == 0
    truth = pd.read_csv(out / "truth" / "tomo_000.csv")
    assert (truth["species"] == "ribosome").sum() == 3 and "gold" not in set(truth["species"])
    assert (out / "tomograms" / "tomo_000.mrc").is_file()
    assert not (out / "tiltseries").exists()
    rc = cli_main(["simulate", "-o", str(out), "--count", "ribosome"])
    assert rc == 2 and "SPECIES=N" in capsys.readouterr().err


def test_rotation_convention_of_truth_angles():
    """A template feature at +x ends up at +y after the recorded rotation Rz(90°)."""
    from scipy.spatial.transform import Rotation

    template = np.zeros((15, 15, 15), dtype=np.float32)
    template[7, 7, 11] = 1.0  # 4 voxels to +x of the centre
    vol = np.zeros((20, 30, 40), dtype=np.float32)
    rot = Rotation.from_euler("ZYZ", [90.0, 0.0, 0.0], degrees=True).as_matrix()
    simulate._add_rotated(vol, template, (20.0, 15.0, 10.0), rot)
    assert np.unravel_index(np.argmax(vol), vol.shape) == (10, 19, 20)


def test_dataset_files_have_dark_protein_like_real_reconstructions(tmp_path):
    from milopyp.io.coords import read_coordinates
    from milopyp.io.mrc import read_tomogram
    from milopyp.simulate import simulate_dataset

    for contrast in ("dark", "bright"):
        out = tmp_path / contrast
        simulate_dataset(out, n_tomograms=1, shape_zyx=(32, 96, 128), voxel_size_a=12,
                         seed=2, preset="two_species", protein_contrast=contrast)
        volume, _ = read_tomogram(out / "tomograms" / "tomo_000.mrc")
        truth = read_coordinates(out / "truth" / "tomo_000.csv")
        ribosomes = truth[truth["species"] == "ribosome"][["x", "y", "z"]].round().astype(int)
        at_centres = volume[ribosomes["z"], ribosomes["y"], ribosomes["x"]].mean()
        if contrast == "dark":
            assert at_centres < np.median(volume)
        else:
            assert at_centres > np.median(volume)
