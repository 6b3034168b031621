"""Figures: grid, colour maps, cluster volume, gallery, PNG encoder, explorer page (static)."""

from __future__ import annotations

import base64
import io
import json
import re

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from milopyp.visualize import cluster_colors, png_bytes, resize_patches, to_display
from milopyp.visualize.colormap import (
    cluster_volume,
    colormap_image,
    draw_spheres,
    sphere_offsets,
)
from milopyp.visualize.explorer import explorer_html, sample_per_cluster
from milopyp.visualize.gallery import cluster_members, gallery_figure_size, gallery_png
from milopyp.visualize.grid import grid_cells, grid_cells_fill, grid_image


def read_png(data: bytes) -> np.ndarray:
    return mpimg.imread(io.BytesIO(data), format="png")


def test_png_bytes_round_trip_grey_and_rgb():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (7, 11), dtype=np.uint8)
    np.testing.assert_array_equal(np.round(read_png(png_bytes(grey)) * 255), grey)
    rgb = rng.random((5, 9, 3))
    back = read_png(png_bytes(rgb))
    assert back.shape == (5, 9, 3)
    np.testing.assert_allclose(back, np.round(rgb * 255) / 255, atol=1e-6)


def test_to_display_and_resize():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(3, 16, 16)).astype(np.float32) * [[[1]], [[5]], [[50]]]
    d = to_display(p)
    assert d.min() == 0 and d.max() == 1
    np.testing.assert_allclose(d[2], to_display(p[2] / 50), atol=1e-6)  # per patch
    r = resize_patches(p, 8)
    assert r.shape == (3, 8, 8)
    np.testing.assert_allclose(r[0, 0, 0], p[0, :2, :2].mean(), rtol=1e-5)
    assert resize_patches(p, 12).shape == (3, 12, 12)  # not a divisor: interpolation


def test_grid_cells_pick_the_point_nearest_each_cell_centre():
    # grid 2x2 over [0, 1]^2: cell centres at 0.25 / 0.75
    u = np.array([[0.0, 0.0], [0.24, 0.26], [1.0, 1.0], [0.9, 0.1], [0.76, 0.74]])
    idx, rows, cols = grid_cells(u, 2)
    got = {(int(r), int(c)): int(i) for i, r, c in zip(idx, rows, cols)}
    # row 0 is the top (large v); col 0 the left (small u)
    assert got == {(1, 0): 1, (0, 1): 4, (1, 1): 3}


def test_grid_cells_fill_uses_every_cell_and_keeps_neighbourhoods():
    rng = np.random.default_rng(5)
    # two tight, far-apart blobs: binning would use 2 cells of 36
    u = np.concatenate([rng.normal(0, 0.1, (100, 2)), rng.normal(10, 0.1, (100, 2))])
    assert len(grid_cells(u, 6)[0]) <= 4
    idx, rows, cols = grid_cells_fill(u, 6, seed=1)
    assert len(idx) == 36 and len(set(idx.tolist())) == 36
    assert len(set(zip(rows.tolist(), cols.tolist()))) == 36  # one point per cell
    # the blob at (0, 0) (bottom left) fills the lower-left half, the other the upper right
    low = idx < 100
    assert np.mean(rows[low] + (5 - cols[low])) > np.mean(rows[~low] + (5 - cols[~low]))
    np.testing.assert_array_equal(idx, grid_cells_fill(u, 6, seed=1)[0])
    # fewer points than cells: a compact block of ceil(sqrt(n)) columns
    idx, rows, cols = grid_cells_fill(u[:10], 6)
    assert len(idx) == 10 and cols.max() == 3 and rows.max() == 2


def test_grid_image_size_and_content():
    rng = np.random.default_rng(2)
    n, size, g = 300, 16, 6
    patches = rng.normal(size=(n, size, size)).astype(np.float32)
    # cluster 1's patches are bright discs: visible in the mosaic
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 25).astype(np.float32) * 5
    labels = (np.arange(n) % 3).astype(int)
    patches[labels == 1] += disc
    u = rng.random((n, 2))
    img = grid_image(patches, u, grid_size=g, labels=labels, border_px=1)
    full = grid_image(patches, u, grid_size=g, labels=labels, layout="fill")
    corners = full[:: size + 2, :: size + 2]  # top-left border pixel of every cell
    assert full.shape == img.shape and not (corners == 255).all(axis=2).any()  # no empty cell
    cell = size + 2
    assert img.shape == (g * cell, g * cell, 3) and img.dtype == np.uint8
    assert img.std() > 20
    read = read_png(png_bytes(img))
    assert read.shape == img.shape
    # the border of an occupied cell has its cluster colour
    idx, rows, cols = grid_cells(u, g)
    colors = np.round(cluster_colors(3) * 255)
    for i, r, c in list(zip(idx, rows, cols))[:5]:
        np.testing.assert_array_equal(img[r * cell, c * cell], colors[labels[i]])


def test_colormap_image_draws_candidates_in_the_slab():
    shape = (24, 40, 56)  # z, y, x
    tomo = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    xyz = np.array([[10, 30, 12], [45, 8, 12], [30, 20, 2]], float)  # last one far in z
    colors = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], np.float32)
    img = colormap_image(tomo, xyz, colors, radius_vox=3, z_centers=[12], scale=4)
    assert img.shape == (40 * 4, 56 * 4, 3)
    # disc centre at pixel ((y + .5) * 4 - .5, (x + .5) * 4 - .5): half grey, half colour;
    # the rim (radius 3 * 4 = 12 px, 2.4 px wide) is the pure colour
    cy, cx = 121, 41
    centre = img[cy, cx].astype(int)
    assert centre[0] - centre[1] in (127, 128) and centre[1] == centre[2]
    np.testing.assert_array_equal(img[cy, cx + 11], [255, 0, 0])
    np.testing.assert_array_equal(img[cy - 11, cx], [255, 0, 0])
    np.testing.assert_array_equal(img[int(8.5 * 4) + 11, int(45.5 * 4)], [0, 0, 255])
    assert img[cy, cx + 14, 0] == img[cy, cx + 14, 1]  # outside the disc: grey
    green = (img[..., 1] == 255) & (img[..., 0] == 0) & (img[..., 2] == 0)
    assert not green.any()  # z = 2 is 10 voxels from the slab: not drawn
    grey = img[..., 0] == img[..., 1]
    assert grey.mean() > 0.9  # the rest is the grey slab
    two = colormap_image(tomo, xyz, colors, radius_vox=3, z_centers=[2, 12], scale=2)
    assert two.shape == (80, 2 * 112 + 8, 3)
    assert png_bytes(two)[:8] == b"\x89PNG\r\n\x1a\n"


def test_colormap_default_scale_and_slab():
    tomo = np.zeros((20, 30, 50), np.float32)
    img = colormap_image(tomo, np.zeros((0, 3)), np.zeros((0, 3)), radius_vox=2)
    assert img.shape == (30 * 11, 50 * 11, 3)  # long side >= 512 with an integer factor


def test_cluster_volume_spheres_hold_cluster_plus_one():
    shape = (24, 40, 56)
    xyz = np.array([[10, 30, 12], [45, 8, 20], [55, 0, 0]], float)  # last one in a corner
    labels = np.array([0, 3, 1])
    vol = cluster_volume(shape, xyz, labels, radius_vox=2.5)
    assert vol.shape == shape and vol.dtype == np.float32
    assert vol[12, 30, 10] == 1 and vol[20, 8, 45] == 4 and vol[0, 0, 55] == 2
    n_sphere = len(sphere_offsets(2.5))
    assert n_sphere == 81  # voxels within 2.5 of a voxel centre
    assert (vol == 1).sum() == n_sphere and (vol == 4).sum() == n_sphere
    assert 0 < (vol == 2).sum() < n_sphere  # clipped at the border
    assert vol[12, 30, 13] == 0 and vol[12, 33, 10] == 0  # outside the radius
    # memmap-friendly: drawing into an existing array gives the same
    out = np.zeros(shape, np.float32)
    np.testing.assert_array_equal(draw_spheres(out, xyz, labels + 1.0, 2.5), vol)


def test_gallery_png_size_and_rows():
    rng = np.random.default_rng(4)
    n, size = 90, 12
    labels = np.repeat([0, 1, 2], [50, 30, 10])
    patches = rng.normal(size=(n, size, size)).astype(np.float32)
    data = gallery_png(patches, labels, n_members=8)
    img = read_png(data)
    h, w = gallery_figure_size(3, 8)
    assert img.shape[:2] == (h, w) == (270, 850)
    assert img[..., :3].std() > 0.05
    emb = rng.normal(size=(n, 4))
    emb[5] = emb[labels == 0].mean(axis=0)  # the most typical member of cluster 0
    members = cluster_members(labels, 0, 3, embeddings=emb)
    assert members[0] == 5 and len(members) == 3 and set(labels[members]) == {0}
    assert len(cluster_members(labels, 2, 8, seed=1)) == 8
    assert list(cluster_members(labels, 2, 20)) == list(range(80, 90))


def make_points(n=300, n_clusters=4, seed=0):
    rng = np.random.default_rng(seed)
    c = np.arange(n) % n_clusters
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]])[:n_clusters]
    uv = centres[c] + rng.normal(scale=0.6, size=(n, 2))
    return pd.DataFrame(
        {
            "point_id": np.arange(n) + 1000,
            "tomogram": np.where(np.arange(n) < n // 2, "tomo_000", "tomo_<b>"),
            "x": rng.integers(0, 56, n),
            "y": rng.integers(0, 40, n),
            "z": rng.integers(0, 24, n),
            "score": rng.random(n),
            "cluster": c,
            "umap_x": uv[:, 0],
            "umap_y": uv[:, 1],
        }
    )


def page_data(html: str) -> dict:
    m = re.search(
        r'<script type="application/json" id="milopyp-data">(.*?)</script>', html, re.DOTALL
    )
    return json.loads(m.group(1))


def test_explorer_html_is_self_contained():
    pts = make_points()
    thumbs = np.random.default_rng(1).normal(size=(300, 16, 16)).astype(np.float32)
    html = explorer_html(pts, thumbnails=thumbs, thumb_px=16)
    assert "http:" not in html and "https:" not in html and "//cdn" not in html
    assert "<b>" not in html.split("<script")[0]  # names are escaped
    for el in (
        'id="scatter"',
        'id="save-selection"',
        'id="clear-selection"',
        'id="mode-lasso"',
        "Content-Security-Policy",
    ):
        assert el in html
    data = page_data(html)
    assert data["n_total"] == 300 and data["n_shown"] == 300 and not data["capped"]
    assert data["id"][:3] == [1000, 1001, 1002]
    assert [c["size"] for c in data["clusters"]] == [75, 75, 75, 75]
    assert len(data["thumbs"]) == 300
    png = read_png(base64.b64decode(data["thumbs"][0]))
    assert png.shape == (16, 16)
    assert len(html) < 300 * 1500 + 40_000


def test_explorer_caps_points_per_cluster():
    pts = make_points(n=2000)
    pts.loc[:1599, "cluster"] = 0  # one big cluster, three of ~133
    html = explorer_html(pts, thumbnails=None, max_points=400, seed=3)
    data = page_data(html)
    assert data["capped"] and data["n_shown"] <= 400 and data["thumbs"] is None
    shown = {c["id"]: c["shown"] for c in data["clusters"]}
    assert all(v >= 20 for v in shown.values()) and shown[0] > shown[1]
    assert {c["id"]: c["size"] for c in data["clusters"]}[0] == 1700
    assert "per-cluster sample of" in html
    idx = sample_per_cluster(pts["cluster"].to_numpy(), 400, seed=3)
    np.testing.assert_array_equal(idx, sample_per_cluster(pts["cluster"].to_numpy(), 400, seed=3))
    assert len(np.unique(idx)) == len(idx) <= 400


def test_explorer_rejects_missing_columns():
    with pytest.raises(ValueError, match="lacks columns"):
        explorer_html(make_points().drop(columns=["umap_y"]))
