"""Tests of milopyp.report and `milopyp report`."""

from __future__ import annotations

import argparse
import base64
import re

import numpy as np
import pandas as pd
import pytest

from milopyp.commands import report as cmd
from milopyp.errors import MilopypError
from milopyp.report import count_table, score_histogram_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def table(name: str, n: int, seed: int, score: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"tomogram": name, "x": rng.uniform(0, 50, n), "y": rng.uniform(0, 30, n),
                       "z": rng.uniform(0, 20, n)})
    if score:
        df["score"] = rng.uniform(0, 1, n)
    return df


def write(tmp_path, folder, name, df) -> str:
    p = tmp_path / folder / f"{name}.csv"
    p.parent.mkdir(exist_ok=True)
    df.to_csv(p, index=False)
    return str(p)


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    cmd.main(parser.parse_args(argv))


def test_report_html(tmp_path):
    picks = [write(tmp_path, "picks", "tomo_a", table("tomo_a", 7, 0)),
             write(tmp_path, "picks", "tomo_b", table("tomo_b", 3, 1)),
             write(tmp_path, "picks", "tomo_c", table("tomo_c", 0, 2))]
    cands = [write(tmp_path, "cands", n, table(n, k, 3)) for n, k in
             (("tomo_a", 41), ("tomo_b", 29), ("tomo_c", 17))]
    metrics = tmp_path / "metrics.csv"
    pd.DataFrame({"tomogram": ["tomo_a", "overall"], "n_picks": [7, 10], "n_true": [8, 12],
                  "tp": [6, 8], "precision": [6 / 7, 0.8], "recall": [0.75, 8 / 12],
                  "f1": [0.8, 0.727], "ap": [0.71, np.nan]}).to_csv(metrics, index=False)
    fig = tmp_path / "grid.png"
    fig.write_bytes(score_histogram_png(table("tomo_a", 5, 9)))
    out = tmp_path / "report.html"
    run(["--picks", *picks, "--candidates", *cands, "--metrics", str(metrics),
         "--figure", str(fig), "-o", str(out)])

    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "http://" not in page and "https://" not in page
    assert re.search(r"src=[\"']https?:", page) is None
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2  # histogram + the listed figure
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    # counts per tomogram (picks, candidates) and the total row
    for name, n_picks, n_cands in (("tomo_a", 7, 41), ("tomo_b", 3, 29), ("tomo_c", 0, 17),
                                   ("all", 10, 87)):
        assert re.search(
            rf"<td class=\"txt\">{name}</td><td class=\"num\">{n_picks}</td>.*?"
            rf"<td class=\"num\">{n_cands}</td></tr>", page
        ), name
    # the metrics table
    assert "Accuracy against ground truth" in page
    assert "<td class=\"num\">0.857</td>" in page  # precision 6/7
    assert "grid.png" in page


def test_count_table_without_scores():
    picks = pd.concat([table("t1", 2, 0, score=False), table("t2", 1, 1, score=False)])
    counts = count_table(picks)
    assert counts["tomogram"].tolist() == ["t1", "t2", "all"]
    assert counts["n_picks"].tolist() == [2, 1, 3]
    assert counts["mean_score"].isna().all()
    assert score_histogram_png(picks) is None


def test_histogram_png_per_tomogram_and_overall():
    two = pd.concat([table("t1", 20, 0), table("t2", 20, 1)], ignore_index=True)
    png = score_histogram_png(two)
    assert png.startswith(PNG_MAGIC)
    assert b"matplotlib.org" not in png  # no URL in the metadata
    many = pd.concat([table(f"t{i}", 3, i) for i in range(20)], ignore_index=True)
    assert score_histogram_png(many).startswith(PNG_MAGIC)


def test_report_without_scores_and_errors(tmp_path):
    p = write(tmp_path, "picks", "tomo_a", table("tomo_a", 2, 0, score=False))
    out = tmp_path / "r.html"
    run(["--picks", p, "-o", str(out)])
    page = out.read_text()
    assert "No pick scores" in page and "<img" not in page
    with pytest.raises(MilopypError, match="missing.csv"):
        run(["--picks", p, "--metrics", str(tmp_path / "missing.csv"), "-o", str(out)])
    with pytest.raises(MilopypError, match="notes.txt"):
        (tmp_path / "notes.txt").write_text("hi")
        run(["--picks", p, "--figure", str(tmp_path / "notes.txt"), "-o", str(out)])


def test_cli_entry_point(tmp_path):
    from milopyp.cli import main

    p = write(tmp_path, "picks", "tomo_a", table("tomo_a", 4, 0))
    out = tmp_path / "report.html"
    assert main(["report", "--picks", p, "-o", str(out)]) == 0
    assert "data:image/png;base64," in out.read_text()


def test_report_shows_traced_fibres(tmp_path):
    from milopyp.report import fiber_table

    fibres = pd.DataFrame({"tomogram": ["t1"] * 5 + ["t2"] * 3, "fiber_id": [0, 0, 0, 1, 1, 0, 0, 0],
                           "x": [0, 2, 4, 0, 0, 0, 0, 0], "y": [0, 0, 0, 5, 7, 0, 2, 4],
                           "z": [1] * 8})
    table_ = fiber_table(fibres).set_index("tomogram")
    assert table_.loc["t1"].tolist() == [2, 5, 6.0] and table_.loc["t2"].tolist() == [1, 3, 4.0]
    assert table_.loc["total"].tolist() == [3, 8, 10.0]
    f1 = write(tmp_path, "fibers", "t1", fibres[fibres.tomogram == "t1"])
    p = write(tmp_path, "picks", "t1", table("t1", 4, 0))
    out = tmp_path / "r.html"
    run(["--picks", p, "--fibers", f1, "-o", str(out)])
    assert "Traced fibres per tomogram" in out.read_text()


def _model_file(tmp_path, name, settings, calibration, **extra):
    from milopyp.io.localizer import write_localizer

    path = tmp_path / f"{name}.pt"
    write_localizer(path, {"network": {}, "model": {}, "settings": settings,
                           "calibration": calibration, **extra})
    return str(path)


def test_report_shows_the_model_and_warns_first_when_it_did_not_learn(tmp_path, caplog):
    """`milopyp report --model`: the localiser's calibration as a table; a model that did
    not learn its target (globular or fibre) gets a warning above everything else and in
    the log; a file from before the check says "not recorded" / "not checked"."""
    picks = write(tmp_path, "picks", "tomo_a", table("tomo_a", 4, 0))
    learned = _model_file(tmp_path, "learned", {"shape": "globular"}, {
        "threshold": 0.17, "label_peak_median": 0.29, "label_heat_median": 0.296,
        "background_peak_median": 0.0019, "separated": True, "n_labels": 55, "flips": 4,
        "rule": "mixture of 120 peaks"}, voxel_size_a=12.0)
    collapsed = _model_file(tmp_path, "collapsed", {"shape": "globular"}, {
        "threshold": 0.0, "label_peak_median": 0.0, "label_heat_median": 0.0,
        "background_peak_median": 0.0, "separated": False, "n_labels": 55, "flips": 4,
        "rule": "only 0 peaks to split"}, voxel_size_a=12.0)
    flat_fibre = _model_file(tmp_path, "fibre", {"shape": "fiber"}, {
        "threshold": 0.052, "label_peak_median": 0.087, "background_peak_median": 0.093,
        "separated": False, "n_labels": 100, "flips": 1, "bulk_level": 0.1})
    old = _model_file(tmp_path, "old", {"shape": "globular"}, {"threshold": 0.2,
                                                                 "label_peak_median": 0.4})
    pages = {}
    for name, model in (("learned", learned), ("collapsed", collapsed), ("fibre", flat_fibre),
                        ("old", old)):
        out = tmp_path / f"{name}.html"
        caplog.clear()
        with caplog.at_level("WARNING", logger="milopyp.report"):
            run(["--picks", picks, "--model", model, "-o", str(out)])
        pages[name] = out.read_text()
        assert "<h2>Model</h2>" in pages[name] and model in pages[name]
        assert bool(caplog.records) is (name in ("collapsed", "fibre")), caplog.text
    warning = re.compile(r'<h1>[^<]*</h1>\s*<p class="warning">([^<]*)</p>')
    assert not warning.search(pages["learned"]) and not warning.search(pages["old"])
    assert "155.8 x" in pages["learned"] and ">yes<" in pages["learned"]
    assert ">12<" in pages["learned"]  # the voxel size it was trained at
    first = warning.search(pages["collapsed"]).group(1)
    assert first.startswith("The model did not learn the target") and ">NO<" in pages[
        "collapsed"]
    assert warning.search(pages["fibre"]).group(1).startswith(
        "The model did not learn the filaments")
    assert "not checked" in pages["old"] and "not recorded" in pages["old"]
