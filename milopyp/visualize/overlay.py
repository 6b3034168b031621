"""PNG figures of picks and traced fibres over a slab of a tomogram (report and quality check).

The background is the **mean** of the slab's z-slices (not a min- or max-projection: a mean
keeps the noise of a thick slab down), shown as the input has it, so protein is **dark** on a
lighter background, scaled between the slab's 1st and 99th percentiles
(:func:`milopyp.visualize.to_display`). The image is seen from +z: x to the right, y downwards
(image rows, as ``tomogram[z, y, x]`` is stored and as :mod:`milopyp.visualize.colormap`
draws); voxel ``(x, y)`` is the pixel block whose centre is at ``((x + 0.5) * s, (y + 0.5) * s)``
pixels from the image's top-left corner, ``s`` pixels per voxel
(:func:`milopyp.visualize.colormap.display_scale`: small slices upsampled to >= 512 pixels,
large ones binned to <= 2048). A title, if any, sits in a band of ``TITLE_BAND_PX`` pixels
above the image.

Coordinates are x, y, z in voxels (0-based); ``z_range = (z_min, z_max)`` are slice indices,
both included, clipped to the tomogram. Only picks (and truth points) whose z lies in the slab
are drawn; fibres are drawn whole. Matplotlib's Agg canvas is used directly (no pyplot state).
"""

from __future__ import annotations

import numpy as np

from milopyp.visualize import cluster_colors, figure_png, to_display
from milopyp.visualize.colormap import display_scale

TITLE_BAND_PX = 28
PICK_COLOR = "#ffd400"  # yellow
TRUTH_COLOR = "#00e5ff"  # cyan
_DPI = 100
_CHUNK = 16  # z-slices read at a time (a memory-mapped tomogram stays on disk)


def slab_projection(tomogram_zyx, z_range: tuple[int, int]) -> np.ndarray:
    """Mean over slices ``z_min..z_max`` (included) of a ``[z, y, x]`` tomogram: (y, x)
    float32. Reads ``_CHUNK`` slices at a time."""
    z0, z1 = _clip_range(tomogram_zyx.shape[0], z_range)
    total = np.zeros(tomogram_zyx.shape[1:], np.float64)
    for start in range(z0, z1 + 1, _CHUNK):
        stop = min(start + _CHUNK, z1 + 1)
        total += np.asarray(tomogram_zyx[start:stop], dtype=np.float64).sum(axis=0)
    return (total / (z1 - z0 + 1)).astype(np.float32)


def fibre_overlay_png(
    tomogram_zyx,
    *,
    picks_xyz=None,
    fibers=None,
    truth_xyz=None,
    z_range: tuple[int, int] | None = None,
    title: str | None = None,
) -> bytes:
    """PNG bytes: a slab of ``tomogram_zyx`` ([z, y, x]) with traced fibres as coloured lines
    (``fibers``: DataFrame with ``fiber_id, x, y, z`` in voxels, rows in order along each
    fibre; one colour per fibre, :func:`milopyp.visualize.cluster_colors`), ``picks_xyz``
    (N, 3) as small yellow circles and ``truth_xyz`` (M, 3) as cyan crosses.

    Default slab: the z range of the fibres' points, 2 voxels beyond each end; without fibres,
    the central third of the tomogram.
    """
    nz = tomogram_zyx.shape[0]
    if z_range is None:
        if fibers is not None and len(fibers):
            z = fibers["z"].to_numpy(np.float64)
            z_range = (int(np.floor(z.min())) - 2, int(np.ceil(z.max())) + 2)
        else:
            z_range = (nz // 3, max(nz // 3, 2 * nz // 3 - 1))
    fig, ax, z_range = _figure(tomogram_zyx, z_range, title)
    if fibers is not None and len(fibers):
        ids = fibers["fiber_id"].to_numpy()
        unique = list(dict.fromkeys(ids.tolist()))
        colors = cluster_colors(len(unique))
        for color, fid in zip(colors, unique):
            rows = fibers[ids == fid]
            ax.plot(rows["x"].to_numpy(), rows["y"].to_numpy(), "-", color=color, lw=2.0,
                    solid_capstyle="round", zorder=3)
    pick_style = {"marker": "o", "s": 16, "facecolors": "none", "edgecolors": PICK_COLOR,
                  "linewidths": 0.8}
    truth_style = {"marker": "+", "s": 25, "c": TRUTH_COLOR, "linewidths": 0.8}
    for xyz, style in ((picks_xyz, pick_style), (truth_xyz, truth_style)):
        inside = _in_slab(xyz, z_range)
        if len(inside):
            ax.scatter(inside[:, 0], inside[:, 1], **style)
    return figure_png(fig, dpi=_DPI)


def picks_overlay_png(
    tomogram_zyx,
    picks_xyz,
    *,
    radius_vox: float,
    z_range: tuple[int, int] | None = None,
    title: str | None = None,
) -> bytes:
    """PNG bytes: a slab of ``tomogram_zyx`` ([z, y, x]) with each pick of ``picks_xyz``
    (N, 3; voxels) whose z is in the slab drawn as a yellow circle of ``radius_vox`` voxels
    (globular or spike targets).

    Default slab: ``radius_vox`` either side of the picks' median z (a particle's thickness);
    without picks, the central third of the tomogram.
    """
    if not (np.isfinite(radius_vox) and radius_vox > 0):
        raise ValueError(f"picks_overlay_png: radius_vox must be > 0, got {radius_vox}")
    xyz = _xyz(picks_xyz)
    nz = tomogram_zyx.shape[0]
    if z_range is None:
        if len(xyz):
            zc, half = float(np.median(xyz[:, 2])), max(1.0, float(radius_vox))
            z_range = (int(np.floor(zc - half)), int(np.ceil(zc + half)))
        else:
            z_range = (nz // 3, max(nz // 3, 2 * nz // 3 - 1))
    fig, ax, z_range = _figure(tomogram_zyx, z_range, title)
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    inside = _in_slab(xyz, z_range)
    if len(inside):
        circles = [Circle((x, y), radius_vox) for x, y in inside[:, :2]]
        ax.add_collection(PatchCollection(circles, facecolors="none", edgecolors=PICK_COLOR,
                                          linewidths=1.2))
    return figure_png(fig, dpi=_DPI)


def _xyz(points) -> np.ndarray:
    if points is None:
        return np.zeros((0, 3))
    xyz = np.asarray(points, dtype=np.float64)
    if xyz.size == 0:
        return np.zeros((0, 3))
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"expected points of shape (N, 3) x, y, z, got {xyz.shape}")
    return xyz


def _in_slab(points, z_range: tuple[int, int]) -> np.ndarray:
    xyz = _xyz(points)
    keep = (xyz[:, 2] >= z_range[0] - 0.5) & (xyz[:, 2] < z_range[1] + 0.5)
    return xyz[keep]


def _clip_range(nz: int, z_range) -> tuple[int, int]:
    z0, z1 = (round(float(v)) for v in z_range)
    if z0 > z1:
        raise ValueError(f"z_range {tuple(z_range)}: z_min must be <= z_max")
    z0, z1 = max(z0, 0), min(z1, nz - 1)
    if z0 > z1:
        raise ValueError(f"z_range {tuple(z_range)} lies outside the tomogram (z 0..{nz - 1})")
    return z0, z1


def _figure(tomogram_zyx, z_range, title: str | None):
    """A figure holding the slab image (axes in voxel coordinates) and the title band."""
    from matplotlib.figure import Figure

    shape = tuple(int(n) for n in tomogram_zyx.shape)
    if len(shape) != 3:
        raise ValueError(f"expected a 3-D tomogram [z, y, x], got shape {shape}")
    z_range = _clip_range(shape[0], z_range)
    image = to_display(slab_projection(tomogram_zyx, z_range))
    ny, nx = shape[1:]
    scale = display_scale((ny, nx))
    width, height = max(1, round(nx * scale)), max(1, round(ny * scale))
    band = TITLE_BAND_PX if title else 0
    fig = Figure(figsize=(width / _DPI, (height + band) / _DPI), dpi=_DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + band)))
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest",
              extent=(-0.5, nx - 0.5, ny - 0.5, -0.5))
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(ny - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        fig.text(0.01, 1.0 - 0.5 * band / (height + band), f"{title} (z {z_range[0]}-{z_range[1]})",
                 ha="left", va="center", fontsize=10)
    return fig, ax, z_range


def run(tomogram, picks, output, *, particle_diameter_a: float, fibers=None,
        voxel_size_a: float | None = None, title: str | None = None) -> None:
    """The ``overlay`` stage: draw the pick table ``picks`` (voxels) over the tomogram MRC
    ``tomogram`` into the PNG ``output``, as circles of ``particle_diameter_a`` Å or, given
    the fibre table ``fibers`` (``milopyp trace-fibers``), as markers with the fibres as
    lines. ``voxel_size_a`` (Å) overrides the MRC header's."""
    from milopyp.errors import MilopypError
    from milopyp.io.atomic import prepare_outputs, write_bytes
    from milopyp.io.coords import read_coordinates, read_picks, xyz_array
    from milopyp.io.mrc import read_tomogram

    prepare_outputs(output)
    volume, voxel = read_tomogram(tomogram, mmap=True, voxel_size_a=voxel_size_a)
    table = read_picks(picks)
    heading = (f"{title} · " if title else "") + f"{len(table)} picks"
    if fibers:
        traced = read_coordinates(fibers)
        if len(traced) and "fiber_id" not in traced.columns:
            raise MilopypError(f"{fibers}: no fiber_id column; give the CSV of "
                               "`milopyp trace-fibers`")
        n_fibres = int(traced["fiber_id"].nunique()) if len(traced) else 0
        png = fibre_overlay_png(volume, picks_xyz=xyz_array(table), fibers=traced,
                                title=f"{heading}, {n_fibres} fibres")
    else:
        radius_vox = particle_diameter_a / 2 / voxel
        png = picks_overlay_png(volume, xyz_array(table), radius_vox=radius_vox, title=heading)
    write_bytes(output, png)
