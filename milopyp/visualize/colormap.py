"""Per-tomogram colour maps of the embedding (the paper's 3D mapping of classes).

Two outputs per tomogram:

* a PNG: a slab of the tomogram (mean of a few z-slices) in grey, each candidate whose
  sphere cuts the slab drawn as a disc coloured by its (normalised 2D/3D UMAP) embedding, so
  that similar candidates have similar colours (:func:`colormap_image`);
* a label volume for 3D viewers (ChimeraX, IMOD, napari): float32, the tomogram's shape,
  each candidate's sphere holds ``cluster id + 1`` and everything else 0
  (:func:`draw_spheres`, :func:`cluster_volume`). Where spheres overlap the later point wins.
  Open it beside the tomogram and colour it by value ("surface" at level 0.5 per id, or a
  segmentation colour map).
"""

from __future__ import annotations

import math

import numpy as np

from milopyp.visualize import to_display


def central_z(shape_zyx: tuple[int, int, int], xyz: np.ndarray) -> int:
    """The z of the default slab: the median candidate z, or the middle slice without
    candidates."""
    if len(xyz):
        return int(np.clip(np.round(np.median(np.asarray(xyz)[:, 2])), 0, shape_zyx[0] - 1))
    return shape_zyx[0] // 2


def slab_mean(tomogram: np.ndarray, z_center: int, slab_vox: int) -> np.ndarray:
    """Mean of ``slab_vox`` z-slices centred on ``z_center`` (clipped to the volume): (y, x)
    float32. Reads only those slices, so a memory-mapped tomogram stays on disk."""
    nz = tomogram.shape[0]
    half = max(int(slab_vox), 1) // 2
    z0, z1 = max(0, z_center - half), min(nz, z_center + half + 1)
    if z0 >= z1:
        raise ValueError(f"slab_mean: z_center {z_center} outside 0..{nz - 1}")
    return np.asarray(tomogram[z0:z1], dtype=np.float32).mean(axis=0)


def display_scale(shape_yx: tuple[int, int], *, min_side: int = 512, max_side: int = 2048) -> float:
    """Pixels per voxel for the PNG: upsample small slices (integer factor, long side >=
    ``min_side``), bin large ones (1 / integer, long side <= ``max_side``)."""
    long_side = max(shape_yx)
    if long_side > max_side:
        return 1.0 / math.ceil(long_side / max_side)
    return float(max(1, min(16, math.ceil(min_side / long_side))))


def _rescale(img: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1:
        s = round(scale)
        return np.repeat(np.repeat(img, s, axis=0), s, axis=1)
    b = round(1 / scale)
    h, w = (img.shape[0] // b) * b, (img.shape[1] // b) * b
    return img[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3))


def _draw_disc(img: np.ndarray, cx: float, cy: float, r: float, color: np.ndarray) -> None:
    """Disc in place on an (H, W, 3) float image: the inside blended half-and-half with
    ``color`` (the density stays visible), a solid rim in ``color``."""
    h, w = img.shape[:2]
    x0, x1 = max(0, math.floor(cx - r)), min(w, math.ceil(cx + r) + 1)
    y0, y1 = max(0, math.floor(cy - r)), min(h, math.ceil(cy + r) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d2 = (xx - cx) ** 2 + (yy - cy) ** 2
    rim = max(1.0, 0.2 * r)
    view = img[y0:y1, x0:x1]
    inside = d2 <= (r - rim) ** 2
    view[inside] = 0.5 * view[inside] + 0.5 * color
    view[(d2 <= r * r) & ~inside] = color


def colormap_image(
    tomogram: np.ndarray,
    xyz: np.ndarray,
    colors: np.ndarray,
    *,
    radius_vox: float,
    z_centers: list[int] | None = None,
    slab_vox: int = 5,
    scale: float | None = None,
) -> np.ndarray:
    """Colour map picture, RGB (H, W, 3) uint8.

    ``tomogram`` [z, y, x] (may be a memmap), ``xyz`` (N, 3) candidate positions in voxels,
    ``colors`` (N, 3) in [0, 1] (e.g. ``normalise_embedding_rgb(umap3d)``). One panel per
    entry of ``z_centers`` (default: one, at the median candidate z), side by side with an
    8-pixel white gap. A panel is the mean of ``slab_vox`` slices; a candidate at height z
    is drawn with the radius of its sphere's cut, sqrt(radius_vox^2 - (z - z_c)^2), so only
    candidates within ``radius_vox`` of the slab centre appear: a solid rim in its colour
    around a half-transparent fill. Each panel is
    ``(ny * scale, nx * scale)`` pixels (``scale`` from :func:`display_scale` by default).
    """
    shape_zyx = tuple(int(s) for s in tomogram.shape)
    if len(shape_zyx) != 3:
        raise ValueError(f"colormap_image: expected a 3-D tomogram [z, y, x], got {shape_zyx}")
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    colors = np.asarray(colors, dtype=np.float32).reshape(-1, 3)
    if len(colors) != len(xyz):
        raise ValueError(f"colormap_image: {len(xyz)} positions but {len(colors)} colours")
    if z_centers is None:
        z_centers = [central_z(shape_zyx, xyz)]
    s = display_scale(shape_zyx[1:]) if scale is None else float(scale)
    panels = []
    for zc in z_centers:
        zc = int(np.clip(zc, 0, shape_zyx[0] - 1))
        grey = to_display(_rescale(slab_mean(tomogram, zc, slab_vox), s))
        img = np.repeat(grey[..., None], 3, axis=2)
        dz = xyz[:, 2] - zc
        inside = np.abs(dz) < radius_vox
        for i in np.flatnonzero(inside):
            r_cut = math.sqrt(max(radius_vox**2 - dz[i] ** 2, 0.0))
            _draw_disc(
                img,
                (xyz[i, 0] + 0.5) * s - 0.5,
                (xyz[i, 1] + 0.5) * s - 0.5,
                max(r_cut * s, 2.0),
                colors[i],
            )
        panels.append(img)
    if len(panels) > 1:
        gap = np.ones((panels[0].shape[0], 8, 3), np.float32)
        out = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
    else:
        out = panels[0]
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def sphere_offsets(radius_vox: float) -> np.ndarray:
    """Integer offsets (M, 3) as (dz, dy, dx) of the voxels within ``radius_vox`` of 0."""
    r = max(float(radius_vox), 0.0)
    n = math.floor(r)
    g = np.mgrid[-n : n + 1, -n : n + 1, -n : n + 1].reshape(3, -1).T
    return g[np.sum(g**2, axis=1) <= r * r + 1e-9]


def draw_spheres(
    out: np.ndarray, xyz: np.ndarray, values: np.ndarray, radius_vox: float
) -> np.ndarray:
    """Set the voxels within ``radius_vox`` of each rounded position ``xyz[i]`` (x, y, z) to
    ``values[i]``, in place on ``out`` [z, y, x] (an array or a writable memmap), clipping at
    the volume's border. Later points overwrite earlier ones. Memory: one sphere at a time."""
    offsets = sphere_offsets(radius_vox)
    shape = np.array(out.shape)
    centres_zyx = np.round(np.asarray(xyz, dtype=np.float64)[:, ::-1]).astype(np.int64)
    for c, v in zip(centres_zyx, np.asarray(values)):
        idx = offsets + c
        idx = idx[np.all((idx >= 0) & (idx < shape), axis=1)]
        out[idx[:, 0], idx[:, 1], idx[:, 2]] = v
    return out


def cluster_volume(
    shape_zyx: tuple[int, int, int], xyz: np.ndarray, labels: np.ndarray, radius_vox: float,
    *, out: np.ndarray | None = None,
) -> np.ndarray:
    """Float32 volume ``shape_zyx``: each candidate's sphere holds ``label + 1``, 0 elsewhere.

    ``out``: a zeroed float32 array of that shape to draw into instead of a new one (e.g. a
    writable memmap, for tomograms too large for memory)."""
    if out is None:
        out = np.zeros(tuple(int(s) for s in shape_zyx), np.float32)
    return draw_spheres(out, xyz, np.asarray(labels, dtype=np.float32) + 1.0, radius_vox)


def marker_radius_vox(
    patch_size_vox: int, particle_diameter_a: float | None = None,
    voxel_size_a: float | None = None,
) -> float:
    """Radius in voxels of a candidate's disc and sphere: half the particle diameter (Å)
    when it is given, else a quarter of the patch side (voxels)."""
    if particle_diameter_a:
        return 0.5 * float(particle_diameter_a) / float(voxel_size_a)
    return patch_size_vox / 4.0


def slab_centers(xyz: np.ndarray, n_slabs: int) -> list[int] | None:
    """z of ``n_slabs`` panels at evenly spaced quantiles of the candidates' z; None (the
    default single panel of :func:`colormap_image`) for one slab."""
    if n_slabs <= 1:
        return None
    qs = np.linspace(0, 1, n_slabs + 2)[1:-1]
    return [round(v) for v in np.quantile(np.asarray(xyz)[:, 2], qs)]
