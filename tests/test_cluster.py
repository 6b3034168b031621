"""Over-clustering, UMAP projection, embedding colours and the `milopyp cluster` command."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pandas as pd
import pytest

from milopyp.cluster import (
    effective_k,
    normalise_embedding_rgb,
    overcluster,
    relabel_by_size,
    umap_project,
)
from milopyp.errors import MilopypError


def blobs(sizes=(150, 100, 50), dim=16, spread=1.0, sep=12.0, seed=0):
    """Well-separated Gaussian blobs: (x (N, dim) float32, truth (N,) int)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim))
    centres *= sep / np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[truth] + spread * rng.normal(size=(len(truth), dim))
    perm = rng.permutation(len(truth))  # interleave so order cannot give the answer
    return x[perm].astype(np.float32), truth[perm]


def test_overcluster_recovers_blobs_with_purity_one():
    x, truth = blobs()
    labels, centre_labels = overcluster(x, k=30, n_classes=3, seed=1)
    assert labels.shape == (300,)
    table = pd.crosstab(labels, truth)
    assert table.shape == (3, 3)
    # purity 1: every cluster holds one true blob only, and every blob lies in one cluster
    assert ((table > 0).sum(axis=1) == 1).all()
    assert ((table > 0).sum(axis=0) == 1).all()
    # labels sorted by decreasing size: the 150-point blob is cluster 0, the 50-point one 2
    assert np.bincount(labels).tolist() == [150, 100, 50]
    assert set(labels[truth == 0]) == {0} and set(labels[truth == 2]) == {2}
    assert centre_labels.shape == (30,)
    assert set(centre_labels.tolist()) == {0, 1, 2}


def test_overcluster_is_deterministic_for_a_seed():
    x, _ = blobs(sizes=(80, 70, 60, 50), dim=8, spread=3.0, sep=6.0, seed=3)
    a = overcluster(x, k=40, n_classes=6, seed=5)
    b = overcluster(x, k=40, n_classes=6, seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    counts = np.bincount(a[0])
    assert (np.diff(counts) <= 0).all(), counts  # sorted by size
    assert a[0].max() + 1 <= 6


def test_overcluster_clips_k_on_small_inputs(caplog):
    x, truth = blobs(sizes=(20, 20), dim=4, seed=2)
    assert effective_k(40, 200, 2) == 10
    with caplog.at_level("INFO", logger="milopyp.cluster"):
        labels, centre_labels = overcluster(x, k=200, n_classes=2, seed=0)
    assert "clipped from 200 to 10" in caplog.text
    assert len(centre_labels) == 10
    assert sorted(np.bincount(labels).tolist()) == [20, 20]
    assert len(set(zip(labels, truth))) == 2


def test_overcluster_rejects_bad_input():
    with pytest.raises(MilopypError, match="cannot make 5 classes"):
        overcluster(np.zeros((3, 4), np.float32), k=10, n_classes=5, seed=0)
    with pytest.raises(MilopypError, match="expected a 2-D array"):
        overcluster(np.zeros(10, np.float32), k=2, n_classes=2, seed=0)
    x = np.ones((20, 3), np.float32)
    x[4, 1] = np.nan
    with pytest.raises(MilopypError, match="1 of 20 rows hold NaN"):
        overcluster(x, k=4, n_classes=2, seed=0)


def test_relabel_by_size_orders_by_count_then_label():
    out = relabel_by_size(np.array([7, 3, 3, 9, 9, 9, 7, 5]))
    # counts: 9 -> 3, 3 -> 2, 7 -> 2 (tie: smaller old label first), 5 -> 1
    assert out.tolist() == [2, 1, 1, 0, 0, 0, 2, 3]


def test_normalise_embedding_rgb():
    rng = np.random.default_rng(0)
    e3 = rng.normal(size=(500, 3)) * [1.0, 10.0, 100.0]
    c3 = normalise_embedding_rgb(e3)
    assert c3.shape == (500, 3) and c3.dtype == np.float32
    assert c3.min() == 0.0 and c3.max() == 1.0
    # each axis becomes one channel, monotonically
    order = np.argsort(e3[:, 1])
    assert (np.diff(c3[order, 1]) >= 0).all()
    c2 = normalise_embedding_rgb(e3[:, :2])
    assert c2.shape == (500, 3)
    np.testing.assert_allclose(c2[:, 2], 1 - 0.5 * (c2[:, 0] + c2[:, 1]), atol=1e-6)
    with pytest.raises(MilopypError, match=r"\(N, 2\) or \(N, 3\)"):
        normalise_embedding_rgb(np.zeros((5, 4)))


@pytest.mark.slow  # import umap + numba compile: ~10 s warm, 20-40 s in a fresh environment
def test_umap_project_small_input_is_seeded():
    x, truth = blobs(sizes=(70, 70, 60), dim=16, seed=4)
    a = umap_project(x, n_components=2, n_neighbors=40, min_dist=0.1, seed=7)
    b = umap_project(x, n_components=2, n_neighbors=40, min_dist=0.1, seed=7)
    assert a.shape == (200, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # the blobs stay apart in 2D: each point's nearest other point is from its own blob
    d = np.linalg.norm(a[:, None] - a[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert (truth[d.argmin(axis=1)] == truth).mean() > 0.98


# --------------------------------------------------------------------------- command


def fake_umap(embeddings, *, n_components, n_neighbors=40, min_dist=0.1, seed, **_):
    """Stand-in for UMAP in command tests (UMAP itself is tested above): PCA."""
    x = np.asarray(embeddings, np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return (x @ vt[:n_components].T).astype(np.float32)


def write_dataset(tmp_path, *, n_per_tomo=(40, 35), shape_zyx=(24, 40, 56), size=16, seed=0):
    """Two tomograms' patch + embedding files (and MRC tomograms) with 3 embedding groups."""
    rng = np.random.default_rng(seed)
    paths = {"emb": [], "patches": [], "tomos": []}
    centres = rng.normal(size=(3, 32)) * 10
    for t, n in enumerate(n_per_tomo):
        name = f"tomo_{t:03d}"
        xyz = np.column_stack(
            [
                rng.integers(4, shape_zyx[2] - 4, n),
                rng.integers(4, shape_zyx[1] - 4, n),
                rng.integers(8, shape_zyx[0] - 8, n),
            ]
        ).astype(np.float64)
        group = rng.integers(0, 3, n)
        emb = (centres[group] + rng.normal(size=(n, 32))).astype(np.float32)
        patches = rng.normal(size=(n, 2, size, size)).astype(np.float32)
        score = rng.random(n)
        p = tmp_path / "patches" / f"{name}.npz"
        e = tmp_path / "embeddings" / f"{name}.npz"
        p.parent.mkdir(exist_ok=True)
        e.parent.mkdir(exist_ok=True)
        np.savez(
            p,
            patches=patches,
            channels=np.array(["P_t", "P_s"]),
            xyz=xyz,
            score=score,
            tomogram=np.array(name),
            voxel_size_a=np.array(10.0),
        )
        np.savez(
            e,
            embeddings=emb,
            xyz=xyz,
            score=score,
            tomogram=np.array(name),
            voxel_size_a=np.array(10.0),
        )
        tomo_path = tmp_path / "tomograms" / f"{name}.mrc"
        tomo_path.parent.mkdir(exist_ok=True)
        with mrcfile.new(tomo_path) as mrc:
            mrc.set_data(rng.normal(size=shape_zyx).astype(np.float32))
            mrc.voxel_size = 10.0
        paths["emb"].append(str(e))
        paths["patches"].append(str(p))
        paths["tomos"].append(str(tomo_path))
    return paths


def test_cluster_command_writes_all_outputs(tmp_path, monkeypatch):
    from milopyp import cli

    monkeypatch.setattr("milopyp.cluster.umap_project", fake_umap)
    paths = write_dataset(tmp_path)
    out = tmp_path / "explore"
    rc = cli.main(
        [
            "cluster",
            "--embeddings",
            *paths["emb"],
            "--patches",
            *paths["patches"][::-1],
            "-o",
            str(out),
            "--k",
            "20",
            "--classes",
            "3",
            "--seed",
            "3",
            "--tomograms",
            paths["tomos"][0],
            "--particle-diameter",
            "60",
        ]
    )
    assert rc == 0
    pts = pd.read_csv(out / "points.csv")
    assert list(pts.columns) == [
        "point_id",
        "tomogram",
        "x",
        "y",
        "z",
        "score",
        "cluster",
        "umap_x",
        "umap_y",
        "umap3_x",
        "umap3_y",
        "umap3_z",
    ]
    assert len(pts) == 75 and pts["point_id"].tolist() == list(range(75))
    assert pts["tomogram"].tolist() == ["tomo_000"] * 40 + ["tomo_001"] * 35
    with np.load(paths["emb"][1]) as f:
        np.testing.assert_array_equal(pts[["x", "y", "z"]].to_numpy()[40:], f["xyz"])
    assert sorted(pts["cluster"].unique()) == [0, 1, 2]
    for name in (
        "grid.png",
        "gallery.png",
        "explorer.html",
        "cluster_info.json",
        "colormaps/tomo_000.png",
        "colormaps/tomo_000_clusters.mrc",
    ):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "colormaps" / "tomo_001.png").exists()  # no tomogram given for it
    with mrcfile.open(out / "colormaps" / "tomo_000_clusters.mrc") as mrc:
        vol = mrc.data.copy()
        assert vol.shape == (24, 40, 56)
        assert float(mrc.voxel_size.x) == pytest.approx(10.0)
    # radius 60 / 2 / 10 = 3 voxels; later spheres overwrite earlier ones, so check the centre
    # of the last-drawn candidate
    last = pts[pts.tomogram == "tomo_000"].iloc[-1]
    assert vol[int(last.z), int(last.y), int(last.x)] == last.cluster + 1
    assert set(np.unique(vol)) <= {0.0, 1.0, 2.0, 3.0}
    info = json.loads((out / "cluster_info.json").read_text())
    assert info["k_used"] == 18 and info["seed"] == 3 and info["colormaps"] == ["tomo_000"]
    html = (out / "explorer.html").read_text()
    assert 'id="save-selection"' in html and "http://" not in html and "https://" not in html


def test_cluster_command_errors(tmp_path, monkeypatch, capsys):
    import argparse

    from milopyp import cli
    from milopyp.commands import cluster as cmd

    monkeypatch.setattr("milopyp.cluster.umap_project", fake_umap)
    paths = write_dataset(tmp_path, n_per_tomo=(4, 3))
    out = tmp_path / "explore"
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args(
        [
            "--embeddings",
            *paths["emb"],
            "--patches",
            *paths["patches"],
            "-o",
            str(out),
            "--classes",
            "3",
        ]
    )
    with pytest.raises(MilopypError, match="7 candidates in all"):
        cmd.main(args)
    # no patch file for tomo_000
    assert (
        cli.main(
            [
                "cluster",
                "--embeddings",
                paths["emb"][0],
                "--patches",
                paths["patches"][1],
                "-o",
                str(out),
            ]
        )
        == 2
    )
    assert "no patch file for tomogram 'tomo_000'" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "cluster",
                "--embeddings",
                str(tmp_path / "nope.npz"),
                "--patches",
                paths["patches"][0],
                "-o",
                str(out),
            ]
        )
        == 2
    )
    assert "nope.npz: file not found" in capsys.readouterr().err
    assert not (out / "points.csv").exists()


def _balls_dataset(tmp_path, *, seed=0):
    """Two tomograms, each with 8 solid and 8 hollow balls (radius 4 voxels) on a grid, and
    embeddings that do not tell them apart (noise)."""
    rng = np.random.default_rng(seed)
    shape = (32, 80, 80)
    z, y, x = np.indices(shape)
    paths = {"emb": [], "patches": [], "tomos": []}
    kinds = []
    for t in range(2):
        name = f"tomo_{t:03d}"
        vol = np.zeros(shape, np.float32)
        xyz = np.array([[cx, cy, 16] for cx in (16, 32, 48, 64) for cy in (16, 32, 48, 64)],
                       dtype=np.float64)
        kind = rng.permutation(np.repeat([0, 1], 8))
        for (cx, cy, cz), hollow in zip(xyz, kind):
            r2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
            vol[(r2 <= 16) & ~(bool(hollow) & (r2 <= 6.25))] = 1.0
        vol += 0.3 * rng.standard_normal(shape).astype(np.float32)
        emb = rng.normal(size=(len(xyz), 16))
        common = {"xyz": xyz, "score": rng.random(len(xyz)), "tomogram": np.array(name),
                  "voxel_size_a": np.array(10.0)}
        for key, data in (("patches", {"patches": rng.normal(size=(len(xyz), 1, 16, 16))
                                       .astype(np.float32), "channels": np.array(["P_s"])}),
                          ("emb", {"embeddings": emb.astype(np.float32)})):
            folder = tmp_path / key
            folder.mkdir(exist_ok=True)
            np.savez(folder / f"{name}.npz", **data, **common)
            paths[key].append(str(folder / f"{name}.npz"))
        tomo = tmp_path / f"{name}.mrc"
        with mrcfile.new(tomo) as mrc:
            mrc.set_data(vol)
            mrc.voxel_size = 10.0
        paths["tomos"].append(str(tomo))
        kinds.append(kind)
    return paths, np.concatenate(kinds)


def test_profiles_beside_embeddings_separate_what_the_embeddings_do_not(tmp_path, monkeypatch):
    """``milopyp cluster`` with the tomograms and the particle diameter clusters on the
    candidates' radial profiles as well: solid and hollow balls whose embeddings are alike
    fall into two pure clusters; with ``--profile-weight 0`` they do not."""
    from milopyp import cli

    monkeypatch.setattr("milopyp.cluster.umap_project", fake_umap)
    paths, kind = _balls_dataset(tmp_path)
    purity = {}
    for weight in ("4", "0"):
        out = tmp_path / f"explore_{weight}"
        assert cli.main(["cluster", "--embeddings", *paths["emb"], "--patches",
                         *paths["patches"], "--tomograms", *paths["tomos"], "-o", str(out),
                         "--k", "8", "--classes", "2", "--particle-diameter-a", "80",
                         "--profile-weight", weight]) == 0
        clusters = pd.read_csv(out / "points.csv")["cluster"].to_numpy()
        table = pd.crosstab(clusters, kind).to_numpy()
        purity[weight] = table.max(axis=1).sum() / len(kind)
        info = json.loads((out / "cluster_info.json").read_text())
        assert info["profile_weight"] == float(weight)
    assert purity["4"] == 1.0
    assert purity["0"] < 0.8


def test_with_profiles_scales_and_weighs():
    from milopyp.cluster import with_profiles

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)) * 5.0
    prof = rng.normal(size=(50, 3)) * [1.0, 10.0, 0.1] + 7.0
    alone = with_profiles(emb, prof, 0.0)
    assert alone.shape == (50, 8)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    np.testing.assert_allclose(alone, unit / unit.std(axis=0).mean(), rtol=1e-5)
    both = with_profiles(emb, prof, 2.0)
    assert both.shape == (50, 11)
    np.testing.assert_allclose(both[:, :8], alone, rtol=1e-6)
    np.testing.assert_allclose(both[:, 8:].std(axis=0), 2.0, rtol=1e-5)  # every shell alike
    np.testing.assert_allclose(both[:, 8:].mean(axis=0), 0.0, atol=1e-5)
    with pytest.raises(MilopypError, match="radial profiles"):
        with_profiles(emb, prof[:10], 1.0)
