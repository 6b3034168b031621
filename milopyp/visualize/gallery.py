"""Cluster gallery: one row per cluster, its mean patch then a few members."""

from __future__ import annotations

import numpy as np

from milopyp.visualize import cluster_colors, figure_png, to_display

#: inches per patch cell and dpi of the gallery figure
CELL_IN = 0.8
LABEL_IN = 1.3
DPI = 100


def cluster_members(
    labels: np.ndarray,
    cluster: int,
    n: int,
    *,
    embeddings: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Indices of up to ``n`` members of ``cluster``: those closest to the cluster's mean
    embedding when ``embeddings`` (N, D) is given (the most typical members), else a seeded
    random sample; sorted by that order."""
    idx = np.flatnonzero(np.asarray(labels) == cluster)
    if len(idx) <= n and embeddings is None:
        return idx
    if embeddings is not None:
        e = np.asarray(embeddings, dtype=np.float64)[idx]
        d = np.sum((e - e.mean(axis=0)) ** 2, axis=1)
        return idx[np.argsort(d, kind="stable")[:n]]
    rng = np.random.default_rng(seed + int(cluster))
    return np.sort(rng.choice(idx, size=n, replace=False))


def gallery_figure_size(n_clusters: int, n_members: int) -> tuple[int, int]:
    """(height, width) in pixels of the gallery PNG."""
    w = LABEL_IN + CELL_IN * (1 + n_members)
    h = CELL_IN * max(n_clusters, 1) + 0.3
    return round(h * DPI), round(w * DPI)


def gallery_png(
    patches: np.ndarray,
    labels: np.ndarray,
    *,
    embeddings: np.ndarray | None = None,
    n_members: int = 8,
    seed: int = 0,
) -> bytes:
    """PNG bytes of the gallery. ``patches`` (N, h, w) grey, ``labels`` (N,) cluster ids
    ``0 .. h-1``. Row ``c``: label "cluster c / n = size" in the cluster colour, the mean of
    all its patches, then up to ``n_members`` members (see :func:`cluster_members`). Size in
    pixels: :func:`gallery_figure_size`."""
    from matplotlib.figure import Figure

    p = np.asarray(patches, dtype=np.float32)
    labels = np.asarray(labels)
    if p.ndim != 3 or len(p) != len(labels):
        raise ValueError(
            f"gallery_png: expected patches (N, h, w) matching {len(labels)} labels, "
            f"got shape {p.shape}"
        )
    ids = np.unique(labels)
    n_rows = max(len(ids), 1)
    h_px, w_px = gallery_figure_size(n_rows, n_members)
    fig = Figure(figsize=(w_px / DPI, h_px / DPI), dpi=DPI)
    colors = cluster_colors(int(labels.max()) + 1 if len(labels) else 1)
    top = 0.3 / (h_px / DPI)
    cell_w = CELL_IN / (w_px / DPI)
    cell_h = CELL_IN / (h_px / DPI)
    label_w = LABEL_IN / (w_px / DPI)
    fig.text(label_w + 0.5 * cell_w, 1 - 0.5 * top, "mean", ha="center", va="center", fontsize=8)
    for row, c in enumerate(ids):
        members = np.flatnonzero(labels == c)
        y0 = 1 - top - (row + 1) * cell_h
        fig.text(
            0.05 * label_w,
            y0 + 0.5 * cell_h,
            f"cluster {int(c)}\nn = {len(members)}",
            ha="left",
            va="center",
            fontsize=9,
            color=colors[int(c)],
            fontweight="bold",
        )
        shown = cluster_members(labels, int(c), n_members, embeddings=embeddings, seed=seed)
        tiles = [p[members].mean(axis=0)] + [p[i] for i in shown]
        for col, tile in enumerate(tiles):
            ax = fig.add_axes(
                (
                    label_w + col * cell_w + 0.04 * cell_w,
                    y0 + 0.04 * cell_h,
                    0.92 * cell_w,
                    0.92 * cell_h,
                )
            )
            ax.imshow(to_display(tile), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(colors[int(c)] if col == 0 else "0.7")
                spine.set_linewidth(2 if col == 0 else 0.5)
    return figure_png(fig, dpi=DPI)
