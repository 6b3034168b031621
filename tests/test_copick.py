"""copick in and out, and RELION-5 centred coordinates checked against copick's own conversion.

Each test builds a local copick project (filesystem overlay, OME-Zarr tomograms) in tmp_path
with copick's API, from the project's simulator; positions are compared through copick's
reader, not ours.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import starfile

copick = pytest.importorskip("copick")

from copick.models import PickableObject
from copick.ops.add import add_tomogram

from milopyp import cli
from milopyp.errors import MilopypError
from milopyp.export import relion_particles
from milopyp.io.coords import read_coordinates
from milopyp.io.mrc import read_tomogram
from milopyp.simulate import simulate_tomogram

VOXEL_A = 20.0
# an even and an odd tomogram, non-cubic so that axis swaps fail
SHAPES = {"TS_even": (20, 48, 64), "TS_odd": (21, 49, 65)}


def make_project(folder, volumes: dict[str, np.ndarray], objects=("ribosome",)):
    """A copick project in ``folder``: one run per volume (``[z, y, x]``, VOXEL_A Å, tomo_type
    wbp) and the pickable ``objects``. Returns the config path."""
    config = folder / "copick" / "config.json"
    pickable = [PickableObject(name=name, is_particle=True, label=i + 1, radius=100.0)
                for i, name in enumerate(objects)]
    root = copick.new_config(str(config), overlay_root=str(folder / "copick" / "overlay"),
                             pickable_objects=pickable)
    for run, volume in volumes.items():
        add_tomogram(root, run, "wbp", volume.astype(np.float32), voxel_spacing=VOXEL_A)
    return config


def random_voxels(shape_zyx, n, seed):
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape_zyx
    return rng.uniform(0, 1, (n, 3)) * (np.array([nx, ny, nz]) - 1)


def test_relion5_centred_coordinates_agree_with_copick_on_odd_and_even_sizes(tmp_path):
    config = make_project(tmp_path, {k: np.zeros(s, np.float32) for k, s in SHAPES.items()})
    root = copick.from_file(str(config))
    for i, (name, shape) in enumerate(SHAPES.items()):
        xyz = random_voxels(shape, 6, seed=i)
        # copick's side: the same points in Å, converted by copick to RELION
        picks = root.get_run(name).new_picks("ribosome", "9", "tester")
        picks.from_numpy(xyz * VOXEL_A)
        theirs = picks.df("relion")
        ours = relion_particles(
            pd.DataFrame({"tomogram": name, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}),
            {name: (shape, VOXEL_A)},
        )
        columns = [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]
        np.testing.assert_allclose(ours[columns].to_numpy(), theirs[columns].to_numpy(),
                                   atol=1e-6, err_msg=name)
        # and back: copick reads our centred columns to the same Å positions
        back = root.get_run(name).new_picks("ribosome", "10", "tester")
        back.from_df(ours[["rlnTomoName", *columns]].copy())
        np.testing.assert_allclose(back.numpy()[0], xyz * VOXEL_A, atol=1e-6, err_msg=name)


def test_relion5_centre_is_half_the_size_not_integer_division():
    # odd nx = 41: voxel 20 is half a voxel left of the centre 20.5 (integer division: 0 Å)
    table = relion_particles(pd.DataFrame({"tomogram": ["t"], "x": [20.0], "y": [15.0],
                                           "z": [6.0]}), {"t": ((13, 31, 41), 2.0)})
    assert table.loc[0, "rlnCenteredCoordinateXAngst"] == pytest.approx(-1.0)
    assert table.loc[0, "rlnCenteredCoordinateYAngst"] == pytest.approx(-1.0)
    assert table.loc[0, "rlnCenteredCoordinateZAngst"] == pytest.approx(-1.0)


@pytest.fixture(scope="module")
def simulated():
    """Two small simulated tomograms (even and odd sizes) with 3 ribosomes each."""
    out = {}
    for i, (name, shape) in enumerate(SHAPES.items()):
        sim = simulate_tomogram(shape_zyx=shape, voxel_size_a=VOXEL_A, seed=i, name=name,
                                preset="demo", counts={"ribosome": 3})
        out[name] = sim
    return out


def test_copick_tomogram_command_writes_the_run_as_mrc(tmp_path, simulated):
    config = make_project(tmp_path, {k: s.tomogram for k, s in simulated.items()})
    mrc = tmp_path / "TS_odd.mrc"
    assert cli.main(["copick-tomogram", "--copick-config", str(config), "--run", "TS_odd",
                     "--voxel-spacing", str(VOXEL_A), "--tomo-type", "wbp", "-o", str(mrc)]) == 0
    data, voxel_size_a = read_tomogram(mrc)
    assert voxel_size_a == pytest.approx(VOXEL_A)
    np.testing.assert_allclose(data, simulated["TS_odd"].tomogram, atol=1e-6)
    # a tomo_type the run lacks: one line naming what it has
    with pytest.raises(MilopypError, match=r"run TS_odd has no 'denoised' tomogram.*20 Å/wbp"):
        _raise_from_cli(["copick-tomogram", "--copick-config", str(config), "--run", "TS_odd",
                         "--voxel-spacing", str(VOXEL_A), "--tomo-type", "denoised",
                         "-o", str(mrc)])


def _raise_from_cli(argv):
    """Run a command's main() directly so that its MilopypError reaches pytest."""
    import argparse
    import importlib

    module = importlib.import_module(f"milopyp.commands.{cli.COMMANDS[argv[0]][0]}")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    module.main(parser.parse_args(argv[1:]))


def test_export_round_trips_through_copick_and_back_as_a_selection(tmp_path, simulated):
    config = make_project(tmp_path, {k: s.tomogram for k, s in simulated.items()},
                          objects=("ribosome", "membrane"))
    mrcs, picks_files, truth = [], [], {}
    for name in SHAPES:
        mrc = tmp_path / "tomograms" / f"{name}.mrc"
        mrc.parent.mkdir(exist_ok=True)
        _raise_from_cli(["copick-tomogram", "--copick-config", str(config), "--run", name,
                         "--voxel-spacing", str(VOXEL_A), "--tomo-type", "wbp", "-o", str(mrc)])
        mrcs.append(str(mrc))
        t = simulated[name].truth
        t = t[t["species"] == "ribosome"][["tomogram", "x", "y", "z"]].reset_index(drop=True)
        t["tomogram"] = name
        t["score"] = np.linspace(0.3, 0.9, len(t))
        truth[name] = t
        path = tmp_path / "picks" / f"{name}.csv"
        path.parent.mkdir(exist_ok=True)
        t.to_csv(path, index=False)
        picks_files.append(str(path))
    summary = tmp_path / "copick.json"
    _raise_from_cli(["export", "--picks", *picks_files, "--tomograms", *mrcs,
                     "--copick-config", str(config), "--copick-object", "ribosome",
                     "--copick-summary", str(summary), "-o", str(tmp_path / "picks.star")])
    assert json.loads(summary.read_text())["picks"] == {n: len(t) for n, t in truth.items()}

    # read back with copick's own API: user milopyp, session 0, Å, scores kept
    root = copick.from_file(str(config))
    for name, t in truth.items():
        (picks,) = root.get_run(name).get_picks(object_name="ribosome", user_id="milopyp",
                                                 session_id="0")
        xyz_a = picks.numpy()[0]
        np.testing.assert_allclose(xyz_a, t[["x", "y", "z"]].to_numpy() * VOXEL_A, atol=0.5)
        np.testing.assert_allclose(picks.scores(), t["score"], atol=1e-9)
        # and picks.star's centred Å are copick's RELION conversion of the same picks
        star = starfile.read(tmp_path / "picks.star")
        star = star[star["rlnTomoName"] == name]
        columns = [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]
        np.testing.assert_allclose(star[columns].to_numpy(), picks.df("relion")[columns],
                                   atol=1e-4)

    # the same picks as a selection: copick:ribosome:milopyp:0 gives the voxels back
    labels = tmp_path / "labels"
    _raise_from_cli(["import-selection", "--selection", "copick:ribosome:milopyp:0",
                     "--copick-config", str(config), "--tomograms", *mrcs, "-o", str(labels)])
    for name, t in truth.items():
        got = read_coordinates(labels / f"{name}.csv")
        np.testing.assert_allclose(got[["x", "y", "z"]].to_numpy(),
                                   t[["x", "y", "z"]].to_numpy(), atol=1e-6)

    # a target the project has no pickable object for is an error naming the objects
    with pytest.raises(MilopypError, match=r"no pickable object 'apoferritin'.*ribosome"):
        _raise_from_cli(["export", "--picks", *picks_files, "--tomograms", *mrcs,
                         "--copick-config", str(config), "--copick-object", "apoferritin"])
