"""The localiser file (milopyp.io.localizer): one writer, one reader, old files still read."""

from __future__ import annotations

import pytest
import torch

from milopyp.errors import MilopypError
from milopyp.io.localizer import FORMAT, VERSION, read_localizer, write_localizer
from milopyp.localize.train import load_localizer
from milopyp.localize.unet import Localizer, LocalizerConfig

TINY = LocalizerConfig(n_blocks=2, base_channels=4, fusion_channels=4, proj_dim=4)


def _weights() -> tuple[dict, dict]:
    torch.manual_seed(3)
    model = Localizer(TINY)
    return TINY.to_dict(), model.state_dict()


def test_written_file_is_a_versioned_plain_dict_and_reads_back(tmp_path):
    network, weights = _weights()
    path = tmp_path / "model.pt"
    write_localizer(path, {"network": network, "model": weights,
                           "settings": {"shape": "fiber"}, "calibration": {"threshold": 0.3}})
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["version"]) == (FORMAT, VERSION) == ("milopyp-localizer", 2)
    assert raw["torch_threads"] is None  # recorded by the caller when known
    state = read_localizer(path)
    assert state["settings"] == {"shape": "fiber"} and state["history"] == []
    loaded = load_localizer(path)
    assert loaded.settings["shape"] == "fiber" and loaded.calibration["threshold"] == 0.3
    for k, v in weights.items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_a_version_1_file_reads_with_the_keys_it_lacks(tmp_path):
    """As benchmarks/dataset.py wrote them before issue 14: no torch_threads, no training
    state."""
    network, weights = _weights()
    path = tmp_path / "old.pt"
    torch.save({"format": "milopyp-localizer", "version": 1, "epoch": 3, "network": network,
                "settings": {}, "model": weights, "calibration": {"threshold": 0.2}}, path)
    state = read_localizer(path)
    assert state["version"] == 1 and state["epoch"] == 3
    assert state["torch_threads"] is None and state["inputs"] is None
    assert state["history"] == [] and state["working_labels"] is None
    state["history"].append({"epoch": 1})  # defaults are fresh objects per read
    assert read_localizer(path)["history"] == []
    assert load_localizer(path).calibration == {"threshold": 0.2}


@pytest.mark.parametrize("content, message", [
    ({"format": "milopyp-localizer", "version": VERSION + 1, "network": {}, "model": {},
      "settings": {}}, "update milopyp"),
    ({"format": "milopyp-localizer", "version": 1, "model": {}, "settings": {}},
     "without network"),
    ({"format": "something-else", "version": 1}, "not a milopyp localiser"),
    ([1, 2, 3], "not a milopyp localiser"),
])
def test_files_that_are_not_readable_localisers_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(MilopypError, match=message):
        read_localizer(path)
    with pytest.raises(MilopypError, match="needs network"):
        write_localizer(tmp_path / "out.pt", {"model": {}, "settings": {}})
