"""Each derived default is defined once, in milopyp.defaults: the commands' own defaults
(what a user running a command by hand gets) and the workflow's rule parameters
(milopyp.params) both equal it."""

from __future__ import annotations

import re
from types import SimpleNamespace

import mrcfile
import numpy as np
import pandas as pd
import pytest

from milopyp import cli, defaults, params
from milopyp.campaign import Campaign
from milopyp.evaluate.stage import match_radius_vox
from milopyp.fibers.stage import link_vox, spacing_vox
from milopyp.io.coords import write_coordinates
from milopyp.localize.stage import nms_kernel_from_model

VOXEL_A = 12.0
DIAMETER_A = 260.0
FIBER_DIAMETER_A = 250.0


def option(options: str, flag: str) -> float:
    """The number after ``flag`` in an option string."""
    found = re.search(rf"(?:^| ){re.escape(flag)} (\S+)", options)
    assert found, f"{flag} not in {options!r}"
    return float(found.group(1))


@pytest.fixture
def campaign(tmp_path):
    for name in ("tomo_000", "tomo_001"):
        with mrcfile.new(tmp_path / f"{name}.mrc") as mrc:
            mrc.set_data(np.zeros((24, 64, 64), np.float32))
            mrc.voxel_size = VOXEL_A
    config = {
        "tomograms": str(tmp_path / "*.mrc"), "particle_diameter": DIAMETER_A,
        "targets": {"ribosome": {"selection": "sel.csv"},
                    "microtubule": {"selection": "mt.csv", "shape": "fiber",
                                    "particle_diameter": FIBER_DIAMETER_A}},
    }
    return Campaign.from_config(config)


def test_patch_size_of_the_command_and_the_workflow(tmp_path, campaign):
    want = defaults.patch_size_vox(DIAMETER_A, VOXEL_A)
    assert option(params.patches(campaign, [], []), "--size-vox") == want
    candidates = tmp_path / "c.csv"
    write_coordinates(candidates, pd.DataFrame({"x": [32.0], "y": [32.0], "z": [12.0]}))
    out = tmp_path / "p.npz"
    assert cli.main(["patches", "--tomogram", str(tmp_path / "tomo_000.mrc"), "--candidates",
                     str(candidates), "--particle-diameter-a", str(DIAMETER_A),
                     "-o", str(out)]) == 0
    with np.load(out) as f:
        assert f["patches"].shape[-2:] == (want, want)


def test_fibre_link_distance_and_segment_spacing(campaign):
    fibre = campaign.targets["microtubule"]
    options = params.trace_fibers(campaign, fibre)
    assert option(options, "--link-distance-a") == defaults.link_distance_a(FIBER_DIAMETER_A)
    assert option(options, "--segment-spacing-a") == defaults.segment_spacing_a(FIBER_DIAMETER_A)
    # the command's defaults from the same diameter (no link or spacing given)
    assert link_vox(None, None, FIBER_DIAMETER_A, VOXEL_A) == pytest.approx(
        defaults.link_distance_a(FIBER_DIAMETER_A) / VOXEL_A)
    assert spacing_vox(None, None, FIBER_DIAMETER_A, VOXEL_A) == pytest.approx(
        defaults.segment_spacing_a(FIBER_DIAMETER_A) / VOXEL_A)
    assert link_vox(None, None, None, None) == defaults.FALLBACK_LINK_DISTANCE_VOX
    assert spacing_vox(None, None, None, VOXEL_A) == pytest.approx(
        defaults.FALLBACK_SEGMENT_SPACING_A / VOXEL_A)


def test_evaluation_radius(campaign):
    truth = pd.DataFrame({"tomogram": ["tomo_000"], "x": [1.0], "y": [1.0], "z": [1.0]})
    globular = params.evaluate_target(campaign, campaign.targets["ribosome"])
    assert option(globular, "--radius-a") == defaults.evaluation_radius_a(DIAMETER_A)
    assert option(params.evaluate_candidates(campaign), "--radius-a") == (
        defaults.evaluation_radius_a(DIAMETER_A))
    assert match_radius_vox(truth, particle_diameter_a=DIAMETER_A, voxel_size_a=VOXEL_A) == (
        pytest.approx(defaults.evaluation_radius_a(DIAMETER_A) / VOXEL_A))
    fibre = params.evaluate_target(campaign, campaign.targets["microtubule"])
    assert option(fibre, "--radius-vox") == defaults.FIBER_EVALUATION_RADIUS_VOX
    assert match_radius_vox(truth, fibers=True) == defaults.FIBER_EVALUATION_RADIUS_VOX


def test_nms_kernel_comes_from_the_shape(campaign):
    # the workflow passes no kernel unless the config sets one: the command derives it
    assert "--nms-kernel" not in params.localize(campaign, campaign.targets["ribosome"], "p.csv")
    globular = SimpleNamespace(settings={"shape": "globular", "particle_radius_vox": 5.4},
                               config=SimpleNamespace(bin_factor=2))
    assert nms_kernel_from_model(globular) == defaults.nms_kernel_vox(5.4 * 2) == 11
    fibre = SimpleNamespace(settings={"shape": "fiber", "particle_radius_vox": 10.0},
                            config=SimpleNamespace(bin_factor=1))
    assert nms_kernel_from_model(fibre) == defaults.FIBER_NMS_KERNEL_VOX
