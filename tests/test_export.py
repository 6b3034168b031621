"""Tests of milopyp.export and `milopyp export` (CSV + RELION-5 STAR)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from milopyp.commands import export as cmd
from milopyp.errors import MilopypError
from milopyp.export import combine_picks, relion_particles
from milopyp.io.coords import read_coordinates
from milopyp.io.mrc import write_tomogram

# two tomograms of different non-cubic shapes and voxel sizes
GEOMETRY = {"tomo_a": ((24, 40, 56), 10.0), "tomo_b": ((30, 36, 50), 13.5)}


@pytest.fixture
def tomograms(tmp_path) -> list[str]:
    paths = []
    for name, (shape, voxel) in GEOMETRY.items():
        p = tmp_path / "data" / f"{name}.mrc"
        p.parent.mkdir(exist_ok=True)
        write_tomogram(p, np.zeros(shape, np.float32), voxel)
        paths.append(str(p))
    return paths


def picks_frame(name: str, n: int, seed: int, fibers: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    nz, ny, nx = GEOMETRY[name][0]
    xyz = rng.uniform(0, 1, (n, 3)) * (np.array([nx, ny, nz]) - 1)
    df = pd.DataFrame({"tomogram": name, "x": xyz[:, 0].round(2), "y": xyz[:, 1].round(2),
                       "z": xyz[:, 2].round(2), "score": rng.uniform(0, 1, n).round(4)})
    if fibers:
        df["fiber_id"] = np.arange(n) % 2 * 5 + 3  # ids 3 and 8
    return df


def write_picks(tmp_path, name, df) -> str:
    p = tmp_path / "picks" / f"{name}.csv"
    p.parent.mkdir(exist_ok=True)
    df.to_csv(p, index=False)
    return str(p)


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    cmd.main(parser.parse_args(argv))


def test_star_round_trip_two_tomograms(tmp_path, tomograms):
    a, b = picks_frame("tomo_a", 5, 1), picks_frame("tomo_b", 4, 2)
    pa, pb = write_picks(tmp_path, "tomo_a", a), write_picks(tmp_path, "tomo_b", b)
    star, csv = tmp_path / "picks.star", tmp_path / "picks.csv"
    run(["--picks", pa, pb, "--tomograms", *tomograms, "-o", str(star), "--csv", str(csv)])

    text = star.read_text()
    assert text.startswith("# version 50001\n")
    assert "data_particles" in text and "data_optics" not in text and "data_global" not in text
    raw = starfile.read(star)
    assert list(raw.columns) == [
        "rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ",
        "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
        "rlnCenteredCoordinateZAngst", "rlnAutopickFigureOfMerit"]
    # hand-computed centred Å for the first pick of tomo_b: (x - nx // 2) * voxel
    row = raw[raw.rlnTomoName == "tomo_b"].iloc[0]
    assert row.rlnCenteredCoordinateXAngst == pytest.approx((b.x[0] - 25) * 13.5, abs=1e-4)
    assert row.rlnCenteredCoordinateYAngst == pytest.approx((b.y[0] - 18) * 13.5, abs=1e-4)
    assert row.rlnCenteredCoordinateZAngst == pytest.approx((b.z[0] - 15) * 13.5, abs=1e-4)

    want = pd.concat([a, b], ignore_index=True)
    back = read_coordinates(star)
    np.testing.assert_allclose(back[["x", "y", "z"]], want[["x", "y", "z"]], atol=1e-5)
    np.testing.assert_allclose(back["score"], want["score"], atol=1e-6)
    # the Å columns alone give back the voxels, per tomogram with its own shape and voxel size
    angst = tmp_path / "angst.star"
    starfile.write({"particles": raw.drop(columns=["rlnCoordinateX", "rlnCoordinateY",
                                                   "rlnCoordinateZ"])}, angst)
    for name, (shape, voxel) in GEOMETRY.items():
        got = read_coordinates(angst, voxel_size_a=voxel, shape_zyx=shape)
        got = got[got.tomogram == name]
        np.testing.assert_allclose(
            got[["x", "y", "z"]], want[want.tomogram == name][["x", "y", "z"]], atol=1e-4
        )

    table = pd.read_csv(csv)
    assert list(table.columns) == ["tomogram", "x", "y", "z", "score"]
    assert len(table) == 9 and table["tomogram"].value_counts().to_dict() == {
        "tomo_a": 5, "tomo_b": 4}


def test_voxel_size_override(tmp_path, tomograms):
    pa = write_picks(tmp_path, "tomo_a", picks_frame("tomo_a", 2, 3))
    star = tmp_path / "picks.star"
    run(["--picks", pa, "--tomograms", *tomograms, "-o", str(star), "--voxel-size", "2"])
    raw = starfile.read(star)
    assert raw.rlnCenteredCoordinateXAngst[0] == pytest.approx((raw.rlnCoordinateX[0] - 28) * 2)


def test_empty_tables_and_fibres(tmp_path, tomograms, caplog):
    empty = write_picks(tmp_path, "tomo_a", picks_frame("tomo_a", 0, 0, fibers=True))
    fib = write_picks(tmp_path, "tomo_b", picks_frame("tomo_b", 4, 5, fibers=True))
    star, csv = tmp_path / "picks.star", tmp_path / "picks.csv"
    run(["--picks", empty, fib, "--tomograms", *tomograms, "-o", str(star), "--csv", str(csv)])
    raw = starfile.read(star)
    assert len(raw) == 4 and set(raw.rlnTomoName) == {"tomo_b"}
    assert raw.rlnHelicalTubeID.tolist() == [1, 2, 1, 2]  # fiber ids 3, 8 -> tubes 1, 2
    assert list(pd.read_csv(csv).columns) == ["tomogram", "x", "y", "z", "score", "fiber_id"]

    # all empty: valid empty files and a warning
    star2, csv2 = tmp_path / "none.star", tmp_path / "none.csv"
    with caplog.at_level(logging.WARNING):
        run(["--picks", empty, "--tomograms", *tomograms, "-o", str(star2), "--csv", str(csv2)])
    assert "no picks" in caplog.text
    assert len(read_coordinates(star2)) == 0
    assert "rlnCenteredCoordinateXAngst" in star2.read_text()
    table = pd.read_csv(csv2)
    assert len(table) == 0 and list(table.columns)[:4] == ["tomogram", "x", "y", "z"]


def test_empty_pick_file_is_an_error_not_no_picks(tmp_path, tomograms):
    """localize writes a header even without picks; a 0-byte file is a cut-off write."""
    p = tmp_path / "picks" / "tomo_a.csv"
    p.parent.mkdir()
    p.write_text("")
    with pytest.raises(MilopypError, match="empty file") as err:
        run(["--picks", str(p), "--tomograms", *tomograms, "-o", str(tmp_path / "p.star")])
    assert str(p) in str(err.value) and "localize" in str(err.value)
    assert not (tmp_path / "p.star").exists()


def test_picks_without_tomogram_mrc_is_an_error(tmp_path, tomograms):
    p = write_picks(tmp_path, "tomo_x", picks_frame("tomo_a", 2, 0).assign(tomogram="tomo_x"))
    with pytest.raises(MilopypError, match="tomo_x") as err:
        run(["--picks", p, "--tomograms", *tomograms, "-o", str(tmp_path / "p.star")])
    assert "tomo_x.csv" in str(err.value) and "--tomograms" in str(err.value)
    assert not (tmp_path / "p.star").exists()


def test_picks_outside_their_tomogram_is_an_error(tmp_path, tomograms):
    df = picks_frame("tomo_b", 2, 0)
    df.loc[1, "z"] = 40.0  # tomo_b has nz = 30
    p = write_picks(tmp_path, "tomo_b", df)
    with pytest.raises(MilopypError, match="outside the tomogram"):
        run(["--picks", p, "--tomograms", *tomograms, "-o", str(tmp_path / "p.star")])


def test_relion_particles_keeps_row_order():
    picks = pd.concat([picks_frame("tomo_a", 2, 0), picks_frame("tomo_b", 2, 1),
                       picks_frame("tomo_a", 1, 2)], ignore_index=True)
    out = relion_particles(picks, GEOMETRY)
    assert out.rlnTomoName.tolist() == picks.tomogram.tolist()
    np.testing.assert_allclose(out.rlnCoordinateX, picks.x)
    with pytest.raises(MilopypError, match="tomo_a"):
        relion_particles(picks, {"tomo_b": GEOMETRY["tomo_b"]})


def test_combine_picks_column_order():
    a = picks_frame("tomo_a", 2, 0).assign(extra=1)[["extra", "z", "y", "x", "score", "tomogram"]]
    b = picks_frame("tomo_b", 1, 1)
    out = combine_picks([a, b.iloc[:0], b])
    assert list(out.columns) == ["tomogram", "x", "y", "z", "score", "extra"]
    assert len(out) == 3


def test_cli_entry_point(tmp_path, tomograms):
    from milopyp.cli import main

    pa = write_picks(tmp_path, "tomo_a", picks_frame("tomo_a", 3, 0))
    star = tmp_path / "picks.star"
    assert main(["export", "--picks", pa, "--tomograms", *tomograms, "-o", str(star)]) == 0
    assert len(read_coordinates(star)) == 3
    assert Path(star).read_text().count("tomo_a") == 3


def test_csv_only_and_relion_prior_columns_pass_through(tmp_path, tomograms):
    df = picks_frame("tomo_b", 4, 5, fibers=True).assign(rlnAngleTilt=90.0, rlnAnglePsi=[0, 10, 20, 30])
    p = write_picks(tmp_path, "tomo_b", df)
    csv = tmp_path / "only.csv"
    run(["--picks", p, "--tomograms", *tomograms, "--csv", str(csv)])
    assert len(pd.read_csv(csv)) == 4 and not list(tmp_path.glob("*.star"))
    star = tmp_path / "segments.star"
    run(["--picks", p, "--tomograms", *tomograms, "-o", str(star)])
    raw = starfile.read(star)
    assert raw.rlnAnglePsi.tolist() == [0, 10, 20, 30] and set(raw.rlnAngleTilt) == {90.0}
    with pytest.raises(MilopypError, match="nothing to write"):
        run(["--picks", p, "--tomograms", *tomograms])


def test_star_writer_blocks_version_line_and_reader(tmp_path):
    from milopyp.io import star

    particles = pd.DataFrame({"rlnTomoName": ["t"], "rlnCoordinateX": [1.5],
                              "rlnCoordinateY": [2.0], "rlnCoordinateZ": [3.0]})
    one = tmp_path / "one.star"
    star.write(one, particles)  # one table: the particles block only
    text = one.read_text()
    assert text.startswith(star.VERSION_LINE + "\n") and star.VERSION_LINE == "# version 50001"
    assert "data_particles" in text and "data_optics" not in text
    two = tmp_path / "two.star"
    optics = pd.DataFrame({"rlnOpticsGroup": [1]})
    star.write(two, {"optics": optics, "particles": particles})
    blocks = star.read(two)
    assert list(blocks) == ["optics", "particles"]
    pd.testing.assert_frame_equal(star.particle_block(two), particles)
    assert not [p for p in tmp_path.iterdir() if p.name not in ("one.star", "two.star")]
