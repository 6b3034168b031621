"""SimSiam training on candidate patches (MiLoPYP exploration module, Methods).

SGD with momentum 0.9, weight decay 1e-4, learning rate ``lr_base · batch / 256`` with a
cosine decay over the epochs (paper: batch 256, lr 0.02, 300 epochs). One seeded CPU
:class:`torch.Generator` drives shuffling and augmentation and the model is initialised from
the seed, so on the CPU the same seed gives bit-identical weights, also across a resume from
the per-epoch checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from milopyp.explore.augment import AugmentConfig, augment
from milopyp.explore.simsiam import SimSiam, build_simsiam, simsiam_loss

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "milopyp-simsiam-checkpoint/1"


def data_fingerprint(patches: np.ndarray) -> str:
    """The identity of a patch array: its shape and a hash of every patch (as float32).

    A checkpoint is resumed only on the same patches: a change of the tomograms, the
    candidates or the patch settings changes the fingerprint. Every patch counts (an
    evenly spaced sample missed changes confined to one tomogram); hashing costs about a
    second per GB, little beside training.
    """
    h = hashlib.blake2b(str(tuple(int(s) for s in patches.shape)).encode(), digest_size=16)
    per_chunk = max(1, (64 << 20) // max(1, 4 * int(np.prod(patches.shape[1:]))))
    for start in range(0, len(patches), per_chunk):
        h.update(np.ascontiguousarray(patches[start:start + per_chunk], dtype=np.float32))
    return h.hexdigest()


def checkpoint_mismatch(state: dict, hparams: dict, fingerprint: str) -> str | None:
    """Why the checkpoint ``state`` cannot be resumed by a run with ``hparams`` on patches
    of ``fingerprint`` (a phrase for the log), or None when it can."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        return f"not a {CHECKPOINT_FORMAT} checkpoint"
    why = []
    if state.get("data") != fingerprint:
        why.append("other patches (tomograms, candidates or patch settings changed)")
    old = state.get("hparams") or {}
    changed = sorted(k for k in set(hparams) | set(old) if old.get(k) != hparams.get(k))
    if changed:
        why.append(f"other settings ({', '.join(changed)})")
    return "; ".join(why) or None


def cosine_factor(epoch: int, epochs: int) -> float:
    """Learning-rate multiplier for (0-based) ``epoch``: ½·(1 + cos(π·epoch / epochs))."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def train_simsiam(
    patches: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 256,
    lr_base: float = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    width: int = 64,
    dim: int = 128,
    pred_dim: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    log_every: int = 0,
    augment_config: AugmentConfig | None = None,
    amp: bool = False,
) -> SimSiam:
    """Train a SimSiam on a ResNet18 trunk; returns the model (eval mode, on ``device``).

    Args:
        patches: (N, C, H, W) float32, normalised per patch (C = 2 for (P_t, P_s), 1 for P_s).
        epochs: number of passes over the data; incomplete last batches are dropped.
        batch_size: patches per step; when N < batch_size, N is used (with a warning).
        lr_base: learning rate at batch 256; the one used is ``lr_base · batch / 256``.
        width: ResNet18 first-stage width (64 standard; 16/32 for CPU-only runs).
        seed: seeds model initialisation, shuffling and augmentation.
        device: a torch device (or its name) to train on; data are moved per batch.
        checkpoint_path: written atomically after every epoch (epoch, model, optimizer,
            scheduler, generator state, hyper-parameters, data fingerprint). With ``resume``
            an existing checkpoint with the same hyper-parameters and patches
            (:func:`data_fingerprint`) is continued; any other (other patches or settings,
            unreadable) is trained over afresh, with a warning that says why.
        log_every: also log every this many steps within an epoch (0: once per epoch only).
        amp: bfloat16 autocast of the forward pass (CUDA only; off by default, untested here).

    Returns the trained :class:`SimSiam`; its ``train_history`` attribute holds one dict
    per epoch (epoch, loss, lr, patches_per_s, elapsed_s) and ``train_hparams`` the
    hyper-parameters.
    """
    if patches.ndim != 4:
        raise ValueError(f"expected patches (N, C, H, W), got shape {patches.shape}")
    n, c, h, w = patches.shape
    if n < 2:
        raise ValueError(f"need at least 2 patches to train (BatchNorm), got {n}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size > n:
        log.warning(
            "only %d patches, fewer than batch size %d: using batch size %d", n, batch_size, n
        )
        batch_size = n
    device = torch.device(device)
    amp = bool(amp) and device.type == "cuda"
    aug = augment_config or AugmentConfig()
    lr = lr_base * batch_size / 256
    hparams: dict[str, Any] = {
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "lr_base": float(lr_base),
        "lr": float(lr),
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "width": int(width),
        "dim": int(dim),
        "pred_dim": int(pred_dim),
        "seed": int(seed),
        "in_channels": int(c),
        "patch_size": [int(h), int(w)],
        "n_patches": int(n),
        "augment": aug.to_dict(),
        "amp": bool(amp),
    }
    fingerprint = data_fingerprint(patches)

    def fresh():
        # Model initialisation from the seed without touching torch's global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_simsiam(c, width=width, dim=dim, pred_dim=pred_dim)
        net.to(device)
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum,
                              weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: cosine_factor(e, epochs))
        return net, opt, sched, torch.Generator().manual_seed(seed)

    model, optimizer, scheduler, gen = fresh()
    history: list[dict[str, float]] = []
    start_epoch = 0

    ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        # a checkpoint belongs to its patches and settings: any other one is trained over,
        # never resumed and never an error
        try:
            state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 -- torch.load raises many kinds on bad files
            state, why = None, f"cannot be read ({type(err).__name__})"
        else:
            why = checkpoint_mismatch(state, hparams, fingerprint)
        if why is None:
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                gen.set_state(state["generator"])
                history = list(state["history"])
                start_epoch = int(state["epoch"])
            except (KeyError, RuntimeError, TypeError, ValueError) as err:
                why = f"cannot be restored ({type(err).__name__}: {str(err)[:80]})"
                model, optimizer, scheduler, gen = fresh()
                history, start_epoch = [], 0
        if why is None:
            log.info("resuming from %s after epoch %d/%d", ckpt_path, start_epoch, epochs)
        else:
            log.warning("%s: %s: not resuming, training afresh", ckpt_path, why)

    data = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
    n_steps = n // batch_size
    t_start = time.perf_counter() - (history[-1]["elapsed_s"] if history else 0.0)
    for epoch in range(start_epoch, epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for step in range(n_steps):
            x = data[perm[step * batch_size : (step + 1) * batch_size]].to(
                device, non_blocking=True
            )
            x1, x2 = augment(x, gen, aug), augment(x, gen, aug)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                p1, p2, z1, z2 = model(x1, x2)
            loss = simsiam_loss(p1.float(), p2.float(), z1.float(), z2.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            if log_every and (step + 1) % log_every == 0:
                log.info("epoch %d step %d/%d loss %.4f", epoch + 1, step + 1, n_steps, loss.item())
        lr_now = optimizer.param_groups[0]["lr"]
        scheduler.step()
        dt = time.perf_counter() - t0
        record = {
            "epoch": epoch + 1,
            "loss": float(loss_sum.item() / n_steps),
            "lr": float(lr_now),
            "patches_per_s": n_steps * batch_size / dt,
            "elapsed_s": time.perf_counter() - t_start,
        }
        history.append(record)
        log.info(
            "epoch %d/%d loss %.4f lr %.5f %.1f patches/s elapsed %.1f s",
            epoch + 1,
            epochs,
            record["loss"],
            lr_now,
            record["patches_per_s"],
            record["elapsed_s"],
        )
        if ckpt_path is not None:
            _save_checkpoint(
                ckpt_path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "epoch": epoch + 1,
                    "hparams": hparams,
                    "data": fingerprint,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": gen.get_state(),
                    "history": history,
                },
            )
    model.eval()
    model.train_history = history  # type: ignore[attr-defined]
    model.train_hparams = hparams  # type: ignore[attr-defined]
    return model


def _save_checkpoint(path: Path, state: dict) -> None:
    from milopyp.io.atomic import atomic_path  # the one place this module writes a file

    with atomic_path(path) as tmp:
        torch.save(state, tmp)
