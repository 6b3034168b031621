"""Contrast matching: a tomogram weaker than the labelled ones at some spatial frequency is
raised to their level there before it is picked.

Tomograms of one campaign differ in defocus, ice and crowding, so each has its own radial
power spectrum; the localiser normalises every tomogram to unit variance, which leaves the
balance between frequencies as it was. The network and the profile check
(:mod:`milopyp.localize.profile`) learn a particle's contrast at the labelled tomogram's
balance. Where another tomogram has less power at the particle's scale, its particles
look fainter than the labels, while a denser look-alike still looks like them: on the
devset's crowded set, labelled on TS_02 (the tomogram with the most power at 60-160 Å),
the held-out F1 was 0.761 / 0.765 (two training seeds), TS_01 and TS_03 having 5-12 %
less amplitude there. :func:`match_contrast` raises a tomogram's spectrum, frequency by
frequency, to the reference (:func:`spectrum_reference`: the weakest labelled tomogram at
each frequency), never lowers it, and leaves a tomogram already at or above the reference
as it is. With it, the same saved models give 0.852 / 0.839 (0.840 / 0.836 in a first
test with whole-volume spectra). Lowering a stronger tomogram to the reference as well (a
full match) gave 0.865 / 0.831 there, but cost 0.005-0.06 on the held-out F1 of six
models labelled on TS_01 (TS_02 itself 0.932 -> 0.918 and 0.943 -> 0.924 with seeds 0 and
1): a tomogram with more contrast at the particle's scale is not the harder one. The
figures of every set, with and without: README, "Accuracy on data we did not make", and
docs/accuracy.md, "Stop 45".

The spectra are Welch estimates (:func:`power_spectrum`: Hann-windowed boxes read from
the tomogram, so a memory-mapped tomogram is never read whole), and the filter is a
compact radially symmetric kernel built from the gain (:func:`contrast_kernel`), applied
slab by slab (:func:`raise_contrast`): the raised tomogram is one float32 copy, which
``milopyp localize`` keeps on disk (an unlinked temporary file in ``$TMPDIR``, memory-mapped),
not in memory: 4 bytes per voxel, 8 GB for a 2,000 × 2,000 × 500 tomogram.
"""

from __future__ import annotations

import logging

import numpy as np

from milopyp.localize.normalize import intensity_stats, normalize
from milopyp.preprocess import available_threads

log = logging.getLogger(__name__)

#: Side of the Welch boxes (voxels; smaller for a tomogram thinner than this): the
#: spectrum's frequency step is 1 / this cycles per voxel.
SPECTRUM_BOX_VOX = 64
#: Boxes per axis (evenly spaced, fewer where an axis holds fewer boxes' worth): at most
#: 4 × 4 × 4 = 64 boxes of 64³ voxels, 0.2 s at 160 × 512 × 512 on 2 cores.
SPECTRUM_BOXES_PER_AXIS = 4
#: The most a frequency's amplitude is raised: a tomogram low-pass filtered before it
#: came here holds little but rounding beyond its cut-off, which this must not amplify.
MAX_GAIN = 2.0
#: A tomogram whose largest gain is below this is used as it is (no copy).
MIN_GAIN = 1.01
#: Half-width of the filter kernel (voxels): 25³ taps, fine enough for the gain's frequency
#: step of 1/64 cycles per voxel to matter little (the gains rise and fall over 0.03-0.2).
KERNEL_HALF_WIDTH_VOX = 12
#: z-slices filtered at a time (each with the kernel's half-width above and below).
SLAB_SLICES = 32


def _box_side(shape_zyx) -> int:
    """Welch box side for a tomogram of ``shape_zyx``: :data:`SPECTRUM_BOX_VOX`, or its
    smallest axis rounded down to even (at least 2)."""
    return max(2, min(SPECTRUM_BOX_VOX, int(min(shape_zyx))) // 2 * 2)


def power_spectrum(tomogram: np.ndarray) -> dict:
    """Radially averaged power spectral density of ``tomogram`` [z, y, x] (normalised as the
    localiser's input is, :mod:`milopyp.localize.normalize`): ``{"frequency": (B,) cycles per
    voxel, 0 to 0.5, "power": (B,)}``, a Welch estimate over up to
    :data:`SPECTRUM_BOXES_PER_AXIS`³ Hann-windowed boxes of :func:`_box_side` voxels evenly
    spaced through the volume; frequencies beyond 0.5 (the
    box's corners) count in the last bin. Deterministic; reads only the boxes (np.memmap is
    fine)."""
    side = _box_side(tomogram.shape)
    stats = intensity_stats(tomogram)
    starts = [np.unique(np.linspace(0, n - side, min(SPECTRUM_BOXES_PER_AXIS,
                                                         max(1, n // (side // 2) - 1)))
                        .round().astype(int)) for n in tomogram.shape]
    window = np.hanning(side + 2)[1:-1].astype(np.float32)
    window = window[:, None, None] * window[None, :, None] * window[None, None, :]
    k = np.sqrt(sum(f**2 for f in np.meshgrid(np.fft.fftfreq(side), np.fft.fftfreq(side),
                                               np.fft.rfftfreq(side), indexing="ij")))
    bins = np.minimum(np.rint(k * side).astype(int), side // 2).ravel()
    counts = np.bincount(bins, minlength=side // 2 + 1)
    total = np.zeros(side // 2 + 1)
    n_boxes = 0
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                box = normalize(tomogram[z:z + side, y:y + side, x:x + side], stats)
                box = (box - box.mean()) * window
                power = np.abs(np.fft.rfftn(box)) ** 2
                total += np.bincount(bins, weights=power.ravel(), minlength=side // 2 + 1)
                n_boxes += 1
    density = total / counts / n_boxes / float((window**2).sum())
    return {"frequency": (np.arange(side // 2 + 1) / side).tolist(), "power": density.tolist()}


def spectrum_reference(tomograms: list[np.ndarray]) -> dict:
    """The spectrum a picked tomogram is raised to: at each frequency the lowest power of
    ``tomograms`` (the labelled tomograms, [z, y, x] each; :func:`power_spectrum`), so that
    none of them is itself raised. ``{"frequency", "power"}`` as plain lists (stored in the
    model file's calibration)."""
    spectra = [power_spectrum(t) for t in tomograms]
    frequency = spectra[np.argmax([len(s["frequency"]) for s in spectra])]["frequency"]
    power = np.min([np.interp(frequency, s["frequency"], s["power"]) for s in spectra], axis=0)
    return {"frequency": list(map(float, frequency)), "power": power.tolist()}


def contrast_gain(reference: dict, spectrum: dict) -> np.ndarray:
    """Amplitude gain at each of ``spectrum``'s frequencies that raises it to
    ``reference`` (both :func:`power_spectrum` dicts): ``sqrt(reference / spectrum)``,
    at least 1 (never lowered), at most :data:`MAX_GAIN`, 1 at frequency 0 (the mean) and
    beyond the reference's frequencies. ``(B,)`` float64."""
    frequency = np.asarray(spectrum["frequency"], dtype=np.float64)
    own = np.maximum(np.asarray(spectrum["power"], dtype=np.float64), 1e-12)
    target = np.interp(frequency, reference["frequency"], reference["power"], right=np.nan)
    gain = np.sqrt(np.where(np.isfinite(target), target, own) / own)
    gain[frequency == 0] = 1.0
    return np.clip(gain, 1.0, MAX_GAIN)


def contrast_kernel(frequency: np.ndarray, gain: np.ndarray,
                    half_width_vox: int = KERNEL_HALF_WIDTH_VOX) -> np.ndarray:
    """The radially symmetric filter whose response at spatial frequency ``frequency``
    (cycles per voxel) is ``gain`` (the last gain beyond the last frequency): a
    ``(2h + 1)³`` float32 kernel, h = ``half_width_vox``, its response sampled on that grid."""
    side = 2 * half_width_vox + 1
    k = np.sqrt(sum(f**2 for f in np.meshgrid(*[np.fft.fftfreq(side)] * 3, indexing="ij")))
    response = np.interp(k, frequency, gain)
    return np.fft.fftshift(np.real(np.fft.ifftn(response))).astype(np.float32)


def raise_contrast(tomogram: np.ndarray, kernel: np.ndarray, *,
                   on_disk: bool = False) -> np.ndarray:
    """``tomogram`` [z, y, x] normalised (:mod:`milopyp.localize.normalize`) and convolved
    with ``kernel`` (:func:`contrast_kernel`), mirrored at the faces, :data:`SLAB_SLICES`
    z-slices at a time, its FFTs on :func:`milopyp.preprocess.available_threads` threads: a
    float32 array of the tomogram's shape; with ``on_disk`` a ``np.memmap`` of a temporary
    file (:func:`tempfile.TemporaryFile`: in ``$TMPDIR``, unlinked at once, its space freed
    with the array), so that only the slab being filtered is held in memory."""
    import scipy.fft
    from scipy.signal import fftconvolve

    h = kernel.shape[0] // 2
    stats = intensity_stats(tomogram)
    nz = tomogram.shape[0]
    out = _output(tomogram.shape, on_disk)
    with scipy.fft.set_workers(available_threads()):
        for z0 in range(0, nz, SLAB_SLICES):
            z1 = min(nz, z0 + SLAB_SLICES)
            lo, hi = max(0, z0 - h), min(nz, z1 + h)
            slab = normalize(tomogram[lo:hi], stats)
            slab = np.pad(slab, ((h - (z0 - lo), h - (hi - z1)), (h, h), (h, h)),
                          mode="symmetric")
            out[z0:z1] = fftconvolve(slab, kernel, mode="valid")
    return out


def _output(shape, on_disk: bool) -> np.ndarray:
    """The raised tomogram's float32 array of ``shape``: with ``on_disk`` a ``np.memmap`` of
    a temporary file (in ``$TMPDIR``, unlinked at once), its space reserved up front
    (:func:`milopyp.io.atomic.reserve`), else, or where there is no room (a log line), in
    memory."""
    import tempfile

    from milopyp.io.atomic import reserve

    if on_disk:
        size = int(np.prod(shape)) * 4
        with tempfile.TemporaryFile(prefix="milopyp-raised-") as scratch:
            try:
                reserve(scratch, size)
                return np.memmap(scratch, dtype=np.float32, mode="r+", shape=tuple(shape))
            except OSError as error:
                log.warning("the raised tomogram (%.1f GB) is held in memory: no room for it "
                            "in %s (%s); set TMPDIR to a larger disk", size / 1e9,
                            tempfile.gettempdir(), error.strerror)
    return np.empty(shape, dtype=np.float32)


def match_contrast(reference: dict | None, tomogram: np.ndarray, name: str = "tomogram", *,
                   on_disk: bool = False) -> np.ndarray:
    """``tomogram`` [z, y, x] raised to the ``reference`` spectrum
    (:func:`spectrum_reference`, :func:`contrast_gain`, :func:`raise_contrast`; ``on_disk``:
    the copy memory-mapped from a temporary file), or ``tomogram`` itself (no copy) when no
    frequency would gain :data:`MIN_GAIN` or more, or without a reference (a model of an
    earlier version). Logs the largest gain under ``name``."""
    if reference is None:
        return tomogram
    spectrum = power_spectrum(tomogram)
    gain = contrast_gain(reference, spectrum)
    if gain.max() < MIN_GAIN:
        log.info("%s: contrast at or above the labelled tomograms' at every frequency (gain "
                 "at most %.3f): used as it is", name, gain.max())
        return tomogram
    peak = int(np.argmax(gain))
    log.info("%s: contrast raised to the labelled tomograms' (largest gain %.3f at %.3g "
             "cycles per voxel)", name, gain[peak], spectrum["frequency"][peak])
    return raise_contrast(tomogram, contrast_kernel(np.asarray(spectrum["frequency"]), gain),
                          on_disk=on_disk)
