"""Accuracy on a folder of tomograms with truth that the project did not make.

``benchmarks/accuracy.py --dataset DIR`` (or this module directly). ``DIR`` holds
``tomograms/*.rec|*.mrc`` (read as a user's data: :func:`milopyp.io.mrc.read_tomogram`, any
MRC mode, voxel size from the header), ``truth/<tomogram>.csv`` (``species,x,y,z,...`` in
voxels of the tomogram, 0-based) and optionally ``dataset.json`` with
``species_diameter_a`` (else give ``--diameter``). ``../shared/devset/{crowded,insitu,virus}``
are such folders.

Few-shot protocol (the devset README's): labels from the first tomogram only (``--labels``
of the target, drawn with ``--seed`` and jittered by ±``--jitter`` voxels per axis, as a
person clicks); every score is printed on the held-out tomograms **and** on the labelled
tomogram, beside the floor: a DoG whose score threshold is tuned on the truth of the same
tomograms. ``--labelled NAME`` labels another tomogram instead (the roles turned round: the
constants fitted with TS_01 labelled, judged on a split they were not fitted on); "the
first tomogram" below is then that one, and the saved peaks (``--save-picks``) name it.
Species other than the target (e.g. ``spike_free`` beside ``spike``) are false positives
when picked. Matching radius: half the target's diameter.

Rows (``--rows``):
- ``dog``: the DoG candidates at the default threshold (what the exploration starts from,
  their count and AP) and the tuned-DoG floor;
- ``full`` and the ablations (``--ablations`` JSON: name -> train_localizer arguments): the
  localiser with the library defaults, at the automatic threshold and at the threshold tuned
  on truth;
- ``fiber``: a filament target (``--fiber-species``, ``--fiber-labels`` centre-line points
  of the first tomogram), picks traced into fibres; fibres traced / total on held-out and
  labelled tomograms (a fibre counts when half its centre-line points have a traced point
  within the radius).

    .venv/bin/python benchmarks/accuracy.py --dataset ../shared/devset/crowded
    .venv/bin/python benchmarks/accuracy.py --dataset ../shared/devset/virus --target spike
    .venv/bin/python benchmarks/accuracy.py --dataset ../shared/devset/virus --target spike \
        --labels 82    # every attached spike of TS_01, the devset README's spike protocol

Explicit negatives (what a user marks "not this"): ``--negatives N`` of
``--negatives-species`` drawn from the first tomogram's truth, and/or ``--negatives-csv``, a
coordinate table (e.g. ``benchmarks/devset/virus-virion-interior-negatives.csv``: points
inside TS_01's virions).

Experiments (not the workflow's settings): ``--train-kwargs '{"seed": 1}'`` another
training seed, ``--unlabelled`` the other tomograms join the training as unlabelled data,
``--prior-update-epochs`` / ``--prior-lower-bound`` when and how low the PU class prior is
re-estimated, ``--prior-count-fraction`` the level it counts hidden particles at
(:mod:`milopyp.localize.prior`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from milopyp.cli import openmp_defaults

openmp_defaults()  # as every milopyp command (OMP_WAIT_POLICY=PASSIVE), before torch loads

import numpy as np
import pandas as pd
import torch

from benchmarks._common import machine_line
from milopyp.candidates import find_candidates
from milopyp.defaults import nms_kernel_vox, z_face_margin_vox
from milopyp.evaluate import evaluate, greedy_match_by_score
from milopyp.io.mrc import read_tomogram
from milopyp.localize import find_peaks, find_ridge_points, predict_heatmap, train_localizer
from milopyp.localize.infer import DEFAULT_FLIPS
from milopyp.localize.peaks import clear_of_z_faces

log = logging.getLogger("dataset")

TOMOGRAM_SUFFIXES = (".rec", ".mrc", ".map")


@dataclass
class Tomogram:
    name: str
    data: np.ndarray  # float32 [z, y, x], as the workflow reads it
    truth: pd.DataFrame  # species, x, y, z, ... (voxels)
    voxel_size_a: float


@dataclass
class Dataset:
    folder: Path
    tomograms: list[Tomogram]
    diameters_a: dict[str, float]


def load_dataset(folder: Path, labelled: str | None = None) -> Dataset:
    """Tomograms (sorted by name) with their truth tables and the species diameters;
    ``labelled``: the name of the tomogram to put first (the labelled one), else the first
    by name."""
    paths = sorted(p for p in (folder / "tomograms").iterdir()
                   if p.suffix.lower() in TOMOGRAM_SUFFIXES)
    if not paths:
        raise SystemExit(f"{folder}/tomograms: no .rec/.mrc/.map files")
    tomos = []
    for p in paths:
        data, voxel_a = read_tomogram(p, mmap=False)
        truth_csv = folder / "truth" / f"{p.stem}.csv"
        if not truth_csv.exists():
            raise SystemExit(f"{truth_csv}: missing; every tomogram needs its truth table")
        truth = pd.read_csv(truth_csv)
        truth.insert(0, "tomogram", p.stem)
        tomos.append(Tomogram(p.stem, np.asarray(data, dtype=np.float32), truth, voxel_a))
    if labelled is not None:
        names = [v.name for v in tomos]
        if labelled not in names:
            raise SystemExit(f"--labelled {labelled}: no such tomogram in {folder}/tomograms "
                             f"(there: {', '.join(names)})")
        tomos.insert(0, tomos.pop(names.index(labelled)))
    meta = folder / "dataset.json"
    diameters = {}
    if meta.exists():
        diameters = {k: float(v) for k, v in
                     json.loads(meta.read_text()).get("species_diameter_a", {}).items()}
    return Dataset(folder, tomos, diameters)


def target_truth(tomos: list[Tomogram], species: str) -> pd.DataFrame:
    t = pd.concat([v.truth for v in tomos], ignore_index=True)
    return t[t["species"] == species][["tomogram", "x", "y", "z"]].reset_index(drop=True)


def nearest_species(xyz: np.ndarray, truth: pd.DataFrame, radius: float,
                    beyond: str = "none") -> np.ndarray:
    """Species of the truth particle nearest each point ``xyz`` ((N, 3) x, y, z voxels),
    ``beyond`` where the nearest lies farther than ``radius``: (N,) object array."""
    from scipy.spatial import cKDTree

    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    out = np.full(len(xyz), beyond, dtype=object)
    if len(truth) and len(xyz):
        distance, index = cKDTree(truth[["x", "y", "z"]].to_numpy(np.float64)).query(xyz)
        near = distance <= radius
        out[near] = truth["species"].to_numpy()[index[near]]
    return out


def draw_labels(truth: pd.DataFrame, species: str, n: int, *, jitter_vox: float, seed: int,
                shape_zyx) -> np.ndarray:
    """(≤ n, 3) x, y, z: the first n of a seeded permutation of the species' centres,
    each moved by a uniform jitter in [−jitter, jitter] voxels per axis."""
    xyz = truth.loc[truth["species"] == species, ["x", "y", "z"]].to_numpy(np.float64)
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(xyz))
    shift = rng.uniform(-jitter_vox, jitter_vox, size=xyz.shape)
    out = (xyz + shift)[order]
    return np.clip(out, 0, np.asarray(shape_zyx[::-1], dtype=np.float64) - 1)[:n]


def first_labels(first: Tomogram, args: argparse.Namespace) -> np.ndarray:
    """The labels of the first tomogram ``first``: the rows of ``args.labels_csv`` when
    given, else ``args.labels`` of ``args.target`` drawn from its truth (:func:`draw_labels`,
    ``args.jitter``, ``args.seed``)."""
    if args.labels_csv:
        return table_xyz(args.labels_csv, first.name)
    return draw_labels(first.truth, args.target, args.labels, jitter_vox=args.jitter,
                       seed=args.seed, shape_zyx=first.data.shape)


def table_xyz(path: Path, tomogram: str) -> np.ndarray:
    """(N, 3) x, y, z (voxels) of a coordinate table's rows of ``tomogram`` (all rows when
    the table has no ``tomogram`` column)."""
    table = pd.read_csv(path)
    if not {"x", "y", "z"} <= set(table.columns):
        raise SystemExit(f"{path}: expected columns x, y, z (voxels) and optionally tomogram; "
                         f"got {', '.join(map(str, table.columns))}")
    if "tomogram" in table.columns:
        table = table[table["tomogram"].astype(str) == tomogram]
    return table[["x", "y", "z"]].to_numpy(np.float64)


# ---------------------------------------------------------------------------- scoring


def metrics_at(picks: pd.DataFrame, truth: pd.DataFrame, threshold: float, radius: float,
               names: list[str]) -> dict:
    """precision / recall / F1 of the picks with score > threshold; AP of all picks."""
    ap = float(evaluate(picks, truth, radius_vox=radius, tomograms=names).iloc[-1]["ap"])
    kept = picks[picks["score"] > threshold]
    m = evaluate(kept, truth, radius_vox=radius, tomograms=names).iloc[-1]
    return {"threshold": float(threshold), "precision": float(m["precision"]),
            "recall": float(m["recall"]), "f1": float(m["f1"]), "ap": ap,
            "n_picks": int(m["n_picks"]), "n_true": len(truth)}


def best_threshold(picks: pd.DataFrame, truth: pd.DataFrame, radius: float) -> float:
    """Score threshold with the best pooled F1 (greedy matching in score order), chosen on
    the truth (an oracle): picks above it are kept."""
    scores, flags = [], []
    for name, p in picks.groupby("tomogram"):
        t = truth[truth["tomogram"] == name][["x", "y", "z"]].to_numpy(np.float64)
        s = p["score"].to_numpy(np.float64)
        scores.append(s)
        flags.append(greedy_match_by_score(p[["x", "y", "z"]].to_numpy(np.float64), s, t,
                                           radius))
    if not scores:
        return float("inf")
    s, f = np.concatenate(scores), np.concatenate(flags)
    order = np.argsort(-s, kind="stable")
    s, tp = s[order], np.cumsum(f[order])
    f1 = 2 * tp / (np.arange(1, len(s) + 1) + len(truth))
    last = np.r_[s[1:] != s[:-1], True]
    best = int(np.argmax(np.where(last, f1, -1.0)))
    nxt = s[best + 1] if best + 1 < len(s) else s[best] - 1.0
    return float(0.5 * (s[best] + nxt))


def split_scores(picks: pd.DataFrame, truth: pd.DataFrame, threshold: float | None,
                 radius: float, labelled: str, held_out: list[str]) -> dict:
    """Metrics on the held-out tomograms and on the labelled one, at ``threshold`` (None:
    the best threshold on each part's truth, an oracle)."""
    out = {}
    for part, names in (("held", held_out), ("lab", [labelled])):
        p = picks[picks["tomogram"].isin(names)]
        t = truth[truth["tomogram"].isin(names)]
        thr = best_threshold(p, t, radius) if threshold is None else threshold
        out[part] = metrics_at(p, t, thr, radius, names)
    return out


def tomogram_thresholds(calibration: dict, peaks: pd.DataFrame, names: list[str],
                        method: str = "mixture", *, depths: dict[str, int],
                        radius_vox: float) -> tuple[pd.DataFrame, dict[str, float]]:
    """As ``milopyp localize`` picks: each tomogram's own automatic threshold
    (:func:`milopyp.localize.calibrate.tomogram_threshold`) of its ``peaks`` (a table with
    tomogram and score, the scores weighed by the profile check where the model has one:
    :func:`weigh_peaks`), for every tomogram in ``names``, then the picks at its z faces
    dropped (:func:`without_z_face_picks`; ``depths``: slices per tomogram, ``radius_vox``: the
    particle radius). Returns the peaks kept (in the table's order) and the thresholds by
    name."""
    from milopyp.localize.calibrate import tomogram_threshold

    thresholds = {n: tomogram_threshold(calibration, peaks.loc[peaks["tomogram"] == n, "score"]
                                        .to_numpy(np.float64), method)[0] for n in names}
    # as numbers: a heat map with no peak at all (a collapsed training) gives an empty table
    keep = (peaks["score"].to_numpy(np.float64)
            > peaks["tomogram"].map(thresholds).to_numpy(np.float64))
    return without_z_face_picks(peaks[keep], depths, radius_vox), thresholds


def without_z_face_picks(peaks: pd.DataFrame, depths: dict[str, int],
                         radius_vox: float) -> pd.DataFrame:
    """``peaks`` (a table with tomogram and z) without those ``milopyp localize`` drops at
    a tomogram's first or last slice (:func:`milopyp.localize.peaks.clear_of_z_faces` at
    :func:`milopyp.defaults.z_face_margin_vox` of ``radius_vox``); ``depths``: slices per
    tomogram."""
    depth = peaks["tomogram"].map(depths).to_numpy(np.float64)
    return peaks[clear_of_z_faces(peaks["z"].to_numpy(), depth, z_face_margin_vox(radius_vox))]


def weigh_peaks(reference: dict | None, volume: np.ndarray, peaks: pd.DataFrame,
                min_score: float) -> pd.DataFrame:
    """``peaks`` scored as ``milopyp localize`` scores them
    (:func:`milopyp.localize.profile.weigh_peaks`: the heat-map score times the profile
    check's weight), highest first, with the heat map's own score (``heat_score``) and the
    weight (``profile_weight``); weight 1 without a ``reference``."""
    from milopyp.localize.profile import weigh_peaks as weigh

    heat = peaks.assign(heat_score=peaks["score"])
    if reference is None:
        return heat.assign(profile_weight=1.0)
    weighed, weights = weigh(reference, volume, heat, min_score)
    return weighed.assign(profile_weight=weights)


@dataclass
class SavedPeaks:
    """A ``--save-picks`` CSV (every heat-map peak, with the median label peak) beside its
    dataset: what the benchmarks that re-threshold saved peaks share."""

    ds: Dataset
    names: list[str]  # tomograms by name; the first is the labelled one
    depths: dict[str, int]  # slices per tomogram, by name
    truth: pd.DataFrame  # the target's centres (tomogram, x, y, z)
    radius: float  # match radius, voxels: half the target's diameter
    peaks: pd.DataFrame
    median: float  # the median heat-map peak at the labels
    spectrum: dict | None  # the run's model's labelled spectrum (None: an earlier version)

    @cached_property
    def volumes(self) -> dict[str, np.ndarray]:
        """The tomograms by name as the run's model read them: raised to its labelled
        tomogram's spectrum where weaker (:func:`milopyp.localize.spectrum.match_contrast`;
        as they are without a spectrum). Computed on first use."""
        from milopyp.localize.spectrum import match_contrast

        return {v.name: match_contrast(self.spectrum, v.data, v.name)
                for v in self.ds.tomograms}


def depths(ds: Dataset) -> dict[str, int]:
    """Slices (z) of each of ``ds``'s tomograms, by name."""
    return {v.name: int(v.data.shape[0]) for v in ds.tomograms}


def load_saved_peaks(folder: Path, picks_csv: Path, target: str) -> SavedPeaks:
    """The dataset of ``folder`` and the saved peaks ``picks_csv`` of a run on it, the run's
    labelled tomogram first (its ``labelled`` column; a table without one lists the labelled
    tomogram's peaks first), and the spectrum of the run's model (the ``.pt`` beside the
    table) for :attr:`SavedPeaks.volumes`."""
    from milopyp.io.localizer import read_localizer

    peaks = pd.read_csv(picks_csv)
    named_by = "labelled" if "labelled" in peaks else "tomogram"
    ds = load_dataset(folder, str(peaks[named_by].iloc[0]))
    model = picks_csv.with_suffix(".pt")
    spectrum = (read_localizer(model)["calibration"].get("spectrum") if model.exists()
                else None)
    return SavedPeaks(ds=ds, names=[v.name for v in ds.tomograms], depths=depths(ds),
                      truth=target_truth(ds.tomograms, target),
                      radius=ds.diameters_a[target] / ds.tomograms[0].voxel_size_a / 2,
                      peaks=peaks, median=float(peaks["label_peak_median"].iloc[0]),
                      spectrum=spectrum)


def line(tag: str, m: dict) -> str:
    h, lab = m["held"], m["lab"]
    return (f"  {tag:<44} held-out P {h['precision']:.3f} R {h['recall']:.3f} "
            f"F1 {h['f1']:.3f} AP {h['ap']:.3f} ({h['n_picks']} picks, {h['n_true']} true)"
            f" | labelled F1 {lab['f1']:.3f} AP {lab['ap']:.3f}  thr "
            + (", ".join(f"{t:.3g}" for t in m["thresholds"].values()) if "thresholds" in m
               else f"{h['threshold']:.3g}"))


# ---------------------------------------------------------------------------- DoG


def dog_rows(ds: Dataset, species: str, diameter: float, radius: float,
             threads: int) -> dict[str, dict]:
    """The workflow's candidates (preprocess with inversion, DoG at the default threshold)
    and the floor: every DoG peak, threshold tuned on each part's truth."""
    from milopyp.preprocess import preprocess

    default, everything = [], []
    for v in ds.tomograms:
        pre = preprocess(v.data, invert=True, threads=threads)
        c = find_candidates(pre, particle_diameter_vox=diameter, threads=threads)
        c.insert(0, "tomogram", v.name)
        default.append(c)
        a = find_candidates(pre, particle_diameter_vox=diameter, threshold_std=-1e9,
                            threads=threads)
        a.insert(0, "tomogram", v.name)
        everything.append(a)
    truth = target_truth(ds.tomograms, species)
    names = [v.name for v in ds.tomograms]
    lab, held = names[0], names[1:]
    cands = pd.concat(default, ignore_index=True)
    allp = pd.concat(everything, ignore_index=True)
    return {"candidates": split_scores(cands, truth, -np.inf, radius, lab, held),
            "floor": split_scores(allp, truth, None, radius, lab, held)}


# ---------------------------------------------------------------------------- localiser




def localizer_rows(ds: Dataset, species: str, labels: np.ndarray, radius: float,
                   kwargs: dict, threads: int,
                   negatives: np.ndarray | None = None,
                   save_picks: Path | None = None, device: str = "cpu",
                   flips: int = DEFAULT_FLIPS,
                   model_path: list[Path] | None = None,
                   self_train: float = 0.0, unlabelled: bool = False,
                   profile_check: bool = True) -> dict[str, dict]:
    """Train on the first tomogram's labels (and ``negatives``, if any), pick everywhere;
    metrics at the automatic threshold (:func:`milopyp.localize.calibrate.calibrate_threshold`,
    as ``milopyp train-localize`` stores it) and at the threshold tuned on truth, with
    training time. ``profile_check``: picks checked against the labels' radial profiles
    (:mod:`milopyp.localize.profile`), as the workflow's default.

    ``self_train`` > 0 (an experiment, not the workflow's method): a second model is trained
    on every tomogram, with the first tomogram's labels plus, in each other tomogram, the
    top ``self_train`` fraction (by score) of the first model's picks above that tomogram's
    automatic threshold as labels; rows ``auto``/``tuned`` are then the second model's,
    ``round1 auto``/``round1 tuned`` the first's, ``pseudo`` the pseudo-labels' precision."""
    first = ds.tomograms[0]
    t0 = time.perf_counter()
    if model_path is not None:  # model(s) this benchmark trained and saved (--save-picks)
        from milopyp.localize.train import load_localizer

        models = [load_localizer(path, device=device) for path in model_path]
        for m in models:
            m.history = []
        model = models[0] if len(models) == 1 else models  # a list: heat maps averaged
    else:
        others = ds.tomograms[1:] if unlabelled else []
        empty = [np.zeros((0, 3))] * len(others)
        model = train_localizer([first.data] + [v.data for v in others], [labels] + empty,
                                particle_radius_vox=radius, device=device,
                                negatives=None if negatives is None else [negatives] + empty,
                                **kwargs)
    train_s = time.perf_counter() - t0
    out, picks, thresholds = _score_model(ds, species, model, labels, radius, device, flips,
                                          save_picks, train_s, profile_check)
    if self_train <= 0:
        return out
    truth = target_truth(ds.tomograms, species)
    pseudo, pseudo_tables = [labels], []
    for v, p in zip(ds.tomograms[1:], picks[1:]):
        kept = p[p["score"] > thresholds[v.name]].sort_values("score", ascending=False)
        kept = kept.head(round(self_train * len(kept)))
        pseudo.append(kept[["x", "y", "z"]].to_numpy(np.float64))
        pseudo_tables.append(kept)
    table = pd.concat(pseudo_tables, ignore_index=True)
    names = [v.name for v in ds.tomograms[1:]]
    m = evaluate(table, truth[truth["tomogram"].isin(names)], radius_vox=radius,
                 tomograms=names).iloc[-1]
    log.info("self-training: %d pseudo-labels in %s, precision %.3f", len(table), names,
             m["precision"])
    t0 = time.perf_counter()
    model2 = train_localizer([v.data for v in ds.tomograms], pseudo,
                             particle_radius_vox=radius, device=device,
                             negatives=None if negatives is None else
                             [negatives] + [np.zeros((0, 3))] * (len(ds.tomograms) - 1),
                             **kwargs)
    train2_s = time.perf_counter() - t0
    out2, _, _ = _score_model(ds, species, model2, labels, radius, device, flips,
                              None if save_picks is None else
                              save_picks.with_name(save_picks.stem + "_self_trained.csv"),
                              train_s + train2_s, profile_check)
    return {**out2, "round1 auto": out["auto"], "round1 tuned": out["tuned"],
            "pseudo": {"n": len(table), "precision": float(m["precision"]),
                       "fraction": self_train}}


def save_model(path: Path, model, calibration: dict, settings: dict | None = None,
               voxel_size_a: float | None = None) -> None:
    """A trained model with its ``calibration`` and the voxel size it was trained at as
    ``milopyp train-localize`` writes one (:func:`milopyp.localize.load_localizer` reads it;
    ``--model`` / ``--fiber-model``; ``milopyp localize`` and ``benchmarks/voxel_size.py``
    take it)."""
    from milopyp.io.localizer import write_localizer

    write_localizer(path, {"epoch": len(model.history), "network": model.config.to_dict(),
                           "settings": settings or {}, "model": model.state_dict(),
                           "calibration": calibration, "voxel_size_a": voxel_size_a})


def _score_model(ds: Dataset, species: str, model, labels: np.ndarray, radius: float,
                 device: str, flips: int, save_picks: Path | None, train_s: float,
                 profile_check: bool = True):
    """Picks of ``model`` in every tomogram, scored at the automatic and the tuned threshold;
    also returns the picks (all peaks, per tomogram, scored as ``milopyp localize`` scores
    them: :func:`weigh_peaks`) and the automatic thresholds. The saved peaks are those, with
    the heat map's own score and the profile weight."""
    from milopyp.localize.calibrate import calibrate_threshold, profile_floor
    from milopyp.localize.spectrum import match_contrast

    first = ds.tomograms[0]
    calibration = calibrate_threshold(model, [first.data], [labels], radius, device, flips=flips,
                                      profile_check=profile_check)
    # as `milopyp localize` reads them: raised where weaker than the labelled tomogram
    volumes = [match_contrast(calibration["spectrum"], v.data, v.name) for v in ds.tomograms]
    picks = []
    t1 = time.perf_counter()
    for v, volume in zip(ds.tomograms, volumes):
        heat = predict_heatmap(model, volume, device=device, flips=flips)
        picks.append(find_peaks(heat, kernel_vox=nms_kernel_vox(radius), threshold=0.0,
                                tomogram=v.name))
    infer_s = (time.perf_counter() - t1) / len(ds.tomograms)
    auto = calibration["threshold"]
    if "separated" in calibration and "label_heat_median" in calibration:
        log.info("labels' median heat-map peak %.4g, at random places %.4g (%.1f x; "
                 "learned: %s)", calibration["label_heat_median"],
                 calibration["background_peak_median"], calibration["label_heat_median"]
                 / max(calibration["background_peak_median"], 1e-12), calibration["separated"])
    reference, floor = calibration.get("profile"), profile_floor(calibration)
    picks = [weigh_peaks(reference, volume, p, floor) for volume, p in zip(volumes, picks)]
    log.info("profile check: %s peaks weigh below 0.5",
             {v.name: int((p["profile_weight"] < 0.5).sum())
              for v, p in zip(ds.tomograms, picks)})
    picks_df = pd.concat(picks, ignore_index=True)
    truth = target_truth(ds.tomograms, species)
    names = [v.name for v in ds.tomograms]
    if save_picks is not None:
        save_picks.parent.mkdir(parents=True, exist_ok=True)
        picks_df.assign(label_peak_median=calibration["label_peak_median"], auto=auto,
                        labelled=first.name).to_csv(save_picks, index=False)
        if not isinstance(model, list):  # an ensemble has no one model file
            save_model(save_picks.with_suffix(".pt"), model, calibration,
                       {"shape": "globular",
                        "particle_radius_vox": radius / model.config.bin_factor},
                       voxel_size_a=ds.tomograms[0].voxel_size_a)
    # as `milopyp localize` does: each tomogram's own split of its peaks, then the picks at
    # its z faces dropped (the tuned threshold among the peaks it can return)
    slices = depths(ds)
    kept, thresholds = tomogram_thresholds(calibration, picks_df, names, depths=slices,
                                           radius_vox=radius)
    log.info("automatic thresholds per tomogram: %s (calibration %.3g)",
             {k: round(v, 3) for k, v in thresholds.items()}, auto)
    out = {"auto": split_scores(kept.reset_index(drop=True), truth, -np.inf, radius,
                                names[0], names[1:]),
           "tuned": split_scores(without_z_face_picks(picks_df, slices, radius), truth, None,
                                 radius, names[0], names[1:])}
    out["auto"]["thresholds"] = thresholds
    for m in out.values():
        m["train_s"], m["infer_s"] = train_s, infer_s
    return out, picks, thresholds


# ---------------------------------------------------------------------------- fibres


def fiber_labels(truth: pd.DataFrame, species: str, n: int, *,
                 every_filament: bool = False) -> np.ndarray:
    """(≤ n, 3): evenly spaced centre-line points of the first tomogram's filaments, taken
    filament by filament (longest first) until n are drawn, as a person traces them;
    ``every_filament``: a share of the n from the start of each filament instead (n split
    evenly, longest first), as a person who traces a part of every filament."""
    t = truth[truth["species"] == species]
    filaments = sorted(t.groupby("filament_id"), key=lambda g: -len(g[1]))
    out, left = [], n
    for k, (_, f) in enumerate(filaments):
        if left <= 0:
            break
        xyz = f[["x", "y", "z"]].to_numpy(np.float64)
        share = -(-left // (len(filaments) - k)) if every_filament else left
        take = xyz[:share]
        out.append(take)
        left -= len(take)
    return np.concatenate(out) if out else np.zeros((0, 3))


def fiber_rows(ds: Dataset, species: str, n_labels: int, radius: float, kwargs: dict,
               link_vox: float, device: str = "cpu",
               save_heatmaps: Path | None = None,
               every_filament: bool = False, model_path: Path | None = None,
               nms_kernel: int | None = None) -> dict[str, dict]:
    """Train a ``shape: fiber`` model on centre-line points of the first tomogram, pick
    (automatic threshold, ridge points as ``milopyp localize``), trace, score fibres.
    ``save_heatmaps``: a folder for each tomogram's heat map (``fiber_{name}.npy``), the
    labels (``fiber_labels.npy``) and the model (``fiber_model.pt``), to study picking rules
    offline. ``model_path``: score this saved ``fiber_model.pt`` instead of training;
    ``nms_kernel``: pick box maxima of this side instead of ridge points (as ``milopyp
    localize --nms-kernel-vox``)."""
    from milopyp.evaluate import evaluate_fibers
    from milopyp.fibers import trace_table
    from milopyp.localize.calibrate import calibrate_threshold, guard_fiber_threshold

    first = ds.tomograms[0]
    labels = fiber_labels(first.truth, species, n_labels, every_filament=every_filament)
    t0 = time.perf_counter()
    if model_path is not None:
        from milopyp.localize import load_localizer

        model = load_localizer(model_path, device="cpu")
    else:
        model = train_localizer([first.data], [labels], particle_radius_vox=radius,
                                shape="fiber", device=device, **kwargs)
    train_s = time.perf_counter() - t0
    cal = calibrate_threshold(model, [first.data], [labels], radius, device, shape="fiber")
    picks = []
    if save_heatmaps is not None:
        save_heatmaps.mkdir(parents=True, exist_ok=True)
        np.save(save_heatmaps / "fiber_labels.npy", labels)
        save_model(save_heatmaps / "fiber_model.pt", model, cal, {"shape": "fiber"},
                   voxel_size_a=first.voxel_size_a)
    for v in ds.tomograms:
        heat = predict_heatmap(model, v.data, device=device)
        if save_heatmaps is not None:
            np.save(save_heatmaps / f"fiber_{v.name}.npy", heat)
        threshold, _ = guard_fiber_threshold(heat, cal["threshold"], cal)  # as localize
        picks.append(find_ridge_points(heat, threshold=threshold, tomogram=v.name)
                     if nms_kernel is None else
                     find_peaks(heat, kernel_vox=nms_kernel, threshold=threshold,
                                tomogram=v.name))
    picks_df = pd.concat(picks, ignore_index=True)
    t1 = time.perf_counter()
    traced = trace_table(picks_df, link_distance_vox=link_vox)
    trace_s = time.perf_counter() - t1
    truth = pd.concat([v.truth for v in ds.tomograms], ignore_index=True)
    truth = truth[truth["species"] == species][["tomogram", "x", "y", "z", "filament_id"]]
    truth = truth.rename(columns={"filament_id": "fiber_id"})
    out = {}
    names = [v.name for v in ds.tomograms]
    for part, sel in (("held", names[1:]), ("lab", names[:1])):
        m = evaluate_fibers(traced[traced["tomogram"].isin(sel)],
                            truth[truth["tomogram"].isin(sel)], radius_vox=radius,
                            tomograms=sel).iloc[-1].to_dict()
        m["n_picks"] = int(picks_df["tomogram"].isin(sel).sum())
        out[part] = m
    out.update(train_s=train_s, trace_s=trace_s, threshold=float(cal["threshold"]),
               n_labels=len(labels))
    return out


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, required=True, help="folder (see module doc)")
    p.add_argument("--target", default="ribosome", help="species to pick (ribosome)")
    p.add_argument("--diameter", type=float, default=None,
                   help="target diameter, Å (default: dataset.json)")
    p.add_argument("--labels", type=int, default=55, help="labels of the first tomogram (55)")
    p.add_argument("--labelled", default=None, metavar="NAME",
                   help="the tomogram to label (e.g. TS_02; the others are held out); "
                        "default: the first by name, the devset protocol's TS_01")
    p.add_argument("--labels-csv", type=Path, default=None, metavar="CSV",
                   help="experiment: train on these labels of the first tomogram (x, y, z in "
                        "voxels, e.g. a workflow's targets/<target>/labels/<tomogram>.csv) "
                        "instead of --labels drawn from its truth")
    p.add_argument("--save-picks", type=Path, default=None,
                   help="folder: write every localiser row's peaks (all scores) as CSV, and "
                        "its model (.pt), and the fibre row's heat maps (.npy)")
    p.add_argument("--negatives", type=int, default=0,
                   help="explicit negatives: this many of --negatives-species from the first "
                        "tomogram (0)")
    p.add_argument("--negatives-csv", type=Path, default=None, metavar="CSV",
                   help="explicit negatives of the first tomogram from this coordinate table "
                        "(x, y, z in voxels; rows of other tomograms are skipped), beside any "
                        "--negatives drawn from the truth: points a user marks 'not this'")
    p.add_argument("--negatives-species", default="spike_free",
                   help="species the negatives are drawn from (spike_free)")
    p.add_argument("--jitter", type=float, default=1.0, help="label jitter, voxels (1)")
    p.add_argument("--seed", type=int, default=0, help="label seed (0)")
    p.add_argument("--rows", default="dog,full", help="comma list of dog,full,fiber")
    p.add_argument("--train-kwargs", type=json.loads, default={},
                   help="JSON dict of train_localizer arguments for every localiser row")
    p.add_argument("--ablations", type=json.loads, default={},
                   help='JSON {"name": {train_localizer arguments}, ...}: extra rows; '
                        '"negatives": N in a row = N explicit negatives of --negatives-species')
    p.add_argument("--fiber-species", default="microtubule",
                   help="filament species of the fiber row (microtubule)")
    p.add_argument("--fiber-labels", type=int, default=100,
                   help="centre-line points of the first tomogram for the fiber row (100)")
    p.add_argument("--fiber-labels-every-filament", action="store_true",
                   help="the fiber row's labels: a share from every filament of the first "
                        "tomogram instead of the longest filaments first")
    p.add_argument("--fiber-model", type=Path, default=None,
                   help="score this saved fibre model (DIR/fiber_model.pt of an earlier "
                        "--save-picks run with the same fibre labels) instead of training")
    p.add_argument("--fiber-nms-kernel", type=int, default=None, metavar="K",
                   help="the fiber row picks box maxima of side K (odd) instead of the heat "
                        "map's ridge points (as localize --nms-kernel-vox)")
    p.add_argument("--threads", type=int, default=2, help="torch / DoG threads (2)")
    p.add_argument("--model", type=lambda t: [Path(x) for x in t.split(",") if x],
                   default=None,
                   help="score this saved model (DIR/full_model.pt of an earlier --save-picks "
                        "run on the same dataset and labels) instead of training the full row; "
                        "a comma list: the mean of their heat maps (an ensemble), calibrated "
                        "and picked as one model")
    p.add_argument("--flips", type=int, choices=[1, 2, 4], default=DEFAULT_FLIPS,
                   help=f"test-time flips of the heat maps ({DEFAULT_FLIPS}, as the workflow)")
    p.add_argument("--self-train", type=float, default=0.0, metavar="FRACTION",
                   help="experiment: retrain the full row on every tomogram with the top "
                        "FRACTION of its picks above the automatic threshold as labels (0: off)")
    p.add_argument("--unlabelled", action="store_true",
                   help="train with the other tomograms as unlabelled data (transductive)")
    p.add_argument("--prior-update-epochs", default=None, metavar="E,E,...",
                   help="epochs after which the PU prior is re-estimated (library default)")
    p.add_argument("--prior-lower-bound", type=float, default=None, metavar="F",
                   help="lowest re-estimated hidden count, in labels (library default)")
    p.add_argument("--prior-count-fraction", type=float, default=None, metavar="F",
                   help="the prior counts hidden particles above F x the labels' median "
                        "peak (library default)")
    p.add_argument("--no-profile-check", action="store_true",
                   help="keep the picks whose radial profile is unlike the labels' "
                        "(milopyp.localize.profile; the workflow checks them by default)")
    p.add_argument("--device", default="cpu",
                   help="torch device of the localiser rows: cpu, cuda or auto (cpu)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    p.add_argument("--write-labels", type=Path, default=None, metavar="CSV",
                   help="only write the drawn labels as a coordinate table (tomogram,x,y,z), "
                        "a selection for the workflow (benchmarks/devset/*-table.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="log training progress")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    if args.prior_update_epochs:  # experiments on the PU prior's re-estimation
        import milopyp.localize.train as train_module

        train_module.PRIOR_UPDATE_EPOCHS = tuple(int(e) for e in
                                                 args.prior_update_epochs.split(","))
    import milopyp.localize.prior as prior_module

    if args.prior_lower_bound is not None:
        prior_module.PRIOR_UPDATE_BOUNDS = (args.prior_lower_bound,
                                            prior_module.PRIOR_UPDATE_BOUNDS[1])
    if args.prior_count_fraction is not None:
        prior_module.PRIOR_COUNT_FRACTION = args.prior_count_fraction
    t_start = time.perf_counter()
    ds = load_dataset(args.dataset, args.labelled)
    first = ds.tomograms[0]
    voxel_a = first.voxel_size_a
    diameter_a = args.diameter or ds.diameters_a.get(args.target)
    if diameter_a is None:
        raise SystemExit(f"--diameter: {args.dataset}/dataset.json gives no diameter for "
                         f"{args.target!r}")
    diameter, radius = diameter_a / voxel_a, diameter_a / voxel_a / 2
    labels = first_labels(first, args)
    if args.write_labels:
        args.write_labels.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"tomogram": first.name, "x": labels[:, 0], "y": labels[:, 1],
                      "z": labels[:, 2]}).to_csv(args.write_labels, index=False)
        print(f"wrote {len(labels)} labels of {first.name} to {args.write_labels}")
        return
    negatives, negatives_from = None, []
    if args.negatives:
        negatives_from.append(f"{args.negatives} {args.negatives_species}")
        negatives = draw_labels(first.truth, args.negatives_species, args.negatives,
                                jitter_vox=args.jitter, seed=args.seed,
                                shape_zyx=first.data.shape)
    if args.negatives_csv:
        marked = table_xyz(args.negatives_csv, first.name)
        negatives_from.append(f"{len(marked)} from {args.negatives_csv}")
        negatives = marked if negatives is None else np.concatenate([negatives, marked])
    n_true = target_truth(ds.tomograms, args.target).groupby("tomogram").size().to_dict()
    print(f"machine: {machine_line()}; torch {torch.__version__}, {args.threads} thread(s), "
          f"device {args.device}")
    print(f"dataset {args.dataset}: {len(ds.tomograms)} tomograms "
          f"{'x'.join(map(str, first.data.shape))} at {voxel_a:g} Å; target {args.target} "
          f"({n_true}), diameter {diameter:.1f} voxels, match radius {radius:.1f}; "
          f"{len(labels)} labels from {first.name} (±{args.jitter:g} voxel)"
          + (f", {len(negatives)} negatives ({' and '.join(negatives_from)})"
             if negatives is not None else ""), flush=True)
    rows_wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    results: dict[str, dict] = {}
    if "dog" in rows_wanted:
        results.update(dog_rows(ds, args.target, diameter, radius, args.threads))
        print(line("DoG candidates (default threshold)", results["candidates"]))
        print(line("DoG, threshold tuned on truth (floor)", results["floor"]), flush=True)
    settings = {}
    if "full" in rows_wanted:
        settings["full model"] = {}
    settings.update(args.ablations)
    for name, extra in settings.items():
        kw = {**args.train_kwargs, **extra}
        row_negatives = negatives
        if "negatives" in kw:  # an ablation row with its own number of explicit negatives
            row_negatives = draw_labels(first.truth, args.negatives_species,
                                        int(kw.pop("negatives")), jitter_vox=args.jitter,
                                        seed=args.seed, shape_zyx=first.data.shape)
        r = localizer_rows(ds, args.target, labels, radius, kw, args.threads, row_negatives,
                           save_picks=args.save_picks / f"{name.replace(' ', '_')}.csv"
                           if args.save_picks else None, device=args.device,
                           flips=args.flips,
                           model_path=args.model if name == "full model" else None,
                           self_train=args.self_train if name == "full model" else 0.0,
                           unlabelled=args.unlabelled,
                           profile_check=not args.no_profile_check)
        if "pseudo" in r:
            print(f"  self-training: {r['pseudo']['n']} pseudo-labels (top "
                  f"{r['pseudo']['fraction']:g} above the automatic threshold), precision "
                  f"{r['pseudo']['precision']:.3f}")
            print(line(f"{name} before self-training, automatic", r["round1 auto"]))
            print(line(f"{name} before self-training, tuned", r["round1 tuned"]))
            results[f"{name} round 1, auto"] = r["round1 auto"]
            results[f"{name} round 1, tuned"] = r["round1 tuned"]
        results[f"{name}, auto"] = r["auto"]
        results[f"{name}, tuned"] = r["tuned"]
        print(line(f"{name}, automatic threshold", r["auto"]))
        print(line(f"{name}, threshold tuned on truth", r["tuned"])
              + (f"  (model {','.join(map(str, args.model))}" if args.model
                 and name == "full model" else
                 f"  (train {r['auto']['train_s']:.0f} s")
              + f", infer {r['auto']['infer_s']:.1f} s, {args.flips} flips)",
              flush=True)
    if "fiber" in rows_wanted:
        fd_a = args.diameter if args.fiber_species == args.target and args.diameter else \
            ds.diameters_a.get(args.fiber_species)
        if fd_a is None:
            raise SystemExit(f"no diameter for {args.fiber_species!r} in dataset.json")
        f_radius = fd_a / voxel_a / 2
        r = fiber_rows(ds, args.fiber_species, args.fiber_labels, f_radius, args.train_kwargs,
                       link_vox=0.6 * 2 * f_radius, device=args.device,
                       save_heatmaps=args.save_picks,
                       every_filament=args.fiber_labels_every_filament,
                       model_path=args.fiber_model, nms_kernel=args.fiber_nms_kernel)
        results["fiber"] = r
        for part, tag in (("held", "held-out"), ("lab", "labelled")):
            m = r[part]
            print(f"  fibres ({args.fiber_species}, {r['n_labels']} centre-line labels), "
                  f"{tag}: {m}")
        print(f"  fibre training {r['train_s']:.0f} s, tracing {r['trace_s']:.1f} s, "
              f"threshold {r['threshold']:.3g}", flush=True)
    if "floor" in results:
        floor = results["floor"]["held"]["f1"]
        for k, m in results.items():
            if k.endswith(", auto"):
                print(f"  {k}: held-out F1 {m['held']['f1']:.3f}, {m['held']['f1'] - floor:+.3f}"
                      f" over the tuned-DoG floor {floor:.3f}; labelled tomogram F1 "
                      f"{m['lab']['f1']:.3f}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
