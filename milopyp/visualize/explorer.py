"""The explorer: one self-contained, offline HTML file to look at the embedding and pick
targets.

Design: hand-written HTML + JavaScript with a <canvas> scatter plot, no library and no
network request at all (a Content-Security-Policy meta tag forbids them; thumbnails are PNG
``data:`` URIs). We chose this over Bokeh/Plotly output because the file stays small
(~0.3 MB for 300 points and ~5 MB for 5,000 points with 32 x 32 thumbnails of noisy
patches, against ~1.8 MB of Bokeh before any data), the page has stable element ids that a
browser test can drive, and its behaviour does not change with a plotting library's version.
The page (HTML, CSS, script) is the template ``explorer.html`` beside this module; this
module fills in the title, a summary line and the data (JSON).

What the page does:

* scatter of the 2D UMAP, coloured by cluster; wheel zooms, "pan" mode drags the view;
* hover a point: tooltip with its patch thumbnail, id, cluster, tomogram, x, y, z and score;
* drag in "box" or "lasso" mode selects the points inside (shift/ctrl-drag adds), a click on
  a point selects or deselects it;
* a checkbox per cluster (``.cluster-toggle[data-cluster="c"]``) selects the whole cluster;
* negatives, what is *not* the target: a second checkbox per cluster
  (``.cluster-negative[data-cluster="c"]``, "not") marks the whole cluster, and
  ``#mark-negative`` ("Mark as not this") moves the points selected one by one (box, lasso,
  click) to the negatives; negatives are drawn with a cross. A cluster or point is either
  selected or negative, never both;
* ``#save-selection`` downloads ``selection.json``::

      {"clusters": [c, ...], "points": [point_id, ...], "source": "milopyp explorer",
       "n_points": n,
       "negatives": {"clusters": [c, ...], "points": [point_id, ...], "n_points": m}}

  ``clusters`` are the whole clusters ticked, ``points`` the ``point_id`` values (column of
  ``points.csv``) selected one by one (box, lasso, click); the selection is their union and
  ``n_points`` its size (whole clusters counted with all their members, also those not shown
  when the display was capped). ``negatives`` (present only when something is marked) has the
  same form. ``#clear-selection`` empties both.

With more than ``max_points`` points, a per-cluster sample is shown (every cluster keeps a
share) and the page says so; whole-cluster selections still stand for all members.
"""

from __future__ import annotations

import base64
import functools
import html
import importlib.resources
import json

import numpy as np
import pandas as pd

from milopyp.visualize import cluster_colors_hex, png_bytes, resize_patches, to_display

REQUIRED_COLUMNS = ("point_id", "tomogram", "x", "y", "z", "cluster", "umap_x", "umap_y")
#: the page, package data beside this module: __TITLE__, __NOTE__ and __DATA__ are filled in
TEMPLATE = "explorer.html"


@functools.cache
def page_template() -> str:
    """The text of the page template :data:`TEMPLATE` (HTML, CSS and the script)."""
    return importlib.resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")


def sample_per_cluster(labels: np.ndarray, max_points: int, *, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` points: all of them when there are few enough,
    else a seeded sample in which each cluster keeps ``min(size, floor)`` points and the rest
    is shared in proportion to size."""
    labels = np.asarray(labels)
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    ids, sizes = np.unique(labels, return_counts=True)
    floor = max(1, min(20, max_points // max(len(ids), 1)))
    quota = np.minimum(sizes, floor)
    rest = max_points - int(quota.sum())
    if rest > 0:
        extra = (sizes - quota) * (rest / max(int((sizes - quota).sum()), 1))
        quota = quota + np.floor(extra).astype(int)
    chosen = []
    for c, q in zip(ids, quota):
        members = np.flatnonzero(labels == c)
        chosen.append(rng.choice(members, size=int(min(q, len(members))), replace=False))
    return np.sort(np.concatenate(chosen))


def thumbnail_uris(patches: np.ndarray, thumb_px: int = 32, levels: int = 32) -> list[str]:
    """Base64 PNG strings (without the ``data:`` prefix) of grey patches (N, h, w), each
    resized to ``thumb_px``, contrast-stretched on its own and quantised to ``levels`` grey
    levels (32 levels make noisy thumbnails ~40 % smaller than 256, with no visible change
    at this size)."""
    p = np.asarray(patches, dtype=np.float32)
    if p.ndim != 3:
        raise ValueError(f"thumbnail_uris: expected patches (N, h, w), got shape {p.shape}")
    if len(p) == 0:
        return []
    tiles = np.round(to_display(resize_patches(p, thumb_px)) * (levels - 1)) / (levels - 1)
    return [base64.b64encode(png_bytes(t)).decode("ascii") for t in tiles]


def explorer_html(
    points: pd.DataFrame,
    *,
    thumbnails: np.ndarray | None = None,
    max_points: int = 5000,
    thumb_px: int = 32,
    seed: int = 0,
    title: str = "milopyp explorer",
) -> str:
    """The explorer page as a string.

    ``points``: one row per candidate with columns ``point_id, tomogram, x, y, z, cluster,
    umap_x, umap_y`` (+ optional ``score``), as in ``points.csv``. ``thumbnails``: grey
    patches (N, h, w) in the same row order, or None (no pictures on hover).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in points.columns]
    if missing:
        raise ValueError(f"explorer_html: points table lacks columns {missing}")
    n_total = len(points)
    if thumbnails is not None and len(thumbnails) != n_total:
        raise ValueError(
            f"explorer_html: {len(thumbnails)} thumbnails for {n_total} points; give one each"
        )
    labels = points["cluster"].to_numpy().astype(int)
    shown = sample_per_cluster(labels, max_points, seed=seed)
    sub = points.iloc[shown]
    ids, sizes = np.unique(labels, return_counts=True)
    shown_counts = dict(zip(*np.unique(labels[shown], return_counts=True)))
    colors = cluster_colors_hex(int(labels.max()) + 1 if n_total else 1)
    tomo_names = sorted(set(points["tomogram"].astype(str)))
    tomo_index = {t: i for i, t in enumerate(tomo_names)}
    score = sub["score"].to_numpy(float) if "score" in sub.columns else np.full(len(sub), np.nan)

    def rounded(a: np.ndarray, nd: int) -> list:
        return [None if not np.isfinite(v) else round(float(v), nd) for v in a]

    data = {
        "title": title,
        "n_total": int(n_total),
        "n_shown": len(sub),
        "capped": bool(len(sub) < n_total),
        "clusters": [
            {
                "id": int(c),
                "size": int(s),
                "shown": int(shown_counts.get(c, 0)),
                "color": colors[int(c)],
            }
            for c, s in zip(ids, sizes)
        ],
        "tomograms": tomo_names,
        "id": [int(v) for v in sub["point_id"]],
        "u": rounded(sub["umap_x"].to_numpy(float), 4),
        "v": rounded(sub["umap_y"].to_numpy(float), 4),
        "c": [int(v) for v in sub["cluster"]],
        "t": [tomo_index[str(v)] for v in sub["tomogram"]],
        "x": rounded(sub["x"].to_numpy(float), 2),
        "y": rounded(sub["y"].to_numpy(float), 2),
        "z": rounded(sub["z"].to_numpy(float), 2),
        "s": rounded(score, 4),
        "thumbs": None
        if thumbnails is None
        else thumbnail_uris(np.asarray(thumbnails)[shown], thumb_px),
    }
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    note = f"{n_total} candidates in {len(ids)} clusters" + (
        f"; showing a per-cluster sample of {len(sub)}" if data["capped"] else ""
    )
    return (
        page_template().replace("__TITLE__", html.escape(title))
        .replace("__NOTE__", html.escape(note))
        .replace("__DATA__", payload)
    )
