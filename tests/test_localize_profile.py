"""The profile check of globular picks (milopyp.localize.profile): labelled particles'
rotational averages against look-alikes of the same size but another profile."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest

from milopyp.localize.profile import (
    MIN_BACKGROUND_PEAKS,
    MIN_PROFILE_LABELS,
    PROFILE_EXTENT,
    PROFILE_FACE_FRACTION,
    PROFILE_SHELL_WIDTH,
    PROFILE_SOFTNESS,
    at_face,
    profile_bin,
    profile_reference,
    profile_scores,
    profile_weights,
    radial_profiles,
    weigh_peaks,
)

RADIUS_VOX = 4.0


def _noisy_grid(seed: int, shape, spacing: int):
    """A noise tomogram [z, y, x], its voxel indices (zz, yy, xx) and particle centres (x, y,
    z) on a grid ``spacing`` apart in the mid-plane."""
    vol = np.random.default_rng(seed).normal(0.0, 0.35, shape).astype(np.float32)
    centres = [(x, y, shape[0] // 2) for y in range(spacing // 2, shape[1], spacing)
               for x in range(spacing // 2, shape[2], spacing)]
    return vol, np.indices(shape), centres


def _particles(seed: int = 0, shape=(24, 112, 112), spacing: int = 16):
    """A noisy tomogram [z, y, x] with dark particles of radius RADIUS_VOX on a grid in the
    mid-plane: solid balls and, alternating with them, hollow balls of the same size (a
    look-alike of another radial profile). Returns (tomogram, solid xyz, hollow xyz)."""
    vol, (zz, yy, xx), centres = _noisy_grid(seed, shape, spacing)
    solid, hollow = [], []
    for k, (x, y, z) in enumerate(centres):
        r = np.sqrt((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2)
        if k % 3 == 2:  # a third are hollow: a dark shell around a light centre
            vol[(r <= RADIUS_VOX) & (r > 0.6 * RADIUS_VOX)] -= 1.0
            hollow.append((x, y, z))
        else:
            vol[r <= RADIUS_VOX] -= 1.0
            solid.append((x, y, z))
    return vol, np.array(solid, float), np.array(hollow, float)


def test_radial_profile_of_a_dark_ball_and_at_the_faces():
    vol, solid, _ = _particles()
    prof = radial_profiles(vol, solid[:3], RADIUS_VOX)
    # the shells out to PROFILE_EXTENT, less the outermost (the surroundings, subtracted)
    assert prof.shape == (3, round(PROFILE_EXTENT / PROFILE_SHELL_WIDTH) - 1)
    # dark inside the ball, back to the surroundings' level at its edge
    assert np.all(prof[:, 1:4].mean(axis=1) < prof[:, -1] - 1.5)
    # a point on a face (box mirrored there) and one outside the grid's interior
    edge = radial_profiles(vol, np.array([[0.0, 0.0, 0.0], [95.0, 95.0, 23.0]]), RADIUS_VOX)
    assert np.all(np.isfinite(edge))
    # large particles are profiled binned, ~PROFILE_RADIUS_VOX voxels across the radius
    assert profile_bin(RADIUS_VOX) == 1 and profile_bin(25.0) == 2


def test_profile_check_keeps_the_labelled_kind_and_drops_look_alikes():
    vol, solid, hollow = _particles(seed=1)
    labels = solid[:MIN_PROFILE_LABELS]
    reference = profile_reference([vol], [labels], RADIUS_VOX, [np.r_[solid, hollow]])
    assert reference is not None and reference["n_labels"] == MIN_PROFILE_LABELS
    assert reference["n_background"] == len(solid) + len(hollow)
    unseen = solid[MIN_PROFILE_LABELS:]
    peaks = pd.DataFrame({"x": np.r_[unseen[:, 0], hollow[:, 0]],
                          "y": np.r_[unseen[:, 1], hollow[:, 1]],
                          "z": np.r_[unseen[:, 2], hollow[:, 2]],
                          "score": np.r_[np.full(len(unseen), 0.9),
                                         np.full(len(hollow) - 1, 0.8), 0.05]})
    weights = profile_weights(reference, vol, peaks, min_score=0.1)
    assert np.all((weights >= 0) & (weights <= 1))
    assert np.mean(weights[:len(unseen)] > 0.5) >= 0.75
    assert np.all(weights[len(unseen):-1] < 0.5)  # the look-alikes: below the cut
    assert weights[-1] == 1.0  # below min_score: not judged
    # the weight is the logistic of the log-likelihood ratio about the cut
    ratio = profile_scores(reference, vol, peaks[["x", "y", "z"]].to_numpy(float)[:-1])
    expected = 1 / (1 + np.exp(-(ratio - reference["cut"]) / PROFILE_SOFTNESS))
    # (judged among the peaks above min_score, as profile_scores judges these)
    assert np.allclose(weights[:-1], expected)
    # weigh_peaks: the scores times the weights, highest first
    weighed, in_order = weigh_peaks(reference, vol, peaks.assign(heat=peaks["score"]), 0.1)
    assert list(weighed["score"]) == sorted(weighed["score"], reverse=True)
    assert np.allclose(weighed["score"], weighed["heat"] * in_order)
    assert np.allclose(np.sort(in_order), np.sort(weights))


def test_peaks_at_a_face_are_kept_unjudged():
    """A peak within PROFILE_FACE_FRACTION x the radius of a face keeps its score (weight 1),
    even one whose profile (its box mirrored at the face) is unlike the labels'; further in
    it weighs less than half."""
    vol, solid, hollow = _particles(seed=1)
    reference = profile_reference([vol], [solid[:MIN_PROFILE_LABELS]], RADIUS_VOX,
                                  [np.r_[solid, hollow]])
    near = PROFILE_FACE_FRACTION * RADIUS_VOX
    shape = vol.shape
    assert list(at_face(shape, np.array([[near - 0.1, 50, 12], [near + 0.1, 50, 12],
                                         [50, shape[1] - 1 - near + 0.1, 12],
                                         [50, 50, near + 0.1]]), RADIUS_VOX)) == [
        True, False, True, False]
    # near two faces (an edge of the volume) or three (a corner): judged like the others
    assert not at_face(shape, np.array([[near - 0.1, 50, 0.0], [0.0, 0.0, 0.0],
                                        [111.0, 111.0, 23.0]]), RADIUS_VOX).any()
    # hollow look-alikes cut by the face x = 0 (centre 1 voxel in) and one inside
    zz, yy, xx = np.indices(shape)
    centres = np.array([[1.0, 16.0, 12.0], [1.0, 48.0, 12.0], [16.0, 16.0, 12.0]])  # off grid
    for x, y, z in centres:
        r = np.sqrt((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2)
        vol[(r <= RADIUS_VOX) & (r > 0.6 * RADIUS_VOX)] -= 1.0
    # unlike, at the face as well (judged among the grid's peaks)
    others = np.r_[solid, hollow, centres]
    assert np.all(profile_scores(reference, vol, others)[-3:] < reference["cut"])
    peaks = pd.DataFrame({"x": others[:, 0], "y": others[:, 1], "z": others[:, 2],
                          "score": 0.9})
    weights = profile_weights(reference, vol, peaks)
    assert list(weights[-3:-1]) == [1.0, 1.0] and weights[-1] < 0.5


def test_too_few_labels_or_peaks_give_no_reference():
    vol, solid, hollow = _particles()
    peaks = np.r_[solid, hollow]
    assert profile_reference([vol], [solid[:MIN_PROFILE_LABELS - 1]], RADIUS_VOX,
                             [peaks]) is None
    assert profile_reference([vol], [solid[:MIN_PROFILE_LABELS]], RADIUS_VOX,
                             [peaks[:MIN_BACKGROUND_PEAKS - 1]]) is None
    half = MIN_PROFILE_LABELS // 2  # labels of several tomograms count together
    assert profile_reference([vol, vol], [solid[:half], solid[half:2 * half]],
                             RADIUS_VOX, [peaks, np.zeros((0, 3))]) is not None


def test_lumpy_particles_are_told_from_smooth_ones_of_the_same_radial_profile():
    """The target has two halves of unequal density (a large and a small subunit); the
    look-alike is uniform at their mean, so the rotational averages agree and only the
    spread within the shells tells them apart. Labelled against the tomogram's peaks, the
    check keeps the unseen lumpy particles and drops most smooth ones; on radial profiles
    alone (the previous check) the two kinds look the same."""
    vol, (zz, yy, xx), centres = _noisy_grid(3, (24, 160, 160), 16)
    lumpy, smooth = [], []
    for k, (x, y, z) in enumerate(centres):
        inside = (zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= RADIUS_VOX ** 2
        if k % 2:
            vol[inside & (xx > x)] -= 1.8
            vol[inside & (xx < x)] -= 0.2
            vol[inside & (xx == x)] -= 1.0  # the mid-plane at the mean
            lumpy.append((x, y, z))
        else:
            vol[inside] -= 1.0
            smooth.append((x, y, z))
    lumpy, smooth = np.array(lumpy, float), np.array(smooth, float)
    labels = lumpy[:30]
    reference = profile_reference([vol], [labels], RADIUS_VOX, [np.r_[lumpy, smooth]])
    peaks = pd.DataFrame(np.r_[lumpy[30:], smooth], columns=["x", "y", "z"]).assign(score=0.9)
    like = profile_weights(reference, vol, peaks) > 0.5
    assert like[:len(lumpy) - 30].mean() >= 0.8
    assert like[len(lumpy) - 30:].mean() <= 0.2
    # the radial profiles alone: the smooth particles lie among the lumpy ones
    profiles = radial_profiles(vol, np.r_[lumpy, smooth], RADIUS_VOX)
    gap = np.abs(profiles[:len(lumpy)].mean(axis=0) - profiles[len(lumpy):].mean(axis=0))
    assert np.all(gap < profiles[:len(lumpy)].std(axis=0))


@pytest.mark.parametrize("check", [True, False])
def test_train_localize_stores_the_profiles_and_localize_drops_look_alikes(
        tmp_path, monkeypatch, caplog, check):
    """Through the commands: the model file holds the labels' profiles (none with
    --no-profile-check), and `localize` drops the peaks on the hollow look-alikes before
    the automatic threshold. The heat map is replaced by one bump per particle, solid and
    hollow alike, as a network that cannot tell them apart would give."""
    from milopyp import cli
    from milopyp.io.mrc import write_tomogram
    from milopyp.localize import infer
    from milopyp.localize.train import load_localizer

    vol, solid, hollow = _particles(seed=2)
    mrc = tmp_path / "TS_01.mrc"
    write_tomogram(mrc, vol, 10.0)

    def bumps(model, tomogram, **kwargs):
        zz, yy, xx = np.indices(tomogram.shape)
        heat = np.zeros(tomogram.shape, np.float32)
        for x, y, z in np.r_[solid, hollow]:
            heat = np.maximum(heat, np.exp(-((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2)
                                           / 4.0).astype(np.float32))
        return heat

    monkeypatch.setattr(infer, "predict_heatmap", bumps)
    labels = tmp_path / "labels.csv"
    n = MIN_PROFILE_LABELS
    pd.DataFrame({"tomogram": "TS_01", "x": solid[:n, 0], "y": solid[:n, 1],
                  "z": solid[:n, 2]}).to_csv(labels, index=False)
    model = tmp_path / "model.pt"
    assert cli.main(["train-localize", "--labels", str(labels), "--epochs", "1",
                     "--iterations-per-epoch", "1", "--crop-xy", "32", "--crop-z", "4",
                     "--bin", "1", "--base-channels", "4", "--particle-diameter", "80",
                     "--device", "cpu", "--tomograms", str(mrc), "-o", str(model)]
                    + ([] if check else ["--no-profile-check"])) == 0
    calibration = load_localizer(model).calibration
    assert ("profile" in calibration) is check
    picks_csv = tmp_path / "picks.csv"
    with caplog.at_level(logging.INFO, logger="milopyp"):
        assert cli.main(["localize", "--model", str(model), "--tomogram", str(mrc), "-o",
                         str(picks_csv), "--device", "cpu"]) == 0
    picks = pd.read_csv(picks_csv)
    def found(xyz):  # particles with a pick within 2 voxels
        at = picks[["x", "y", "z"]].to_numpy(float)
        return sum(bool(np.any(np.linalg.norm(at - p, axis=1) <= 2)) for p in xyz)

    assert found(solid) >= len(solid) - 2
    if check:
        assert found(hollow) == 0
        unlike = re.search(r"heat-map peaks above [\d.]+ weighed by their radial profile "
                           r"against the labels' \(the model's profile check\): (\d+) unlike",
                           caplog.text)
        assert unlike and len(hollow) <= int(unlike.group(1)) <= len(hollow) + 2
    else:
        assert found(hollow) == len(hollow)
    # a given threshold: the peaks are judged among all those above the split's floor (the
    # population the labels were judged against), then cut at the threshold
    assert cli.main(["localize", "--model", str(model), "--tomogram", str(mrc), "-o",
                     str(picks_csv), "--device", "cpu", "--threshold", "0.5"]) == 0
    picks = pd.read_csv(picks_csv)
    assert (picks["score"] > 0.5).all()
    assert found(solid) >= len(solid) - 2
    assert found(hollow) == (0 if check else len(hollow))
