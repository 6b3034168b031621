"""2D grid visualisation: patches laid out on a regular grid by their 2D UMAP position.

Two layouts of ``grid_size x grid_size`` cells, both keeping similar patches next to each
other (the paper's 2D grid visualisation, Extended Data Fig. 3):

* ``"bin"`` (:func:`grid_cells`): the UMAP plane is cut into cells; each occupied cell shows
  the patch whose point lies closest to the cell centre. Faithful to the map's geometry, but
  a map of a few tight, well-separated clusters fills only a few cells.
* ``"fill"`` (:func:`grid_cells_fill`): up to ``grid_size**2`` points (a seeded sample) are
  assigned one-to-one to the cells by a linear assignment that minimises the summed squared
  distance between each point's normalised UMAP position and its cell centre (as in
  RasterFairy / IsoMatch grids). Every cell is used, and dense regions get more cells.
"""

from __future__ import annotations

import numpy as np

from milopyp.visualize import cluster_colors, resize_patches, to_display


def grid_cells(umap2d: np.ndarray, grid_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Choose one point per occupied grid cell.

    ``umap2d`` (N, 2) holds (u, v). Returns ``(index, row, col)``, one entry per occupied cell:
    the chosen point's row index into ``umap2d``, and its cell; row 0 is the top of the image
    (largest v), col 0 the left (smallest u). Ties go to the lower point index.
    """
    e = np.asarray(umap2d, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"grid_cells: expected (N, 2) UMAP coordinates, got shape {e.shape}")
    if len(e) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    lo, hi = e.min(axis=0), e.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    t = (e - lo) / span * grid_size  # in [0, G]
    cell = np.minimum(np.floor(t).astype(np.int64), grid_size - 1)
    dist = np.sum((t - (cell + 0.5)) ** 2, axis=1)
    cell_id = cell[:, 1] * grid_size + cell[:, 0]
    order = np.lexsort((np.arange(len(e)), dist, cell_id))
    first = np.ones(len(order), bool)
    first[1:] = cell_id[order][1:] != cell_id[order][:-1]
    chosen = order[first]
    col = cell[chosen, 0]
    row = grid_size - 1 - cell[chosen, 1]
    return chosen.astype(np.int64), row, col


def grid_cells_fill(
    umap2d: np.ndarray, grid_size: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign up to ``grid_size**2`` points one-to-one to grid cells (see module docstring).

    Returns ``(index, row, col)`` as :func:`grid_cells`; row 0 is the top (largest v). With
    fewer points than cells, the grid keeps ``grid_size`` columns per row only as far as
    needed: points fill a ``ceil(n / g_cols) x g_cols`` block, ``g_cols = ceil(sqrt(n))``.
    """
    from scipy.optimize import linear_sum_assignment

    e = np.asarray(umap2d, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"grid_cells_fill: expected (N, 2) UMAP coordinates, got {e.shape}")
    n_cells = grid_size * grid_size
    if len(e) > n_cells:
        chosen = np.sort(np.random.default_rng(seed).choice(len(e), n_cells, replace=False))
    else:
        chosen = np.arange(len(e))
    m = len(chosen)
    if m == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    n_cols = grid_size if m == n_cells else int(np.ceil(np.sqrt(m)))
    n_rows = int(np.ceil(m / n_cols))
    pts = e[chosen]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    t = (pts - lo) / np.where(hi > lo, hi - lo, 1.0)
    rr, cc = np.mgrid[:n_rows, :n_cols]
    centres = np.column_stack([(cc.ravel() + 0.5) / n_cols, 1.0 - (rr.ravel() + 0.5) / n_rows])
    cost = np.sum((t[:, None, :] - centres[None, :, :]) ** 2, axis=2)
    point_pos, cell = linear_sum_assignment(cost)
    return chosen[point_pos].astype(np.int64), rr.ravel()[cell], cc.ravel()[cell]


def grid_image(
    patches: np.ndarray,
    umap2d: np.ndarray,
    *,
    grid_size: int = 20,
    labels: np.ndarray | None = None,
    cell_px: int | None = None,
    border_px: int = 1,
    background: float = 1.0,
    layout: str = "bin",
    seed: int = 0,
) -> np.ndarray:
    """The grid picture as an RGB image (H, W, 3) uint8.

    ``patches`` (N, h, w) grey (one channel, e.g. P_s), ``umap2d`` (N, 2). Each cell is
    ``cell_px + 2 * border_px`` pixels wide (``cell_px`` defaults to the patch size, at most
    64); H = W = grid_size * that. Each patch is contrast-stretched on its own; with
    ``labels`` (N,) the cell border takes the cluster colour, else it stays background.
    ``layout``: ``"bin"`` or ``"fill"`` (module docstring); ``seed`` draws the sample of
    ``"fill"`` when there are more points than cells.
    """
    p = np.asarray(patches, dtype=np.float32)
    if p.ndim != 3 or len(p) != len(umap2d):
        raise ValueError(
            f"grid_image: expected patches (N, h, w) matching {len(umap2d)} UMAP points, "
            f"got shape {p.shape}"
        )
    if grid_size < 1:
        raise ValueError(f"grid_image: grid_size must be >= 1, got {grid_size}")
    size = int(cell_px or min(p.shape[1], 64))
    cell = size + 2 * border_px
    img = np.full((grid_size * cell, grid_size * cell, 3), background, np.float32)
    if layout == "bin":
        idx, rows, cols = grid_cells(umap2d, grid_size)
    elif layout == "fill":
        idx, rows, cols = grid_cells_fill(umap2d, grid_size, seed=seed)
    else:
        raise ValueError(f"grid_image: layout must be 'bin' or 'fill', got {layout!r}")
    if len(idx):
        tiles = to_display(resize_patches(p[idx], size))
        colors = None
        if labels is not None:
            lab = np.asarray(labels)[idx]
            colors = cluster_colors(int(np.max(labels)) + 1)[lab]
        for j, (r, c) in enumerate(zip(rows, cols)):
            y0, x0 = r * cell, c * cell
            if colors is not None and border_px > 0:
                img[y0 : y0 + cell, x0 : x0 + cell] = colors[j]
            img[y0 + border_px : y0 + border_px + size, x0 + border_px : x0 + border_px + size] = (
                tiles[j][..., None]
            )
    return np.round(img * 255).astype(np.uint8)
