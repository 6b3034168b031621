"""Exploration settings that depend on the device: the paper's on a GPU, practical on a CPU.

The paper trains SimSiam for 300 epochs at ResNet18 width 64 (lr 0.02 at batch 256), hours
on a GPU and days on a CPU. Without a GPU the settings the README advises (and the demo
uses) apply instead: width 16, 15 epochs, lr 0.2, which give a usable map in minutes. A
value the user sets always wins; only unset (None) values take the device's default. No
torch import here: the workflow's resource estimates read this table too.
"""

from __future__ import annotations

#: default exploration settings per device type ("cuda" or "cpu")
EXPLORE_DEFAULTS: dict[str, dict[str, float | int]] = {
    "cuda": {"epochs": 300, "width": 64, "lr": 0.02},
    "cpu": {"epochs": 15, "width": 16, "lr": 0.2},
}


def explore_settings(device_type: str, **given) -> tuple[dict, dict]:
    """Fill the unset (None) exploration settings with ``device_type``'s defaults.

    device_type: ``"cuda"`` or ``"cpu"`` (any other torch device type counts as a GPU);
    given: ``epochs``, ``width``, ``lr`` as set by the user (None: unset). Returns the settings
    and, per key, where its value came from: ``"set"`` or ``"<device> default"``.
    """
    kind = "cpu" if device_type == "cpu" else "cuda"
    unknown = sorted(set(given) - set(EXPLORE_DEFAULTS[kind]))
    if unknown:
        raise TypeError(f"explore_settings: unknown settings {unknown}")
    settings, source = {}, {}
    for key, default in EXPLORE_DEFAULTS[kind].items():
        value = given.get(key)
        settings[key] = default if value is None else value
        source[key] = f"{'gpu' if kind == 'cuda' else 'cpu'} default" if value is None else "set"
    return settings, source
