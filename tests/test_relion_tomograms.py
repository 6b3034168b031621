"""A campaign's tomograms from a RELION 5 tomograms.star (milopyp.io.relion and the workflow)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import yaml
from workflow_helpers import BIN, REPO, workflow_env

from milopyp.config import validate_config
from milopyp.errors import MilopypError
from milopyp.io.mrc import read_header
from milopyp.io.relion import (
    expected_shape_zyx,
    read_relion_tomograms,
    voxel_size_override_a,
)

PIXEL_A, BINNING = 1.35, 8.0  # 10.8 Å voxels
VOXEL_A = PIXEL_A * BINNING
SHAPE_ZYX = (16, 24, 32)  # non-cubic, so that an axis swap shows
NAMES = ("TS_01", "TS_02")
STAR = Path("Tomograms/job003/tomograms.star")


def write_mrc(path: Path, voxel_size_a: float, shape_zyx=SHAPE_ZYX, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).normal(size=shape_zyx).astype(np.float32)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = voxel_size_a


def relion_project(root: Path, header_voxel_a=(VOXEL_A, VOXEL_A), names=NAMES,
                   binning: float | None = BINNING, pixel_a: float = PIXEL_A, **columns) -> Path:
    """A RELION-5-like project in ``root``: Tomograms/job003/tomograms.star (data_global) with
    one row per name, each tomogram at Tomograms/job003/tomograms/rec_<name>.mrc (paths
    relative to ``root``, as RELION writes them). ``columns`` add or replace star columns
    (a list, one value per row). Returns the star's path."""
    rows = []
    for i, (name, header_a) in enumerate(zip(names, header_voxel_a)):
        rec = f"Tomograms/job003/tomograms/rec_{name}.mrc"
        write_mrc(root / rec, header_a, seed=i)
        row = {"rlnTomoName": name, "rlnVoltage": 300.0, "rlnTomoTiltSeriesPixelSize": pixel_a,
               "rlnTomoSizeX": 256, "rlnTomoSizeY": 192, "rlnTomoSizeZ": 130,  # z: int(130/8)
               "rlnTomoReconstructedTomogram": rec}
        if binning is not None:
            row["rlnTomoTomogramBinning"] = binning
        rows.append(row)
    table = pd.DataFrame(rows)
    for key, values in columns.items():
        table[key] = values
    star = root / STAR
    starfile.write({"global": table}, star, overwrite=True)
    return star


def test_reader_gives_names_paths_voxel_sizes_and_shapes(tmp_path, monkeypatch):
    star = relion_project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # paths resolve below the project the job folder hangs from
    tomograms = read_relion_tomograms(star)
    assert list(tomograms) == list(NAMES)
    for name, t in tomograms.items():
        assert t.name == name
        assert t.path == tmp_path / "project" / f"Tomograms/job003/tomograms/rec_{name}.mrc"
        assert t.shape_zyx == SHAPE_ZYX
        assert t.relion_voxel_size_a == pytest.approx(VOXEL_A)
        assert t.voxel_size_a == pytest.approx(VOXEL_A, rel=1e-6)
        assert t.header_voxel_size_a == pytest.approx(VOXEL_A, rel=1e-6)
    assert voxel_size_override_a(tomograms, "test") is None  # every header has one

    # from the project directory with a relative star path, the paths stay relative
    monkeypatch.chdir(tmp_path / "project")
    tomograms = read_relion_tomograms(STAR)
    assert str(tomograms["TS_02"].path) == "Tomograms/job003/tomograms/rec_TS_02.mrc"


def test_expected_shape_rounds_x_y_half_up_and_truncates_z_as_relion_does():
    # reconstruct_tomogram.cpp: w1 = w / spacing + 0.5, h1 likewise, t1 = d / spacing (ints)
    assert expected_shape_zyx((4092, 4092, 1392), 6.0) == (232, 682, 682)
    assert expected_shape_zyx((260, 196, 135), 8.0) == (16, 25, 33)  # 32.5, 24.5, 16.875


def test_names_stay_strings_and_a_missing_binning_column_means_one(tmp_path):
    star = relion_project(tmp_path, names=("007", "12"), binning=None, pixel_a=VOXEL_A,
                          rlnTomoSizeX=[32, 32], rlnTomoSizeY=[24, 24], rlnTomoSizeZ=[16, 16])
    tomograms = read_relion_tomograms(star)
    assert list(tomograms) == ["007", "12"]  # not parsed as numbers 7 and 12
    assert tomograms["007"].relion_voxel_size_a == pytest.approx(VOXEL_A)


def test_header_without_voxel_size_takes_relions_as_the_override(tmp_path):
    star = relion_project(tmp_path, header_voxel_a=(VOXEL_A, 0.0))
    tomograms = read_relion_tomograms(star)
    assert tomograms["TS_02"].header_voxel_size_a is None
    assert tomograms["TS_02"].voxel_size_a == pytest.approx(VOXEL_A)
    assert voxel_size_override_a(tomograms, "test") == pytest.approx(VOXEL_A)
    # IMOD's placeholder 1 Å counts as none
    star = relion_project(tmp_path, header_voxel_a=(1.0, VOXEL_A))
    tomograms = read_relion_tomograms(star)
    assert tomograms["TS_01"].header_voxel_size_a is None
    assert tomograms["TS_01"].voxel_size_a == pytest.approx(VOXEL_A)


def test_mixed_relion_voxel_sizes_stop_the_override(tmp_path):
    star = relion_project(tmp_path, header_voxel_a=(0.0, 0.0),
                          rlnTomoTomogramBinning=[8.0, 4.0])
    tomograms = read_relion_tomograms(star)
    with pytest.raises(MilopypError, match=r"different voxel sizes \(5\.4 Å: TS_02; 10\.8 Å: TS_01\)"):
        voxel_size_override_a(tomograms, "relion_tomograms: x")


def one_line_error(call) -> str:
    with pytest.raises(MilopypError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_voxel_size_disagreement_is_a_one_line_error_naming_both(tmp_path):
    star = relion_project(tmp_path, header_voxel_a=(VOXEL_A, 2 * VOXEL_A))
    message = one_line_error(lambda: read_relion_tomograms(star))
    assert str(star) in message and "rlnTomoName TS_02" in message
    assert "10.8 Å in RELION" in message and "21.6 Å in the MRC header" in message
    assert "voxel_size" in message  # the fix
    # an explicit `voxel_size:` wins and skips the comparison
    tomograms = read_relion_tomograms(star, voxel_size_a=10.0)
    assert tomograms["TS_02"].voxel_size_a == 10.0


def test_shape_mismatch_is_a_warning_naming_both(tmp_path, caplog):
    star = relion_project(tmp_path, rlnTomoSizeX=[256, 512])
    with caplog.at_level(logging.WARNING, logger="milopyp.io.relion"):
        tomograms = read_relion_tomograms(star)
    assert set(tomograms) == set(NAMES)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "TS_02" in warnings[0] and "(16, 24, 32)" in warnings[0] and "(16, 24, 64)" in warnings[0]


def test_missing_tomogram_is_a_one_line_error_naming_star_row_path_and_fix(tmp_path, monkeypatch):
    star = relion_project(tmp_path / "project")
    (tmp_path / "project/Tomograms/job003/tomograms/rec_TS_02.mrc").unlink()
    monkeypatch.chdir(tmp_path)
    message = one_line_error(lambda: read_relion_tomograms(star))
    assert str(star) in message and "rlnTomoName TS_02" in message
    assert str(tmp_path / "project/Tomograms/job003/tomograms/rec_TS_02.mrc") in message
    assert "set `relion_project_dir:`" in message


def test_relion_project_dir_resolves_a_star_moved_out_of_the_project(tmp_path):
    relion_project(tmp_path / "project")
    moved = tmp_path / "tomograms.star"
    (tmp_path / "project" / STAR).rename(moved)
    one_line_error(lambda: read_relion_tomograms(moved))  # nothing to find beside it
    tomograms = read_relion_tomograms(moved, project_dir=tmp_path / "project")
    assert all(t.path.is_file() for t in tomograms.values())


def test_column_choice_missing_column_and_not_denoised_rows(tmp_path):
    denoised = ["Denoise/job009/tomograms/rec_TS_01.mrc", "N/A"]
    star = relion_project(tmp_path, rlnTomoReconstructedTomogramDenoised=denoised)
    write_mrc(tmp_path / denoised[0], VOXEL_A)
    message = one_line_error(lambda: read_relion_tomograms(
        star, column="rlnTomoReconstructedTomogramDenoised"))
    assert "rlnTomoName TS_02" in message and "'N/A'" in message
    message = one_line_error(lambda: read_relion_tomograms(
        star, column="rlnTomoReconstructedTomogramHalf1"))
    assert "no column rlnTomoReconstructedTomogramHalf1" in message
    assert "rlnTomoReconstructedTomogram, rlnTomoReconstructedTomogramDenoised" in message


def test_config_takes_one_tomogram_source(tmp_path):
    config = validate_config({"relion_tomograms": "Tomograms/job003/tomograms.star"})
    assert config["relion_tomogram_column"] == "rlnTomoReconstructedTomogram"
    assert config["relion_project_dir"] is None
    message = one_line_error(lambda: validate_config(
        {"tomograms": "data/*.mrc", "relion_tomograms": "t.star"}, "my.yaml"))
    assert message == (
        "my.yaml: `tomograms` (MRC files) and `relion_tomograms` (a RELION tomograms.star) are "
        "both set; set only one of `tomograms`, `copick`, `relion_tomograms`"
    )
    message = one_line_error(lambda: validate_config(
        {"relion_tomograms": "t.star", "relion_tomogram_column": "Denoised"}))
    assert "bad value for `relion_tomogram_column`" in message


def snakemake(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BIN / "snakemake", "--snakefile", REPO / "Snakefile", "--cores", "1",
         "--configfile", workdir / "config.yaml", "--directory", workdir, *extra],
        cwd=workdir, env=workflow_env(), capture_output=True, text=True, check=False,
    )


def test_workflow_dry_run_names_jobs_by_rlnTomoName(tmp_path):
    # one header without a voxel size: RELION's reaches every command as --voxel-size
    relion_project(tmp_path, header_voxel_a=(VOXEL_A, 0.0))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"relion_tomograms": str(STAR), "particle_diameter": 100}))
    dry = snakemake(tmp_path, "--dry-run", "--printshellcmds")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    table = dry.stdout.split("Job stats:")[1].split("total")[0].splitlines()[3:]
    jobs = dict(line.split() for line in table if line.strip())
    assert jobs["relion_tomogram"] == jobs["preprocess"] == jobs["candidates"] == "2"
    for name in NAMES:
        assert (f"ln -sf {tmp_path.resolve()}/Tomograms/job003/tomograms/rec_{name}.mrc "
                f"results/tomograms/{name}.mrc") in dry.stdout
        assert (f"milopyp preprocess --tomogram results/tomograms/{name}.mrc "
                f"-o results/preprocessed/{name}.mrc") in dry.stdout
        assert f"results/candidates/{name}.csv" in dry.stdout
    assert "--voxel-size 10.8 " in dry.stdout

    # the link job itself: results/tomograms/{rlnTomoName}.mrc reads as the reconstruction
    run = snakemake(tmp_path, "results/tomograms/TS_01.mrc")
    assert run.returncode == 0, run.stderr[-3000:]
    link = tmp_path / "results/tomograms/TS_01.mrc"
    assert link.is_symlink() and read_header(link)[0] == SHAPE_ZYX

    # a tomogram that is not there stops the workflow with the reader's one line
    (tmp_path / "Tomograms/job003/tomograms/rec_TS_02.mrc").unlink()
    failed = snakemake(tmp_path, "--dry-run")
    assert failed.returncode != 0
    assert "milopyp: error: Tomograms/job003/tomograms.star: rlnTomoName TS_02:" in failed.stderr
