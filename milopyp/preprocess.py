"""Preprocessing of tomograms: Gaussian denoising and histogram equalisation (paper, Methods).

All functions take and return ``float32`` arrays indexed ``[z, y, x]``. They are written for
large volumes (e.g. 256 x 1024 x 1024 voxels, 1 GiB): no float64 copy of a volume is ever
made, work is done in slabs, and slabs run on a few threads (scipy.ndimage and numpy release
the GIL), so a 160 x 512 x 512 tomogram is denoised and equalised in about a second on two cores.
An input may be a read-only ``np.memmap``; it is read slab by slab and never modified.
:func:`run`, the stage of ``milopyp preprocess``, reads and writes the MRC files through
:mod:`milopyp.io.mrc`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from milopyp.errors import MilopypError

log = logging.getLogger(__name__)

#: Default standard deviation of the denoising Gaussian, in voxels.
DEFAULT_SIGMA_VOX = 1.0
#: Default number of histogram bins for equalisation.
DEFAULT_N_BINS = 4096
#: At most this many voxels (a regular sub-sample) go into the equalisation histogram.
DEFAULT_MAX_SAMPLES = 4_000_000

_TRUNCATE = 4.0  # Gaussian kernels reach 4 sigma, as scipy's default


def available_threads(threads: int | None = None) -> int:
    """Number of worker threads: ``threads`` if given, else the CPUs this process may use,
    capped by ``OMP_NUM_THREADS`` when that is set (Snakemake sets it to a rule's threads)."""
    if threads is not None:
        if threads < 1:
            raise MilopypError(f"threads must be >= 1, got {threads}; give a positive number")
        return int(threads)
    try:
        n = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        n = max(1, os.cpu_count() or 1)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        n = min(n, int(env))
    return n


def _run(fn: Callable[[int], object], starts: Iterable[int], threads: int) -> None:
    """Call ``fn(start)`` for every start, on ``threads`` threads; re-raise the first error."""
    starts = list(starts)
    if threads <= 1 or len(starts) <= 1:
        for s in starts:
            fn(s)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(fn, starts):
            pass


def _block(plane_voxels: int, target_voxels: int = 1 << 19) -> int:
    """Planes per work block: about ``target_voxels`` voxels (2 MiB of float32), 1 to 8."""
    return int(min(8, max(1, target_voxels // max(1, plane_voxels))))


def _check_volume(volume: np.ndarray, what: str = "tomogram") -> None:
    if volume.ndim != 3:
        raise MilopypError(
            f"expected a 3-D {what} [z, y, x], got shape {tuple(volume.shape)}; "
            "give a 3-D volume"
        )
    if min(volume.shape) < 1:
        raise MilopypError(f"expected a non-empty 3-D {what}, got shape {tuple(volume.shape)}")


def _sigmas_zyx(sigma_vox: float | Sequence[float]) -> tuple[float, float, float]:
    if np.ndim(sigma_vox) == 0:
        s = float(sigma_vox)  # type: ignore[arg-type]
        out = (s, s, s)
    else:
        vals = tuple(float(v) for v in sigma_vox)  # type: ignore[union-attr]
        if len(vals) != 3:
            raise MilopypError(f"sigma must be one number or three (z, y, x), got {vals}")
        out = vals  # type: ignore[assignment]
    if any(not np.isfinite(s) or s < 0 for s in out):
        raise MilopypError(f"sigma must be finite and >= 0 voxels, got {out}")
    return out  # type: ignore[return-value]


def gaussian_filter3d(
    volume: np.ndarray,
    sigma_vox: float | Sequence[float],
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Gaussian-filter a 3-D volume; same result as ``scipy.ndimage.gaussian_filter`` (reflect).

    Args:
        volume: [z, y, x] array (any real dtype; a read-only memmap is fine).
        sigma_vox: standard deviation in voxels, one value or (z, y, x).
        out: float32 [z, y, x] output; may be ``volume`` itself (in place) when that is a
            writable float32 array. Allocated when None.
        threads: worker threads (default: all CPUs available to the process).

    Returns:
        float32 [z, y, x]. Memory: the output plus a few slabs; the x and y passes run per
        z-slab and the z pass per block of y rows, which is also faster than whole-volume
        passes because the lines stay in cache.
    """
    _check_volume(volume, "volume")
    sz, sy, sx = _sigmas_zyx(sigma_vox)
    nz, ny = volume.shape[:2]
    if out is None:
        out = np.empty(volume.shape, dtype=np.float32)
    elif out.shape != volume.shape or out.dtype != np.float32:
        raise MilopypError(f"out must be float32 {volume.shape}, got {out.dtype} {out.shape}")
    n_threads = available_threads(threads)
    bz = _block(volume.shape[1] * volume.shape[2])
    by = _block(volume.shape[0] * volume.shape[2])

    def pass_xy(z0: int) -> None:
        sl = slice(z0, min(z0 + bz, nz))
        if sx > 0:
            slab = ndimage.gaussian_filter1d(
                np.asarray(volume[sl], dtype=np.float32), sx, axis=2, truncate=_TRUNCATE,
                output=np.float32,
            )
        else:  # a copy: ``volume`` may be ``out`` itself
            slab = np.array(volume[sl], dtype=np.float32)
        if sy > 0:
            ndimage.gaussian_filter1d(slab, sy, axis=1, truncate=_TRUNCATE, output=out[sl])
        else:
            out[sl] = slab

    def pass_z(y0: int) -> None:
        sl = slice(y0, min(y0 + by, ny))
        block = ndimage.gaussian_filter1d(out[:, sl], sz, axis=0, truncate=_TRUNCATE,
                                          output=np.float32)
        out[:, sl] = block

    _run(pass_xy, range(0, nz, bz), n_threads)
    if sz > 0:
        _run(pass_z, range(0, ny, by), n_threads)
    return out


def denoise(
    tomogram: np.ndarray, sigma_vox: float = DEFAULT_SIGMA_VOX, *, threads: int | None = None
) -> np.ndarray:
    """Gaussian denoising: a new float32 [z, y, x] volume, blurred with ``sigma_vox`` voxels.

    ``sigma_vox = 0`` returns a float32 copy.
    """
    _check_volume(tomogram)
    return gaussian_filter3d(tomogram, sigma_vox, threads=threads)


def _subsample(volume: np.ndarray, max_samples: int) -> np.ndarray:
    """A regular sub-sample of at most ~``max_samples`` voxels (same stride along z, y, x)."""
    step = max(1, int(np.ceil((volume.size / max(1, max_samples)) ** (1 / 3))))
    return np.asarray(volume[::step, ::step, ::step], dtype=np.float32).ravel()


def equalize_histogram(
    tomogram: np.ndarray,
    n_bins: int = DEFAULT_N_BINS,
    *,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Global histogram equalisation: map every voxel through the grey-level CDF.

    The histogram (``n_bins`` equal bins between the sample's min and max) is taken over a
    regular sub-sample of at most ~``max_samples`` voxels; voxels are mapped by linear
    interpolation of the CDF between bin edges (as ``np.interp(v, edges, cdf)``), computed
    in float32 slab by slab. Values outside the sampled range clip to 0 or 1.

    Args:
        tomogram: [z, y, x] array (a read-only memmap is fine).
        n_bins: number of histogram bins.
        max_samples: voxels used for the histogram.
        out: float32 output; may be ``tomogram`` itself (in place). Allocated when None.
        threads: worker threads (default: all CPUs available).

    Returns:
        float32 [z, y, x] in [0, 1], a non-decreasing function of the input value.
    """
    _check_volume(tomogram)
    if n_bins < 2:
        raise MilopypError(f"n_bins must be >= 2, got {n_bins}")
    if out is None:
        out = np.empty(tomogram.shape, dtype=np.float32)
    elif out.shape != tomogram.shape or out.dtype != np.float32:
        raise MilopypError(f"out must be float32 {tomogram.shape}, got {out.dtype} {out.shape}")
    sample = _subsample(tomogram, max_samples)
    if not np.isfinite(sample).all():
        sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        raise MilopypError("histogram equalisation: the tomogram has no finite values")
    lo, hi = float(sample.min()), float(sample.max())
    if not hi > lo:
        log.warning("histogram equalisation: constant tomogram (value %g); output is 0.5", lo)
        out[...] = 0.5
        return out
    counts, _edges = np.histogram(sample, bins=n_bins, range=(lo, hi))
    cdf = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)]) / counts.sum()
    cdf32 = cdf.astype(np.float32)
    dcdf32 = np.diff(cdf).astype(np.float32)
    lo32 = np.float32(lo)
    scale = np.float32(n_bins / (hi - lo))
    top = np.float32(n_bins) - np.float32(n_bins) * np.float32(1e-6)
    if tomogram.flags.c_contiguous and out.flags.c_contiguous:
        # Element-wise map: work on flat chunks that stay in cache (planes can be 1 M voxels).
        src, dst = tomogram.reshape(-1), out.reshape(-1)
    else:
        src, dst = tomogram, out  # chunks of z-planes
    n = src.shape[0]
    chunk = 1 << 18 if src.ndim == 1 else _block(tomogram.shape[1] * tomogram.shape[2])

    def work(i0: int) -> None:
        sl = slice(i0, min(i0 + chunk, n))
        t = np.asarray(src[sl], dtype=np.float32) - lo32  # a fresh chunk
        t *= scale
        np.clip(t, 0, top, out=t)
        idx = t.astype(np.intp)
        t -= idx  # fractional position inside the bin
        o = dst[sl]
        np.take(dcdf32, idx, out=o)
        o *= t
        o += cdf32[idx]
        np.clip(o, 0, 1, out=o)

    _run(work, range(0, n, chunk), available_threads(threads))
    return out


def preprocess(
    tomogram: np.ndarray,
    *,
    sigma_vox: float = DEFAULT_SIGMA_VOX,
    equalize: bool = True,
    invert: bool = False,
    n_bins: int = DEFAULT_N_BINS,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    threads: int | None = None,
) -> np.ndarray:
    """Denoise (Gaussian, ``sigma_vox`` voxels), optionally invert, then histogram-equalise.

    Args:
        tomogram: [z, y, x] array; not modified (a read-only memmap is fine).
        sigma_vox: denoising Gaussian standard deviation in voxels (0 = none).
        equalize: histogram-equalise (output in [0, 1]).
        invert: negate the contrast, for tomograms with dark protein (milopyp's candidate
            finder and simulator use protein-bright volumes).
        n_bins: histogram bins.
        max_samples: voxels sampled for the histogram (see :func:`equalize_histogram`).
        threads: worker threads.

    Returns:
        float32 [z, y, x]; in [0, 1] when equalised. Peak memory: one output volume, slabs
        and the histogram sample (at most ``4 * max_samples`` bytes).
    """
    _check_volume(tomogram)
    result = denoise(tomogram, sigma_vox, threads=threads)
    if invert:
        np.negative(result, out=result)
    if equalize:
        equalize_histogram(result, n_bins, max_samples=max_samples, out=result,
                           threads=threads)
    return result


def sigma_vox_from(sigma_vox: float | None, sigma_a: float | None, voxel_size_a: float) -> float:
    """The denoising sigma in voxels: ``sigma_a`` (Å) converted with ``voxel_size_a`` (Å) when
    given, else ``sigma_vox``, else :data:`DEFAULT_SIGMA_VOX`. Negative values raise."""
    if sigma_a is not None:
        if sigma_a < 0:
            raise MilopypError(f"--sigma-a must be >= 0 Å, got {sigma_a}")
        return sigma_a / voxel_size_a
    if sigma_vox is not None:
        if sigma_vox < 0:
            raise MilopypError(f"--sigma-vox must be >= 0 voxels, got {sigma_vox}")
        return sigma_vox
    return DEFAULT_SIGMA_VOX


def run(
    tomogram_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    sigma_vox: float | None = None,
    sigma_a: float | None = None,
    equalize: bool = True,
    invert: bool = False,
    n_bins: int = DEFAULT_N_BINS,
    voxel_size_a: float | None = None,
    threads: int | None = None,
) -> None:
    """The ``preprocess`` stage: :func:`preprocess` of one MRC tomogram, written as float32 MRC.

    The input is memory-mapped (read whole only when it is not float32); the output keeps its
    voxel size (Å; ``voxel_size_a`` replaces the header's). Sigma: see :func:`sigma_vox_from`
    (``sigma_vox`` voxels or ``sigma_a`` Å, not both).
    """
    from milopyp.io.atomic import prepare_outputs
    from milopyp.io.mrc import read_tomogram, write_tomogram

    prepare_outputs(output)
    t0 = time.perf_counter()
    tomogram, voxel_size_a = read_tomogram(tomogram_path, mmap=True, voxel_size_a=voxel_size_a)
    sigma = sigma_vox_from(sigma_vox, sigma_a, voxel_size_a)
    result = preprocess(tomogram, sigma_vox=sigma, equalize=equalize, invert=invert,
                        n_bins=n_bins, threads=threads)
    del tomogram
    write_tomogram(output, result, voxel_size_a)
    log.info("%s -> %s: shape %s, sigma %.3g vox, inverted %s, equalised %s, %.2f s",
             tomogram_path, output, tuple(result.shape), sigma, invert, equalize,
             time.perf_counter() - t0)
