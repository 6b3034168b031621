"""The exploration network's stages: :func:`train` (``milopyp train-explore``) and
:func:`embed` (``milopyp embed``).

Files are read and written through :mod:`milopyp.io.exploration`. ``train`` checkpoints
``<output>.ckpt`` after every epoch; calling it again after an interruption resumes from it
(only with the same patches and settings), and it is removed once the model file is
written. ``epochs``, ``width`` and ``lr`` left None are chosen by the device found
(:mod:`milopyp.explore.defaults`); the choice is logged and, with ``settings_output``,
written as JSON for the provenance.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from milopyp.errors import MilopypError

log = logging.getLogger(__name__)


def load_patch_files(
    paths: list[str], *, max_per_file: int | None = None, seed: int = 0
) -> tuple[np.ndarray, list[str], list[dict]]:
    """Concatenate the patches of several patch files -> (N, C, H, W), channels, sources.

    All files must have the same channels and patch size. With ``max_per_file`` each file
    contributes a random subset (seeded; original order kept).
    """
    from milopyp.io.exploration import read_patches

    if max_per_file is not None and max_per_file < 1:
        raise MilopypError(f"--max-patches-per-tomogram: expected >= 1, got {max_per_file}")
    rng = np.random.default_rng(seed)
    arrays, sources = [], []
    first = None
    for path in paths:
        f = read_patches(path)
        p = f.patches
        if first is None:
            first = f
        elif p.shape[1:] != first.patches.shape[1:] or (
            f.channels and first.channels and f.channels != first.channels
        ):
            raise MilopypError(
                f"{path}: patches of shape (C, H, W) = {p.shape[1:]} channels {f.channels}, but "
                f"{first.path} has {first.patches.shape[1:]} channels {first.channels}; cut all "
                "patches with the same settings (same size, all with or all without tilt series)"
            )
        if max_per_file is not None and len(p) > max_per_file:
            p = p[np.sort(rng.choice(len(p), size=max_per_file, replace=False))]
        arrays.append(p)
        sources.append({"path": str(path), "n_patches": len(p)})
    patches = np.concatenate(arrays) if arrays else np.empty((0, 1, 1, 1), np.float32)
    if len(patches) < 2:
        raise MilopypError(
            f"{', '.join(paths)}: found {len(patches)} patch(es) in total, need at least 2 "
            "(ideally thousands); check the candidates step found particles"
        )
    return patches, (first.channels if first else []), sources


def _device_settings(device, asked: str, **given) -> dict:
    """``given`` (epochs, width, lr; None = unset) completed by ``device``'s defaults and
    checked; logs the defaults taken. Returns the settings and, under "source", their origin."""
    from milopyp.explore.defaults import explore_settings

    settings, source = explore_settings(device.type, **given)
    defaults = ", ".join(f"{k} {v}" for k, v in settings.items() if source[k] != "set")
    if defaults and device.type == "cpu":
        log.warning(
            "training on the CPU (no GPU %s): exploration defaults for a CPU, %s (the paper's "
            "300 epochs at width 64 would take days); set explore.epochs/width/lr to override",
            "found" if asked in (None, "auto") else "asked for", defaults,
        )
    elif defaults:
        log.info("exploration defaults for %s: %s", device, defaults)
    for name in ("epochs", "width"):
        if settings[name] < 1:
            raise MilopypError(f"--{name}: expected >= 1, got {settings[name]}")
    if not settings["lr"] > 0:
        raise MilopypError(f"--lr: expected a positive learning rate, got {settings['lr']}")
    return {**settings, "source": source}


def train(
    patch_paths: list[str],
    output,
    *,
    epochs: int | None = None,
    batch_size: int = 256,
    lr: float | None = None,
    width: int | None = None,
    seed: int = 0,
    device: str = "auto",
    max_patches_per_tomogram: int | None = None,
    log_every: int = 0,
    resume: bool = True,
    settings_output=None,
) -> None:
    """Train the SimSiam exploration network on the patch files and write the model file
    ``output``. ``lr`` is the learning rate at batch size 256 (scaled linearly);
    ``width`` the ResNet18 first-stage width; ``device``: auto, cpu, cuda or cuda:N."""
    import torch

    import milopyp
    from milopyp.device import resolve_device, seed_everything
    from milopyp.explore.train import train_simsiam
    from milopyp.io.atomic import prepare_outputs, write_text
    from milopyp.io.exploration import write_model

    checkpoint = Path(f"{output}.ckpt")
    # before any training: a read-only or full results folder fails now, in one line
    prepare_outputs(output, checkpoint, settings_output)
    dev = resolve_device(device)
    settings = _device_settings(dev, device, epochs=epochs, width=width, lr=lr)
    if batch_size < 1:
        raise MilopypError(f"--batch-size: expected >= 1, got {batch_size}")
    seed_everything(seed)
    patches, channels, sources = load_patch_files(
        patch_paths, max_per_file=max_patches_per_tomogram, seed=seed
    )
    log.info("training on %d patches of shape %s from %d file(s) on %s",
             len(patches), patches.shape[1:], len(sources), dev)
    model = train_simsiam(
        patches, epochs=settings["epochs"], batch_size=batch_size, lr_base=settings["lr"],
        width=settings["width"], seed=seed, device=dev, checkpoint_path=checkpoint,
        resume=resume, log_every=log_every,
    )
    write_model(
        output, model, patch_size=[int(s) for s in patches.shape[2:]], channels=channels,
        hparams=model.train_hparams, history=model.train_history, sources=sources,
        milopyp_version=milopyp.__version__, torch_version=str(torch.__version__),
    )
    # finished: a rerun (--forcerun, other patches) trains; nothing stays beside the model
    checkpoint.unlink(missing_ok=True)
    if settings_output:
        write_text(settings_output, json.dumps(
            {"device": str(dev), "batch_size": batch_size, **settings,
             # the thread count changes float sums, hence the model: a rerun needs the same
             "torch_threads": torch.get_num_threads(),
             "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
            indent=2, sort_keys=True) + "\n")
    log.info("wrote %s", output)


def embed(model_path, patches_path, output, *, device: str = "auto",
          batch_size: int = 256) -> None:
    """Embed every patch of a patch file with a trained model; write the embeddings file
    ``output`` (N, 128) with the patch file's xyz, score, tomogram and voxel size."""
    from milopyp.device import resolve_device
    from milopyp.explore.embed import embed_patches
    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.exploration import read_model, read_patches, write_embeddings

    prepare_outputs(output)
    dev = resolve_device(device)
    model, state = read_model(model_path)
    source = read_patches(patches_path)
    patches = source.patches
    want_c, want_hw = state["in_channels"], [int(s) for s in state.get("patch_size", [])]
    if patches.shape[1] != want_c or (want_hw and list(patches.shape[2:]) != want_hw):
        raise MilopypError(
            f"{patches_path}: patches have (C, H, W) = {patches.shape[1:]}, but {model_path} was "
            f"trained on ({want_c}, {', '.join(map(str, want_hw))}); cut patches with the "
            "same settings as the training patches"
        )
    emb = embed_patches(model, patches, batch_size=batch_size, device=dev)
    log.info("embedded %d patches from %s on %s", len(emb), patches_path, dev)
    write_embeddings(output, emb, source)
    log.info("wrote %s", output)
