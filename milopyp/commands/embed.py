"""``milopyp embed``: embed every patch of a tomogram with a trained exploration model.

Writes an npz with ``embeddings`` (N, 128) float32 (the SimSiam projector output z), and
``xyz``, ``score``, ``tomogram`` (and ``voxel_size_a`` when present) copied from the patch file.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from milopyp.errors import MilopypError

HELP = "embed every candidate of a tomogram with a trained exploration network"
log = logging.getLogger(__name__)

COPIED_KEYS = ("xyz", "score", "tomogram", "voxel_size_a")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model file from `milopyp train-explore`")
    parser.add_argument("--patches", required=True, help="patch file patches/{tomogram}.npz")
    parser.add_argument("-o", "--output", required=True, help="embeddings file to write (.npz)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    parser.add_argument("--batch-size", type=int, default=256, help="patches per batch (256)")


def load_model(path: str | Path):
    """Read a model file written by ``milopyp train-explore`` -> (SimSiam on CPU, state dict)."""
    import torch

    from milopyp.explore.train import model_from_state

    if not Path(path).is_file():
        raise MilopypError(f"{path}: model file not found; run `milopyp train-explore` first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = model_from_state(state)
    except Exception as err:  # corrupt, truncated or foreign file
        raise MilopypError(
            f"{path}: not a readable milopyp exploration model ({err}); "
            "re-run `milopyp train-explore`"
        ) from err
    return model, state


def main(args: argparse.Namespace) -> None:
    from milopyp.device import resolve_device
    from milopyp.explore.embed import embed_patches
    from milopyp.io.atomic import atomic_path, prepare_outputs

    prepare_outputs(args.output)
    device = resolve_device(args.device)
    model, state = load_model(args.model)
    if not Path(args.patches).is_file():
        raise MilopypError(f"{args.patches}: patch file not found; run `milopyp patches` first")
    with np.load(args.patches, allow_pickle=False) as f:
        if "patches" not in f:
            raise MilopypError(
                f"{args.patches}: no 'patches' array (keys {sorted(f.files)}); "
                "give a file written by `milopyp patches`"
            )
        patches = f["patches"]
        extra = {k: f[k] for k in COPIED_KEYS if k in f}
    if patches.ndim != 4:
        raise MilopypError(
            f"{args.patches}: expected patches (N, C, H, W), got shape "
            f"{patches.shape}; re-run `milopyp patches`"
        )
    want_c, want_hw = state["in_channels"], [int(s) for s in state.get("patch_size", [])]
    if patches.shape[1] != want_c or (want_hw and list(patches.shape[2:]) != want_hw):
        raise MilopypError(
            f"{args.patches}: patches have (C, H, W) = {patches.shape[1:]}, but {args.model} was "
            f"trained on ({want_c}, {', '.join(map(str, want_hw))}); cut patches with the "
            "same settings as the training patches"
        )
    if len(patches) and not np.isfinite(patches).all():
        raise MilopypError(f"{args.patches}: patches contain NaN or inf; check the input tomogram")
    emb = embed_patches(model, patches, batch_size=args.batch_size, device=device)
    log.info("embedded %d patches from %s on %s", len(emb), args.patches, device)
    with atomic_path(args.output) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, embeddings=emb, **extra)
    log.info("wrote %s", args.output)
