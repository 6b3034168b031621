"""Tests of milopyp.evaluate and `milopyp evaluate` against hand-computed cases."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from milopyp.errors import MilopypError
from milopyp.evaluate import (
    average_precision,
    evaluate,
    greedy_match_by_score,
    match,
)


def table(name, xyz, score=None, **extra):
    xyz = np.asarray(xyz, float).reshape(-1, 3)
    df = pd.DataFrame({"tomogram": name, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    if score is not None:
        df["score"] = score
    for k, v in extra.items():
        df[k] = v
    return df


def test_match_simple_and_empty():
    pi, ti = match([[0, 0, 0], [10, 0, 0]], [[1, 0, 0], [30, 0, 0]], 2.0)
    assert pi.tolist() == [0] and ti.tolist() == [0]
    pi, ti = match(np.zeros((0, 3)), [[1, 0, 0]], 2.0)
    assert pi.size == 0 and ti.size == 0
    # the radius is inclusive and measured in 3-D (here along z only)
    pi, _ = match([[0, 0, 0]], [[0, 0, 2.0]], 2.0)
    assert pi.tolist() == [0]
    pi, _ = match([[0, 0, 0]], [[0, 0, 2.01]], 2.0)
    assert pi.size == 0


def test_match_is_one_to_one():
    # two picks near one true particle: one pair only
    pi, ti = match([[0, 0, 0], [0.5, 0, 0]], [[0.2, 0, 0]], 2.0)
    assert len(pi) == 1 and ti.tolist() == [0]
    assert pi.tolist() == [0]  # the closer pick (0.2 vs 0.3 away)


def test_match_maximises_pairs_not_greedy_distance():
    # Nearest-first would pair P0 with T0 (1.4 < 1.6) and leave P1 alone; the optimum
    # pairs P0-T1 and P1-T0.
    true = [[0, 0, 0], [3, 0, 0]]
    pred = [[1.4, 0, 0], [-1.5, 0, 0]]
    pi, ti = match(pred, true, 2.0)
    assert pi.tolist() == [0, 1] and ti.tolist() == [1, 0]


def _brute_force(pred, true, radius):
    """Largest matching, then smallest total distance, by enumeration (tiny inputs)."""
    d = np.linalg.norm(pred[:, None] - true[None], axis=2)
    best = (0, 0.0)
    n, m = len(pred), len(true)
    for k in range(min(n, m), 0, -1):
        costs = []
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                dd = d[list(rows), list(cols)]
                if np.all(dd <= radius):
                    costs.append(dd.sum())
        if costs:
            return k, min(costs)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_match_agrees_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0, 6, size=(rng.integers(1, 6), 3))
    true = rng.uniform(0, 6, size=(rng.integers(1, 6), 3))
    pi, ti = match(pred, true, 2.5)
    assert len(set(pi)) == len(pi) and len(set(ti)) == len(ti)
    d = np.linalg.norm(pred[pi] - true[ti], axis=1)
    assert np.all(d <= 2.5)
    k, cost = _brute_force(pred, true, 2.5)
    assert len(pi) == k
    assert d.sum() == pytest.approx(cost)


def test_average_precision_hand_cases():
    # perfect ranking, every particle found
    assert average_precision([0.9, 0.8, 0.7], [True, True, True], 3) == pytest.approx(1.0)
    # a false positive ranked first: precision 1/2 at recall 0.5, 2/3 at recall 1 -> the
    # interpolated precision is 2/3 at both recall steps
    assert average_precision([0.9, 0.8, 0.7], [False, True, True], 2) == pytest.approx(2 / 3)
    # the false positive last costs nothing
    assert average_precision([0.9, 0.8, 0.7], [True, True, False], 2) == pytest.approx(1.0)
    # perfect ranking but half the particles missed: AP = final recall
    assert average_precision([0.9], [True], 2) == pytest.approx(0.5)
    # ranking by score, not by input order
    assert average_precision([0.1, 0.9], [True, False], 1) == pytest.approx(0.5)
    assert math.isnan(average_precision([0.5], [True], 0))
    assert average_precision([], [], 3) == 0.0


def test_greedy_match_by_score_order():
    true = [[0, 0, 0]]
    pred = [[1.0, 0, 0], [0.1, 0, 0]]
    # the higher-scored pick takes the particle even though the other is closer
    assert greedy_match_by_score(pred, [0.9, 0.1], true, 2.0).tolist() == [True, False]
    assert greedy_match_by_score(pred, [0.1, 0.9], true, 2.0).tolist() == [False, True]


def test_evaluate_per_tomogram_and_overall():
    truth = pd.concat([
        table("A", [[0, 0, 0], [10, 0, 0], [20, 0, 0]]),
        table("B", [[5, 5, 5]]),
    ])
    picks = pd.concat([
        table("A", [[0.5, 0, 0], [0.8, 0, 0], [10, 1, 0], [50, 50, 50]], score=[4, 3, 2, 1]),
        table("C", [[1, 1, 1]], score=[9]),
    ])
    m = evaluate(picks, truth, radius_vox=2.0).set_index("tomogram")
    assert list(m.index) == ["A", "B", "C", "overall"]
    a = m.loc["A"]
    assert (a.n_picks, a.n_true, a.tp, a.fp, a.fn) == (4, 3, 2, 2, 1)
    assert a.precision == pytest.approx(0.5) and a.recall == pytest.approx(2 / 3)
    assert a.f1 == pytest.approx(2 * 2 / (4 + 3))
    # ranked TP, FP, TP, FP of 3 particles: (1/3)*1 + (1/3)*(2/3)
    assert a.ap == pytest.approx(1 / 3 + 2 / 9)
    b = m.loc["B"]
    assert (b.n_picks, b.tp, b.recall) == (0, 0, 0.0) and math.isnan(b.precision)
    assert b.f1 == 0.0
    c = m.loc["C"]
    assert (c.n_true, c.fp) == (0, 1) and math.isnan(c.recall) and math.isnan(c.ap)
    o = m.loc["overall"]
    assert (o.n_picks, o.n_true, o.tp) == (5, 4, 2)
    assert o.precision == pytest.approx(2 / 5) and o.recall == pytest.approx(2 / 4)
    # pooled ranking: C(9) FP, A(4) TP, A(3) FP, A(2) TP, A(1) FP over 4 particles
    assert o.ap == pytest.approx(0.25 * 0.5 + 0.25 * 0.5)
    # restricting the tomograms drops C
    m2 = evaluate(picks, truth, radius_vox=2.0, tomograms=["A", "B"])
    assert m2["tomogram"].tolist() == ["A", "B", "overall"]
    assert m2.iloc[-1]["n_picks"] == 4


def test_evaluate_without_score_and_perfect_ranking():
    truth = table("T", [[0, 0, 0], [10, 0, 0]])
    m = evaluate(table("T", [[0, 0, 0], [10, 0, 0]]), truth, radius_vox=1.0)
    assert math.isnan(m.iloc[0]["ap"]) and m.iloc[0]["f1"] == 1.0
    m = evaluate(table("T", [[0, 0, 0], [10, 0, 0], [5, 0, 0]], score=[3, 2, 1]), truth,
                 radius_vox=1.0)
    assert m.iloc[0]["ap"] == pytest.approx(1.0) and m.iloc[0]["precision"] == pytest.approx(2 / 3)


def test_evaluate_matches_within_each_tomogram_only():
    truth = table("A", [[0, 0, 0]])
    picks = table("B", [[0, 0, 0]])
    m = evaluate(picks, truth, radius_vox=5.0)
    assert m.iloc[-1]["tp"] == 0


def test_evaluate_rejects_missing_columns():
    with pytest.raises(MilopypError, match="tomogram"):
        evaluate(pd.DataFrame({"x": [1], "y": [1], "z": [1]}), table("A", [[0, 0, 0]]),
                 radius_vox=1.0)


def _run_cli(argv, capsys):
    from milopyp.cli import main

    rc = main(argv)
    return rc, capsys.readouterr()


def test_command(tmp_path, capsys):
    from milopyp.io.coords import write_coordinates

    truth = pd.concat([
        table("tomo_000", [[0, 0, 0], [10, 0, 0], [20, 20, 20]],
              species=["ribosome", "ribosome", "gold"]),
        table("tomo_001", [[5, 5, 5]], species=["ribosome"]),
    ])
    write_coordinates(tmp_path / "truth" / "tomo_000.csv", truth[truth.tomogram == "tomo_000"])
    write_coordinates(tmp_path / "truth" / "tomo_001.csv", truth[truth.tomogram == "tomo_001"])
    write_coordinates(tmp_path / "c" / "tomo_000.csv",
                      table("tomo_000", [[1, 0, 0], [20, 20, 20]], score=[2.0, 1.0]))
    write_coordinates(tmp_path / "c" / "tomo_001.csv",
                      table("tomo_001", [[5, 5, 6]], score=[1.0]))
    write_coordinates(tmp_path / "c" / "tomo_009.csv", table("tomo_009", [[0, 0, 0]]))
    out = tmp_path / "eval" / "metrics.csv"
    js = tmp_path / "eval" / "metrics.json"
    argv = ["evaluate", "--picks", *(str(p) for p in sorted((tmp_path / "c").glob("*.csv"))),
            "--truth", *(str(p) for p in sorted((tmp_path / "truth").glob("*.csv"))),
            "--radius-a", "20", "--voxel-size", "10", "--species", "ribosome",
            "-o", str(out), "--json", str(js)]
    rc, captured = _run_cli(argv, capsys)
    assert rc == 0, captured.err
    m = pd.read_csv(out)
    assert m["tomogram"].tolist() == ["tomo_000", "tomo_001", "overall"]  # tomo_009 ignored
    o = m.iloc[-1]
    assert (o.n_picks, o.n_true, o.tp) == (3, 3, 2)  # the gold pick is a false positive
    doc = json.loads(js.read_text())
    assert doc["radius_vox"] == pytest.approx(2.0)
    assert doc["overall"]["tp"] == 2 and doc["species"] == ["ribosome"]
    assert "tomo_001" in captured.out and "overall" in captured.out

    # all species, radius in voxels
    rc, _ = _run_cli(argv[:argv.index("--radius-a")] + ["--radius", "2", "-o", str(out)], capsys)
    assert rc == 0
    assert pd.read_csv(out).iloc[-1]["tp"] == 3

    # errors: unknown species; --radius-a without a voxel size
    bad = list(argv)
    bad[bad.index("ribosome")] = "proteasome"
    rc, captured = _run_cli(bad, capsys)
    assert rc == 2 and "proteasome" in captured.err and "ribosome" in captured.err
    no_voxel = [a for a in argv if a not in ("--voxel-size", "10")]
    rc, captured = _run_cli(no_voxel, capsys)
    assert rc == 2 and "--voxel-size" in captured.err


def _line(name, fid, start, direction, n, step=2.0):
    start, direction = np.asarray(start, float), np.asarray(direction, float)
    direction /= np.linalg.norm(direction)
    xyz = start + step * np.arange(n)[:, None] * direction
    return pd.DataFrame({"tomogram": name, "fiber_id": fid, "x": xyz[:, 0], "y": xyz[:, 1],
                         "z": xyz[:, 2]})


def test_evaluate_fibers_counts_found_split_and_spurious_fibres():
    from milopyp.evaluate import evaluate_fibers, format_fiber_table

    truth = pd.concat([_line("A", 0, [0, 10, 5], [1, 0, 0], 50),     # 100 voxels along x
                       _line("A", 1, [10, 0, 9], [0, 1, 0], 40),     # 80 voxels along y
                       _line("A", 2, [0, 60, 5], [1, 1, 0], 30),     # missed entirely
                       _line("B", 0, [0, 0, 0], [1, 0, 0], 20)])
    traced = pd.concat([
        _line("A", 0, [0, 11, 5], [1, 0, 0], 50),                  # fibre 0, 1 voxel off
        _line("A", 1, [10.5, 0, 9], [0, 1, 0], 18),                # fibre 1 in two pieces
        _line("A", 2, [10.5, 38, 9], [0, 1, 0], 20),
        _line("A", 3, [80, 80, 30], [0, 0, 1], 10),                # spurious
    ])
    m = evaluate_fibers(traced, truth, radius_vox=3.0).set_index("tomogram")
    a = m.loc["A"]
    assert (a.n_true_fibers, a.n_traced_fibers, a.found_fibers, a.true_traced_fibers) == (3, 4, 2, 3)
    assert a.n_points == 98 and a.n_true_points == 120 and a.point_tp == 88
    assert a.point_precision == pytest.approx(88 / 98) and a.point_recall == pytest.approx(88 / 120)
    b = m.loc["B"]  # a tomogram with truth and no traced fibre
    assert (b.n_true_fibers, b.found_fibers, b.n_points, b.point_recall) == (1, 0, 0, 0.0)
    overall = m.loc["overall"]
    assert (overall.n_true_fibers, overall.found_fibers, overall.n_traced_fibers) == (4, 2, 4)
    assert "found" in format_fiber_table(m.reset_index())
    with pytest.raises(MilopypError, match="fiber_id"):
        evaluate_fibers(traced.drop(columns="fiber_id"), truth, radius_vox=3.0)


def test_command_scores_fibres(tmp_path, capsys):
    from milopyp.io.coords import write_coordinates

    truth = _line("A", 0, [0, 10, 5], [1, 0, 0], 50).assign(species="filament")
    truth = pd.concat([truth, table("A", [[50, 50, 5]], species=["ribosome"])])
    write_coordinates(tmp_path / "truth.csv", truth)
    write_coordinates(tmp_path / "fibers.csv", _line("A", 3, [0, 11, 5], [1, 0, 0], 40))
    out = tmp_path / "fibers_metrics.csv"
    rc, captured = _run_cli(["evaluate", "--fibers", "--picks", str(tmp_path / "fibers.csv"),
                             "--truth", str(tmp_path / "truth.csv"), "--species", "filament",
                             "--radius", "3", "-o", str(out)], capsys)
    assert rc == 0, captured.err
    m = pd.read_csv(out).set_index("tomogram").loc["overall"]
    assert (m.n_true_fibers, m.found_fibers, m.point_tp) == (1, 1, 40)
    assert "point F1" in captured.out
