"""Contrast matching (milopyp.localize.spectrum): a tomogram weaker than the labelled ones at
some spatial frequency is raised there, never lowered, and `localize` reads the raised copy."""

from __future__ import annotations

import errno
import logging
import os

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from milopyp.localize import spectrum
from milopyp.localize.spectrum import (
    MAX_GAIN,
    contrast_gain,
    contrast_kernel,
    match_contrast,
    power_spectrum,
    raise_contrast,
    spectrum_reference,
)


def _noise(shape=(48, 96, 96), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _blurred(volume, sigma=1.5):
    """``volume`` with its high frequencies damped (weaker than ``volume`` above ~0.1 cycles
    per voxel, once both are normalised to unit variance as the pipeline does)."""
    return ndi.gaussian_filter(volume, sigma).astype(np.float32)


def _softer(volume):
    """``volume`` a little weaker at high frequencies (at most ~2.6 times in power, once
    normalised): within :data:`MAX_GAIN` of it everywhere."""
    return (0.6 * volume + ndi.gaussian_filter(volume, 1.0)).astype(np.float32)


def test_white_noise_has_a_flat_spectrum():
    s = power_spectrum(_noise())
    power = np.asarray(s["power"])
    assert s["frequency"][0] == 0 and s["frequency"][-1] == pytest.approx(0.5)
    # beyond the window's main lobe (2 bins) the density of white noise is flat, and 1
    assert power[3:].max() / power[3:].min() < 1.2
    assert np.median(power[3:]) == pytest.approx(1.0, abs=0.1)


def test_the_reference_is_the_weakest_labelled_tomogram_at_each_frequency():
    sharp, soft = _noise(seed=1), _blurred(_noise(seed=2))
    ref = spectrum_reference([sharp, soft])
    own = [power_spectrum(t)["power"] for t in (sharp, soft)]
    assert np.allclose(ref["power"], np.minimum(*own))
    # neither labelled tomogram is raised to it
    for t in (sharp, soft):
        assert match_contrast(ref, t) is t


def test_gain_raises_never_lowers_and_is_bounded():
    freq = np.linspace(0, 0.5, 9)
    reference = {"frequency": freq.tolist(), "power": [1.0] * 9}
    weak = {"frequency": freq.tolist(), "power": [0.5, 0.5, 4.0, 1.0, 0.81, 0.01, 1e-9, 2.0, 0.25]}
    gain = contrast_gain(reference, weak)
    assert gain[0] == 1.0  # the mean is left alone
    assert gain[1] == pytest.approx(np.sqrt(2.0))
    assert gain[2] == 1.0 and gain[3] == 1.0 and gain[7] == 1.0  # stronger: not lowered
    assert gain[4] == pytest.approx(1 / 0.9)
    assert gain[5] == MAX_GAIN and gain[6] == MAX_GAIN  # nothing but rounding there
    assert gain[8] == pytest.approx(2.0)
    # frequencies beyond the reference's (a finer tomogram) are left alone
    short = {"frequency": freq[:5].tolist(), "power": [1.0] * 5}
    assert np.all(contrast_gain(short, weak)[5:] == 1.0)


def test_kernel_response_is_the_gain():
    freq = np.linspace(0, 0.5, 33)
    gain = 1.0 + 0.5 * np.exp(-((freq - 0.2) / 0.08) ** 2)
    kernel = contrast_kernel(freq, gain, half_width_vox=8)
    assert kernel.shape == (17, 17, 17)
    response = np.real(np.fft.fftn(np.fft.ifftshift(kernel)))
    k = np.sqrt(sum(f**2 for f in np.meshgrid(*[np.fft.fftfreq(17)] * 3, indexing="ij")))
    assert np.allclose(response, np.interp(k, freq, gain), atol=1e-5)


def test_raising_slab_by_slab_is_one_convolution_of_the_whole(monkeypatch, tmp_path,
                                                              caplog):
    volume = _noise((20, 40, 36), seed=3)
    freq = np.linspace(0, 0.5, 17)
    kernel = contrast_kernel(freq, 1.0 + freq, half_width_vox=4)
    whole = raise_contrast(volume, kernel)
    monkeypatch.setattr(spectrum, "SLAB_SLICES", 3)
    assert np.allclose(raise_contrast(volume, kernel), whole, atol=1e-5)
    # a memory-mapped tomogram gives the same
    path = tmp_path / "v.npy"
    np.save(path, volume)
    assert np.allclose(raise_contrast(np.load(path, mmap_mode="r"), kernel), whole, atol=1e-5)
    # on disk (a memory-mapped temporary file) the same values
    mapped = raise_contrast(volume, kernel, on_disk=True)
    assert isinstance(mapped, np.memmap)
    assert np.array_equal(mapped, raise_contrast(volume, kernel))

    # a temporary disk without room: a log line, and the copy in memory
    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with caplog.at_level(logging.WARNING, logger="milopyp"):
        held = raise_contrast(volume, kernel, on_disk=True)
    assert not isinstance(held, np.memmap) and np.array_equal(held, mapped)
    assert "no room for it in" in caplog.text and "set TMPDIR" in caplog.text
    # without posix_fallocate (macOS): a sparse file, the same values
    monkeypatch.delattr(os, "posix_fallocate")
    sparse = raise_contrast(volume, kernel, on_disk=True)
    assert isinstance(sparse, np.memmap) and np.array_equal(sparse, mapped)
    # the same as one convolution of the whole normalised volume, mirrored at the faces
    from milopyp.localize.normalize import intensity_stats, normalize

    direct = ndi.convolve(normalize(volume, intensity_stats(volume)), kernel, mode="mirror")
    inner = (slice(4, -4),) * 3  # scipy's "mirror" repeats no edge voxel, np.pad's does
    assert np.allclose(whole[inner], direct[inner], atol=1e-4)


def test_a_weaker_tomogram_is_raised_to_the_reference():
    sharp, soft = _noise(seed=4), _softer(_noise(seed=5))
    ref = spectrum_reference([sharp])
    raised = match_contrast(ref, soft, "soft")
    assert raised is not soft and raised.dtype == np.float32 and raised.shape == soft.shape
    own = power_spectrum(soft)
    before, after = np.asarray(own["power"]), np.asarray(power_spectrum(raised)["power"])
    gain = contrast_gain(ref, own)
    reached = (gain > 1.05) & (gain < MAX_GAIN)  # raised, within the bound
    assert reached.sum() >= 5
    # each frequency's power grew by its gain squared, up to the one factor by which the
    # copy, normalised again as the pipeline does, shrinks (seen where nothing was raised)
    kept = (gain == 1.0) & (np.asarray(own["frequency"]) > 0.05)
    assert kept.sum() >= 5
    growth = after / before / gain**2
    assert np.all(np.abs(growth[reached] / np.median(growth[kept]) - 1) < 0.1)
    # a tomogram at or above the reference everywhere is used as it is, not copied
    assert match_contrast(ref, sharp) is sharp
    assert match_contrast(None, soft) is soft  # a model without a spectrum


def test_localize_reads_the_raised_tomogram(tmp_path, monkeypatch, caplog):
    """Through the commands: the model file holds its labelled tomogram's spectrum;
    `localize` on that tomogram reads it as it is, on a softer one a raised copy."""
    from milopyp import cli
    from milopyp.io.mrc import write_tomogram
    from milopyp.localize import infer
    from milopyp.localize.train import load_localizer

    rng = np.random.default_rng(6)
    volume = _noise((24, 64, 64), seed=6)
    xyz = rng.uniform(12, 52, (12, 3)) * [1, 1, 0.3]
    for x, y, z in np.rint(xyz).astype(int):
        volume[z - 2:z + 3, y - 3:y + 4, x - 3:x + 4] -= 2.0
    sharp, soft = tmp_path / "TS_01.mrc", tmp_path / "TS_02.mrc"
    write_tomogram(sharp, volume, 10.0)
    write_tomogram(soft, _softer(volume), 10.0)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"tomogram": "TS_01", "x": xyz[:, 0], "y": xyz[:, 1],
                  "z": xyz[:, 2]}).to_csv(labels, index=False)
    model = tmp_path / "model.pt"
    assert cli.main(["train-localize", "--labels", str(labels), "--epochs", "1",
                     "--iterations-per-epoch", "1", "--crop-xy", "32", "--crop-z", "4",
                     "--bin", "1", "--base-channels", "4", "--particle-diameter", "60",
                     "--device", "cpu", "--tomograms", str(sharp), "-o", str(model)]) == 0
    reference = load_localizer(model).calibration["spectrum"]
    assert reference == spectrum_reference([volume])  # as written, to float rounding
    read = []
    heat_map = infer.predict_heatmap

    def recording(model, tomogram, **kwargs):
        read.append(np.array(tomogram, dtype=np.float32))
        return heat_map(model, tomogram, **kwargs)

    monkeypatch.setattr(infer, "predict_heatmap", recording)
    with caplog.at_level(logging.INFO, logger="milopyp"):
        for mrc in (sharp, soft):
            assert cli.main(["localize", "--model", str(model), "--tomogram", str(mrc), "-o",
                             str(tmp_path / f"{mrc.stem}.csv"), "--device", "cpu"]) == 0
    assert "TS_01: contrast at or above the labelled tomograms'" in caplog.text
    assert "TS_02: contrast raised to the labelled tomograms'" in caplog.text
    assert np.array_equal(read[0], volume)
    soft_volume = _softer(volume)
    assert read[1].shape == soft_volume.shape and not np.allclose(read[1], soft_volume)
    # what the heat map read is the raised copy: nearer the reference than the tomogram is
    assert np.array_equal(read[1], match_contrast(reference, soft_volume))
    before = contrast_gain(reference, power_spectrum(soft_volume))
    after = contrast_gain(reference, power_spectrum(read[1]))
    assert before.max() > 1.3 and after.max() < 1.0 + 0.5 * (before.max() - 1.0)
    # switched off, the softer tomogram is read as it is
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="milopyp"):
        assert cli.main(["localize", "--model", str(model), "--tomogram", str(soft), "-o",
                         str(tmp_path / "off.csv"), "--device", "cpu",
                         "--no-contrast-matching"]) == 0
    assert "TS_02: contrast not matched (switched off)" in caplog.text
    assert np.array_equal(read[2], soft_volume)
