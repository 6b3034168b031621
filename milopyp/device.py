"""Choosing the torch device and seeding every random number generator in one place."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from milopyp.errors import MilopypError

log = logging.getLogger(__name__)


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto | cpu | cuda | cuda:N`` into a :class:`torch.device`.

    ``auto`` (or None) gives the first CUDA GPU when one is visible, else the CPU. Asking
    for CUDA on a machine without it is an error rather than a silent fall-back to the CPU.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = "auto" if name is None else str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise MilopypError(
                f"--device {name}: CUDA was asked for but torch {torch.__version__} sees no GPU; "
                "use --device cpu (or auto), or install a CUDA build of torch"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MilopypError(
                f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible; "
                "give cuda:0 .. cuda:N-1 or set CUDA_VISIBLE_DEVICES"
            )
        return dev
    raise MilopypError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}")


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) from one integer.

    With ``deterministic`` the CPU kernels are restricted to deterministic algorithms and
    cuDNN autotuning is switched off (so it cannot be re-enabled by accident later, which is
    what facebookresearch/simsiam does). Library code does not rely on these global
    generators: it takes explicit ``seed``/generator arguments. This is for the CLI.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        if torch.cuda.is_available():
            # Deterministic cuDNN convolutions; full determinism on CUDA would also need
            # CUBLAS_WORKSPACE_CONFIG and slower kernels, which we do not force on users.
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        else:
            torch.use_deterministic_algorithms(True)
    log.debug("seeded python/numpy/torch with %d (deterministic=%s)", seed, deterministic)
