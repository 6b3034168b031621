"""``milopyp train-explore``: train the SimSiam exploration network on patch files.

Reads ``patches/{tomogram}.npz`` files (key ``patches``: (N, C, H, W) float32), trains, and
writes the model file atomically. A checkpoint ``<output>.ckpt`` is written after every
epoch; re-running the same command after an interruption resumes from it (only with the
same patches and settings), and it is removed once the model file is written.

``--epochs``, ``--width`` and ``--lr`` left out are chosen by the device found
(:mod:`milopyp.explore.defaults`: the paper's on a GPU, 15 epochs at width 16, lr 0.2 on a
CPU); the choice is logged and, with ``--settings-output``, written as JSON for provenance.

Model file (``torch.load(path, weights_only=True)``), a dict with:
``format`` ("milopyp-explore-model/1"), ``in_channels``, ``width``, ``dim``, ``pred_dim``,
``model`` (SimSiam state_dict, CPU tensors), ``patch_size`` [H, W], ``channels`` (names),
``hparams`` (training settings), ``history`` (one dict per epoch), ``sources`` (patch files
and how many patches each gave), ``milopyp_version``, ``torch_version``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np

from milopyp.errors import MilopypError

HELP = "train the SimSiam exploration network"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--patches",
        nargs="+",
        required=True,
        metavar="NPZ",
        help="patch files (patches/{tomogram}.npz) to train on",
    )
    parser.add_argument("-o", "--output", required=True, help="model file to write (.pt)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="passes over the data (GPU 300, CPU 15)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="patches per step (256)")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate at batch size 256, scaled linearly (GPU 0.02, CPU 0.2)",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help="ResNet18 first-stage width: 64 standard, 16/32 for CPU (GPU 64, CPU 16)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    parser.add_argument(
        "--max-patches-per-tomogram",
        type=int,
        default=None,
        metavar="N",
        help="use at most N patches of each file, a seeded random subset",
    )
    parser.add_argument(
        "--log-every",
        type=int,
        default=0,
        metavar="STEPS",
        help="also log every STEPS steps within an epoch (0: per epoch only)",
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="ignore an existing <output>.ckpt and start afresh"
    )
    parser.add_argument(
        "--settings-output",
        default=None,
        metavar="JSON",
        help="also write the settings used (device, epochs, width, lr and where each came "
        "from) to this JSON file, for the provenance",
    )


def load_patch_files(
    paths: list[str], *, max_per_file: int | None = None, seed: int = 0
) -> tuple[np.ndarray, list[str], list[dict]]:
    """Concatenate the ``patches`` arrays of several npz files -> (N, C, H, W), channels, sources.

    All files must have the same channels and patch size. With ``max_per_file`` each file
    contributes a random subset (seeded; original order kept).
    """
    if max_per_file is not None and max_per_file < 1:
        raise MilopypError(f"--max-patches-per-tomogram: expected >= 1, got {max_per_file}")
    rng = np.random.default_rng(seed)
    arrays, sources = [], []
    ref: tuple | None = None
    channels: list[str] = []
    for path in paths:
        if not Path(path).is_file():
            raise MilopypError(f"{path}: patch file not found; run `milopyp patches` first")
        with np.load(path, allow_pickle=False) as f:
            if "patches" not in f:
                raise MilopypError(
                    f"{path}: no 'patches' array (keys {sorted(f.files)}); "
                    "give files written by `milopyp patches`"
                )
            p = f["patches"]
            chans = [str(c) for c in f["channels"]] if "channels" in f else []
        if p.ndim != 4:
            raise MilopypError(
                f"{path}: expected patches (N, C, H, W), got shape {p.shape}; "
                "re-run `milopyp patches`"
            )
        if ref is None:
            ref, ref_path, channels = p.shape[1:], path, chans
        elif p.shape[1:] != ref or (chans and channels and chans != channels):
            raise MilopypError(
                f"{path}: patches of shape (C, H, W) = {p.shape[1:]} channels {chans}, but "
                f"{ref_path} has {ref} channels {channels}; cut all patches with the same "
                "settings (same size, all with or all without tilt series)"
            )
        if max_per_file is not None and len(p) > max_per_file:
            keep = np.sort(rng.choice(len(p), size=max_per_file, replace=False))
            p = p[keep]
        if len(p) and not np.isfinite(p).all():
            raise MilopypError(f"{path}: patches contain NaN or inf; check the input tomogram")
        arrays.append(p.astype(np.float32, copy=False))
        sources.append({"path": str(path), "n_patches": len(p)})
    patches = np.concatenate(arrays) if arrays else np.empty((0, 1, 1, 1), np.float32)
    if len(patches) < 2:
        raise MilopypError(
            f"{', '.join(paths)}: found {len(patches)} patch(es) in total, need at least 2 "
            "(ideally thousands); check the candidates step found particles"
        )
    return patches, channels, sources


def main(args: argparse.Namespace) -> None:
    import torch

    import milopyp
    from milopyp.device import resolve_device, seed_everything
    from milopyp.explore.defaults import explore_settings
    from milopyp.explore.train import model_state, train_simsiam
    from milopyp.io.atomic import atomic_path, prepare_outputs, write_text

    checkpoint = Path(f"{args.output}.ckpt")
    # before any training: a read-only or full results folder fails now, in one line
    prepare_outputs(args.output, checkpoint, args.settings_output)
    device = resolve_device(args.device)
    settings, source = explore_settings(
        device.type, epochs=args.epochs, width=args.width, lr=args.lr
    )
    defaults = {key: value for key, value in settings.items() if source[key] != "set"}
    if defaults and device.type == "cpu":
        log.warning(
            "training on the CPU (no GPU %s): exploration defaults for a CPU, %s (the paper's "
            "300 epochs at width 64 would take days); set explore.epochs/width/lr to override",
            "found" if args.device in (None, "auto") else "asked for",
            ", ".join(f"{key} {value}" for key, value in defaults.items()),
        )
    elif defaults:
        log.info("exploration defaults for %s: %s", device,
                 ", ".join(f"{key} {value}" for key, value in defaults.items()))
    args.epochs, args.width, args.lr = settings["epochs"], settings["width"], settings["lr"]
    for name in ("epochs", "batch_size", "width"):
        if getattr(args, name) < 1:
            raise MilopypError(
                f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}"
            )
    if not args.lr > 0:
        raise MilopypError(f"--lr: expected a positive learning rate, got {args.lr}")
    seed_everything(args.seed)
    patches, channels, sources = load_patch_files(
        args.patches, max_per_file=args.max_patches_per_tomogram, seed=args.seed
    )
    log.info(
        "training on %d patches of shape %s from %d file(s) on %s",
        len(patches),
        patches.shape[1:],
        len(sources),
        device,
    )
    model = train_simsiam(
        patches,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_base=args.lr,
        width=args.width,
        seed=args.seed,
        device=device,
        checkpoint_path=checkpoint,
        resume=not args.no_resume,
        log_every=args.log_every,
    )
    state = model_state(
        model,
        patch_size=[int(s) for s in patches.shape[2:]],
        channels=channels,
        hparams=model.train_hparams,
        history=model.train_history,
        sources=sources,
        milopyp_version=milopyp.__version__,
        torch_version=str(torch.__version__),
    )
    with atomic_path(args.output) as tmp:
        torch.save(state, tmp)
    # finished: a rerun (--forcerun, other patches) trains; nothing stays beside the model
    checkpoint.unlink(missing_ok=True)
    if args.settings_output:
        write_text(args.settings_output, json.dumps(
            {"device": str(device), "batch_size": args.batch_size, **settings, "source": source,
             # the thread count changes float sums, hence the model: a rerun needs the same
             "torch_threads": torch.get_num_threads(),
             "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
            indent=2, sort_keys=True) + "\n")
    log.info("wrote %s", args.output)
