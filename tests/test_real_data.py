"""A user's data as it comes from IMOD, AreTomo, Warp/RELION 5 or copick: scale and axes
checked, not assumed; MRC modes; RELION-5 and copick selections through the workflow."""

from __future__ import annotations

import logging
import subprocess

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import yaml
from workflow_helpers import BIN, REPO, workflow_env

from milopyp import cli
from milopyp.errors import MilopypError
from milopyp.io import mrc
from milopyp.simulate import simulate_dataset

SHAPE_ZYX = (6, 9, 14)


def _ramp(dtype=np.float32):
    return (np.arange(np.prod(SHAPE_ZYX)) % 100).reshape(SHAPE_ZYX).astype(dtype)


def _mrc(path, data, voxel_size=4.0):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        if voxel_size is not None:
            m.voxel_size = voxel_size
    return path


# --------------------------------------------------------------------------- MRC modes


@pytest.mark.parametrize("mode, dtype", [(0, np.int8), (1, np.int16), (2, np.float32),
                                         (6, np.uint16), (12, np.float16)])
@pytest.mark.parametrize("mmap", [False, True])
def test_mrc_modes_are_read_as_float32(tmp_path, mode, dtype, mmap):
    path = _mrc(tmp_path / f"m{mode}.rec", _ramp(dtype))
    with mrcfile.open(path) as m:
        assert int(m.header.mode) == mode
    data, voxel_size_a = mrc.read_tomogram(path, mmap=mmap)
    assert data.dtype == np.float32 and data.shape == SHAPE_ZYX
    np.testing.assert_array_equal(data, _ramp())
    assert voxel_size_a == 4.0


def test_imod_unsigned_bytes_are_read_as_uint8(tmp_path):
    values = np.full(SHAPE_ZYX, -56, np.int8)  # the byte 200
    path = _mrc(tmp_path / "u8.rec", values)
    with mrcfile.open(path, mode="r+") as m:  # IMOD's stamp, flags without "signed bytes"
        extra = bytearray(m.header.extra2.tobytes())
        extra[40:48] = np.array([1146047817, 0], "<i4").tobytes()
        m.header.extra2 = bytes(extra)
    data, _ = mrc.read_tomogram(path)
    assert float(data.min()) == 200.0
    with mrcfile.open(path, mode="r+") as m:  # flag bit 0 set: signed, as mrcfile reads it
        extra[44:48] = np.array([1], "<i4").tobytes()
        m.header.extra2 = bytes(extra)
    data, _ = mrc.read_tomogram(path)
    assert float(data.min()) == -56.0


# --------------------------------------------------------------------------- scale


def test_tilt_series_without_pixel_size_is_an_error_unless_given(tmp_path):
    path = _mrc(tmp_path / "ts.st", _ramp(), voxel_size=None)
    (tmp_path / "ts.tlt").write_text("".join(f"{a}\n" for a in range(-5, 7, 2)))
    with pytest.raises(MilopypError, match=r"ts\.st: the MRC header has no voxel size.*"
                                           r"tiltseries_pixel_size.*--tilt-pixel-size"):
        mrc.read_tilt_series(path)
    _, _, pixel_size_a = mrc.read_tilt_series(path, pixel_size_a=2.5)
    assert pixel_size_a == 2.5


def test_preprocess_refuses_a_tomogram_without_voxel_size(tmp_path, capsys):
    path = _mrc(tmp_path / "novox.mrc", _ramp(), voxel_size=None)
    out = tmp_path / "pre.mrc"
    assert cli.main(["preprocess", "--tomogram", str(path), "-o", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "novox.mrc: the MRC header has no voxel size" in err[0]
    assert "set `voxel_size:` (Å) in the config or pass --voxel-size" in err[0]
    assert not out.exists()
    # a given voxel size is the one written (nothing writes a size that was not read or given)
    assert cli.main(["preprocess", "--tomogram", str(path), "-o", str(out),
                     "--voxel-size", "6.5"]) == 0
    assert mrc.read_header(out)[1] == pytest.approx(6.5)


def test_mixed_voxel_sizes_stop_with_the_list():
    assert mrc.common_voxel_size({"a": 10.0, "b": 10.05}, "x") == 10.0
    with pytest.raises(MilopypError, match=r"tomograms: tomograms at different voxel sizes "
                                           r"\(10 Å: a, c; 13.5 Å: b\).*resample"):
        mrc.common_voxel_size({"a": 10.0, "b": 13.5, "c": 10.0}, "tomograms")


def test_z_larger_than_x_or_y_warns_once(tmp_path, caplog):
    swapped = _mrc(tmp_path / "swapped.mrc", np.zeros((20, 8, 24), np.float32))
    fine = _mrc(tmp_path / "fine.mrc", np.zeros((8, 20, 24), np.float32))
    with caplog.at_level(logging.WARNING, logger="milopyp.io.mrc"):
        mrc.read_header(fine)
        assert caplog.text == ""
        mrc.read_header(swapped)
        mrc.read_tomogram(swapped)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "swapped.mrc: z (20) is larger than y (8)" in lines[0] and "swapped" in lines[0]


# --------------------------------------------------------------------------- workflow


def snakemake(work, *extra, check=True):
    result = subprocess.run(
        [BIN / "snakemake", "--snakefile", REPO / "Snakefile", "--cores", "1",
         "--configfile", work / "config.yaml", "--directory", work, *extra],
        cwd=work, env=workflow_env(), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two simulated tomograms of 20 x 48 x 65 voxels (odd x) at 20 Å, 3 ribosomes each."""
    folder = tmp_path_factory.mktemp("sim") / "data"
    simulate_dataset(folder, n_tomograms=2, shape_zyx=(20, 48, 65), voxel_size_a=20.0,
                     seed=5, preset="demo", counts={"ribosome": 3}, write_tilt_series=False)
    return folder


def _ribosomes(data, name):
    truth = pd.read_csv(data / "truth" / f"{name}.csv")
    return truth[truth["species"] == "ribosome"][["x", "y", "z"]].to_numpy()


def test_relion5_centred_star_is_a_workflow_selection(tmp_path, data):
    work = tmp_path
    (work / "data").symlink_to(data)
    xyz = _ribosomes(data, "tomo_001")
    nx, ny, nz = 65, 48, 20  # RELION 5's centre is n / 2 (x: 32.5)
    star = pd.DataFrame({"rlnTomoName": "tomo_001",
                         "rlnCenteredCoordinateXAngst": (xyz[:, 0] - nx / 2) * 20.0,
                         "rlnCenteredCoordinateYAngst": (xyz[:, 1] - ny / 2) * 20.0,
                         "rlnCenteredCoordinateZAngst": (xyz[:, 2] - nz / 2) * 20.0})
    starfile.write({"particles": star}, work / "relion.star")
    (work / "config.yaml").write_text(yaml.safe_dump(
        {"tomograms": "data/tomograms/*.mrc", "selection": "relion.star"}))
    # a coordinate table needs no exploration: import_selection is the only job
    snakemake(work, "--allowed-rules", "import_selection", "--",
              "results/targets/particles/labels")
    labels = pd.read_csv(work / "results" / "targets" / "particles" / "labels" / "tomo_001.csv")
    np.testing.assert_allclose(labels[["x", "y", "z"]].to_numpy(), xyz, atol=1e-6)


@pytest.mark.slow
def test_workflow_stops_on_mixed_or_missing_voxel_sizes(tmp_path):
    (tmp_path / "data").mkdir()
    _mrc(tmp_path / "data" / "a.mrc", np.zeros((8, 20, 24), np.float32), voxel_size=10.0)
    _mrc(tmp_path / "data" / "b.mrc", np.zeros((8, 20, 24), np.float32), voxel_size=13.5)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"tomograms": "data/*.mrc"}))
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    assert "different voxel sizes (10 Å: a; 13.5 Å: b)" in result.stderr
    _mrc(tmp_path / "data" / "b.mrc", np.zeros((8, 20, 24), np.float32), voxel_size=None)
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    assert "b.mrc: the MRC header has no voxel size" in result.stderr
    assert "set `voxel_size:` (Å) in the config" in result.stderr
    # a given voxel size applies to all
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"tomograms": "data/*.mrc",
                                                          "voxel_size": 10.0}))
    assert "--voxel-size 10.0" in snakemake(tmp_path, "--dry-run", "--printshellcmds").stdout


@pytest.mark.slow
def test_copick_campaign_through_the_workflow(tmp_path, data):
    copick = pytest.importorskip("copick")
    from copick.models import PickableObject
    from copick.ops.add import add_tomogram

    work = tmp_path
    config = work / "project" / "config.json"
    root = copick.new_config(str(config), overlay_root=str(work / "project" / "overlay"),
                             pickable_objects=[PickableObject(name="ribosome", is_particle=True,
                                                              label=1, radius=130.0)])
    names = ["tomo_000", "tomo_001"]
    for name in names:
        volume, _ = mrc.read_tomogram(data / "tomograms" / f"{name}.mrc")
        add_tomogram(root, name, "denoised", volume, voxel_spacing=20.0)
        picks = root.get_run(name).new_picks("ribosome", "0", "curator")
        picks.from_numpy(_ribosomes(data, name) * 20.0)
    (work / "config.yaml").write_text(yaml.safe_dump(
        {"copick": "project/config.json", "copick_tomogram": {"tomo_type": "denoised"},
         "copick_session": "7", "targets": {"ribosome": {"selection": "copick:ribosome:curator:0"}}}))
    snakemake(work, "--allowed-rules", "copick_tomogram", "--",
              *[f"results/tomograms/{name}.mrc" for name in names])
    snakemake(work, "--allowed-rules", "import_selection", "--",
              "results/targets/ribosome/labels")
    # tomograms read from the project, with its voxel size; the selection from its picks
    for name in names:
        assert mrc.read_header(work / "results" / "tomograms" / f"{name}.mrc") == (
            (20, 48, 65), 20.0)
        labels = pd.read_csv(work / "results/targets/ribosome/labels" / f"{name}.csv")
        np.testing.assert_allclose(labels[["x", "y", "z"]].to_numpy(), _ribosomes(data, name),
                                   atol=1e-6)
    # export: every target's picks into the project, user milopyp, the configured session
    picks_dir = work / "results" / "targets" / "ribosome" / "picks"
    picks_dir.mkdir()
    for name in names:
        xyz = _ribosomes(data, name)
        pd.DataFrame({"tomogram": name, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                      "score": 0.5}).to_csv(picks_dir / f"{name}.csv", index=False)
    snakemake(work, "--allowed-rules", "export_copick", "--",
              "results/targets/ribosome/copick.json")
    root = copick.from_file(str(config))
    for name in names:
        (written,) = root.get_run(name).get_picks(object_name="ribosome", user_id="milopyp",
                                                  session_id="7")
        np.testing.assert_allclose(written.numpy()[0], _ribosomes(data, name) * 20.0, atol=0.5)
