"""milopyp.campaign (the facts a workflow config describes) and milopyp.params (the command
options built from them), without Snakemake."""

from __future__ import annotations

import re
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from milopyp import defaults, params
from milopyp.campaign import Campaign, discover_tomograms, is_coordinate_selection, tomogram_name
from milopyp.errors import MilopypError
from milopyp.shapes import FIBER, GLOBULAR

SHAPE_ZYX = (4, 6, 8)  # non-cubic


def write_mrc(path: Path, voxel_size_a: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.zeros(SHAPE_ZYX, np.float32))
        mrc.voxel_size = voxel_size_a


def make_campaign(tmp_path: Path, voxel_sizes=(12.0, 12.0), **config) -> Campaign:
    for i, voxel_size_a in enumerate(voxel_sizes):
        write_mrc(tmp_path / "tomograms" / f"tomo_{i:03d}.rec.mrc", voxel_size_a)
    config = {"tomograms": str(tmp_path / "tomograms" / "*.mrc"), "particle_diameter": 260,
              "results": "out/", **config}
    return Campaign.from_config(config)


def test_tomogram_name_is_the_file_name_up_to_the_first_dot():
    assert tomogram_name("data/tomo_001.rec.mrc") == "tomo_001"
    assert tomogram_name(Path("/a.b/TS_01.mrc")) == "TS_01"


def test_discovery_maps_names_to_paths_and_rejects_no_match_and_clashes(tmp_path):
    campaign = make_campaign(tmp_path)
    assert campaign.names == ["tomo_000", "tomo_001"]
    assert campaign.tomograms["tomo_001"].endswith("tomograms/tomo_001.rec.mrc")
    assert campaign.results == "out"
    with pytest.raises(MilopypError, match="matched no file"):
        discover_tomograms(str(tmp_path / "nowhere" / "*.mrc"))
    write_mrc(tmp_path / "tomograms" / "tomo_000.mrc", 12.0)
    with pytest.raises(MilopypError, match="share the name 'tomo_000'"):
        discover_tomograms(str(tmp_path / "tomograms" / "*.mrc"))


def test_campaign_voxel_size_from_headers_config_override_and_mixed_sizes(tmp_path):
    campaign = make_campaign(tmp_path / "a")
    assert campaign.voxel_size_a == 12.0 and campaign.voxel_size_override_a is None
    assert campaign.tomogram_geometry("tomo_000") == (SHAPE_ZYX, 12.0)
    overridden = make_campaign(tmp_path / "b", voxel_size=10.0)
    assert overridden.voxel_size_a == 10.0
    assert overridden.tomogram_geometry("tomo_001")[1] == 10.0
    with pytest.raises(MilopypError, match="tomo_001"):
        make_campaign(tmp_path / "c", voxel_sizes=(12.0, 10.0))


def test_targets_inherit_top_level_settings_and_look_up_their_shape(tmp_path):
    campaign = make_campaign(
        tmp_path, localize={"epochs": 6}, fibers={"min_points": 4},
        evaluation={"species": "ribosome"},
        targets={"ribosome": {"selection": "seeds.yaml"},
                 "mt": {"shape": "fiber", "selection": "mt.csv", "particle_diameter": 250,
                        "truth_species": "filament", "localize": {"epochs": 2}},
                 "later": {"selection": None}})
    ribosome, mt = campaign.targets["ribosome"], campaign.targets["mt"]
    assert ribosome.shape is GLOBULAR and mt.shape is FIBER and mt.shape.filament
    assert ribosome.particle_diameter_a == 260 and mt.particle_diameter_a == 250
    assert ribosome.truth_species == "ribosome" and mt.truth_species == "filament"
    assert ribosome.localize["epochs"] == 6 and mt.localize["epochs"] == 2
    assert mt.fibers["min_points"] == 4
    assert campaign.selected == ["ribosome", "mt"]
    assert not ribosome.coordinate_selection and mt.coordinate_selection


def test_single_selection_is_the_particles_target_and_not_with_targets(tmp_path):
    campaign = make_campaign(tmp_path / "a", selection="picks.star")
    assert list(campaign.targets) == ["particles"]
    with pytest.raises(MilopypError, match="set either `selection`"):
        make_campaign(tmp_path / "b", selection="a.yaml", targets={"x": {"selection": "b.yaml"}})


def test_exploration_is_needed_unless_every_target_has_a_coordinate_table(tmp_path):
    assert is_coordinate_selection("a.CSV") and is_coordinate_selection("copick:r:u:s")
    assert not is_coordinate_selection("selection.json")
    assert make_campaign(tmp_path / "a").exploration_needed()  # no target yet
    assert not make_campaign(tmp_path / "b", selection="a.csv").exploration_needed()
    assert make_campaign(tmp_path / "c", targets={
        "a": {"selection": "a.csv"}, "b": {"selection": "b.yaml"}}).exploration_needed()


def test_outputs_follow_shape_truth_and_selection(tmp_path):
    campaign = make_campaign(
        tmp_path, truth="truth/{tomogram}.csv",
        targets={"mt": {"shape": "fiber", "selection": "mt.csv"}, "rib": {"selection": None}})
    outputs = campaign.all_outputs()
    assert "out/candidates/tomo_001.csv" in outputs and "out/evaluation/candidates.csv" in outputs
    assert "out/explore/explorer.html" in outputs  # rib waits for an exploration
    assert {"out/targets/mt/fibers/tomo_000.csv", "out/targets/mt/fibers.star",
            "out/targets/mt/evaluation/fibers.csv"} <= set(outputs)
    assert not [path for path in outputs if "targets/rib" in path]
    assert campaign.truth_paths() == ["truth/tomo_000.csv", "truth/tomo_001.csv"]
    message = campaign.exploration_instructions()
    assert "targets.rib.selection" in message and "mt: picks out/targets/mt/picks.star" in message


def test_train_explore_subset_by_count_or_names(tmp_path):
    assert make_campaign(tmp_path / "a", explore={"train_tomograms": 1}
                         ).train_explore_tomograms() == ["tomo_000"]
    campaign = make_campaign(tmp_path / "b", explore={"train_tomograms": ["tomo_9"]})
    with pytest.raises(MilopypError, match="not among the tomograms"):
        campaign.train_explore_tomograms()


def fiber_campaign(tmp_path, **fibers):
    return make_campaign(tmp_path, targets={"mt": {
        "shape": "fiber", "selection": "mt.csv", "particle_diameter": 250, "fibers": fibers}})


def option_value(options: str, flag: str) -> str:
    return re.search(rf"(?:^| ){re.escape(flag)} (\S+)", options).group(1)


def test_trace_fibers_defaults_come_from_milopyp_defaults(tmp_path):
    campaign = fiber_campaign(tmp_path)
    options = params.trace_fibers(campaign, campaign.targets["mt"])
    assert float(option_value(options, "--link-distance-a")) == defaults.link_distance_a(250)
    assert float(option_value(options, "--segment-spacing-a")) == defaults.segment_spacing_a(250)
    explicit = fiber_campaign(tmp_path / "b", link_distance=100, segment_spacing=40)
    options = params.trace_fibers(explicit, explicit.targets["mt"])
    assert "--link-distance-a 100 " in options and "--segment-spacing-a 40" in options


def test_patch_size_and_match_radii_come_from_milopyp_defaults(tmp_path):
    campaign = make_campaign(tmp_path, targets={
        "rib": {"selection": "a.csv"}, "mt": {"shape": "fiber", "selection": "b.csv"}})
    assert params.patch_size_vox(campaign) == defaults.patch_size_vox(260, 12.0)
    rib = params.evaluate_target(campaign, campaign.targets["rib"])
    assert float(option_value(rib, "--radius-a")) == defaults.evaluation_radius_a(260)
    mt = params.evaluate_target(campaign, campaign.targets["mt"])
    assert float(option_value(mt, "--radius-vox")) == defaults.FIBER_EVALUATION_RADIUS_VOX
    assert "--radius-a" not in mt and "--voxel-size 12.0" in mt
    candidates = params.evaluate_candidates(campaign)
    assert float(option_value(candidates, "--radius-a")) == defaults.evaluation_radius_a(260)


def test_shape_decides_nms_kernel_and_recentring(tmp_path):
    campaign = make_campaign(tmp_path, localize={"nms_kernel": 5, "recentre_labels": "auto"},
                             targets={"rib": {"selection": "seeds.yaml"},
                                      "mt": {"shape": "fiber", "selection": "b.csv"}})
    rib, mt = campaign.targets["rib"], campaign.targets["mt"]
    assert "--nms-kernel-vox 5" in params.localize(campaign, rib, "x/picks/t.csv")
    assert "--nms-kernel" not in params.localize(campaign, mt, "x/picks/t.csv")
    # the z-face margin: the command's default (half the radius) unless set; 0 is passed
    assert "--z-face-margin" not in params.localize(campaign, rib, "x/picks/t.csv")
    for margin in (0, 2.5):
        c = make_campaign(tmp_path, localize={"z_face_margin": margin},
                          targets={"rib": {"selection": "seeds.yaml"},
                                   "mt": {"shape": "fiber", "selection": "b.csv"}})
        assert f"--z-face-margin-vox {margin}" in params.localize(c, c.targets["rib"], "p.csv")
        assert "--z-face-margin" not in params.localize(c, c.targets["mt"], "p.csv")
    # contrast matching: on unless switched off, and never for fibres (not matched)
    assert "--no-contrast-matching" not in params.localize(campaign, rib, "p.csv")
    off = make_campaign(tmp_path, localize={"contrast_matching": False},
                        targets={"rib": {"selection": "seeds.yaml"},
                                 "mt": {"shape": "fiber", "selection": "b.csv"}})
    assert "--no-contrast-matching" in params.localize(off, off.targets["rib"], "p.csv")
    assert "--no-contrast-matching" not in params.localize(off, off.targets["mt"], "p.csv")
    assert "--recentre-labels" in params.train_localize(campaign, rib)  # candidate positions
    assert "--recentre-labels" not in params.train_localize(campaign, mt)  # a person's labels
    assert "--shape fiber" in params.train_localize(campaign, mt)
    # the profile check: on for every selection unless switched off (auto: on, as true)
    assert "--no-profile-check" not in params.train_localize(campaign, rib)
    # auto: train-localize reads the labels' selection.json
    assert "--labels-from-seeds" not in params.train_localize(campaign, rib)
    for check, selection, off in (("auto", "seeds.yaml", False), (True, "seeds.yaml", False),
                                  (False, "a.csv", True), (False, "seeds.yaml", True)):
        c = make_campaign(tmp_path, localize={"profile_check": check},
                          targets={"rib": {"selection": selection}})
        assert ("--no-profile-check" in params.train_localize(c, c.targets["rib"])) is off


def test_a_targets_model_file_is_read_only_where_asked(tmp_path, monkeypatch):
    """The main Snakemake process reads a target's model file (torch) to check it; the jobs,
    which build the campaign again, only check that it is there."""
    from milopyp.io import localizer

    bad = tmp_path / "model.pt"
    bad.write_text("not a model")
    with pytest.raises(MilopypError, match="not a milopyp localiser|cannot read the localiser"):
        make_campaign(tmp_path, targets={"rib": {"model": str(bad)}})

    def no_read(*args, **kwargs):
        raise AssertionError("read the model file")

    monkeypatch.setattr(localizer, "read_localizer", no_read)
    config = {"tomograms": str(tmp_path / "tomograms" / "*.mrc"), "particle_diameter": 260,
              "targets": {"rib": {"model": str(bad)}}}
    assert Campaign.from_config(config, "config", False).targets["rib"].model == str(bad)
    config["targets"]["rib"]["model"] = str(tmp_path / "missing.pt")
    with pytest.raises(MilopypError, match="missing.pt not found"):
        Campaign.from_config(config, "config", False)


def test_every_option_emitted_is_named_in_flags(tmp_path):
    campaign = make_campaign(
        tmp_path, voxel_size=12.0, tiltseries="ts/{tomogram}.st", tiltseries_pixel_size=3.0,
        tiltseries_geometry={"sign": -1, "offset": [1.5, -2]},
        localize={"threshold": 0.3, "write_heatmap": True, "class_prior": 0.01, "pu": False,
                  "profile_check": False, "labels_from_seeds": False,
                  "contrast_matching": False},
        targets={"mt": {"shape": "fiber", "selection": "copick:mt:u:s"}})
    mt = campaign.targets["mt"]
    built = {
        "preprocess": params.preprocess(campaign), "candidates": params.candidates(campaign),
        "check-geometry": params.check_geometry(campaign, "tomo_000"),
        "patches": params.patches(campaign, ["ts/tomo_000.st"], ["g.json"]),
        "train-explore": params.train_explore(campaign), "cluster": params.cluster(campaign),
        "import-selection": " ".join([params.selection(campaign, mt),
                                      params.selection_exploration("p.csv", ["e.npz"]),
                                      params.import_selection(campaign, mt)]),
        "train-localize": params.train_localize(campaign, mt),
        "localize": params.localize(campaign, mt, "p/t.csv"),
        "trace-fibers": params.trace_fibers(campaign, mt),
        "evaluate": params.evaluate_target(campaign, mt),
        "overlay": params.overlay(campaign, mt, "f.csv"),
        "report": params.report("m.csv", "fm.csv", ["f.csv"]),
        "provenance": params.provenance(["g.json"], ["s.json"]),
    }
    assert "--labels-from-seeds no" in built["train-localize"]
    for command, options in built.items():
        flags = set(re.findall(r"(?:^| )(--[a-z][a-z-]*)", options))
        assert flags and flags <= set(params.FLAGS[command].values()), (command, options)
    with pytest.raises(MilopypError, match="needs `copick:`"):  # copick picks need the project
        campaign.selection_file(mt)
    assert "--sign -1 --offset 1.5 -2" in built["check-geometry"]
    assert "--tilt-series ts/tomo_000.st --tilt-pixel-size-a 3.0 --geometry g.json" in (
        built["patches"])


def test_copick_campaign_names_runs_and_reads_their_metadata(tmp_path):
    copick = pytest.importorskip("copick")
    from copick.models import PickableObject
    from copick.ops.add import add_tomogram

    config = tmp_path / "copick" / "config.json"
    root = copick.new_config(str(config), overlay_root=str(tmp_path / "copick" / "overlay"),
                             pickable_objects=[PickableObject(name="ribosome", is_particle=True,
                                                              label=1, radius=100.0)])
    for run in ("TS_b", "TS_a"):
        add_tomogram(root, run, "wbp", np.zeros(SHAPE_ZYX, np.float32), voxel_spacing=20.0)
    campaign = Campaign.from_config({"copick": str(config), "particle_diameter": 260})
    assert campaign.names == ["TS_a", "TS_b"] and campaign.copick_spacing_a == 20.0
    assert campaign.tomograms["TS_a"] == "results/tomograms/TS_a.mrc"  # copied there by a rule
    assert campaign.tomogram_geometry("TS_b") == (SHAPE_ZYX, 20.0)
    assert campaign.voxel_size_a == 20.0
    assert params.copick_tomogram(campaign, "TS_a") == (
        f"--copick-config {config} --run TS_a --voxel-spacing-a 20.0 --tomo-type wbp")
    picked = Campaign.from_config({"copick": str(config), "particle_diameter": 260,
                                   "selection": "copick:ribosome:me:1"})
    target = picked.targets["particles"]
    assert params.selection(picked, target) == (
        f"--selection copick:ribosome:me:1 --copick-config {config}")
    assert picked.selection_file(target) == str(config)  # the project holds the picks
    assert not picked.exploration_needed()
    assert "results/targets/particles/copick.json" in picked.all_outputs()
