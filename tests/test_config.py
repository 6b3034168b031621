"""Config schema: defaults, unknown keys, bad values, and the shipped config files."""

from pathlib import Path

import pytest
import yaml

from milopyp.config import load_config, validate_config
from milopyp.errors import MilopypError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_fill_every_section():
    config = validate_config({"tomograms": "data/*.mrc"})
    assert config["results"] == "results"
    assert config["candidates"]["threshold_std"] == 3.0
    assert config["explore"]["umap_neighbors"] == 40
    assert config["particle_diameter"] == 250
    assert config["tiltseries_geometry"] == {"sign": "auto", "bin": "auto", "offset": "auto",
                                             "min_margin": 0.05}
    # chosen by device when train-explore runs (milopyp.explore.defaults)
    assert [config["explore"][k] for k in ("epochs", "width", "lr")] == [None, None, None]


def test_user_values_win_over_defaults():
    config = validate_config({"tomograms": "a/*.mrc", "explore": {"epochs": 3}})
    assert config["explore"]["epochs"] == 3
    assert config["explore"]["batch_size"] == 256


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"tomograms": "a", "explore": {"epoch": 3}}, "unknown config key `explore.epoch`; did you mean `epochs`"),
        ({"tomogram": "a"}, "unknown config key `tomogram`"),
        ({}, "'tomograms' is a required property"),
        ({"tomograms": "a", "device": "gpu"}, "bad value for `device`"),
        ({"tomograms": "a", "particle_diameter": -5}, "bad value for `particle_diameter`"),
        ({"tomograms": "a", "tiltseries": "data/x.st"}, "bad value for `tiltseries`"),
        ({"tomograms": "a", "targets": {"mt": {"shape": "tube"}}}, "bad value for `targets.mt.shape`"),
        ({"tomograms": "a", "targets": {"mt": {"localize": {"epoch": 2}}}},
         "unknown config key `targets.mt.localize.epoch`; did you mean `epochs`"),
        ({"tomograms": "a", "targets": {"mt": {"fibres": {}}}},
         "unknown config key `targets.mt.fibres`; did you mean `fibers`"),
        ({"tomograms": "a", "targets": {"m t": {}}}, "bad value for `targets`"),
        ({"tomograms": "a", "tiltseries_geometry": {"bin": 0}},
         "bad value for `tiltseries_geometry.bin`"),
        ({"tomograms": "a", "tiltseries_geometry": {"offset": [1]}},
         "bad value for `tiltseries_geometry.offset`"),
        ({"tomograms": "a", "tiltseries_geometry": {"mirror": True}},
         "unknown config key `tiltseries_geometry.mirror`"),
        ({"tomograms": "a", "explore": {"width": 48}}, "bad value for `explore.width`"),
    ],
)
def test_bad_config_gives_one_line_error(config, fragment):
    with pytest.raises(MilopypError) as err:
        validate_config(config, "my.yaml")
    message = str(err.value)
    assert fragment in message
    assert message.startswith("my.yaml: ")
    assert "\n" not in message


def test_load_config_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(MilopypError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("tomograms: [unclosed\n")
    with pytest.raises(MilopypError, match="broken.yaml: not valid YAML"):
        load_config(broken)


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name):
    validate_config(yaml.safe_load((REPO / "config" / name).read_text()), name)


def test_every_schema_property_has_description_and_default():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{path}{key} has no description"
            if key != "tomograms":
                assert "default" in sub, f"{path}{key} has no default"
            walk(sub, f"{path}{key}.")

    walk(schema, "")
    assert schema["additionalProperties"] is False
