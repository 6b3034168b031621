"""Intensity normalisation shared by training and inference (one place, so they agree).

Each tomogram is scaled to zero mean and unit standard deviation, with mean and std taken
from a regular subsample (evenly spaced z-slices, strided in y and x) so that a memory-mapped
tomogram is never read whole.
"""

from __future__ import annotations

import math

import numpy as np

from milopyp.errors import MilopypError

MAX_SAMPLES = 1 << 21


def intensity_stats(tomogram: np.ndarray, *, max_samples: int = MAX_SAMPLES) -> tuple[float, float]:
    """(mean, std) of a tomogram [z, y, x] from at most ~``max_samples`` voxels (deterministic).

    Works on np.memmap input (reads up to 32 z-slices, strided). A constant tomogram gets
    std 1 so that normalising it does not divide by zero.
    """
    if tomogram.ndim != 3:
        raise MilopypError(f"expected a 3-D tomogram [z, y, x], got shape {tomogram.shape}")
    nz, ny, nx = tomogram.shape
    zs = np.unique(np.linspace(0, nz - 1, num=min(nz, 32)).round().astype(int))
    per_slice = max(1, max_samples // len(zs))
    step = max(1, math.ceil(math.sqrt(ny * nx / per_slice)))
    sample = np.asarray(tomogram[zs, ::step, ::step], dtype=np.float64)
    if not np.all(np.isfinite(sample)):
        raise MilopypError("tomogram contains NaN or infinite values; fix or re-export it")
    mean = float(sample.mean())
    std = float(sample.std())
    return mean, (std if std > 0 else 1.0)


def normalize(chunk: np.ndarray, stats: tuple[float, float]) -> np.ndarray:
    """``(chunk − mean) / std`` as float32, with ``stats`` from :func:`intensity_stats`."""
    mean, std = stats
    out = np.asarray(chunk, dtype=np.float32) - np.float32(mean)
    out /= np.float32(std)
    return out
