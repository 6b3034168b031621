"""Figures of the exploration step: 2D grid (``grid``), per-tomogram colour maps
(``colormap``), cluster gallery (``gallery``) and the offline interactive explorer
(``explorer``).

Functions here return images (``(H, W, 3)`` uint8 RGB arrays) or PNG bytes; they never open
files (:mod:`milopyp.explore.mapping` writes them); the explorer's page template is read from
the package. Shared helpers: cluster colours, patch display scaling, a small PNG encoder.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

# Matplotlib's "tab10" then "tab20" odd entries (hex), so the first clusters get the familiar
# distinct colours; beyond 20 clusters, colours come from an evenly spaced hue circle.
_BASE_COLORS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
]


def cluster_colors(n: int) -> np.ndarray:
    """(n, 3) float32 RGB in [0, 1]: one distinct colour per cluster id ``0 .. n-1``."""
    out = np.zeros((max(n, 0), 3), np.float32)
    for i in range(max(n, 0)):
        if i < len(_BASE_COLORS):
            h = _BASE_COLORS[i]
            out[i] = [int(h[j : j + 2], 16) / 255.0 for j in (1, 3, 5)]
        else:
            out[i] = _hsv_to_rgb(((i - len(_BASE_COLORS)) * 0.618034) % 1.0, 0.65, 0.85)
    return out


def cluster_colors_hex(n: int) -> list[str]:
    """``cluster_colors`` as ``#rrggbb`` strings."""
    rgb = np.round(cluster_colors(n) * 255).astype(int)
    return ["#{:02x}{:02x}{:02x}".format(*tuple(c)) for c in rgb]


def _hsv_to_rgb(h: float, s: float, v: float) -> list[float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def to_display(image: np.ndarray, *, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Scale a grey image (..., H, W) to float32 [0, 1] between its own ``low`` and ``high``
    percentiles (computed over the last two axes, i.e. per image)."""
    a = np.asarray(image, dtype=np.float32)
    lo = np.percentile(a, low, axis=(-2, -1), keepdims=True)
    hi = np.percentile(a, high, axis=(-2, -1), keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.clip((a - lo) / span, 0.0, 1.0).astype(np.float32)


def resize_patches(patches: np.ndarray, size: int) -> np.ndarray:
    """Resize grey patches (N, h, w) to (N, size, size): block mean when ``h`` and ``w`` are
    multiples of ``size``, else linear interpolation."""
    p = np.asarray(patches, dtype=np.float32)
    n, h, w = p.shape
    if (h, w) == (size, size):
        return p.copy()
    if h % size == 0 and w % size == 0:
        return p.reshape(n, size, h // size, size, w // size).mean(axis=(2, 4))
    from scipy.ndimage import zoom

    return zoom(p, (1, size / h, size / w), order=1, grid_mode=True, mode="nearest").astype(
        np.float32
    )[:, :size, :size]


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an image as PNG: (H, W) grey or (H, W, 3) RGB; uint8, or float in [0, 1]."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.round(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    if a.ndim == 2:
        colour_type, channels = 0, 1
    elif a.ndim == 3 and a.shape[2] == 3:
        colour_type, channels = 2, 3
    else:
        raise ValueError(f"png_bytes: expected (H, W) or (H, W, 3), got shape {a.shape}")
    h, w = a.shape[:2]
    rows = a.reshape(h, w * channels)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def figure_png(fig, *, dpi: int = 100) -> bytes:
    """Render a matplotlib ``Figure`` (Agg, no pyplot state) to PNG bytes."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
