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


# ------------------------------------------------------------ spikes, membrane and filament

FULL = (64, 256, 256)  # z, y, x at 12 Å: the size the presets are tuned for


def _fingerprint(sim) -> str:
    """Hash of the phantom (to 1e-4) and the truth table (to 1e-4 voxel / degree)."""
    import hashlib

    h = hashlib.sha256(np.rint(sim.phantom.astype(np.float64) * 1e4).astype(np.int64).tobytes())
    cols = ["species", "x", "y", "z", "rot", "tilt", "psi", "radius_a", "fiber_id"]
    h.update(sim.truth[cols].to_csv(index=False, float_format="%.4f").encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(
    ("preset", "shape", "voxel", "seed", "digest", "abs_mean", "sub_sq"),
    [  # recorded from the simulator before the spike species and presets were added
        ("demo", (32, 64, 96), 20.0, 3, "2addd30de9afe3e3", 0.7202933498, 1901.829163057),
        ("crowded", (32, 64, 96), 20.0, 5, "dc09300c779841fd", 0.7863961857, 2006.263017267),
        ("two_species", (24, 40, 56), 25.0, 7, "289af6b0b8ac670e", 0.7478998290, 557.4236586528),
    ],
)
def test_older_presets_unchanged(preset, shape, voxel, seed, digest, abs_mean, sub_sq):
    sim = simulate.simulate_tomogram(shape_zyx=shape, voxel_size_a=voxel, seed=seed, preset=preset)
    assert _fingerprint(sim) == digest
    t = sim.tomogram.astype(np.float64)
    assert np.abs(t).mean() == pytest.approx(abs_mean, rel=1e-5)
    assert (t[::3, ::5, ::7] ** 2).sum() == pytest.approx(sub_sq, rel=1e-5)
    assert "vesicle_id" not in sim.truth.columns


@pytest.fixture(scope="module")
def membrane() -> simulate.SimulatedTomogram:
    return simulate.simulate_tomogram(shape_zyx=FULL, voxel_size_a=12.0, seed=0, preset="membrane")


@pytest.fixture(scope="module")
def filament() -> simulate.SimulatedTomogram:
    return simulate.simulate_tomogram(shape_zyx=FULL, voxel_size_a=12.0, seed=0, preset="filament")


def _axes(rows: pd.DataFrame) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("ZYZ", rows[["rot", "tilt", "psi"]].to_numpy(), degrees=True)
    return rot.apply([0.0, 0.0, 1.0])


def test_spike_template_shape_and_centre():
    for voxel in (10.0, 12.0):
        t, base = simulate.spike_template(voxel)
        c = (t.shape[0] - 1) / 2
        assert np.allclose(ndimage.center_of_mass(t), c, atol=0.05)  # centred on the mass
        zyx = np.argwhere(t > 0.5)
        length = (zyx[:, 0].max() - zyx[:, 0].min() + 1) * voxel
        assert length == pytest.approx(200.0, abs=1.5 * voxel)  # along +z
        assert (c - zyx[:, 0].min()) * voxel == pytest.approx(base * voxel, abs=voxel)
        head = t[round(c + 1)]  # x-y section through the head
        xy = np.argwhere(head > 0.5)
        assert 90 <= (np.ptp(xy[:, 1]) + 1) * voxel <= 130  # ~100 Å wide
    templates = simulate.species_templates(12.0)
    assert templates["spike"] is templates["free_spike"]
    sums = {k: float(v.sum()) for k, v in templates.items()}
    assert sums["small"] < sums["spike"] < sums["ribosome"]
    assert 0.9 < templates["spike"].max() <= 1.0
    radii = simulate.particle_radii_vox(12.0)
    assert radii["spike"] == radii["free_spike"] > base


def test_membrane_preset_species(membrane):
    counts = membrane.truth["species"].value_counts().to_dict()
    expected = {k: v for k, v in simulate.species_counts(
        simulate.preset_parameters("membrane"), FULL, 12.0).items() if v}
    assert counts == expected == {
        "vesicle": 4, "spike": 24, "free_spike": 24, "ribosome": 8, "small": 12}
    ves = membrane.truth[membrane.truth["species"] == "vesicle"]
    assert ves["vesicle_id"].tolist() == list(range(len(ves)))
    assert ((ves["radius_a"] >= 300) & (ves["radius_a"] <= 500)).all()
    spikes = membrane.truth[membrane.truth["species"] == "spike"]
    per_vesicle = spikes["vesicle_id"].value_counts()
    assert len(per_vesicle) == len(ves) and per_vesicle.min() >= 3  # several on every vesicle
    others = membrane.truth[membrane.truth["species"] != "spike"]
    assert others.loc[others["species"] != "vesicle", "vesicle_id"].isna().all()
    assert spikes[["rot", "tilt", "psi"]].notna().all().all()


def test_attached_spikes_stand_on_their_vesicle(membrane):
    truth = membrane.truth
    params = membrane.params
    half_t = params["membrane_thickness_a"] / 2 / 12.0
    _t, base_vox = simulate.spike_template(12.0)
    ves = truth[truth["species"] == "vesicle"].set_index("vesicle_id")
    spikes = truth[truth["species"] == "spike"]
    centre = spikes[["x", "y", "z"]].to_numpy()
    axis = _axes(spikes)
    base = centre - base_vox * axis
    vc = ves.loc[spikes["vesicle_id"], ["x", "y", "z"]].to_numpy()
    radius = ves.loc[spikes["vesicle_id"], "radius_a"].to_numpy() / 12.0
    radial = base - vc
    dist = np.linalg.norm(radial, axis=1)
    np.testing.assert_allclose(dist, radius + half_t, atol=1e-6)  # base on the outer surface
    cos = np.sum(radial / dist[:, None] * axis, axis=1)
    assert np.all(cos > 0.9999)  # axis along the outward normal
    # the head is outside, clear of every other vesicle's membrane
    r_spike = simulate.particle_radii_vox(12.0)["spike"]
    gap = params["min_gap_a"] / 12.0
    for vid, v in ves.iterrows():
        other = spikes["vesicle_id"].to_numpy() != vid
        d = np.linalg.norm(centre[other] - v[["x", "y", "z"]].to_numpy(float), axis=1)
        assert np.all(np.abs(d - v["radius_a"] / 12.0) >= half_t + r_spike + gap - 1e-9)


def test_free_spikes_away_from_membranes_and_oriented_as_recorded(membrane):
    truth = membrane.truth
    half_t = membrane.params["membrane_thickness_a"] / 2 / 12.0
    gap = membrane.params["min_gap_a"] / 12.0
    r_spike = simulate.particle_radii_vox(12.0)["free_spike"]
    free = truth[truth["species"] == "free_spike"]
    xyz = free[["x", "y", "z"]].to_numpy()
    for _, v in truth[truth["species"] == "vesicle"].iterrows():
        d = np.linalg.norm(xyz - v[["x", "y", "z"]].to_numpy(float), axis=1)
        assert np.all(np.abs(d - v["radius_a"] / 12.0) >= half_t + r_spike + gap)
    # orientations are random: axes spread over the sphere
    assert np.linalg.norm(_axes(free).mean(axis=0)) < 0.5
    # the recorded centre and angles redraw the phantom's density around a free spike
    template, _ = simulate.spike_template(12.0)
    row = free.iloc[0]
    redraw = np.zeros_like(membrane.phantom)
    from scipy.spatial.transform import Rotation

    mat = Rotation.from_euler("ZYZ", row[["rot", "tilt", "psi"]].to_numpy(float), degrees=True)
    simulate._add_rotated(redraw, template, row[["x", "y", "z"]].to_numpy(float), mat.as_matrix())
    z, y, x = (round(row[c]) for c in ("z", "y", "x"))
    box = (slice(z - 8, z + 9), slice(y - 8, y + 9), slice(x - 8, x + 9))
    assert np.corrcoef(redraw[box].ravel(), membrane.phantom[box].ravel())[0, 1] > 0.99


def test_spikes_do_not_overlap_other_particles(membrane):
    truth = membrane.truth
    part = truth[truth["species"].isin(simulate.PARTICLE_SPECIES)]
    radii = simulate.particle_radii_vox(12.0)
    p = part[["x", "y", "z"]].to_numpy()
    r = part["species"].map(radii).to_numpy()
    d = np.linalg.norm(p[:, None] - p[None], axis=-1) + np.eye(len(p)) * 1e9
    gap = membrane.params["min_gap_a"] / 12.0
    assert np.all(d >= r[:, None] + r[None, :] + gap - 1e-9)
    upper = np.array(FULL[::-1]) - 1
    assert np.all(p >= r[:, None] - 1e-9) and np.all(p <= upper - r[:, None] + 1e-9)
    # density: only a spike's base may add to its membrane; free particles never overlap
    free = truth[truth["species"].isin(["free_spike", "ribosome", "small"])]
    idx = np.rint(free[["z", "y", "x"]].to_numpy()).astype(int)
    assert membrane.phantom[idx[:, 0], idx[:, 1], idx[:, 2]].max() <= 1.01


def test_adding_spikes_moves_nothing_else():
    base = simulate.simulate_tomogram(shape_zyx=SHAPE, voxel_size_a=VOXEL, seed=3, preset="demo")
    more = simulate.simulate_tomogram(
        shape_zyx=SHAPE, voxel_size_a=VOXEL, seed=3, preset="demo",
        counts={"spike": 2, "free_spike": 2},
    )
    spikes = more.truth["species"].isin(simulate.SPIKE_SPECIES)
    assert set(more.truth.loc[spikes, "species"]) == {"spike", "free_spike"}
    pd.testing.assert_frame_equal(
        more.truth.loc[~spikes, base.truth.columns].reset_index(drop=True), base.truth
    )


def test_membrane_and_filament_presets_are_deterministic(membrane):
    again = simulate.simulate_tomogram(shape_zyx=FULL, voxel_size_a=12.0, seed=0, preset="membrane")
    pd.testing.assert_frame_equal(again.truth, membrane.truth)
    np.testing.assert_array_equal(again.tomogram, membrane.tomogram)
    small = {"shape_zyx": (48, 128, 128), "voxel_size_a": 12.0, "preset": "filament"}
    a = simulate.simulate_tomogram(seed=1, **small)
    b = simulate.simulate_tomogram(seed=1, **small)
    c = simulate.simulate_tomogram(seed=2, **small)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    np.testing.assert_array_equal(a.phantom, b.phantom)
    assert not a.truth[["x", "y", "z"]].equals(c.truth[["x", "y", "z"]])


def test_filament_preset_crossing_filaments(filament):
    truth = filament.truth
    counts = truth["species"].value_counts()
    assert counts["ribosome"] == 10 and counts["small"] == 15
    assert "vesicle_id" not in truth.columns
    fil = truth[truth["species"] == "filament"]
    ids = sorted(fil["fiber_id"].unique())
    assert ids == [0, 1, 2, 3]
    points = {}
    for fid in ids:
        xyz = fil.loc[fil["fiber_id"] == fid, ["x", "y", "z"]].to_numpy()
        steps = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
        assert len(xyz) > 60 and np.median(steps) == pytest.approx(2.0, abs=0.2)
        assert np.ptp(xyz[:, 2]) < 15  # lying roughly in x-y
        points[fid] = xyz
    r_out = filament.params["sizes_a"]["filament"] / 2 / 12.0
    sep = 2 * r_out + filament.params["min_gap_a"] / 12.0
    crossing_2d = crossing_3d = 0
    for i in ids:
        for j in ids[ids.index(i) + 1 :]:
            d3 = np.linalg.norm(points[i][:, None] - points[j][None], axis=-1)
            d2 = np.linalg.norm(points[i][:, None, :2] - points[j][None, :, :2], axis=-1)
            assert d3.min() >= sep - 1e-6  # never touching, gap respected
            if d2.min() < 2.0:
                crossing_2d += 1
                crossing_3d += d3.min() < sep + 3.5  # one right above the other
    assert crossing_2d >= 2 and crossing_3d >= 1
    assert filament.phantom.max() <= 1.01  # no two objects overlap


def test_new_presets_from_the_command_line(tmp_path):
    for preset in ("membrane", "filament"):
        out = tmp_path / preset
        rc = cli_main(["simulate", "-o", str(out), "--n-tomograms", "1", "--shape", "32", "96",
                       "96", "--voxel-size", "16", "--preset", preset, "--no-tilt-series"])
        assert rc == 0
        truth = pd.read_csv(out / "truth" / "tomo_000.csv")
        wanted = {"spike", "free_spike", "vesicle"} if preset == "membrane" else {"filament"}
        assert wanted <= set(truth["species"])
    rc = cli_main(["simulate", "-o", str(tmp_path / "x"), "--count", "spike=2", "--n-tomograms",
                   "1", "--shape", "24", "48", "48", "--voxel-size", "25", "--no-tilt-series"])
    assert rc == 0
