"""Filament tracing (milopyp.fibers) and `milopyp trace-fibers` on synthetic fibre picks.

Picks are simulated along true centre lines: one every 2 voxels of arc length, each jittered
by a Gaussian of sigma 0.7 voxel per axis (fewer and noisier than the ridge points of a
tube-shaped heat map, which the ridge-point tests make from such a heat map).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import starfile
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from milopyp import cli
from milopyp.fibers import (
    FIBER_COLUMNS,
    relion_tilt_psi,
    segment_points,
    trace,
    trace_fibers,
    trace_table,
)
from milopyp.io.mrc import write_tomogram

LINK = 6.0


# --------------------------------------------------------------------------- synthetic picks


def segment(a, b, n: int = 20000) -> np.ndarray:
    """Dense true centre line (n, 3) from ``a`` to ``b`` (x, y, z voxels)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return np.asarray(a, float) + t * (np.asarray(b, float) - np.asarray(a, float))


def arc(centre, radius: float, deg0: float, deg1: float, z0: float, z1: float | None = None,
        n: int = 20000) -> np.ndarray:
    """Dense circular arc in x-y (radius in voxels), z going linearly from z0 to z1."""
    a = np.radians(np.linspace(deg0, deg1, n))
    z = np.linspace(z0, z0 if z1 is None else z1, n)
    return np.column_stack([centre[0] + radius * np.cos(a), centre[1] + radius * np.sin(a), z])


def picks_along(curve: np.ndarray, rng, *, spacing: float = 2.0, sigma: float = 0.7):
    """Picks every ``spacing`` voxels of arc length along ``curve``, jittered by ``sigma``."""
    arc_len = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    s = np.arange(rng.uniform(0, spacing), arc_len[-1], spacing)
    xyz = np.column_stack([np.interp(s, arc_len, curve[:, k]) for k in range(3)])
    return xyz + rng.normal(0.0, sigma, xyz.shape)


def length(curve: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(curve, axis=0), axis=1).sum())


def assert_traces(fiber, curve: np.ndarray) -> None:
    """The fibre's resampled points follow ``curve`` closely, cover it, every 2 voxels."""
    d = cKDTree(curve).query(fiber.points)[0]
    assert d.mean() < 0.6, d.mean()
    assert d[1:-1].max() < 1.2, d.max()  # the ends may overshoot by an end pick's jitter
    assert d.max() < 2.0, d.max()
    steps = np.linalg.norm(np.diff(fiber.points, axis=0), axis=1)
    np.testing.assert_allclose(steps, 2.0, atol=0.02)
    # the whole curve is traced, up to the first and last picks (0-2 voxels from its ends)
    arc_len = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    inner = (arc_len > 4.0) & (arc_len < arc_len[-1] - 4.0)
    gaps = cKDTree(fiber.points).query(curve[inner][::20])[0]
    assert gaps.max() < 2.0, gaps.max()
    assert abs(fiber.length_vox - arc_len[-1]) < 7.0, (fiber.length_vox, arc_len[-1])


def match(fibers, curves) -> list[int]:
    """Index of the true curve each fibre follows (by mean distance)."""
    return [int(np.argmin([cKDTree(c).query(f.points)[0].mean() for c in curves]))
            for f in fibers]


# --------------------------------------------------------------------------- single fibres


@pytest.mark.parametrize(
    "a, b",
    [
        ((20, 100, 30), (220, 100, 30)),  # along x
        ((100, 20, 30), (100, 220, 30)),  # along y
        ((30, 40, 5), (170, 150, 58)),  # oblique, climbing in z
        ((120, 130, 2), (128, 124, 60)),  # mostly along z
    ],
    ids=["x", "y", "oblique", "z"],
)
def test_straight_fibre_any_direction(a, b):
    rng = np.random.default_rng(1)
    truth = segment(a, b)
    result = trace(picks_along(truth, rng), link_distance_vox=LINK)
    assert len(result.fibers) == 1, result.summary()
    fiber = result.fibers[0]
    assert_traces(fiber, truth)
    assert 0.7 < fiber.rms_residual_vox < 1.3  # sigma 0.7 per axis: ~0.7 * sqrt(2) across
    assert fiber.max_curvature < 0.005
    # ordered along the fibre: the first point is at one end of the truth
    ends = cKDTree(truth[[0, -1]]).query(fiber.points[[0, -1]])[0]
    assert ends.max() < 3.0


@pytest.mark.parametrize(
    "curve, kappa",
    [
        (arc((128, 128), 60.0, 20, 80, 30.0), 1 / 60),  # plane arc, 60 degrees
        (arc((128, 128), 45.0, 200, 255, 20.0), 1 / 45),  # tighter plane arc, 55 degrees
        (arc((100, 150), 80.0, -40, 20, 10.0, 50.0), None),  # 3-D: turning and climbing in z
    ],
    ids=["arc-r60", "arc-r45", "helical-3d"],
)
def test_curved_fibre(curve, kappa):
    rng = np.random.default_rng(2)
    result = trace(picks_along(curve, rng), link_distance_vox=LINK)
    assert len(result.fibers) == 1, result.summary()
    assert_traces(result.fibers[0], curve)
    if kappa is not None:  # the curvature of the quadratic fit is that of the arc
        assert 0.7 * kappa < result.fibers[0].max_curvature < 1.4 * kappa


def test_parallel_filaments_stay_two():
    rng = np.random.default_rng(3)
    truths = [segment((20, 100, 30), (220, 100, 30)), segment((20, 112, 31), (220, 112, 31))]
    picks = np.concatenate([picks_along(c, rng) for c in truths])
    fibers = trace_fibers(picks, link_distance_vox=LINK)
    assert len(fibers) == 2
    assert sorted(match(fibers, truths)) == [0, 1]
    for f, k in zip(fibers, match(fibers, truths)):
        assert_traces(f, truths[k])


def _x_pair(angle_deg: float, tilt_z: float = 0.0):
    """Two straight filaments through (128, 128, 32) at ``angle_deg``, 200 voxels long."""
    centre = np.array([128.0, 128.0, 32.0])
    u = np.array([1.0, 0.0, tilt_z])
    v = np.array([math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg)), -tilt_z])
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    return [segment(centre - 100 * w, centre + 100 * w) for w in (u, v)]


@pytest.mark.parametrize("angle, tilt_z", [(90, 0.0), (45, 0.0), (30, 0.0), (70, 0.2)],
                         ids=["90deg", "45deg", "30deg", "3d-oblique"])
@pytest.mark.parametrize("seed", [4, 5])
def test_crossing_filaments_split_in_two(angle, tilt_z, seed):
    """An X: the link graph joins the two filaments, the tracer splits them at the crossing."""
    rng = np.random.default_rng(seed)
    truths = _x_pair(angle, tilt_z)
    picks = np.concatenate([picks_along(c, rng) for c in truths])
    result = trace(picks, link_distance_vox=LINK)
    assert result.n_components == 1
    assert len(result.fibers) == 2, result.summary()
    assert sorted(match(result.fibers, truths)) == [0, 1]
    for f, k in zip(result.fibers, match(result.fibers, truths)):
        assert_traces(f, truths[k])  # each one whole, across the crossing


def _ball_of_picks(centre, radius: float, rng) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(-radius, radius + 1, 2.0)] * 3, indexing="ij"), -1)
    grid = grid.reshape(-1, 3)
    grid = grid[np.linalg.norm(grid, axis=1) <= radius]
    return grid + np.asarray(centre, float) + rng.normal(0, 0.7, grid.shape)


def test_blob_is_rejected_filament_kept():
    rng = np.random.default_rng(6)
    blob = _ball_of_picks((128, 60, 32), 10.0, rng)
    result = trace(blob, link_distance_vox=LINK)
    assert result.fibers == []
    assert result.rejected["not line-like"] == 1
    truth = segment((20, 200, 30), (220, 200, 30))
    both = np.concatenate([blob, picks_along(truth, rng)])
    result = trace(both, link_distance_vox=LINK)
    assert len(result.fibers) == 1, result.summary()
    assert_traces(result.fibers[0], truth)


def test_scattered_noise_is_rejected():
    rng = np.random.default_rng(7)
    noise = rng.uniform((0, 0, 0), (256, 256, 64), (800, 3))
    result = trace(noise, link_distance_vox=LINK)
    assert result.fibers == [], result.summary()
    assert result.rejected["fewer than min_points picks"] > 500
    truths = [segment((20, 30, 20), (230, 60, 40)), arc((128, 128), 70.0, 30, 100, 30.0)]
    picks = np.concatenate([noise] + [picks_along(c, rng) for c in truths])
    fibers = trace_fibers(picks, link_distance_vox=LINK)
    assert len(fibers) == 2
    for f, k in zip(fibers, match(fibers, truths)):
        assert_traces(f, truths[k])


# --------------------------------------------------------------------------- cutoffs


def test_curvature_cutoff():
    rng = np.random.default_rng(8)
    picks = picks_along(arc((128, 128), 40.0, 0, 70, 30.0), rng)  # curvature 1/40 = 0.025
    kept = trace(picks, link_distance_vox=LINK, max_curvature=0.05)
    assert len(kept.fibers) == 1
    dropped = trace(picks, link_distance_vox=LINK, max_curvature=0.015)
    assert dropped.fibers == [] and dropped.rejected["curvature"] == 1
    straight = trace(picks_along(segment((20, 100, 30), (220, 100, 30)), rng),
                     link_distance_vox=LINK, max_curvature=0.015)
    assert len(straight.fibers) == 1


def test_residual_cutoff():
    rng = np.random.default_rng(9)
    picks = picks_along(segment((20, 100, 30), (220, 100, 30)), rng, sigma=1.2)
    kept = trace(picks, link_distance_vox=8.0, max_residual_vox=3.0)
    assert len(kept.fibers) == 1
    assert 1.3 < kept.fibers[0].rms_residual_vox < 2.1  # ~1.2 * sqrt(2)
    dropped = trace(picks, link_distance_vox=8.0, max_residual_vox=1.2)
    assert dropped.fibers == [] and dropped.rejected["residual"] == 1


def test_min_points():
    rng = np.random.default_rng(10)
    picks = picks_along(segment((50, 50, 30), (66, 50, 30)), rng, sigma=0.3)  # 8 picks
    assert len(picks) == 8
    assert trace_fibers(picks, link_distance_vox=LINK) == []  # default min_points 10
    assert len(trace_fibers(picks, link_distance_vox=LINK, min_points=5)) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="NaN"):
        trace([[0, 0, 0], [1, np.nan, 0]], link_distance_vox=LINK)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        trace(np.zeros((4, 2)), link_distance_vox=LINK)
    with pytest.raises(ValueError, match="link_distance_vox"):
        trace(np.zeros((4, 3)), link_distance_vox=0)
    with pytest.raises(ValueError, match="min_points"):
        trace(np.zeros((4, 3)), link_distance_vox=LINK, min_points=2)
    empty = trace(np.zeros((0, 3)), link_distance_vox=LINK)
    assert empty.fibers == [] and empty.n_components == 0


# --------------------------------------------------------------------------- determinism, tables


def test_deterministic_and_independent_of_pick_order():
    rng = np.random.default_rng(11)
    truths = _x_pair(60) + [segment((20, 220, 20), (220, 230, 44))]
    picks = np.concatenate([picks_along(c, rng) for c in truths]
                           + [rng.uniform((0, 0, 0), (256, 256, 64), (300, 3))])
    scores = rng.uniform(0.3, 1.0, len(picks))
    first = trace_fibers(picks, link_distance_vox=LINK, scores=scores)
    again = trace_fibers(picks, link_distance_vox=LINK, scores=scores)
    perm = rng.permutation(len(picks))
    shuffled = trace_fibers(picks[perm], link_distance_vox=LINK, scores=scores[perm])
    assert len(first) == 3
    for f, g, h in zip(first, again, shuffled):
        np.testing.assert_array_equal(f.points, g.points)
        np.testing.assert_array_equal(f.points, h.points)
        np.testing.assert_array_equal(f.members, np.sort(perm[h.members]))
        assert f.score == pytest.approx(scores[f.members].mean())


def test_trace_table_per_tomogram():
    rng = np.random.default_rng(12)
    a = np.concatenate([picks_along(c, rng) for c in _x_pair(90)])
    b = picks_along(segment((10, 10, 10), (100, 90, 30)), rng)
    picks = pd.concat([
        pd.DataFrame({"tomogram": "tomo_b", "x": b[:, 0], "y": b[:, 1], "z": b[:, 2]}),
        pd.DataFrame({"tomogram": "tomo_a", "x": a[:, 0], "y": a[:, 1], "z": a[:, 2]}),
    ], ignore_index=True)
    table = trace_table(picks, link_distance_vox=LINK)
    assert tuple(table.columns) == FIBER_COLUMNS
    assert list(dict.fromkeys(table["tomogram"])) == ["tomo_b", "tomo_a"]
    assert sorted(set(table.loc[table.tomogram == "tomo_a", "fiber_id"])) == [0, 1]
    assert sorted(set(table.loc[table.tomogram == "tomo_b", "fiber_id"])) == [0]
    for _, rows in table.groupby(["tomogram", "fiber_id"]):
        steps = np.linalg.norm(np.diff(rows[["x", "y", "z"]].to_numpy(), axis=0), axis=1)
        np.testing.assert_allclose(steps, 2.0, atol=0.02)  # rows in order along the fibre
    empty = trace_table(picks.iloc[:0], link_distance_vox=LINK)
    assert tuple(empty.columns) == FIBER_COLUMNS and len(empty) == 0


# --------------------------------------------------------------------------- segments, angles


def test_relion_angles_put_particle_z_along_the_tangent():
    rng = np.random.default_rng(13)
    tangents = rng.normal(size=(20, 3))
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    tilt, psi = relion_tilt_psi(tangents)
    assert np.all((tilt >= 0) & (tilt <= 180)) and np.all((psi > -180) & (psi <= 180))
    for t, tl, ps in zip(tangents, tilt, psi):
        for rot in (0.0, 123.0):  # rot is free: the twist about the fibre
            # RELION's A (reference -> particle) is the transpose of scipy's ZYZ matrix
            a = Rotation.from_euler("ZYZ", [rot, tl, ps], degrees=True).as_matrix().T
            np.testing.assert_allclose(a @ [0.0, 0.0, 1.0], t, atol=1e-9)
    tilt, psi = relion_tilt_psi([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(tilt, [90, 90, 0], atol=1e-9)
    np.testing.assert_allclose(psi, [180, 90, 180], atol=1e-9)


def test_segment_points_spacing_and_priors():
    x = np.arange(0.0, 101.0, 2.0)  # a fibre 100 voxels long along +x, then one along +y
    fibers = pd.concat([
        pd.DataFrame({"tomogram": "t", "fiber_id": 0, "x": 10 + x, "y": 20.0, "z": 5.0}),
        pd.DataFrame({"tomogram": "t", "fiber_id": 1, "x": 50.0, "y": 30 + x[:31], "z": 7.0}),
        pd.DataFrame({"tomogram": "t", "fiber_id": 2, "x": [5.0, 8.0], "y": 1.0, "z": 1.0}),
    ], ignore_index=True)
    seg = segment_points(fibers, 8.0, voxel_size_a=10.0)
    first = seg[seg.fiber_id == 0]
    assert len(first) == 13  # 0, 8, ..., 96 centred: 2 voxels from each end
    np.testing.assert_allclose(first["x"], 12.0 + 8.0 * np.arange(13))
    np.testing.assert_allclose(first[["rlnAngleTilt", "rlnAnglePsi"]], [[90.0, 180.0]] * 13)
    np.testing.assert_allclose(first["rlnAngleTiltPrior"], first["rlnAngleTilt"])
    np.testing.assert_allclose(np.diff(first["rlnHelicalTrackLengthAngst"]), 80.0)
    second = seg[seg.fiber_id == 1]
    np.testing.assert_allclose(second["rlnAnglePsi"], 90.0)
    assert (np.diff(second["y"]) == pytest.approx(8.0))
    short = seg[seg.fiber_id == 2]  # shorter than the spacing: one point in its middle
    np.testing.assert_allclose(short[["x", "y", "z"]].to_numpy(), [[6.5, 1.0, 1.0]])
    empty = segment_points(fibers.iloc[:0], 8.0)
    assert len(empty) == 0 and "rlnAnglePsiPrior" in empty.columns
    assert "rlnHelicalTrackLengthAngst" not in empty.columns


# --------------------------------------------------------------------------- command line


@pytest.fixture
def crossing_picks(tmp_path):
    rng = np.random.default_rng(14)
    picks = np.concatenate([picks_along(c, rng) for c in _x_pair(60)]
                           + [rng.uniform((0, 0, 0), (255, 255, 63), (200, 3))])
    picks = np.clip(picks, 0, [255, 255, 63])
    df = pd.DataFrame({"tomogram": "TS_01", "x": picks[:, 0], "y": picks[:, 1],
                       "z": picks[:, 2], "score": rng.uniform(0.5, 1.0, len(picks))})
    path = tmp_path / "picks" / "TS_01.csv"
    path.parent.mkdir()
    df.to_csv(path, index=False)
    mrc = tmp_path / "TS_01.mrc"
    write_tomogram(mrc, np.zeros((64, 256, 256), np.float32), 10.0)
    return path, mrc


def test_cli_writes_fibres_segments_and_star(tmp_path, crossing_picks):
    picks, mrc = crossing_picks
    out, star, seg = tmp_path / "fibers" / "TS_01.csv", tmp_path / "TS_01.star", tmp_path / "s.csv"
    rc = cli.main(["trace-fibers", "--picks", str(picks), "--tomogram", str(mrc), "-o", str(out),
                   "--star", str(star), "--segments", str(seg), "--link-distance-a", "60",
                   "--segment-spacing-a", "80"])
    assert rc == 0
    fibers = pd.read_csv(out)
    assert tuple(fibers.columns) == FIBER_COLUMNS
    assert sorted(set(fibers["fiber_id"])) == [0, 1] and set(fibers["tomogram"]) == {"TS_01"}
    segments = pd.read_csv(seg)
    for _, rows in segments.groupby("fiber_id"):
        steps = np.linalg.norm(np.diff(rows[["x", "y", "z"]].to_numpy(), axis=0), axis=1)
        np.testing.assert_allclose(steps, 8.0, atol=0.05)  # 80 A at 10 A per voxel
    np.testing.assert_allclose(segments["rlnAngleTilt"], 90.0, atol=3.0)  # flat in z
    assert star.read_text().startswith("# version 50001\n")
    particles = starfile.read(star)
    assert len(particles) == len(segments)
    assert sorted(set(particles["rlnHelicalTubeID"])) == [1, 2]
    for col in ("rlnTomoName", "rlnCenteredCoordinateXAngst", "rlnAngleTiltPrior",
                "rlnAnglePsiPrior", "rlnHelicalTrackLengthAngst"):
        assert col in particles.columns
    np.testing.assert_allclose(particles["rlnCenteredCoordinateXAngst"],
                               (segments["x"] - 128) * 10.0, atol=1e-3)
    # the same link distance in voxels gives the same fibres
    out2 = tmp_path / "again.csv"
    assert cli.main(["trace-fibers", "--picks", str(picks), "-o", str(out2),
                     "--link-distance", "6"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out2), fibers)
    # ... and so does the default for a 100 Å filament (0.6 x diameter = 60 Å = 6 voxels)
    out3 = tmp_path / "by_diameter.csv"
    assert cli.main(["trace-fibers", "--picks", str(picks), "--tomogram", str(mrc), "-o",
                     str(out3), "--particle-diameter", "100"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out3), fibers)


def test_cli_segment_spacing_defaults_to_a_third_of_the_diameter(tmp_path, crossing_picks,
                                                                  capsys):
    """The derived defaults come from milopyp.defaults; old option names still work, hidden."""
    from milopyp import defaults

    picks, mrc = crossing_picks
    seg = tmp_path / "s.csv"
    assert cli.main(["trace-fibers", "--picks", str(picks), "--tomogram", str(mrc), "-o",
                     str(tmp_path / "f.csv"), "--segments", str(seg), "--particle-diameter-a",
                     "120"]) == 0  # link 72 Å, spacing 40 Å = 4 voxels at 10 Å/voxel
    spacing_vox = defaults.segment_spacing_a(120) / 10.0
    for _, rows in pd.read_csv(seg).groupby("fiber_id"):
        steps = np.linalg.norm(np.diff(rows[["x", "y", "z"]].to_numpy(), axis=0), axis=1)
        np.testing.assert_allclose(steps, spacing_vox, atol=0.05)
    old = tmp_path / "old.csv"
    assert cli.main(["trace-fibers", "--picks", str(picks), "--voxel-size", "10", "-o", str(old),
                     "--segments", str(old.with_suffix(".seg.csv")), "--particle-diameter",
                     "120", "--step", "2", "--max-residual", "3.5"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(old.with_suffix(".seg.csv")), pd.read_csv(seg))
    with pytest.raises(SystemExit):
        cli.main(["trace-fibers", "--help"])
    shown = capsys.readouterr().out
    assert "--segment-spacing-vox" in shown and "--segment-spacing " not in shown
    assert "--link-distance-vox" in shown and "--link-distance " not in shown


def test_cli_empty_picks_write_empty_outputs(tmp_path, caplog):
    picks = tmp_path / "TS_02.csv"
    picks.write_text("tomogram,x,y,z,score\n")
    out, seg = tmp_path / "f.csv", tmp_path / "s.csv"
    mrc = tmp_path / "TS_02.mrc"
    write_tomogram(mrc, np.zeros((8, 16, 16), np.float32), 10.0)
    star = tmp_path / "s.star"
    with caplog.at_level("WARNING"):
        rc = cli.main(["trace-fibers", "--picks", str(picks), "--tomogram", str(mrc), "-o",
                       str(out), "--segments", str(seg), "--star", str(star)])
    assert rc == 0
    assert "no picks" in caplog.text
    assert out.read_text().strip() == ",".join(FIBER_COLUMNS)
    assert pd.read_csv(seg).empty and "rlnAngleTilt" in pd.read_csv(seg).columns
    assert star.read_text().startswith("# version 50001\n")


@pytest.mark.parametrize(
    "content, extra, message",
    [
        (None, [], "not found"),
        ("a,b,c\n1,2,3\n", [], "no column"),
        ("x,y,z\n1,2,3\n4,nan,5\n", [], "column 'y' row 2"),
        ("x,y,z\n1,2,3\n", ["--star", "out.star"], "--tomogram"),
        ("x,y,z\n1,2,3\n", ["--link-distance-a", "50"], "voxel size"),
        ("x,y,z\n1,2,3\n", ["--min-points", "2"], "--min-points"),
        ("x,y,z\n1,2,3\n", ["--max-curvature", "0"], "--max-curvature"),
        ("x,y,z\n1,2,3\n", ["--max-picks", "-1"], "--max-picks"),
    ],
    ids=["missing", "no-xyz", "nan", "star-no-tomogram", "angstrom-no-voxel", "min-points",
         "curvature", "max-picks"],
)
def test_cli_bad_input_is_a_one_line_error(tmp_path, capsys, content, extra, message):
    picks = tmp_path / "picks.csv"
    if content is not None:
        picks.write_text(content)
    rc = cli.main(["trace-fibers", "--picks", str(picks), "-o", str(tmp_path / "f.csv"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("milopyp trace-fibers: error:")
    assert message in err[-1]
    assert not (tmp_path / "f.csv").exists()


# --------------------------------------------------------------------------- gaps


def test_fibre_split_by_a_gap_in_its_picks_is_joined_back():
    """Sparse picks (every 4 voxels, like a trained model's ridge maxima) with a 24-voxel
    stretch missing: two pieces, joined into one fibre; not joined with join distance 0."""
    rng = np.random.default_rng(31)
    line = segment([20, 30, 12], [180, 70, 16])
    xyz = picks_along(line, rng, spacing=4.0, sigma=0.8)
    t = (xyz - [20, 30, 12]) @ (np.array([160, 40, 4]) / np.linalg.norm([160, 40, 4]))
    xyz = xyz[(t < 70) | (t > 94)]
    joined = trace(xyz, link_distance_vox=10.0)
    assert len(joined.fibers) == 1 and joined.joined == 1, joined.summary()
    assert joined.fibers[0].length_vox > 0.9 * length(line)
    assert cKDTree(line).query(joined.fibers[0].points)[0].max() < 1.5
    apart = trace(xyz, link_distance_vox=10.0, join_distance_vox=0)
    assert len(apart.fibers) == 2 and apart.joined == 0


def test_ends_that_do_not_point_at_each_other_are_not_joined():
    rng = np.random.default_rng(32)
    # an L: two fibres meeting at a right angle, ends 12 voxels apart
    a = picks_along(segment([20, 20, 10], [120, 20, 10]), rng, spacing=4.0)
    b = picks_along(segment([132, 32, 10], [132, 140, 10]), rng, spacing=4.0)
    # two parallel fibres side by side, offset by 15 voxels, overlapping ends
    c = picks_along(segment([20, 100, 30], [110, 100, 30]), rng, spacing=4.0)
    d = picks_along(segment([100, 115, 30], [200, 115, 30]), rng, spacing=4.0)
    result = trace(np.concatenate([a, b, c, d]), link_distance_vox=10.0)
    assert len(result.fibers) == 4 and result.joined == 0, result.summary()


# --------------------------------------------------------------------------- floods of picks


def test_chunked_neighbourhoods_match_a_dense_reference(monkeypatch):
    """The neighbour shapes and the link graph, built in chunks of a few hundred pairs, equal
    a direct computation (all pairwise distances) and the tracing does not change."""
    from scipy.sparse.csgraph import connected_components

    from milopyp.fibers import graph as fibers

    rng = np.random.default_rng(21)
    truths = [segment((10, 20, 8), (110, 70, 20)), arc((60, 60), 35.0, 0, 120, 12.0)]
    pts = np.concatenate([rng.uniform((0, 0, 0), (128, 96, 24), (300, 3))]
                         + [picks_along(c, rng) for c in truths])
    pts = pts[np.lexsort((pts[:, 2], pts[:, 1], pts[:, 0]))]
    whole = trace(pts, link_distance_vox=LINK)
    monkeypatch.setattr(fibers, "_PAIR_CHUNK", 300)
    chunks = list(fibers._pair_chunks(pts, cKDTree(pts), 2 * LINK))
    assert len(chunks) > 10  # many chunks, each within the budget (or one pick)
    assert all(len(i) <= 300 or i.max() == 0 for _, i, _ in chunks)

    dist = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    count, ratio, axis = fibers._local_shape(pts, cKDTree(pts), 2 * LINK)
    for k in range(len(pts)):
        near = pts[dist[k] <= 2 * LINK]
        assert count[k] == len(near)
        evals, evecs = np.linalg.eigh(np.cov(near.T, bias=True))
        assert ratio[k] == pytest.approx(evals[1] / max(evals[2], 1e-12), abs=1e-9)
        if ratio[k] < 0.5:
            assert abs(axis[k] @ evecs[:, 2]) == pytest.approx(1.0, abs=1e-9)
    reference = connected_components(dist <= LINK, directed=False)[1]
    np.testing.assert_array_equal(fibers._components(pts, LINK), reference)

    chunked = trace(pts, link_distance_vox=LINK)
    assert chunked.summary() == whole.summary() and len(chunked.fibers) == 2
    for a, b in zip(chunked.fibers, whole.fibers):
        np.testing.assert_array_equal(a.members, b.members)
        np.testing.assert_allclose(a.points, b.points)


def test_dense_random_picks_trace_in_bounded_memory(monkeypatch):
    """25,000 random picks with ~600 neighbours each within the shape window (15 M pairs:
    360 MB as index pairs alone) are traced holding ~1 chunk of pairs at a time, and give no
    fibre."""
    import tracemalloc

    from milopyp.fibers import graph as fibers

    rng = np.random.default_rng(5)
    pts = rng.uniform((0, 0, 0), (96, 96, 32), (25_000, 3))
    monkeypatch.setattr(fibers, "_PAIR_CHUNK", 1 << 18)
    tracemalloc.start()
    try:
        result = trace(pts, link_distance_vox=LINK, max_picks=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.fibers == [] and result.n_capped == 0, result.summary()
    assert peak < 40e6, peak / 1e6  # the code before the chunks: 765 MB


def test_flood_of_picks_is_capped_logged_and_real_filaments_survive(caplog):
    """Far more picks than max_picks: the highest-scoring are traced (a filament whose picks
    score high is still found), the rest are counted and a warning says what to check."""
    rng = np.random.default_rng(9)
    truth = segment((20, 40, 10), (200, 150, 30))
    line = picks_along(truth, rng)
    noise = rng.uniform((0, 0, 0), (256, 256, 48), (60_000, 3))
    xyz = np.concatenate([noise, line])
    scores = np.concatenate([rng.uniform(0.0, 0.5, len(noise)), rng.uniform(0.6, 1.0, len(line))])
    with caplog.at_level("WARNING", logger="milopyp.fibers"):
        result = trace(xyz, link_distance_vox=LINK, scores=scores, max_picks=1500)
    assert result.n_capped == len(xyz) - 1500
    assert "implausibly many" in caplog.text and "60" in caplog.text
    assert len(caplog.records) == 1
    assert "lowest-scoring pick(s) over max_picks not traced" in result.summary()
    assert len(result.fibers) == 1, result.summary()
    assert_traces(result.fibers[0], truth)
    members = result.fibers[0].members  # indices into the input, not into the kept picks
    assert scores[members].min() >= np.sort(scores)[-1500]
    assert np.isin(np.arange(len(noise), len(xyz)), members).mean() > 0.9
    # without the cap, the flood of noise around it swamps the filament
    assert trace(xyz, link_distance_vox=LINK, scores=scores, max_picks=None).fibers == []
    # without scores: a random subset, still independent of the input order
    a = trace(noise, link_distance_vox=LINK, max_picks=2000)
    perm = rng.permutation(len(noise))
    b = trace(noise[perm], link_distance_vox=LINK, max_picks=2000)
    assert a.n_capped == b.n_capped == len(noise) - 2000 and a.summary() == b.summary()
    with pytest.raises(ValueError, match="max_picks"):
        trace(noise, link_distance_vox=LINK, max_picks=0)


# --------------------------------------------------------------------------- fibre threshold


def _flat_heatmap(shape_zyx, rng, level=0.09, spread=0.002):
    """A saturated fibre heat map: every voxel near ``level``, rough (voxel-scale) noise."""
    return (level + spread * rng.standard_normal(shape_zyx)).astype(np.float32)


def test_fiber_threshold_rejects_a_flat_heat_map():
    from milopyp.localize.calibrate import (
        FIBER_MAX_VOXEL_FRACTION,
        fiber_threshold,
        guard_fiber_threshold,
        heatmap_quantile,
        label_peak_scores,
    )

    rng = np.random.default_rng(3)
    heat = _flat_heatmap((24, 80, 112), rng)
    labels = rng.uniform((0, 0, 0), (111, 79, 23), (100, 3))
    places = rng.uniform((0, 0, 0), (111, 79, 23), (200, 3))
    peaks = label_peak_scores(heat, labels, 2.0)
    background = label_peak_scores(heat, places, 2.0)
    bulk = heatmap_quantile(heat, 1 - FIBER_MAX_VOXEL_FRACTION)
    threshold, separated, note = fiber_threshold(peaks, bulk, background)
    assert not separated
    assert "did not learn the filaments" in note and f"{np.median(peaks):.4g}" in note
    assert threshold >= bulk > 0.6 * np.median(peaks)
    assert np.mean(heat > threshold) <= FIBER_MAX_VOXEL_FRACTION + 1e-3

    # applied to a tomogram: the threshold (0.6 x label median) is raised
    low = 0.6 * float(np.median(peaks))
    assert np.mean(heat > low) > 0.99
    raised, note = guard_fiber_threshold(heat, low, {"separated": False,
                                                     "label_peak_median": 0.087,
                                                     "background_peak_median": 0.09})
    assert raised == pytest.approx(bulk)
    assert "did not learn the filaments" in note and "flat fibre heat map" in note
    assert "0.087" in note and "%" in note and ";" in note and "\n" not in note


def _one_filament(seed: int, noise: tuple[float, float], value: float):
    """A heat map [24, 80, 112] of uniform noise in [noise[0], noise[1]) with one labelled
    filament along x at ``value`` (1.8 % of the voxels), its 20 labels (x, y, z) and 200
    random places."""
    rng = np.random.default_rng(seed)
    heat = (noise[0] + (noise[1] - noise[0]) * rng.random((24, 80, 112))).astype(np.float32)
    heat[10:14, 30:34, :] = value
    labels = np.column_stack([np.arange(5, 105, 5), np.full(20, 31.5), np.full(20, 11.5)])
    return heat, labels, rng.uniform((0, 0, 0), (111, 79, 23), (200, 3))


def test_fiber_threshold_keeps_a_learned_heat_map():
    from milopyp.localize.calibrate import (
        FIBER_MAX_VOXEL_FRACTION,
        fiber_threshold,
        guard_fiber_threshold,
        heatmap_quantile,
        label_peak_scores,
    )

    heat, labels, places = _one_filament(4, (0.02, 0.03), 0.7)
    bulk = heatmap_quantile(heat, 1 - FIBER_MAX_VOXEL_FRACTION)
    threshold, separated, note = fiber_threshold(
        label_peak_scores(heat, labels, 2.0), bulk, label_peak_scores(heat, places, 2.0))
    assert separated and note == ""
    assert threshold == pytest.approx(0.6 * 0.7)
    assert guard_fiber_threshold(heat, threshold) == (threshold, "")
    assert guard_fiber_threshold(heat, threshold, {"separated": True}) == (threshold, "")


def test_fiber_threshold_flags_labels_that_hardly_stand_out():
    """A training that did not learn the filaments (devset: label peaks 1.74 x the peaks at
    random places, where trainings that learned gave 4.5-9.3): the labels' filament is only
    twice as bright as the noise. 0.6 x the label median still clears the background's
    median, so the old test passed it; the model is now flagged."""
    from milopyp.localize.calibrate import (
        FIBER_MAX_VOXEL_FRACTION,
        FIBER_MIN_CONTRAST,
        FIBER_THRESHOLD_FRACTION,
        fiber_threshold,
        heatmap_quantile,
        label_peak_scores,
    )

    heat, labels, places = _one_filament(5, (0.10, 0.18), 0.36)  # barely above the noise
    peaks = label_peak_scores(heat, labels, 2.0)
    background = label_peak_scores(heat, places, 2.0)
    assert FIBER_THRESHOLD_FRACTION * np.median(peaks) > np.median(background)  # old: passed
    threshold, separated, note = fiber_threshold(
        peaks, heatmap_quantile(heat, 1 - FIBER_MAX_VOXEL_FRACTION), background)
    assert not separated
    assert "did not learn the filaments" in note and f"{FIBER_MIN_CONTRAST:g} x" in note
    assert threshold == pytest.approx(FIBER_THRESHOLD_FRACTION * 0.36)  # still a threshold


def test_max_fiber_picks():
    from milopyp.localize.calibrate import max_fiber_picks

    assert 40_000 < max_fiber_picks((160, 512, 512)) < 50_000
    assert max_fiber_picks((2, 2, 2)) == 1


def test_localize_a_flat_fibre_heat_map_gives_few_picks_and_says_why(tmp_path, monkeypatch,
                                                                      caplog):
    """`milopyp localize` with a fibre model whose heat map is flat: the calibrated threshold
    (0.6 x label median) would keep ~1 pick in 60 voxels; the guard raises it and says why,
    in one line per cause. The ridge points find no filament in voxel-scale noise; NMS picks
    (``--nms-kernel-vox 3``) are capped at what filaments can give, with a warning."""
    import sys
    import types

    from milopyp.localize.calibrate import max_fiber_picks
    from milopyp.localize.peaks import find_peaks

    rng = np.random.default_rng(8)
    heat = _flat_heatmap((32, 96, 128), rng)
    model = types.SimpleNamespace(
        settings={"shape": "fiber"},
        calibration={"threshold": 0.052, "label_peak_median": 0.087, "separated": False,
                     "background_peak_median": 0.093})
    monkeypatch.setitem(sys.modules, "milopyp.localize.train",
                        types.SimpleNamespace(load_localizer=lambda path: model))
    monkeypatch.setitem(sys.modules, "milopyp.localize.infer",
                        types.SimpleNamespace(predict_heatmap=lambda *a, **k: heat))
    mrc = tmp_path / "TS_01.mrc"
    write_tomogram(mrc, np.zeros((32, 96, 128), np.float32), 10.0)
    unguarded = len(find_peaks(heat, kernel_vox=3, threshold=0.052))
    assert unguarded > 5000 and max_fiber_picks(heat.shape) < 1000
    for extra in ([], ["--nms-kernel-vox", "3"]):
        out = tmp_path / f"picks{len(extra)}.csv"
        caplog.clear()
        with caplog.at_level("INFO"):
            assert cli.main(["localize", "--model", "m.pt", "--tomogram", str(mrc), "-o",
                             str(out), *extra]) == 0
        picks = pd.read_csv(out)
        assert len(picks) <= max_fiber_picks(heat.shape)
        text = caplog.text
        assert "did not learn the filaments" in text and "flat fibre heat map" in text
        if extra:  # NMS: a pick in every other box of noise, capped
            assert len(picks) == max_fiber_picks(heat.shape)
            assert picks["score"].min() > np.quantile(heat, 0.96)
            assert "more than filaments can give" in text
        else:
            assert len(picks) < 10 and "ridge centre-line points" in text


# --------------------------------------------------------------------------- ridge points


def _tube_heatmap(curves, shape_zyx, rng, *, level=0.7, noise=0.02):
    """A fibre heat map as a trained model gives it: a flat-topped tube around each dense
    curve (x, y, z), smooth along it, of ``level`` x exp(-(d / 3.8)^3) at d voxels from the
    centre line (the cross-section of the demo's microtubule heat maps: 1, 0.98, 0.88, 0.66,
    0.37, 0.14 of the centre at 0-5 voxels), plus voxel noise on a low background."""
    zyx = np.indices(shape_zyx).reshape(3, -1).T[:, ::-1].astype(np.float64)
    d = np.min([cKDTree(c).query(zyx)[0] for c in curves], axis=0).reshape(shape_zyx)
    heat = 0.03 + level * np.exp(-(d / 3.8) ** 3)
    return (heat + noise * rng.standard_normal(shape_zyx)).astype(np.float32)


def test_ridge_points_follow_the_whole_centre_line():
    """Two smooth bright tubes: the ridge points lie on their centre lines (beyond an end
    they run on into the tube's rounded cap), about one per voxel of length, and cover them
    end to end; NMS (box 3) on the same heat map keeps far fewer, one every few voxels."""
    from milopyp.localize.peaks import find_peaks, find_ridge_points

    rng = np.random.default_rng(3)
    curves = [segment((10, 20, 12), (110, 40, 18)), arc((64, 110), 55.0, 230, 310, 8)]
    heat = _tube_heatmap(curves, (28, 100, 128), rng)
    picks = find_ridge_points(heat, threshold=0.4, tomogram="TS_01")
    assert list(picks.columns) == ["tomogram", "x", "y", "z", "score"]
    assert picks["score"].is_monotonic_decreasing and picks["score"].min() > 0.4
    xyz = picks[["x", "y", "z"]].to_numpy(np.float64)
    near = [cKDTree(c).query(xyz) for c in curves]
    off = np.min([d for d, _ in near], axis=0)
    nearest = np.choose(np.argmin([d for d, _ in near], axis=0), [i for _, i in near])
    inside = (nearest > 0) & (nearest < len(curves[0]) - 1)  # not beyond an end
    assert off[inside].max() < 1.5 and off.max() < 4.0, (off[inside].max(), off.max())
    total = sum(length(c) for c in curves)
    assert 0.8 * total < len(picks) < 2.0 * total, (len(picks), total)
    for c in curves:  # covered end to end: no gap longer than 3 voxels
        assert cKDTree(xyz).query(c[::20])[0].max() < 3.0
    nms = find_peaks(heat, kernel_vox=3, threshold=0.4)
    assert len(nms) < 0.5 * len(picks), (len(nms), len(picks))
    traced = trace(xyz, link_distance_vox=LINK, scores=picks["score"].to_numpy())
    assert len(traced.fibers) == 2, traced.summary()
    assert sorted(match(traced.fibers, curves)) == [0, 1]
    for f, k in zip(traced.fibers, match(traced.fibers, curves)):
        assert cKDTree(curves[k]).query(f.points)[0].mean() < 1.0


def test_ridge_points_skip_voxel_noise_and_edges():
    """No ridge in voxel-scale noise above the threshold (the heat map is smoothed first);
    the outer voxel layer gives no picks; a 2-D or too thin array is handled."""
    from milopyp.errors import MilopypError
    from milopyp.localize.peaks import find_ridge_points

    rng = np.random.default_rng(4)
    noise = (0.1 + 0.05 * rng.standard_normal((20, 60, 60))).astype(np.float32)
    assert len(find_ridge_points(noise, threshold=0.2)) == 0
    assert len(find_ridge_points(noise, threshold=0.2, smooth_vox=0)) > 0  # unsmoothed: spikes
    tube = _tube_heatmap([segment((-10, 30, 10), (70, 30, 10))], (20, 60, 60), rng)
    picks = find_ridge_points(tube, threshold=0.4)
    assert picks["x"].between(1, 58).all() and len(picks) > 40
    assert len(find_ridge_points(np.ones((2, 9, 9), np.float32), threshold=0.5)) == 0
    with pytest.raises(MilopypError, match="3-D"):
        find_ridge_points(np.ones((9, 9), np.float32))


def test_calibrate_threshold_for_fibres_guards_and_warns(monkeypatch, caplog):
    """train-localize's calibration: a flat fibre heat map gets a threshold above its bulk,
    ``separated: False`` and one warning; a learned one 0.6 x the label median; a globular
    target with too few peaks to split gets 0.9 x the median."""
    import sys
    import types

    from milopyp.localize.calibrate import THRESHOLD_FRACTION, calibrate_threshold

    rng = np.random.default_rng(6)
    flat = _flat_heatmap((24, 80, 112), rng)
    learned = (0.02 + 0.01 * rng.random((24, 80, 112))).astype(np.float32)
    learned[10:14, 30:34, :] = 0.7
    labels = [np.column_stack([np.arange(5, 105, 5), np.full(20, 31.5), np.full(20, 11.5)])]
    heat = {}
    monkeypatch.setitem(sys.modules, "milopyp.localize.infer",
                        types.SimpleNamespace(predict_heatmap=lambda m, t, **k: heat["map"]))

    heat["map"] = flat
    with caplog.at_level("WARNING", logger="milopyp.localize.calibrate"):
        cal = calibrate_threshold(None, [flat], labels, 4.0, "cpu", shape="fiber")
    assert cal["separated"] is False and cal["n_labels"] == 20
    assert cal["threshold"] >= cal["bulk_level"] == pytest.approx(np.quantile(flat, 0.97),
                                                                  rel=1e-3)
    assert len(caplog.records) == 1 and "did not learn the filaments" in caplog.text

    heat["map"] = learned
    cal = calibrate_threshold(None, [learned], labels, 4.0, "cpu", shape="fiber")
    assert cal["separated"] is True and cal["threshold"] == pytest.approx(0.6 * 0.7)
    assert "profile" not in cal  # no profile check for fibres
    assert "spectrum" not in cal  # nor contrast matching (not measured on filaments)
    cal = calibrate_threshold(None, [learned], labels, 4.0, "cpu")
    assert set(cal) == {"threshold", "label_peak_median", "n_labels", "rule", "flips",
                        "profile", "label_heat_median", "background_peak_median",
                        "separated", "spectrum"}
    assert cal["separated"] is True
    # one ridge of equal peaks gives nothing to split: the label rule (without the profile
    # check, whose weights would make the ridge's peaks unequal)
    cal = calibrate_threshold(None, [learned], labels, 4.0, "cpu", profile_check=False)
    assert cal["threshold"] == pytest.approx(THRESHOLD_FRACTION * 0.7)
