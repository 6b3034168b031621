"""Tests of milopyp.preprocess and `milopyp preprocess` (tiny non-cubic volumes)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

from milopyp.errors import MilopypError
from milopyp.preprocess import (
    denoise,
    equalize_histogram,
    gaussian_filter3d,
    preprocess,
)

SHAPE = (24, 40, 56)  # z, y, x: non-cubic so an axis swap fails


@pytest.fixture
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal(SHAPE).astype(np.float32)


@pytest.mark.parametrize("sigma", [1.0, 2.5, (0.0, 1.5, 3.0), (2.0, 0.0, 0.0)])
@pytest.mark.parametrize("threads", [1, 2])
def test_gaussian_matches_scipy(volume, sigma, threads):
    expected = ndimage.gaussian_filter(volume.astype(np.float64), sigma)
    got = gaussian_filter3d(volume, sigma, threads=threads)
    assert got.dtype == np.float32 and got.shape == SHAPE
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # in place gives the same
    inplace = volume.copy()
    out = gaussian_filter3d(inplace, sigma, out=inplace, threads=threads)
    assert out is inplace
    np.testing.assert_allclose(inplace, expected, atol=2e-6)


def test_anisotropic_sigma_follows_zyx(volume):
    # sigma only along x must blur along the last axis and leave z-lines untouched in z
    spike = np.zeros(SHAPE, np.float32)
    spike[12, 20, 28] = 1.0
    out = gaussian_filter3d(spike, (0.0, 0.0, 2.0))
    assert out[12, 20, 30] > 0.05 and out[13, 20, 28] == 0 and out[12, 21, 28] == 0


def test_denoise_keeps_input_and_accepts_read_only(volume):
    ro = volume.copy()
    ro.flags.writeable = False
    out = denoise(ro, 1.5)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(ro, volume)
    assert out.std() < 0.5 * volume.std()  # white noise is smoothed
    np.testing.assert_array_equal(denoise(volume, 0.0), volume)


def test_equalize_range_monotonic_and_flat(volume):
    x = volume * 3.0 + 7.0
    eq = equalize_histogram(x, 256)
    assert eq.dtype == np.float32 and eq.shape == SHAPE
    assert eq.min() >= 0.0 and eq.max() <= 1.0
    assert eq.min() < 0.01 and eq.max() > 0.99
    order = np.argsort(x, axis=None, kind="stable")
    assert np.all(np.diff(eq.ravel()[order]) >= 0)  # non-decreasing in the input value
    # equalised values of a continuous distribution are close to uniform
    assert abs(float(eq.mean()) - 0.5) < 0.01
    assert abs(float(np.mean(eq < 0.25)) - 0.25) < 0.02


def test_equalize_subsampled_histogram_and_outliers(volume):
    x = volume.copy()
    eq = equalize_histogram(x, 128, max_samples=1000)  # CDF from ~1000 voxels only
    assert 0.0 <= eq.min() and eq.max() <= 1.0
    order = np.argsort(x, axis=None, kind="stable")
    assert np.all(np.diff(eq.ravel()[order]) >= 0)
    assert abs(float(eq.mean()) - 0.5) < 0.05


def test_equalize_in_place_and_constant(volume):
    x = volume.copy()
    expected = equalize_histogram(volume)
    out = equalize_histogram(x, out=x)
    assert out is x
    np.testing.assert_allclose(x, expected)
    view = volume[:, ::2, 1:]  # not C-contiguous: mapped plane by plane
    np.testing.assert_allclose(equalize_histogram(view),
                               equalize_histogram(np.ascontiguousarray(view)))
    const = np.full(SHAPE, 3.0, np.float32)
    np.testing.assert_array_equal(equalize_histogram(const), 0.5)


def _peak_bytes(fn, nz: int) -> tuple[int, int]:
    """Peak traced allocation of ``fn(volume)`` for a (nz, 96, 80) float32 volume."""
    x = np.random.default_rng(nz).standard_normal((nz, 96, 80)).astype(np.float32)
    tracemalloc.start()
    try:
        fn(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, x.nbytes


def test_equalize_makes_no_float64_copy():
    # Slab temporaries and the histogram sample do not grow with nz; a float64 copy would
    # add 8 bytes per voxel. Doubling nz must add (almost) nothing, the output is in place.
    def run(x):
        equalize_histogram(x, out=x, max_samples=20_000, threads=1)

    small, _ = _peak_bytes(run, 64)
    large, nbytes = _peak_bytes(run, 128)
    assert large - small < 0.2 * nbytes / 2, (small, large, nbytes)


def test_preprocess_memory_is_one_output_volume():
    def run(x):
        out = preprocess(x, sigma_vox=1.0, max_samples=20_000, threads=1)
        assert out.dtype == np.float32

    small, nbytes_small = _peak_bytes(run, 64)
    large, nbytes_large = _peak_bytes(run, 128)
    extra_per_voxel_byte = (large - small) / (nbytes_large - nbytes_small)
    assert extra_per_voxel_byte < 1.2, (small, large)  # ~1: one float32 output volume


def test_preprocess_equalizes_and_inverts(volume):
    normal = preprocess(volume, sigma_vox=1.0)
    inverted = preprocess(volume, sigma_vox=1.0, invert=True)
    assert normal.min() >= 0 and normal.max() <= 1
    np.testing.assert_allclose(inverted, 1.0 - normal, atol=2e-3)
    raw = preprocess(volume, sigma_vox=1.0, equalize=False)
    np.testing.assert_allclose(raw, ndimage.gaussian_filter(volume, 1.0), atol=2e-6)


def test_rejects_2d_and_bad_sigma(volume):
    with pytest.raises(MilopypError, match="3-D"):
        preprocess(volume[0])
    with pytest.raises(MilopypError, match="sigma"):
        denoise(volume, -1.0)


def test_command_writes_preprocessed_mrc(tmp_path, volume):
    from milopyp.cli import main
    from milopyp.io.mrc import read_tomogram, write_tomogram

    src = tmp_path / "tomo_007.mrc"
    write_tomogram(src, volume, 10.0)
    out = tmp_path / "pre" / "tomo_007.mrc"
    assert main(["preprocess", "--tomogram", str(src), "-o", str(out), "--sigma-a", "20"]) == 0
    data, voxel = read_tomogram(out)
    assert voxel == pytest.approx(10.0) and data.shape == SHAPE
    np.testing.assert_allclose(data, preprocess(volume, sigma_vox=2.0), atol=1e-6)

    out2 = tmp_path / "raw.mrc"
    assert main(["preprocess", "--tomogram", str(src), "-o", str(out2), "--sigma", "0",
                 "--no-equalize", "--voxel-size", "5"]) == 0
    data2, voxel2 = read_tomogram(out2)
    assert voxel2 == pytest.approx(5.0)
    np.testing.assert_allclose(data2, volume)
    assert not list(tmp_path.glob("**/.*tmp*"))  # no temporary files left behind


def test_threads_default_follows_omp_num_threads(monkeypatch):
    from milopyp.preprocess import available_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert available_threads() == 1
    assert available_threads(3) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert available_threads() >= 1
    with pytest.raises(MilopypError, match="threads"):
        available_threads(0)
