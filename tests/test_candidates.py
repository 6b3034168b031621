"""Tests of milopyp.candidates and `milopyp candidates` (tiny non-cubic volumes)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist

from milopyp.candidates import (
    auto_bin_factor,
    bin_volume,
    dog_response,
    dog_sigmas,
    find_candidates,
    greedy_nms,
    local_maxima,
)
from milopyp.errors import MilopypError

SHAPE = (40, 64, 88)  # z, y, x
BLOB_SIGMA = 2.0
# A Gaussian blob of std s answers best at DoG sigma s; the schedule centres on d / (2 sqrt 3).
DIAMETER = 2 * math.sqrt(3) * BLOB_SIGMA
# x, y, z (voxels), amplitude: well inside, mutually > 12 voxels apart, different strengths
BLOBS = np.array(
    [
        [20, 15, 12, 1.0],
        [60, 20, 28, 0.9],
        [40, 45, 20, 0.8],
        [70, 50, 10, 0.7],
        [15, 50, 30, 0.6],
        [45, 12, 30, 0.5],
    ],
    dtype=float,
)


def blob_volume(blobs=BLOBS, shape=SHAPE, sigma=BLOB_SIGMA, noise=0.02, seed=0, sign=1.0):
    z, y, x = np.indices(shape, dtype=np.float32)
    vol = np.zeros(shape, np.float32)
    for bx, by, bz, amp in blobs:
        r2 = (x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2
        vol += sign * amp * np.exp(-r2 / (2 * sigma**2)).astype(np.float32)
    rng = np.random.default_rng(seed)
    return vol + noise * rng.standard_normal(shape).astype(np.float32)


def test_sigma_schedule():
    s = dog_sigmas(30.0, 5)
    opt = 15.0 / math.sqrt(3)
    assert s.shape == (5,)
    np.testing.assert_allclose([s[0], s[-1]], [0.5 * opt, 1.5 * opt])
    ratios = s[1:] / s[:-1]
    np.testing.assert_allclose(ratios, ratios[0])  # geometric
    with pytest.raises(MilopypError, match="diameter"):
        dog_sigmas(0.0)
    with pytest.raises(MilopypError, match="2 levels"):
        dog_sigmas(10.0, 1)
    assert auto_bin_factor([0.8, 2.0]) == 1
    assert auto_bin_factor([3.2, 9.0]) == 3
    assert auto_bin_factor([30.0, 90.0]) == 4


def test_dog_finds_blobs_at_known_positions():
    vol = blob_volume()
    df = find_candidates(vol, particle_diameter_vox=DIAMETER)
    assert list(df.columns) == ["x", "y", "z", "score"]
    assert df["x"].dtype == np.int64
    assert np.all(np.diff(df["score"].to_numpy()) <= 0)  # sorted by score, descending
    picks = df[["x", "y", "z"]].to_numpy(float)
    dist, idx = cKDTree(picks).query(BLOBS[:, :3])
    assert np.all(dist <= 1.5), dist
    # the blobs are the strongest candidates, in the order of their amplitude
    np.testing.assert_array_equal(idx, np.arange(len(BLOBS)))


def test_binned_pyramid_keeps_positions():
    # large blobs, so the automatic bin factor is > 1
    blobs = BLOBS[:3].copy()
    # off-grid centres: the nearest voxel is 0.47 voxels away from each
    blobs[:, :3] = np.array([[22, 22, 14], [66, 22, 26], [44, 46, 20]]) + [0.3, 0.7, 0.2]
    sigma = 4.0
    vol = blob_volume(blobs, sigma=sigma)
    d = 2 * math.sqrt(3) * sigma
    assert auto_bin_factor(dog_sigmas(d)) == 2
    for b in (None, 1, 2):
        df = find_candidates(vol, particle_diameter_vox=d, bin_factor=b, exclude_border_vox=0)
        dist, idx = cKDTree(df[["x", "y", "z"]].to_numpy(float)).query(blobs[:, :3])
        assert np.all(dist <= 0.6), (b, dist)  # the nearest voxel, binned or not
        np.testing.assert_array_equal(idx, [0, 1, 2])


def test_bin_volume_block_mean():
    vol = np.arange(np.prod((5, 6, 7)), dtype=np.float32).reshape(5, 6, 7)
    b = bin_volume(vol, 2)
    assert b.shape == (2, 3, 3)
    np.testing.assert_allclose(b[1, 2, 0], vol[2:4, 4:6, 0:2].mean())
    assert bin_volume(vol, 1) is not None and bin_volume(vol, 1).shape == vol.shape


def test_dog_response_polarity():
    bright = blob_volume(noise=0.0)
    r_bright = dog_response(bright, dog_sigmas(DIAMETER))
    r_dark = dog_response(-bright, dog_sigmas(DIAMETER), polarity="dark")
    np.testing.assert_allclose(r_bright, r_dark, atol=1e-6)
    x, y, z = BLOBS[0, :3].astype(int)
    assert r_bright[z, y, x] == pytest.approx(r_bright.max())
    # dark blobs are not found with the default (bright) polarity, found with "dark"
    dark = blob_volume(sign=-1.0)
    wrong = find_candidates(dark, particle_diameter_vox=DIAMETER)
    dist, _ = cKDTree(wrong[["x", "y", "z"]].to_numpy(float)).query(BLOBS[:, :3])
    assert np.all(dist > 2.0)  # only the rings around the dark blobs respond
    df = find_candidates(dark, particle_diameter_vox=DIAMETER, polarity="dark")
    dist, _ = cKDTree(df[["x", "y", "z"]].to_numpy(float)).query(BLOBS[:, :3])
    assert np.all(dist <= 1.5)


def _peak_volume():
    """Score volume with a strong peak A, a weaker B 3 voxels away and a far weak C."""
    shape = (20, 30, 40)
    z, y, x = np.indices(shape, dtype=np.float32)
    vol = np.zeros(shape, np.float32)
    for (px, py, pz), amp in [((10, 10, 10), 1.0), ((13, 10, 10), 0.6), ((30, 20, 8), 0.5)]:
        vol += amp * np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / 1.0)
    return vol


def test_nms_greedy_order():
    vol = _peak_volume()
    xyz, scores = greedy_nms(vol, radius_vox=5.0, threshold=0.1)
    assert xyz.tolist() == [[10, 10, 10], [30, 20, 8]]  # B suppressed by the stronger A
    assert scores[0] > scores[1]
    xyz, _ = greedy_nms(vol, radius_vox=2.0, threshold=0.1)
    assert xyz.tolist() == [[10, 10, 10], [13, 10, 10], [30, 20, 8]]  # B kept, score order
    xyz, _ = greedy_nms(vol, radius_vox=2.0, threshold=0.55)
    assert xyz.tolist() == [[10, 10, 10], [13, 10, 10]]  # C below the threshold
    xyz, _ = greedy_nms(vol, radius_vox=2.0, threshold=0.1, max_candidates=1)
    assert xyz.tolist() == [[10, 10, 10]]


def _reference_nms(score, radius, threshold):
    """Slow, obvious greedy NMS over the 3x3x3 local maxima."""
    zyx, s = local_maxima(score, threshold)
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))
    kept = []
    for i in order:
        p = zyx[i].astype(float)
        if all(np.linalg.norm(p - zyx[k]) > radius for k in kept):
            kept.append(i)
    return zyx[kept][:, ::-1]


@pytest.mark.parametrize("radius", [0.0, 2.5, 4.0, 7.5])
def test_nms_radius_respected_and_matches_reference(radius):
    rng = np.random.default_rng(3)
    from scipy import ndimage

    score = ndimage.gaussian_filter(rng.standard_normal((18, 26, 34)), 1.0).astype(np.float32)
    xyz, scores = greedy_nms(score, radius_vox=radius, threshold=0.0)
    assert len(xyz) > 5
    assert np.all(scores > 0.0)
    if radius > 0:
        assert pdist(xyz.astype(float)).min() > radius
    np.testing.assert_array_equal(xyz, _reference_nms(score, radius, 0.0))


def test_threshold_semantics():
    vol = blob_volume(noise=0.05, seed=4)
    sig = dog_sigmas(DIAMETER)
    resp = dog_response(vol, sig)
    results = {}
    for k in (0.0, 0.5, 2.0):
        df = find_candidates(vol, particle_diameter_vox=DIAMETER, threshold_std=k,
                             exclude_border_vox=0, bin_factor=1, centre=False)
        thr = float(resp.mean()) + k * float(resp.std())
        assert df["score"].min() > thr - 1e-6
        xyz, _ = greedy_nms(resp, radius_vox=DIAMETER / 2, threshold=thr)
        np.testing.assert_array_equal(df[["x", "y", "z"]].to_numpy(), xyz)
        results[k] = len(df)
    assert results[0.0] > results[0.5] > results[2.0] >= len(BLOBS)


def test_border_and_cap():
    blobs = np.vstack([BLOBS, [[1, 30, 20, 1.2]]])  # strongest blob 1 voxel from the x=0 face
    vol = blob_volume(blobs)
    default = find_candidates(vol, particle_diameter_vox=DIAMETER)
    assert not np.any(default["x"] < DIAMETER / 4)
    near = find_candidates(vol, particle_diameter_vox=DIAMETER, exclude_border_vox=0)
    # (the reflecting boundary pulls the peak towards the face by up to a voxel)
    assert np.linalg.norm(near.iloc[0][["x", "y", "z"]].to_numpy(float) - [1, 30, 20]) <= 1.5
    # excluded, the border blob leaves no shoulder behind: the strongest picks are the others
    top = default.iloc[: len(BLOBS)][["x", "y", "z"]].to_numpy(float)
    assert np.all(np.linalg.norm(top - BLOBS[:, :3], axis=1) <= 1.5)
    capped = find_candidates(vol, particle_diameter_vox=DIAMETER, max_candidates=3)
    pd.testing.assert_frame_equal(capped, default.iloc[:3])


def test_rejects_bad_input():
    with pytest.raises(MilopypError, match="3-D"):
        find_candidates(np.zeros((10, 10), np.float32), particle_diameter_vox=4)
    with pytest.raises(MilopypError, match="max_candidates"):
        find_candidates(blob_volume(), particle_diameter_vox=DIAMETER, max_candidates=0)


def _candidates_args(**kw) -> argparse.Namespace:
    from milopyp.commands import candidates as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    argv = []
    for key, value in kw.items():
        flag = "-o" if key == "output" else "--" + key.replace("_", "-")
        argv += [flag, str(value)]
    return parser.parse_args(argv)


def test_command_writes_table(tmp_path):
    from milopyp.commands import candidates as cmd
    from milopyp.io.coords import read_coordinates
    from milopyp.io.mrc import write_tomogram

    src = tmp_path / "tomo_003.mrc"
    write_tomogram(src, blob_volume(), 10.0)
    out = tmp_path / "candidates" / "tomo_003.csv"
    cmd.main(_candidates_args(tomogram=src, output=out, particle_diameter=DIAMETER * 10))
    df = read_coordinates(out)
    assert list(df.columns) == ["tomogram", "x", "y", "z", "score"]
    assert set(df["tomogram"]) == {"tomo_003"}
    dist, _ = cKDTree(df[["x", "y", "z"]].to_numpy()).query(BLOBS[:, :3])
    assert np.all(dist <= 1.5)
    # --voxel-size overrides the header, --tomogram-name the stem, --nms-radius is in Å
    out2 = tmp_path / "c2.csv"
    cmd.main(_candidates_args(tomogram=src, output=out2, particle_diameter=DIAMETER * 5,
                              voxel_size=5, nms_radius=60, tomogram_name="other"))
    df2 = read_coordinates(out2)
    assert set(df2["tomogram"]) == {"other"}
    assert pdist(df2[["x", "y", "z"]].to_numpy()).min() > 12


def test_command_empty_candidates_error(tmp_path):
    from milopyp.commands import candidates as cmd
    from milopyp.io.mrc import write_tomogram

    src = tmp_path / "flat.mrc"
    write_tomogram(src, blob_volume(), 10.0)
    out = tmp_path / "c.csv"
    args = _candidates_args(tomogram=src, output=out, particle_diameter=DIAMETER * 10,
                            threshold_std=100)
    with pytest.raises(MilopypError, match=r"flat\.mrc.*lower --threshold-std.*voxel size"):
        cmd.main(args)
    assert not out.exists()
    with pytest.raises(MilopypError, match="particle-diameter"):
        cmd.main(_candidates_args(tomogram=src, output=out, particle_diameter=5))


def test_ribosome_recall_on_simulated_tomogram():
    """On `demo` simulations the DoG candidates catch the ribosomes, and rank them high."""
    from milopyp.evaluate import evaluate
    from milopyp.preprocess import preprocess
    from milopyp.simulate import simulate_tomogram

    voxel = 12.0
    diameter_vox = 260.0 / voxel
    picks, truths = [], []
    for seed in (0, 1):
        sim = simulate_tomogram(shape_zyx=(48, 160, 192), voxel_size_a=voxel, seed=seed,
                                preset="demo", name=f"t{seed}")
        pre = preprocess(sim.tomogram, sigma_vox=1.0)
        df = find_candidates(pre, particle_diameter_vox=diameter_vox)
        df.insert(0, "tomogram", f"t{seed}")
        ribo = sim.truth[sim.truth["species"] == "ribosome"]
        picks.append(df)
        truths.append(ribo)
        # the strongest 2x(number of ribosomes) candidates already hold most ribosomes
        top = evaluate(df.iloc[: 2 * len(ribo)], ribo, radius_vox=0.5 * diameter_vox)
        assert top.iloc[-1]["recall"] >= 0.8, top
    metrics = evaluate(pd.concat(picks), pd.concat(truths), radius_vox=0.5 * diameter_vox)
    overall = metrics.iloc[-1]
    assert overall["n_true"] >= 20
    assert overall["recall"] >= 0.9, metrics
    assert overall["ap"] >= 0.8, metrics


def test_candidates_centred_on_particles_with_a_dense_part():
    """A particle whose density is uneven (a ball with a denser lobe off its centre, as a
    ribosome's subunits) draws the DoG's finest levels to the lobe; centring at the
    particle's scale brings the candidate back to the particle's centre."""
    rng = np.random.default_rng(0)
    shape = (48, 128, 128)
    z, y, x = np.indices(shape)
    vol = np.zeros(shape, np.float32)
    centres = []
    for cx in range(20, 120, 25):
        for cy in range(20, 120, 25):
            p = np.array([cx, cy, 24]) + rng.uniform(-2, 2, 3)
            vol[(x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2 <= 9.0**2] += 0.5
            a = rng.normal(size=3)
            q = p + 5.5 * a / np.linalg.norm(a)
            vol[(x - q[0]) ** 2 + (y - q[1]) ** 2 + (z - q[2]) ** 2 <= 3.5**2] += 0.5
            centres.append(p)
    vol += 0.3 * rng.standard_normal(shape).astype(np.float32)
    offsets = {}
    for centre in (False, True):
        df = find_candidates(vol, particle_diameter_vox=18, centre=centre)
        assert len(df) == len(centres)
        offsets[centre], _ = cKDTree(df[["x", "y", "z"]].to_numpy(float)).query(centres)
    assert np.median(offsets[False]) > 4.0  # the lobe
    assert np.median(offsets[True]) < 2.0 and offsets[True].max() < 3.0
