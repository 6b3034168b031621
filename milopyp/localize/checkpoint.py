"""What defines a training run, and its checkpoint: saved after each epoch, resumed from.

The file itself (keys, version) is :mod:`milopyp.io.localizer`'s; this module fills it with
the training state and decides whether a checkpoint belongs to the run at hand: the same
inputs (:func:`inputs_fingerprint`), network and settings (any number of epochs).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from milopyp.errors import MilopypError
from milopyp.io.localizer import read_localizer, write_localizer
from milopyp.localize.unet import Localizer, LocalizerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Everything besides the network that defines a training run (stored in checkpoints).
    Lengths in voxels of the working grid."""

    particle_radius_vox: float
    shape: str = "globular"
    epochs: int = 6
    iterations_per_epoch: int = 100
    crop_zyx: tuple[int, int, int] = (5, 64, 64)
    batch_size: int = 2
    lr: float = 1e-3
    lr_step_epochs: int = 3
    lr_gamma: float = 0.1
    seed: int = 0
    label_crop_fraction: float = 0.5
    recentre_labels: bool = False
    rotate_xy: bool = False
    flip_z: bool = False
    grad_clip: bool = False
    labels_from_seeds: bool = False
    loss: dict = field(default_factory=dict)  # LossSettings as a dict


def inputs_fingerprint(tomograms: list[np.ndarray], stats: list[tuple[float, float]],
                       labels: list[np.ndarray], negatives: list[np.ndarray] | None) -> str:
    """SHA-256 of what a training run learns from: each (working-grid) tomogram's shape and
    intensity statistics, its labels and its negatives. A checkpoint is resumed only by a
    run with the same fingerprint (and the same network and settings)."""
    h = hashlib.sha256()
    for i, (t, (mean, std), lab) in enumerate(zip(tomograms, stats, labels)):
        h.update(repr((i, tuple(int(s) for s in t.shape), float(mean), float(std))).encode())
        h.update(np.round(np.asarray(lab, dtype=np.float64), 3).tobytes())
        neg = negatives[i] if negatives is not None else np.zeros((0, 3))
        h.update(b"negatives" + np.round(np.asarray(neg, dtype=np.float64), 3).tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, epoch: int, model: Localizer,
                    opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
                    rng: np.random.Generator, gen: torch.Generator,
                    net_config: LocalizerConfig, settings: TrainSettings,
                    history: list[dict[str, float]], inputs: str,
                    working_labels: list[np.ndarray]) -> None:
    """The training state after ``epoch`` epochs, written atomically to ``path``."""
    write_localizer(path, {
        "epoch": epoch,
        "inputs": inputs,
        "network": net_config.to_dict(),
        "settings": asdict(settings),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": {"numpy": rng.bit_generator.state, "torch": gen.get_state()},
        "history": history,
        # the labels in training now (moved by recentre_labels), on the working grid
        "working_labels": [torch.from_numpy(np.asarray(lab, dtype=np.float64))
                           for lab in working_labels],
        "torch_threads": torch.get_num_threads(),
    })


def resume_checkpoint(path, model, opt, sched, rng, gen, net_config: LocalizerConfig,
                      settings: TrainSettings, inputs: str, device):
    """Restore the training state from the checkpoint ``path`` and return (epoch, history,
    the labels in training on the working grid, or None); (0, [], None) and a warning when
    the checkpoint belongs to other inputs, another network or other settings, or cannot be
    read: training starts afresh (and overwrites it)."""
    try:
        state = read_localizer(path, device)
    except MilopypError as exc:
        log.warning("%s; starting afresh", exc)
        return 0, [], None
    old = dict(state["settings"])
    new = asdict(settings)
    old.pop("epochs", None), new.pop("epochs")
    old["crop_zyx"] = tuple(old.get("crop_zyx", ()))
    why = []
    if "optimizer" not in state:  # a finished model of a benchmark: weights only
        why.append("no training state")
    if state["inputs"] != inputs:  # checkpoints before the fingerprint have none
        why.append("other tomograms, labels or negatives")
    network = net_config.to_dict()
    if state["network"] != network:
        changed = sorted(k for k, v in network.items() if state["network"].get(k) != v)
        why.append(f"another network ({', '.join(changed)})")
    if old != new:
        changed = sorted(k for k in new if old.get(k) != new[k])
        why.append(f"other settings ({', '.join(changed)})")
    if why:
        log.warning("%s was written by a run with %s: not resuming, training afresh", path,
                    "; ".join(why))
        return 0, [], None
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["rng"]["numpy"]
    gen.set_state(state["rng"]["torch"].cpu())
    working = state["working_labels"]
    return (int(state["epoch"]), list(state["history"]),
            None if working is None else [t.cpu().numpy() for t in working])
