"""Tests of milopyp.selection and `milopyp import-selection` on a small synthetic points.csv."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from milopyp import selection as sel
from milopyp.commands import import_selection as cmd
from milopyp.errors import MilopypError
from milopyp.io.coords import read_coordinates
from milopyp.io.mrc import write_tomogram

TOMOS = ("tomo_a", "tomo_b", "tomo_c")
CLUSTERS = (2, 5, 7, 11)  # non-trivial cluster ids
SHAPE_ZYX = (24, 40, 56)  # non-cubic
# cluster c sits around CENTRE[c] (x, y, z voxels) in every tomogram, 3 points each
CENTRE = {2: (8.0, 8.0, 6.0), 5: (40.0, 8.0, 6.0), 7: (8.0, 30.0, 16.0), 11: (44.0, 30.0, 18.0)}
OFFSETS = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.5, 1.0]])


def make_points() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for t in TOMOS:
        for c in CLUSTERS:
            for off in OFFSETS:
                x, y, z = np.asarray(CENTRE[c]) + off
                rows.append({"tomogram": t, "x": x, "y": y, "z": z, "cluster": c})
    df = pd.DataFrame(rows)
    df.insert(0, "point_id", np.arange(len(df)))
    df.insert(5, "score", rng.permutation(len(df)).astype(float) / len(df))
    for c in ("umap_x", "umap_y", "umap3_x", "umap3_y", "umap3_z"):
        df[c] = rng.normal(size=len(df)).round(3)
    return df


@pytest.fixture
def points_csv(tmp_path) -> Path:
    path = tmp_path / "explore" / "points.csv"
    path.parent.mkdir()
    make_points().to_csv(path, index=False)
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    return parser.parse_args(argv)


def run(tmp_path, selection, points=None, extra=(), tomograms=TOMOS) -> Path:
    out = tmp_path / "labels"
    argv = ["--selection", str(selection), "--tomograms", *tomograms, "-o", str(out)]
    if points is not None:
        argv += ["--points", str(points)]
    cmd.main(parse([*argv, *extra]))
    return out


def read_labels(out: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p, dtype={"tomogram": str}) for p in sorted(out.glob("*.csv"))]
    return pd.concat(frames, ignore_index=True)


def summary(out: Path) -> dict:
    return json.loads((out / "selection.json").read_text())


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def expect_error(match: str, tmp_path, selection, **kw) -> str:
    with pytest.raises(MilopypError, match=match) as err:
        run(tmp_path, selection, **kw)
    message = str(err.value)
    assert str(selection) in message or Path(str(selection)).name in message
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- formats


def test_explorer_selection_is_union_of_clusters_and_points(tmp_path, points_csv):
    pts = make_points()
    extra_ids = pts.loc[(pts.cluster == 7) & (pts.tomogram == "tomo_b"), "point_id"].tolist()[:2]
    overlap = int(pts.loc[pts.cluster == 5, "point_id"].iloc[0])  # already in cluster 5
    doc = {"clusters": [5], "points": [*extra_ids, overlap], "source": "milopyp explorer",
           "n_points": 11}
    s = write(tmp_path / "selection.json", json.dumps(doc))
    out = run(tmp_path, s, points_csv)
    labels = read_labels(out)
    assert len(labels) == 9 + 2  # 3 per tomogram of cluster 5, plus the two points; no duplicate
    assert sorted(labels["cluster"].unique()) == [5, 7]
    assert (labels["cluster"] == 7).sum() == 2
    assert set(labels.loc[labels.cluster == 7, "tomogram"]) == {"tomo_b"}
    assert list(labels.columns) == ["tomogram", "x", "y", "z", "score", "cluster"]
    assert sorted(p.name for p in out.iterdir()) == [
        "selection.json", "tomo_a.csv", "tomo_b.csv", "tomo_c.csv"]
    info = summary(out)
    assert info["format"] == "explorer"
    assert info["clusters"] == [5]
    assert info["label_counts"] == {"tomo_a": 3, "tomo_b": 5, "tomo_c": 3}
    assert info["files"] == ["tomo_a.csv", "tomo_b.csv", "tomo_c.csv"]
    # the label files read back as point tables with the right coordinates
    back = read_coordinates(out / "tomo_b.csv")
    want = pts[(pts.tomogram == "tomo_b") & ((pts.cluster == 5) | pts.point_id.isin(extra_ids))]
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), want[["x", "y", "z"]].to_numpy())


def test_yaml_clusters_and_detection_by_content(tmp_path, points_csv):
    s = write(tmp_path / "sel.yaml", "# my target\nclusters: [2, 11]\n")
    out = run(tmp_path, s, points_csv)
    labels = read_labels(out)
    assert sorted(labels["cluster"].unique()) == [2, 11] and len(labels) == 18
    assert summary(out)["format"] == "clusters"
    # a JSON mapping in a file with a table suffix is still a selection document
    s2 = write(tmp_path / "other" / "sel.txt", '{"clusters": [7], "points": []}')
    out = run(tmp_path, s2, points_csv)
    assert set(read_labels(out)["cluster"]) == {7}
    assert summary(out)["format"] == "clusters"


def test_seeds_choose_clusters_by_vote(tmp_path, points_csv, caplog):
    seeds = [
        {"tomogram": "tomo_a", "x": 8.4, "y": 30.2, "z": 16.3},  # cluster 7
        {"tomogram": "tomo_c", "x": 9.0, "y": 31.0, "z": 17.0},  # cluster 7
        {"tomogram": "tomo_b", "x": 44.0, "y": 29.0, "z": 18.0},  # cluster 11
    ]
    s = write(tmp_path / "seeds.json", json.dumps({"seeds": seeds}))
    with caplog.at_level(logging.INFO):
        out = run(tmp_path, s, points_csv)
    labels = read_labels(out)
    assert sorted(labels["cluster"].unique()) == [7, 11]
    assert len(labels) == 18  # all points of both clusters, in all tomograms
    info = summary(out)
    assert info["format"] == "seeds"
    assert info["clusters"] == [7, 11]
    assert info["seed_votes"] == {"7": 2, "11": 1}
    assert "cluster 7 chosen by 2 of 3 seed(s)" in caplog.text


def test_seeds_from_table_relative_to_selection_file(tmp_path, points_csv):
    folder = tmp_path / "user"
    write(folder / "clicks" / "tomo_b.txt", "40.5 8.2 6.1\n41 9 6\n")  # cet_pick, cluster 5
    s = write(folder / "sel.yaml", "seeds: clicks/tomo_b.txt\n")
    out = run(tmp_path, s, points_csv)
    assert set(read_labels(out)["cluster"]) == {5}
    assert summary(out)["seed_votes"] == {"5": 2}


def test_seed_radius_error_names_the_seed(tmp_path, points_csv):
    s = write(tmp_path / "far.yaml", "seeds:\n  - {tomogram: tomo_a, x: 25, y: 20, z: 12}\n")
    msg = expect_error("seed 0", tmp_path, s, points=points_csv)
    assert "tomo_a" in msg and "--seed-radius" in msg
    # a larger radius accepts it
    out = run(tmp_path, s, points_csv, extra=["--seed-radius", "30"])
    assert len(summary(out)["clusters"]) == 1


def test_coordinate_table_used_directly_without_points(tmp_path):
    s = write(
        tmp_path / "manual.csv",
        "tomogram,x,y,z\ntomo_a,10,11,12\ntomo_c,20,21,5\ntomo_c,30,31,6\n",
    )
    out = run(tmp_path, s)
    info = summary(out)
    assert info["format"] == "coordinates" and info["clusters"] == []
    assert info["label_counts"] == {"tomo_a": 1, "tomo_c": 2}
    labels = read_labels(out)
    assert list(labels.columns) == ["tomogram", "x", "y", "z"]
    assert labels[["x", "y", "z"]].to_numpy().tolist() == [[10, 11, 12], [20, 21, 5], [30, 31, 6]]
    # a cet_pick file is named after its tomogram; another suffix is sniffed from the content
    s = write(tmp_path / "tomo_b.txt", "1 2 3\n4 5 6\n")
    assert summary(run(tmp_path, s))["label_counts"] == {"tomo_b": 2}
    s = write(tmp_path / "annotation.points", "tomogram\tx\ty\tz\ntomo_c\t7\t8\t9\n")
    assert summary(run(tmp_path, s))["label_counts"] == {"tomo_c": 1}


def test_star_in_angstrom_converted_per_tomogram(tmp_path):
    import starfile

    paths = []
    for name, shape, voxel in (("tomo_a", SHAPE_ZYX, 10.0), ("tomo_b", (20, 30, 46), 7.5)):
        p = tmp_path / "data" / f"{name}.mrc"
        p.parent.mkdir(exist_ok=True)
        write_tomogram(p, np.zeros(shape, np.float32), voxel)
        paths.append(str(p))
    # voxel (5, 6, 7) in tomo_a and (40, 3, 19) in tomo_b, in RELION-5 centred Å
    star = pd.DataFrame({
        "rlnTomoName": ["tomo_a", "tomo_b"],
        "rlnCenteredCoordinateXAngst": [(5 - 28) * 10.0, (40 - 23) * 7.5],
        "rlnCenteredCoordinateYAngst": [(6 - 20) * 10.0, (3 - 15) * 7.5],
        "rlnCenteredCoordinateZAngst": [(7 - 12) * 10.0, (19 - 10) * 7.5],
    })
    s = tmp_path / "manual.star"
    starfile.write({"particles": star}, s)
    out = run(tmp_path, s, tomograms=paths)
    labels = read_labels(out)
    assert labels[["x", "y", "z"]].to_numpy().round(6).tolist() == [[5, 6, 7], [40, 3, 19]]
    # with only names, the Å table cannot be read
    with pytest.raises(MilopypError, match="voxel size"):
        run(tmp_path, s)


def test_points_outside_tomogram_are_rejected_with_mrc_paths(tmp_path):
    p = tmp_path / "tomo_a.mrc"
    write_tomogram(p, np.zeros(SHAPE_ZYX, np.float32), 10.0)
    s = write(tmp_path / "manual.csv", "tomogram,x,y,z\ntomo_a,10,11,30\n")  # z >= 24
    msg = expect_error("outside the tomogram", tmp_path, s, tomograms=[str(p)])
    assert "z=30" in msg


def test_selection_checks_name_the_users_file_and_line(tmp_path):
    """Out-of-volume rows and unknown tomograms fail at import-selection, naming the file the
    user wrote and the line there (not a row of a derived labels file)."""
    pa, pb = tmp_path / "tomo_a.mrc", tmp_path / "tomo_b.mrc"
    write_tomogram(pa, np.zeros(SHAPE_ZYX, np.float32), 10.0)
    write_tomogram(pb, np.zeros(SHAPE_ZYX, np.float32), 10.0)
    paths = [str(pa), str(pb)]
    # tomo_b's second row is outside (y >= 40); blank line and tomo_a rows before it
    s = write(tmp_path / "manual.csv",
              "tomogram,x,y,z\ntomo_b,1,2,3\ntomo_a,5,5,5\n\ntomo_a,6,6,6\ntomo_b,10,45,3\n")
    msg = expect_error("outside the tomogram", tmp_path, s, tomograms=paths)
    assert "line 6" in msg and "tomogram tomo_b" in msg and "y=45" in msg
    # even when a filter would drop the row later
    expect_error("line 6", tmp_path, s, tomograms=paths, extra=["--label-tomograms", "tomo_a"])
    # cet_pick text (tomogram = file stem), comment lines counted
    t = write(tmp_path / "tomo_a.txt", "# x y z\n1 2 3\n4 5 99\n")
    msg = expect_error("outside the tomogram", tmp_path, t, tomograms=paths)
    assert "line 3" in msg
    # an unknown tomogram name: the line of its first row
    s = write(tmp_path / "typo.csv", "tomogram,x,y,z\ntomo_a,1,2,3\ntomo_aa,1,2,3\n")
    msg = expect_error("not in the campaign", tmp_path, s, tomograms=paths)
    assert "line 3" in msg and "tomo_aa" in msg


def test_seeds_file_checks_name_the_seeds_file(tmp_path, points_csv):
    p = tmp_path / "tomo_a.mrc"
    write_tomogram(p, np.zeros(SHAPE_ZYX, np.float32), 10.0)
    write(tmp_path / "clicks.csv", "tomogram,x,y,z\ntomo_a,8,8,6\ntomo_a,8,8,-3\n")
    s = write(tmp_path / "seeds.yaml", "seeds: clicks.csv\n")
    with pytest.raises(MilopypError, match="outside the tomogram") as err:
        run(tmp_path, s, points_csv, tomograms=[str(p)])
    assert "clicks.csv" in str(err.value) and "line 3" in str(err.value)
    write(tmp_path / "clicks.csv", "tomogram,x,y,z\n")
    with pytest.raises(MilopypError, match="holds no points") as err:
        run(tmp_path, s, points_csv, tomograms=[str(p)])
    assert "clicks.csv" in str(err.value) and "seeds.yaml" in str(err.value)


def test_label_tomograms_and_cap_per_tomogram(tmp_path, points_csv):
    s = write(tmp_path / "sel.yaml", "clusters: [2, 5, 7, 11]\n")
    out = run(tmp_path, s, points_csv, extra=["--label-tomograms", "tomo_b",
                                               "--max-labels-per-tomogram", "4"])
    labels = read_labels(out)
    assert set(labels["tomogram"]) == {"tomo_b"} and len(labels) == 4
    pts = make_points()
    best = pts[pts.tomogram == "tomo_b"].nlargest(4, "score")
    assert sorted(labels["score"]) == sorted(best["score"])
    info = summary(out)
    assert info["label_counts"] == {"tomo_b": 4} and info["files"] == ["tomo_b.csv"]
    assert not (out / "tomo_a.csv").exists()


def test_cap_without_score_is_seeded():
    pts = make_points().drop(columns="score")
    a = sel.cap_per_tomogram(pts, 5, seed=1)
    b = sel.cap_per_tomogram(pts, 5, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert a.groupby("tomogram").size().tolist() == [5, 5, 5]
    # keeps table order and draws differently for other seeds
    assert a["point_id"].is_monotonic_increasing
    draws = {tuple(sel.cap_per_tomogram(pts, 5, seed=s)["point_id"]) for s in range(6)}
    assert len(draws) > 1
    # highest score first, ties in table order
    scored = pd.DataFrame({"tomogram": ["t"] * 4, "x": 0.0, "y": 0.0, "z": 0.0,
                           "score": [0.1, 0.9, np.nan, 0.9]})
    kept = sel.cap_per_tomogram(scored, 2, seed=0)
    assert kept["score"].tolist() == [0.9, 0.9]


def test_points_of_tomograms_outside_campaign_are_dropped(tmp_path, points_csv, caplog):
    s = write(tmp_path / "sel.yaml", "clusters: [2]\n")
    with caplog.at_level(logging.WARNING):
        out = run(tmp_path, s, points_csv, tomograms=("tomo_a", "tomo_b"))
    assert summary(out)["label_counts"] == {"tomo_a": 3, "tomo_b": 3}
    assert "tomo_c" in caplog.text


# --------------------------------------------------------------------------- errors


def test_error_missing_file(tmp_path, points_csv):
    expect_error("not found", tmp_path, tmp_path / "nope.json", points=points_csv)


def test_error_unreadable(tmp_path, points_csv):
    s = tmp_path / "sel.json"
    s.write_bytes(b"\xff\xfe\x00\x81binary")
    expect_error("unreadable", tmp_path, s, points=points_csv)


@pytest.mark.parametrize(
    "name, text",
    [
        ("selection.json", '{"clusters": [], "points": [], "source": "milopyp explorer"}'),
        ("sel.yaml", "clusters:\n"),
        ("sel.yaml", "seeds: []\n"),
        ("empty.yaml", "\n"),
        ("manual.csv", "tomogram,x,y,z\n"),
    ],
)
def test_error_selects_nothing(tmp_path, points_csv, name, text):
    s = write(tmp_path / name, text)
    msg = expect_error("selects nothing", tmp_path, s, points=points_csv)
    assert "Save selection" in msg and "clusters: [..]" in msg


@pytest.mark.parametrize(
    "name, text", [("sel.yaml", "foo: 1\nbar: [2]\n"), ("sel.dat", "hello world\nfoo\n"),
                   ("sel.json", "[3, 5]")],
)
def test_error_unknown_format(tmp_path, points_csv, name, text):
    s = write(tmp_path / name, text)
    expect_error("unknown selection format", tmp_path, s, points=points_csv)


def test_error_unknown_cluster_ids_lists_valid(tmp_path, points_csv):
    s = write(tmp_path / "sel.yaml", "clusters: [5, 9]\n")
    msg = expect_error("cluster id", tmp_path, s, points=points_csv)
    assert "9" in msg and "valid ids are 2, 5, 7, 11" in msg


def test_error_point_ids_out_of_range(tmp_path, points_csv):
    s = write(tmp_path / "sel.json", '{"clusters": [], "points": [3, 500]}')
    msg = expect_error("out of range", tmp_path, s, points=points_csv)
    assert "500" in msg and "0..35" in msg


def test_error_unknown_tomograms(tmp_path, points_csv):
    s = write(tmp_path / "seeds.yaml", "seeds:\n  - {tomogram: tomo_zz, x: 8, y: 8, z: 6}\n")
    msg = expect_error("not in the campaign", tmp_path, s, points=points_csv)
    assert "tomo_zz" in msg and "tomo_a, tomo_b, tomo_c" in msg
    s = write(tmp_path / "manual.csv", "tomogram,x,y,z\ntomo_q,1,2,3\n")
    msg = expect_error("not in the campaign", tmp_path, s)
    assert "tomo_q" in msg


def test_error_zero_labels_after_filters(tmp_path, points_csv):
    s = write(tmp_path / "manual.csv", "tomogram,x,y,z\ntomo_a,1,2,3\n")
    msg = expect_error("0 labels", tmp_path, s, extra=["--label-tomograms", "tomo_b"])
    assert "tomo_a" in msg


def test_error_needs_points_for_cluster_selection(tmp_path):
    s = write(tmp_path / "sel.yaml", "clusters: [2]\n")
    expect_error("--points", tmp_path, s)


# --------------------------------------------------------------------------- atomic output


def test_failure_midway_leaves_no_labels_folder(tmp_path, points_csv, monkeypatch):
    s = write(tmp_path / "sel.yaml", "clusters: [2, 5]\n")
    out = run(tmp_path, s, points_csv)  # an earlier, finished run
    assert (out / "selection.json").is_file()

    from milopyp.io import coords

    real = coords.write_coordinates
    calls = []

    def failing(path, df, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(path, df, **kw)

    monkeypatch.setattr(coords, "write_coordinates", failing)
    with pytest.raises(OSError, match="disk full"):
        run(tmp_path, s, points_csv)
    assert len(calls) == 2
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".labels")]


def test_refuses_to_replace_a_foreign_folder(tmp_path, points_csv):
    out = tmp_path / "labels"
    out.mkdir()
    (out / "precious.mrc").write_bytes(b"data")
    s = write(tmp_path / "sel.yaml", "clusters: [2]\n")
    with pytest.raises(MilopypError, match="not a labels folder"):
        run(tmp_path, s, points_csv)
    assert (out / "precious.mrc").exists()


def test_cli_entry_point(tmp_path, points_csv, capsys):
    from milopyp.cli import main

    s = write(tmp_path / "sel.yaml", "clusters: [11]\n")
    out = tmp_path / "labels"
    argv = ["import-selection", "--selection", str(s), "--points", str(points_csv),
            "--tomograms", *TOMOS, "-o", str(out)]
    assert main(argv) == 0
    assert summary(out)["n_labels"] == 9
    bad = write(tmp_path / "bad.yaml", "clusters: [99]\n")
    assert main([*argv[:2], str(bad), *argv[3:]]) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_refuses_a_selection_inside_the_output_folder(tmp_path, points_csv):
    s = write(tmp_path / "labels" / "selection.json", '{"clusters": [2]}')
    with pytest.raises(MilopypError, match="inside the output folder"):
        run(tmp_path, s, points_csv)
    assert s.exists()


# --------------------------------------------------------------------------- few-shot seeds


def ring_points(n: int = 30) -> tuple[pd.DataFrame, np.ndarray]:
    """Cluster 1 (n members in tomo_a, n in tomo_b) and cluster 4 (n in tomo_a); 2-D
    features: member k of cluster 1 lies k units from the origin, cluster 4 far away."""
    rows, feats = [], []
    for t, c in (("tomo_a", 1), ("tomo_b", 1), ("tomo_a", 4)):
        for k in range(n):
            rows.append({"tomogram": t, "x": 2.0 + k, "y": 5.0 + (c == 4) * 20, "z": 3.0,
                         "score": 1.0 - k / n, "cluster": c})
            feats.append([k + (t == "tomo_b") * 0.5, 0.0] if c == 1 else [100.0, 100.0 + k])
    df = pd.DataFrame(rows)
    df.insert(0, "point_id", np.arange(len(df)))
    return df, np.asarray(feats, np.float32)


def test_labels_near_seeds_keeps_seeds_and_the_nearest_members_up_to_the_cap():
    points, feats = ring_points()
    seeds = pd.DataFrame({"tomogram": ["tomo_a"], "x": [2.2], "y": [5.0], "z": [3.0]})
    choice = sel.clusters_from_seeds(points, seeds, radius_vox=2, source="s")
    assert choice.clusters == [1]
    near = sel.labels_near_seeds(points, choice, feats, max_labels=5, metric="euclidean")
    # the seed's own candidate (point 0) and the 4 nearest members, only in tomo_a
    assert near.labels["point_id"].tolist() == [0, 1, 2, 3, 4]
    assert near.seed_rows.tolist() == [True, False, False, False, False]
    assert (near.n_seeds, near.n_from_clusters, near.n_dropped, near.n_elsewhere) == (1, 4, 25, 30)
    assert near.tomograms == ["tomo_a"]
    line = near.describe("embedding")
    assert line.startswith("1 labels from seeds, 4 from clusters [1] in tomograms ['tomo_a'], "
                           "25 dropped by the cap")
    # listing the tomograms widens the scope; the nearest in either tomogram are taken
    near = sel.labels_near_seeds(points, choice, feats, max_labels=5,
                                 tomograms=["tomo_a", "tomo_b"], metric="euclidean")
    assert near.labels["point_id"].tolist() == [0, 1, 2, 30, 31]
    assert near.n_dropped == 29 + 30 - 4 and near.n_elsewhere == 0
    # a cap smaller than the seeds still keeps every seed
    two = pd.DataFrame({"tomogram": ["tomo_a", "tomo_a"], "x": [2.0, 9.0], "y": [5.0, 5.0],
                        "z": [3.0, 3.0]})
    choice = sel.clusters_from_seeds(points, two, radius_vox=1, source="s")
    near = sel.labels_near_seeds(points, choice, feats, max_labels=1, metric="euclidean")
    assert near.labels["point_id"].tolist() == [0, 7] and near.n_from_clusters == 0
    assert sel.default_seed_label_cap(1) == 20 and sel.default_seed_label_cap(5) == 50


def test_labels_near_seeds_cosine_ranks_by_angle():
    points, _ = ring_points(4)
    angle = np.array([0.0, 0.5, 0.1, 1.2] * 3)
    feats = np.stack([np.cos(angle), np.sin(angle)], 1) * np.arange(1, 13)[:, None]
    choice = sel.clusters_from_seeds(
        points, pd.DataFrame({"tomogram": ["tomo_a"], "x": [2.0], "y": [5.0], "z": [3.0]}),
        radius_vox=1, source="s")
    near = sel.labels_near_seeds(points, choice, feats, max_labels=2)
    assert near.labels["point_id"].tolist() == [0, 2]  # same direction, not same length


def test_seed_selection_is_few_shot_and_logs_where_labels_came_from(tmp_path, caplog):
    points, feats = ring_points()
    points["umap_x"], points["umap_y"] = feats[:, 0], feats[:, 1]
    pts = tmp_path / "points.csv"
    points.to_csv(pts, index=False)
    s = write(tmp_path / "seeds.yaml", "seeds:\n  - {tomogram: tomo_a, x: 2, y: 5, z: 3}\n")
    with caplog.at_level(logging.INFO):
        out = run(tmp_path, s, pts, tomograms=("tomo_a", "tomo_b"))
    labels = read_labels(out)
    assert len(labels) == 20 and set(labels["tomogram"]) == {"tomo_a"}  # max(20, 10 x 1)
    assert sorted(labels["x"]) == [2.0 + k for k in range(20)]
    assert ("1 labels from seeds, 19 from clusters [1] in tomograms ['tomo_a'], 10 dropped "
            "by the cap (20 labels, members nearest to a seed in UMAP space); 30 members in "
            "other tomograms not used") in caplog.text
    info = summary(out)
    assert info["seed_labels"] == "nearest" and info["max_seed_labels"] == 20
    assert (info["labels_from_seeds"], info["labels_from_clusters"],
            info["dropped_by_seed_cap"]) == (1, 19, 10)
    # an explicit cap over listed tomograms: tomo_b's members are 0.5 farther, interleaved
    out = run(tmp_path, s, pts, tomograms=("tomo_a", "tomo_b"),
              extra=["--max-seed-labels", "6", "--label-tomograms", "tomo_b", "tomo_a"])
    assert summary(out)["label_counts"] == {"tomo_a": 3, "tomo_b": 3}
    # --max-labels-per-tomogram keeps the seed although two members score higher
    points.loc[[1, 2], "score"] = 5.0
    points.to_csv(pts, index=False)
    out = run(tmp_path, s, pts, tomograms=("tomo_a", "tomo_b"),
              extra=["--max-labels-per-tomogram", "2"])
    assert sorted(read_labels(out)["x"]) == [2.0, 3.0]
    # the old behaviour on request: every member of the chosen cluster, in every tomogram
    out = run(tmp_path, s, pts, tomograms=("tomo_a", "tomo_b"),
              extra=["--seed-labels", "clusters"])
    assert summary(out)["label_counts"] == {"tomo_a": 30, "tomo_b": 30}


def test_labels_from_seeds_is_read_from_the_selection_summary(tmp_path):
    """`milopyp train-localize --labels-from-seeds auto` reads the labels' selection.json:
    labels from a few seeds (each seed's candidate and the nearest members) are a seed
    selection's; whole clusters, explicit clusters beside the seeds, coordinate tables and
    tables without a summary are not."""
    from milopyp.localize.stage import labels_from_seeds

    points, feats = ring_points()
    points["umap_x"], points["umap_y"] = feats[:, 0], feats[:, 1]
    pts = tmp_path / "points.csv"
    points.to_csv(pts, index=False)
    s = write(tmp_path / "seeds.yaml", "seeds:\n  - {tomogram: tomo_a, x: 2, y: 5, z: 3}\n")

    def read(out):
        return labels_from_seeds(sorted(str(p) for p in out.glob("*.csv")))

    assert read(run(tmp_path, s, pts, tomograms=("tomo_a", "tomo_b"))) == (
        True, "20 labels from 1 seeds")
    whole = run(tmp_path, s, pts, tomograms=("tomo_a", "tomo_b"),
                extra=["--seed-labels", "clusters"])
    assert read(whole)[0] is False
    both = write(tmp_path / "both.yaml", "clusters: [4]\nseeds:\n"
                 "  - {tomogram: tomo_a, x: 2, y: 5, z: 3}\n")
    assert read(run(tmp_path, both, pts, tomograms=("tomo_a", "tomo_b"))) == (
        False, "labels of a seeds selection")
    table = write(tmp_path / "manual.csv", "tomogram,x,y,z\ntomo_a,10,11,12\n")
    assert read(run(tmp_path, table, tomograms=("tomo_a", "tomo_b"))) == (
        False, "labels of a coordinates selection")
    loose = write(tmp_path / "elsewhere" / "tomo_a.csv", "tomogram,x,y,z\ntomo_a,10,11,12\n")
    assert labels_from_seeds([str(loose)]) == (False, "labels without a selection summary")


def test_seed_labels_ranked_in_embedding_space(tmp_path, caplog):
    points, feats = ring_points()
    points["umap_x"] = points["umap_y"] = 0.0  # UMAP says nothing; the embeddings do
    pts = tmp_path / "points.csv"
    points.to_csv(pts, index=False)
    files = []
    for name in ("tomo_a", "tomo_b"):
        rows = points["tomogram"] == name
        path = tmp_path / f"{name}.npz"
        np.savez(path, embeddings=np.c_[feats[rows], np.ones((rows.sum(), 1))],
                 xyz=points.loc[rows, ["x", "y", "z"]].to_numpy(), tomogram=name)
        files.append(str(path))
    s = write(tmp_path / "seeds.yaml", "seeds:\n  - {tomogram: tomo_b, x: 12, y: 5, z: 3}\n")
    with caplog.at_level(logging.INFO):
        out = run(tmp_path, s, pts, tomograms=("tomo_a", "tomo_b"),
                  extra=["--embeddings", *files, "--max-seed-labels", "3"])
    assert sorted(read_labels(out)["x"]) == [11.0, 12.0, 13.0]
    assert "in embedding space" in caplog.text
    # members of another tomogram, ranked by the embedding of a seed in tomo_b
    out = run(tmp_path, s, pts, tomograms=("tomo_a", "tomo_b"),
              extra=["--embeddings", *files, "--max-seed-labels", "3",
                     "--label-tomograms", "tomo_a"])
    assert sorted(read_labels(out)["x"]) == [12.0, 13.0]  # k = 10, 11: nearest in angle
    # embeddings that do not belong to this points.csv are refused
    np.savez(files[1], embeddings=np.ones((3, 3)), xyz=np.zeros((3, 3)), tomogram="tomo_b")
    with pytest.raises(MilopypError, match="do not match its 30 rows"):
        run(tmp_path, s, pts, tomograms=("tomo_a", "tomo_b"), extra=["--embeddings", *files])


def test_cap_per_tomogram_keeps_marked_rows_first():
    scored = pd.DataFrame({"tomogram": ["t"] * 5, "x": 0.0, "y": 0.0, "z": 0.0,
                           "score": [0.9, 0.1, 0.8, 0.7, 0.2]})
    kept = sel.cap_per_tomogram(scored, 2, seed=0, keep=np.array([0, 1, 0, 0, 0], bool))
    assert kept["score"].tolist() == [0.9, 0.1]


def test_explicit_clusters_log_labels_per_cluster(tmp_path, points_csv, caplog):
    s = write(tmp_path / "sel.json", json.dumps(
        {"clusters": [5, 2], "points": [6], "source": "milopyp explorer"}))  # 6: cluster 7
    with caplog.at_level(logging.INFO):
        out = run(tmp_path, s, points_csv)
    assert len(read_labels(out)) == 19  # all members: explicit clusters are not capped
    assert "9 from cluster 2, 9 from cluster 5; 1 from points listed by id" in caplog.text


# --------------------------------------------------------------------------- negatives


def run_with_negatives(tmp_path, selection, points=None, **kw) -> tuple[Path, Path]:
    negatives = tmp_path / "negatives"
    out = run(tmp_path, selection, points,
              extra=[*kw.pop("extra", ()), "--negatives-output", str(negatives)], **kw)
    return out, negatives


def read_negatives(folder: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: read_coordinates(p) for p in sorted(folder.glob("*.csv"))}


def test_yaml_negatives_by_cluster_and_by_seed(tmp_path, points_csv, caplog):
    s = write(tmp_path / "sel.yaml", """
clusters: [2]
negatives:
  clusters: [11]
  seeds:
    - {tomogram: tomo_b, x: 40, y: 20, z: 10}
    - {tomogram: tomo_a, x: 8.5, y: 8, z: 6}     # on a label of cluster 2: dropped
""")
    with caplog.at_level(logging.INFO):
        out, neg = run_with_negatives(tmp_path, s, points_csv)
    tables = read_negatives(neg)
    assert sorted(tables) == list(TOMOS)  # one file per campaign tomogram
    b = tables["tomo_b"]
    assert list(b.columns) == ["tomogram", "x", "y", "z", "source"]
    assert (b["source"] == "cluster").sum() == 3 and (b["source"] == "seed").sum() == 1
    np.testing.assert_allclose(b.loc[b.source == "seed", ["x", "y", "z"]].to_numpy(),
                               [[40, 20, 10]])
    assert len(tables["tomo_a"]) == 3 and set(tables["tomo_a"]["source"]) == {"cluster"}
    assert "negatives: 9 from clusters [11], 2 from seeds; 1 dropped" in caplog.text
    info = summary(out)
    assert info["n_negatives"] == 10 and info["negatives_dropped_near_labels"] == 1
    assert info["negative_counts"] == {"tomo_a": 3, "tomo_b": 4, "tomo_c": 3}
    # labels are unchanged by negatives
    assert set(read_labels(out)["cluster"]) == {2} and len(read_labels(out)) == 9


def test_negatives_coordinate_table_and_empty_files(tmp_path, points_csv):
    write(tmp_path / "user" / "not-this.csv", "tomogram,x,y,z\ntomo_c,30,30,20\ntomo_c,1,2,3\n")
    s = write(tmp_path / "user" / "sel.yaml", "clusters: [5]\nnegatives: not-this.csv\n")
    out, neg = run_with_negatives(tmp_path, s, points_csv)
    tables = read_negatives(neg)
    assert [len(tables[t]) for t in TOMOS] == [0, 0, 2]
    assert set(tables["tomo_c"]["source"]) == {"table"}
    assert (neg / "tomo_a.csv").read_text().startswith("tomogram,x,y,z,source")
    assert summary(out)["negatives_from"] == {"table": 2}
    # without negatives the files are there, empty
    s = write(tmp_path / "plain.yaml", "clusters: [5]\n")
    out, neg = run_with_negatives(tmp_path, s, points_csv)
    assert [len(t) for t in read_negatives(neg).values()] == [0, 0, 0]
    # a coordinate-table selection has no negatives either
    s = write(tmp_path / "manual.csv", "tomogram,x,y,z\ntomo_a,1,2,3\n")
    out, neg = run_with_negatives(tmp_path, s)
    assert sorted(read_negatives(neg)) == list(TOMOS)


def test_explorer_negatives_clusters_and_points(tmp_path, points_csv):
    pts = make_points()
    not_this = pts.loc[(pts.cluster == 7) & (pts.tomogram == "tomo_c"), "point_id"].tolist()[:2]
    doc = {"clusters": [5], "points": [], "source": "milopyp explorer", "n_points": 9,
           "negatives": {"clusters": [2], "points": not_this, "n_points": 11}}
    s = write(tmp_path / "selection.json", json.dumps(doc))
    out, neg = run_with_negatives(tmp_path, s, points_csv)
    info = summary(out)
    assert info["negatives_from"] == {"cluster": 9, "point": 2}
    tomo_c = read_negatives(neg)["tomo_c"]
    assert (tomo_c["source"] == "point").sum() == 2
    assert info["negative_counts"] == {"tomo_a": 3, "tomo_b": 3, "tomo_c": 5}


def test_negatives_errors(tmp_path, points_csv):
    s = write(tmp_path / "both.yaml", "clusters: [2, 5]\nnegatives: {clusters: [5]}\n")
    expect_error(r"cluster\(s\) \[5\] are selected and marked as negatives", tmp_path, s,
                 points=points_csv)
    s = write(tmp_path / "only.yaml", "negatives: {clusters: [5]}\n")
    expect_error("lists only negatives", tmp_path, s, points=points_csv)
    s = write(tmp_path / "typo.yaml", "clusters: [2]\nnegatives: {cluster: [5]}\n")
    expect_error(r"unknown key\(s\) \['cluster'\]", tmp_path, s, points=points_csv)
    s = write(tmp_path / "far.yaml",
              "clusters: [2]\nnegatives:\n  - {tomogram: tomo_zz, x: 1, y: 1, z: 1}\n")
    expect_error("not in the campaign", tmp_path, s, points=points_csv)


# --------------------------------------------------------------------------- train-localize


class _Stop(Exception):
    pass


def test_train_localize_passes_negatives_in_label_order(tmp_path, points_csv, monkeypatch,
                                                        caplog):
    """import-selection's negatives reach train_localizer as one (M, 3) xyz array per
    labelled tomogram, in the order of --labels."""
    from milopyp.commands import train_localize
    from milopyp.localize import train

    paths = []
    for name in ("tomo_a", "tomo_b"):
        paths.append(tmp_path / f"{name}.mrc")
        write_tomogram(paths[-1], np.zeros(SHAPE_ZYX, np.float32), 10.0)
    s = write(tmp_path / "sel.yaml", "clusters: [2]\nnegatives:\n  clusters: [11]\n  seeds:\n"
              "    - {tomogram: tomo_b, x: 30, y: 20, z: 10}\n")
    out, neg = run_with_negatives(tmp_path, s, points_csv, tomograms=[str(p) for p in paths])
    seen = {}

    def fake(tomograms, labels, **kw):
        seen.update(kw, labels=labels, tomograms=tomograms)
        raise _Stop

    monkeypatch.setattr(train, "train_localizer", fake)
    parser = argparse.ArgumentParser()
    train_localize.add_arguments(parser)
    order = ["tomo_b", "tomo_a"]
    argv = ["--tomograms", *map(str, paths), "-o", str(tmp_path / "model.pt"),
            "--particle-diameter", "100", "--labels", *(str(out / f"{n}.csv") for n in order),
            "--negatives", *(str(neg / f"{n}.csv") for n in order)]
    with caplog.at_level(logging.INFO), pytest.raises(_Stop):
        train_localize.main(parser.parse_args(argv))
    assert [len(a) for a in seen["negatives"]] == [4, 3]  # tomo_b: cluster 11 + a seed
    assert all(a.shape[1] == 3 and a.dtype == np.float64 for a in seen["negatives"])
    np.testing.assert_allclose(seen["negatives"][0][-1], [30, 20, 10])
    assert "6 labels, 7 negatives" in caplog.text
    # files out of order, or too few, are refused
    swapped = [*argv[:-2], str(neg / "tomo_a.csv"), str(neg / "tomo_b.csv")]
    with pytest.raises(MilopypError, match="in the order of --labels"):
        train_localize.main(parser.parse_args(swapped))
    with pytest.raises(MilopypError, match="1 file\\(s\\) for 2 --labels"):
        train_localize.main(parser.parse_args(argv[:-1]))
