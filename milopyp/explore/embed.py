"""Embedding patches with a trained SimSiam: the 128-d projector output ``z`` per patch."""

from __future__ import annotations

import numpy as np
import torch

from milopyp.explore.simsiam import SimSiam


@torch.no_grad()
def embed_patches(
    model: SimSiam,
    patches: np.ndarray,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """(N, C, H, W) float32 patches -> (N, dim) float32 embeddings (dim = 128 by default).

    Runs in eval mode (BatchNorm uses its running statistics, so a patch's embedding does
    not depend on the other patches in its batch) without gradients, ``batch_size`` patches
    at a time. ``device`` defaults to the model's device; the model is moved there.
    The model's train/eval mode is restored afterwards.
    """
    if patches.ndim != 4:
        raise ValueError(f"expected patches (N, C, H, W), got shape {patches.shape}")
    if patches.shape[1] != model.encoder.in_channels:
        raise ValueError(
            f"model takes {model.encoder.in_channels} channel(s), patches have {patches.shape[1]}"
        )
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.to(dev).eval()
    out = np.empty((len(patches), model.dim), dtype=np.float32)
    try:
        for start in range(0, len(patches), batch_size):
            chunk = np.ascontiguousarray(patches[start : start + batch_size], dtype=np.float32)
            z = model.embed(torch.from_numpy(chunk).to(dev))  # (b, dim)
            out[start : start + len(chunk)] = z.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out
