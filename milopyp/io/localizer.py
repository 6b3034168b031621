"""The localiser's file: training checkpoint and finished model, one reader and one writer.

A plain dict saved with ``torch.save`` and read with ``weights_only=True`` (like
facebookresearch/simsiam's ``{'epoch', 'arch', 'state_dict', 'optimizer'}``):

- ``format``: "milopyp-localizer"; ``version``: :data:`VERSION`;
- ``network``: :class:`milopyp.localize.unet.LocalizerConfig` as a dict; ``model``: its
  state dict;
- ``settings``: :class:`milopyp.localize.checkpoint.TrainSettings` as a dict (lengths in
  voxels of the working grid, binned by ``network["bin_factor"]``);
- ``calibration``: the automatic pick threshold (:mod:`milopyp.localize.calibrate`); {} in
  a checkpoint written during training;
- ``torch_threads``: the torch thread count of the run (float sums, hence the weights,
  depend on it);
- ``voxel_size_a``: Å per voxel of the tomograms the finished model was trained on (its
  particle size and heat map are in those voxels; `milopyp localize` reads a tomogram of
  another voxel size resampled to them, :func:`milopyp.localize.stage.model_rescale`);
  None in files written before it was stored;
- what resuming needs: ``epoch``, ``inputs`` (digest of the tomograms, labels and
  negatives), ``optimizer``, ``scheduler``, ``rng`` (numpy bit-generator and torch generator
  states), ``history`` (per-epoch losses) and ``working_labels`` (the labels in training).

Version 1 (files of milopyp before issue 14, and the benchmarks' model files that hold only
``network``, ``model``, ``settings`` and ``calibration``) had no ``torch_threads`` and
sometimes no ``calibration`` or training state: :func:`read_localizer` fills them in (None,
{} or empty), so every file reads as the current layout.
"""

from __future__ import annotations

import os

import torch

from milopyp.errors import MilopypError
from milopyp.io.atomic import atomic_path

FORMAT = "milopyp-localizer"
VERSION = 2
#: keys every file has (the network and its weights)
REQUIRED = ("network", "model", "settings")


def _v1_defaults() -> dict:
    """What a version-1 file may lack, and the value it reads as (fresh objects per read);
    ``voxel_size_a`` also in version-2 files written before it was stored."""
    return {"calibration": {}, "torch_threads": None, "epoch": 0, "inputs": None,
            "history": [], "working_labels": None, "voxel_size_a": None}


def write_localizer(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (the keys of the module docstring, without ``format`` and
    ``version``) as a localiser file, atomically."""
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise MilopypError(f"{path}: a localiser file needs {', '.join(missing)}; got keys "
                           f"{sorted(state)}")
    full = {"calibration": {}, "torch_threads": None, **state, "format": FORMAT,
            "version": VERSION}
    with atomic_path(path) as tmp:
        torch.save(full, tmp)


def read_localizer(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """The localiser file at ``path`` as a dict in the current layout (tensors on
    ``device``); version-1 files get the keys they lack (``version`` stays the file's)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # any unreadable file gets the same message
        raise MilopypError(f"{path}: cannot read the localiser checkpoint ({exc}); delete it "
                           "to start over") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MilopypError(f"{path}: not a milopyp localiser checkpoint; give the model.pt "
                           "written by train_localizer")
    version = state.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise MilopypError(f"{path}: localiser file version {version!r}, this milopyp reads "
                           f"versions 1-{VERSION}; update milopyp or retrain the model")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise MilopypError(f"{path}: localiser file without {', '.join(missing)}; retrain "
                           "the model")
    return {**_v1_defaults(), **state}
