"""PNG overlays of picks and traced fibres on a tomogram slab (milopyp.visualize.overlay)."""

from __future__ import annotations

import io

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from milopyp.visualize.overlay import (
    TITLE_BAND_PX,
    fibre_overlay_png,
    picks_overlay_png,
    slab_projection,
)

SHAPE = (40, 96, 128)  # z, y, x; displayed at 4 pixels per voxel (long side 512)
SCALE = 4


def read_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(io.BytesIO(data), format="png")[..., :3]


def pixel(img: np.ndarray, x: float, y: float, band: int = 0) -> np.ndarray:
    """RGB at voxel (x, y) of the image (``band`` pixels of title above it)."""
    return img[band + int((y + 0.5) * SCALE), int((x + 0.5) * SCALE)]


def colourful(rgb: np.ndarray) -> bool:
    return float(rgb.max() - rgb.min()) > 0.25


@pytest.fixture
def tomogram() -> np.ndarray:
    """Noise with dark protein: a tube along x at y=48, z=20 and a dark blob at z=5."""
    rng = np.random.default_rng(0)
    vol = rng.normal(0.0, 0.2, SHAPE).astype(np.float32)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    vol[np.broadcast_to(np.hypot(y - 48, z - 20) < 3, SHAPE)] -= 2.0
    vol[np.sqrt((x - 100) ** 2 + (y - 20) ** 2 + (z - 5) ** 2) < 4] -= 2.0
    return vol


def fibre_table() -> pd.DataFrame:
    x = np.arange(10.0, 120.0, 2.0)
    return pd.concat([
        pd.DataFrame({"fiber_id": 0, "x": x, "y": 48.0, "z": 20.0}),
        pd.DataFrame({"fiber_id": 1, "x": 30.0, "y": np.arange(10.0, 90.0, 2.0), "z": 21.0}),
    ], ignore_index=True)


def test_fibre_overlay_draws_coloured_fibres_picks_and_truth(tomogram):
    picks = np.array([[80.0, 75.0, 20.0], [60.0, 15.0, 19.0], [60.0, 75.0, 2.0]])
    truth = np.array([[100.0, 80.0, 20.0]])
    png = fibre_overlay_png(tomogram, picks_xyz=picks, fibers=fibre_table(), truth_xyz=truth,
                            title="TS_01: 2 fibres")
    img = read_png(png)
    assert img.shape == (SHAPE[1] * SCALE + TITLE_BAND_PX, SHAPE[2] * SCALE, 3)
    band = TITLE_BAND_PX
    # the fibres: coloured along their whole length, in two different colours
    along_0 = [pixel(img, x, 48, band) for x in (20, 60, 110)]
    along_1 = [pixel(img, 30, y, band) for y in (15, 70, 85)]
    assert all(colourful(c) for c in along_0 + along_1)
    assert np.abs(along_0[0] - along_1[1]).max() > 0.2
    # away from everything: grey (the slab, no overlay)
    for x, y in ((70, 30), (110, 90), (5, 5)):
        assert not colourful(pixel(img, x, y, band))
    # picks in the slab (z 18..23): yellow rings of the marker; the one at z=2 is not drawn
    def ring_is_yellow(x, y):
        patch = img[band + int(y * SCALE) - 8: band + int(y * SCALE) + 10,
                    int(x * SCALE) - 8: int(x * SCALE) + 10].reshape(-1, 3)
        return bool(np.any((patch[:, 0] > 0.7) & (patch[:, 1] > 0.6) & (patch[:, 2] < 0.4)))
    assert ring_is_yellow(80, 75) and ring_is_yellow(60, 15)
    assert not ring_is_yellow(60, 75)
    # truth: cyan cross
    patch = img[band + 80 * SCALE - 6: band + 81 * SCALE + 6, 100 * SCALE - 6: 101 * SCALE + 6]
    cyan = (patch[..., 0] < 0.4) & (patch[..., 1] > 0.6) & (patch[..., 2] > 0.6)
    assert cyan.any()


def test_fibre_overlay_default_slab_holds_the_fibres(tomogram):
    """Protein is dark: the tube (z=20, in the fibres' slab) is dark, the blob at z=5 is not
    in that slab; with a slab at z=5 the blob is dark."""
    fibers = pd.DataFrame({"fiber_id": 0, "x": [10.0, 12.0], "y": 90.0, "z": 20.0})
    img = read_png(fibre_overlay_png(tomogram, fibers=fibers))  # no title: no band
    assert img.shape == (SHAPE[1] * SCALE, SHAPE[2] * SCALE, 3)
    background = pixel(img, 70, 30).mean()
    assert pixel(img, 70, 48).mean() < background - 0.3  # the tube
    assert abs(pixel(img, 100, 20).mean() - background) < 0.3  # blob not in the slab
    low = read_png(fibre_overlay_png(tomogram, fibers=fibers, z_range=(3, 7)))
    assert pixel(low, 100, 20).mean() < pixel(low, 70, 30).mean() - 0.3


def test_fibre_overlay_without_fibres_or_picks(tomogram):
    img = read_png(fibre_overlay_png(tomogram, fibers=fibre_table().iloc[:0], picks_xyz=[]))
    assert img.shape == (SHAPE[1] * SCALE, SHAPE[2] * SCALE, 3)
    spread = img.max(axis=2) - img.min(axis=2)
    assert spread.max() < 0.02  # grey only: nothing drawn
    assert pixel(img, 70, 48).mean() < pixel(img, 70, 30).mean() - 0.3  # central third: tube


def test_picks_overlay_circles(tomogram):
    picks = np.array([[30.0, 30.0, 20.0], [90.0, 70.0, 21.0], [100.0, 20.0, 5.0]])
    img = read_png(picks_overlay_png(tomogram, picks, radius_vox=6.0, title="picks"))
    band = TITLE_BAND_PX
    assert img.shape == (SHAPE[1] * SCALE + band, SHAPE[2] * SCALE, 3)

    def yellow(x, y):
        c = pixel(img, x, y, band)
        return c[0] > 0.6 and c[1] > 0.5 and c[2] < 0.4

    # default slab: the picks' median z (20) +- radius: the first two are circled ...
    for x, y in ((30, 30), (90, 70)):
        rim = [yellow(x + dx, y + dy) for dx, dy in ((6, 0), (-6, 0), (0, 6), (0, -6))]
        assert sum(rim) >= 3
        assert not yellow(x, y) and not yellow(x + 3, y)  # a ring, not a disc
    # ... the one at z=5 lies outside that slab
    assert not any(yellow(100 + dx, 20 + dy) for dx, dy in ((6, 0), (-6, 0), (0, 6), (0, -6)))
    both = read_png(picks_overlay_png(tomogram, picks, radius_vox=6.0, z_range=(0, 39)))
    c = pixel(both, 106, 20)
    assert c[0] > 0.6 and c[1] > 0.5 and c[2] < 0.4


def test_slab_projection_is_the_mean_in_chunks():
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(50, 7, 9)).astype(np.float32)
    np.testing.assert_allclose(slab_projection(vol, (3, 40)), vol[3:41].mean(axis=0), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(slab_projection(vol, (-10, 2)), vol[0:3].mean(axis=0), rtol=1e-5,
                               atol=1e-6)


def test_bad_inputs(tomogram):
    with pytest.raises(ValueError, match="3-D"):
        fibre_overlay_png(tomogram[0])
    with pytest.raises(ValueError, match="outside"):
        fibre_overlay_png(tomogram, z_range=(50, 60))
    with pytest.raises(ValueError, match="z_min"):
        fibre_overlay_png(tomogram, z_range=(10, 5))
    with pytest.raises(ValueError, match="radius_vox"):
        picks_overlay_png(tomogram, [[1.0, 2.0, 3.0]], radius_vox=0)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        picks_overlay_png(tomogram, [[1.0, 2.0]], radius_vox=3)
