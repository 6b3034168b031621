"""Picking accuracy for non-globular targets: membrane spikes and filaments (simulated).

**Membrane** (``membrane_rows``; simulator preset ``membrane``): vesicles carrying spikes
(truth species ``spike``) and as many *free* spikes of the same template floating away from
membranes (``free_spike``), plus a few ribosomes and small particles, at 1.5 e/Å² per tilt.
Only the context (a membrane under the spike) tells the target from the free spikes. One
training tomogram (64x384x384: ~54 attached spikes) + 3 held-out 64x256x256, 12 Å/voxel.
Labels: ``--spike-labels`` attached-spike centres (centre of mass, the point the picker should
find) of the training tomogram, jittered by up to 1 voxel per axis (as accuracy.py draws
them). The localiser (``train_localizer(shape="globular")``, library defaults) is trained
with ``particle_radius_vox`` = half the spike's length (200 Å / 2 / 12 = 8.3 voxels: the
"particle diameter" a user gives is the spike's full extent, base to head tip; the Gaussian
target σ = r/3 = 2.8 voxels then sits inside the ~110 Å head that holds the centre of mass, and
the pick NMS box (9 voxels) stays below the ≥ 23-voxel spacing of neighbouring spikes).
Picks: heat-map maxima in the NMS box of ``milopyp localize`` (``nms_kernel_from_model``).
Scores on the held-out tomograms against attached spikes, matching radius = half the spike's
mean width (:func:`mean_width_a` of the template, 145 Å → 6.0 voxels); ``free picked`` is the
fraction of free spikes with a pick within that radius (one-to-one matching, i.e. the recall
of the kept picks against the free spikes): the number attached-spike selection must keep low.
Localiser rows (:data:`MEMBRANE_VARIANTS`): the library defaults (6 epochs, PU prior estimated
from the model, which counts the free look-alikes as particles too); 12 epochs; and 12 epochs
with ``expected_particles`` (config ``localize.expected_particles``) = the training
tomogram's true number of attached spikes, or 1.5 x it (a user's rough count), which sets
the prior without counting look-alikes.

**Filament** (``filament_rows``; preset ``filament``): 4 gently curved 250 Å tubes per
tomogram (two crossing in projection, one above the other), plus ribosomes and small
particles. Labels: the truth centre-line points (every 2 voxels) of the first half of the
longest filament of the training tomogram (a person tracing part of one microtubule; cf.
config/demo-microtubule.csv). ``train_localizer(shape="fiber", particle_radius_vox=250/2/12)``;
picks: the heat map's ridge points above a threshold (``find_ridge_points``, as ``milopyp
localize`` picks a fibre target); then ``milopyp.fibers.trace_table`` (link distance 0.6 x
the diameter = 12.5 voxels, the workflow's default, ``--links`` for others); scored with
``milopyp.evaluate.evaluate_fibers`` (radius 3 voxels; ``merged`` = traced fibres lying on
two true ones). Thresholds: the automatic one (0.6 ×
median heat-map peak at the labels, as ``milopyp train-localize`` calibrates a fibre model),
the globular rule (0.9 × that median) and the one tuned on truth for the traced fibres' point F1 (per link).
``picks before tracing`` rows score the raw picks against the truth centre-line points (same
radius) to show what tracing adds.

Models are checkpointed under ``benchmarks/out/accuracy_shapes/`` (``--reuse-models`` loads
finished ones); ``--train-kwargs`` passes extra ``train_localizer`` arguments (experiments).
Every row's ``wall s`` includes the shared training and inference of its block.

    .venv/bin/python benchmarks/accuracy_shapes.py             # both tables, ~2 min
    .venv/bin/python benchmarks/accuracy_shapes.py --rows filament --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree

from benchmarks._common import REPO, format_table, machine_line
from benchmarks.accuracy import Volume, best_threshold, draw_labels, metrics_at
from benchmarks.accuracy import simulated as _simulated
from milopyp.candidates import find_candidates
from milopyp.evaluate import evaluate, evaluate_fibers
from milopyp.fibers import trace_table
from milopyp.localize import find_peaks, find_ridge_points, predict_heatmap, train_localizer
from milopyp.localize.calibrate import (
    FIBER_THRESHOLD_FRACTION,
    calibrate_threshold,
    label_peak_scores,
)
from milopyp.localize.stage import nms_kernel_from_model
from milopyp.localize.train import load_localizer
from milopyp.simulate import preset_parameters
from milopyp.simulation.templates import mean_width_a, spike_template

log = logging.getLogger("accuracy_shapes")

WORKDIR = REPO / "benchmarks" / "out" / "accuracy_shapes"
VOXEL_A = 12.0
HELD_OUT = (64, 256, 256)
#: localiser variants of the membrane table: (row name, extra train_localizer arguments,
#: expected attached spikes per training tomogram as a multiple of the true count or None)
MEMBRANE_VARIANTS = (
    ("localiser", {}, None),
    ("localiser, 12 epochs", {"epochs": 12, "lr_step_epochs": 8}, None),
    ("12 epochs, expected count given", {"epochs": 12, "lr_step_epochs": 8}, 1.0),
    ("12 epochs, expected count 1.5x", {"epochs": 12, "lr_step_epochs": 8}, 1.5),
)
LINK_VOX = 0.6 * 250.0 / 12.0  # the workflow's default: 0.6 x the filament diameter
FIBRE_RADIUS_VOX = 3.0
ROWS = ("membrane", "filament")


# ---------------------------------------------------------------------------- data


def simulated(preset: str, index: int, shape_zyx, seed: int, workdir: Path) -> Volume:
    """Tomogram ``index`` of a preset's dataset at 12 Å (accuracy.py's cached ``simulated``)."""
    return _simulated(index, tuple(shape_zyx), VOXEL_A, seed, workdir, preset=preset)


def species(vols: list[Volume], name: str, extra=()) -> pd.DataFrame:
    truth = pd.concat([v.truth for v in vols], ignore_index=True)
    return truth[truth["species"] == name][["tomogram", "x", "y", "z", *extra]]


def train_model(tomogram: np.ndarray, labels: np.ndarray, *, path: Path, reuse: bool,
                **kwargs):
    """Train (checkpoint at ``path``) and load it back as ``milopyp localize`` does, so that
    ``model.settings`` is there (the NMS box); returns (model, training seconds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not reuse:
        path.unlink()
    t0 = time.perf_counter()
    train_localizer([tomogram], [labels], device="cpu", checkpoint_path=path, **kwargs)
    seconds = time.perf_counter() - t0
    return load_localizer(path, device="cpu"), seconds


def _model_name(what, seed, train_seed, epochs, iterations, train_kwargs, extra="") -> str:
    tag = "".join(f"_{k}-{v}" for k, v in sorted((train_kwargs or {}).items()))
    return f"{what}_s{seed}{extra}_t{train_seed}_e{epochs}_i{iterations}{tag}.pt"


def auto_calibration(model, tomogram, labels, radius: float, shape: str = "globular") -> dict:
    """The model's calibration, else computed as ``milopyp train-localize`` does."""
    cal = getattr(model, "calibration", None) or {}
    if "threshold" not in cal:
        cal = calibrate_threshold(model, [tomogram], [labels], radius, "cpu", shape=shape)
    return cal


def model_prior(path: Path) -> float:
    """The PU class prior in effect at the end of training (from the checkpoint's history)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    history = state.get("history") or [{}]
    return float(history[-1].get("prior", float("nan")))


def _near(points: np.ndarray, others: np.ndarray, radius: float) -> np.ndarray:
    if not len(points) or not len(others):
        return np.zeros(len(points), dtype=bool)
    d, _ = cKDTree(others).query(points, distance_upper_bound=radius + 1e-9)
    return np.isfinite(d)


# ---------------------------------------------------------------------------- membrane


def _spike_row(setting: str, kind: str, picks: pd.DataFrame, spikes: pd.DataFrame,
               free: pd.DataFrame, threshold: float, radius: float, names: list[str],
               labels: int, seconds: float | None, wall: float) -> dict:
    row = metrics_at(picks, spikes, threshold, radius, names)
    kept = picks[picks["score"] > threshold]
    f = evaluate(kept, free, radius_vox=radius, tomograms=names).iloc[-1]
    row.update(setting=setting, kind=kind, labels=labels, seconds=seconds, wall_s=wall,
               free_picked=float(f["recall"]), free_tp=int(f["tp"]), n_free=int(f["n_true"]))
    return row


def membrane_rows(*, seed: int = 0, n_labels: int = 25, train_shape=(64, 384, 384),
                  n_test: int = 3, threads: int = 1, epochs: int | None = None,
                  iterations: int | None = None, train_seed: int = 0,
                  workdir: Path = WORKDIR, reuse_models: bool = False,
                  train_kwargs: dict | None = None) -> list[dict]:
    """Rows (accuracy.py keys + ``free_picked``, ``wall_s``) of the attached-spike benchmark.

    ``train_kwargs``: extra ``train_localizer`` arguments (experiments, e.g. ``{"pu": False}``).
    """
    preset = "membrane"
    length_a = preset_parameters(preset)["sizes_a"]["spike"]
    train_radius = length_a / 2 / VOXEL_A
    template, _base = spike_template(VOXEL_A, length_a)
    match_r = mean_width_a(template, VOXEL_A) / 2 / VOXEL_A
    t0 = time.perf_counter()
    train = simulated(preset, 0, train_shape, seed, workdir)
    tests = [simulated(preset, i, HELD_OUT, seed, workdir) for i in range(1, n_test + 1)]
    names = [v.name for v in tests]
    spikes, free = species(tests, "spike"), species(tests, "free_spike")
    n_train = int((train.truth["species"] == "spike").sum())
    labels = draw_labels(train.truth[train.truth["species"] == "spike"].assign(
        species="ribosome"), n_labels, jitter_vox=1.0, seed=seed, shape_zyx=train.tomogram.shape)
    print(f"membrane: training {'x'.join(map(str, train_shape))} ({n_train} attached spikes, "
          f"{len(labels)} labelled), {n_test} held-out {'x'.join(map(str, HELD_OUT))} "
          f"({len(spikes)} attached, {len(free)} free spikes); train radius "
          f"{train_radius:.2f} vox, matching radius {match_r:.2f} vox; data "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    rows = []

    # DoG: every candidate, and the score threshold tuned on the attached spikes
    t0 = time.perf_counter()
    default, everything = [], []
    for v in tests:
        for out, thr in ((default, {}), (everything, {"threshold_std": -1e9})):
            c = find_candidates(v.tomogram, particle_diameter_vox=2 * train_radius,
                                threads=threads, **thr)
            c.insert(0, "tomogram", v.name)
            out.append(c)
    default_df = pd.concat(default, ignore_index=True)
    all_df = pd.concat(everything, ignore_index=True)
    wall = time.perf_counter() - t0
    rows.append(_spike_row("DoG candidates (all)", "default", default_df, spikes, free,
                           -np.inf, match_r, names, 0, None, wall))
    thr = best_threshold(all_df, spikes, match_r)
    rows.append(_spike_row("DoG, threshold tuned on truth (floor)", "oracle", all_df, spikes,
                           free, thr, match_r, names, 0, None, wall))

    # localiser: the library defaults, then a longer schedule (the context that tells an
    # attached spike from a free one, the membrane under it, is learned later than the
    # spike's own shape)
    for variant, extra, count in MEMBRANE_VARIANTS:
        t0 = time.perf_counter()
        if count is not None:  # what a user who roughly knows the number would give
            extra = {**extra, "expected_particles": round(count * n_train)}
        kwargs = {"particle_radius_vox": train_radius, "shape": "globular", "seed": train_seed}
        if epochs:
            kwargs["epochs"] = epochs
        if iterations:
            kwargs["iterations_per_epoch"] = iterations
        kwargs.update(extra)
        kwargs.update(train_kwargs or {})
        path = workdir / _model_name("membrane", seed, train_seed, epochs, iterations,
                                     {**extra, **(train_kwargs or {})}, f"_l{len(labels)}")
        model, train_s = train_model(train.tomogram, labels, path=path, reuse=reuse_models, **kwargs)
        cal = auto_calibration(model, train.tomogram, labels, train_radius)
        kernel = nms_kernel_from_model(model)
        picks, diag = [], []
        for v in tests:
            heat = predict_heatmap(model, v.tomogram, device="cpu")
            picks.append(find_peaks(heat, kernel_vox=kernel, threshold=0.0, tomogram=v.name))
            diag.append({k: label_peak_scores(heat, species([v], k)[["x", "y", "z"]].to_numpy(),
                                              match_r / 2)
                         for k in ("spike", "free_spike", "ribosome", "small")})
        picks_df = pd.concat(picks, ignore_index=True)
        wall = time.perf_counter() - t0
        auto = float(cal["threshold"])
        rows.append(_spike_row(f"{variant}, automatic threshold", "auto", picks_df, spikes, free,
                               auto, match_r, names, len(labels), train_s, wall))
        thr = best_threshold(picks_df, spikes, match_r)
        rows.append(_spike_row(f"{variant}, tuned threshold", "oracle", picks_df, spikes, free, thr,
                               match_r, names, len(labels), train_s, wall))
        # diagnosis: heat-map peaks at attached vs free spikes vs the other peaks
        att, fre, rib, sma = (np.concatenate([d[k] for d in diag])
                              for k in ("spike", "free_spike", "ribosome", "small"))
        xyz = picks_df[["x", "y", "z"]].to_numpy(np.float64)
        away = np.ones(len(xyz), dtype=bool)
        for v in tests:
            m = (picks_df["tomogram"] == v.name).to_numpy()
            objs = v.truth[v.truth["species"].isin(["spike", "free_spike"])][["x", "y", "z"]]
            away[m] = ~_near(xyz[m], objs.to_numpy(np.float64), match_r)
        other = np.sort(picks_df["score"].to_numpy()[away])[::-1]
        print(f"  {variant}: heat-map peak within {match_r / 2:.1f} vox: attached spikes median "
              f"{np.median(att):.3g} (q10 {np.quantile(att, 0.1):.3g}), free spikes median "
              f"{np.median(fre):.3g} (q90 {np.quantile(fre, 0.9):.3g}), ribosomes "
              f"{np.median(rib):.3g}, small {np.median(sma):.3g}; strongest other peaks "
              f"{', '.join(f'{s:.3g}' for s in other[:5])}; label-peak median "
              f"{cal.get('label_peak_median', float('nan')):.3g}, auto threshold {auto:.3g}, "
              f"NMS box {kernel}; PU prior after training "
              f"{model_prior(path):.3g}; train {train_s:.0f} s", flush=True)
    return rows


# ---------------------------------------------------------------------------- filament


def _fibre_labels(truth: pd.DataFrame) -> np.ndarray:
    """Centre-line points (x, y, z) of the first half of the longest true filament."""
    fil = truth[truth["species"] == "filament"]
    longest = fil["fiber_id"].value_counts().idxmax()
    pts = fil[fil["fiber_id"] == longest][["x", "y", "z"]].to_numpy(np.float64)
    return pts[: len(pts) // 2]


def _merged(traced: pd.DataFrame, truth: pd.DataFrame, radius: float) -> int:
    """Traced fibres with ≥ 20% of their points on each of two different true fibres."""
    n = 0
    for (name, _fid), g in traced.groupby(["tomogram", "fiber_id"]):
        t = truth[truth["tomogram"] == name]
        d, i = cKDTree(t[["x", "y", "z"]].to_numpy(np.float64)).query(
            g[["x", "y", "z"]].to_numpy(np.float64), distance_upper_bound=radius)
        ids = t["fiber_id"].to_numpy()[i[np.isfinite(d)]]
        counts = np.bincount(ids.astype(int)) if len(ids) else np.zeros(1)
        n += int((counts >= 0.2 * len(g)).sum() >= 2)
    return n


def _raw_row(tag: str, kind: str, picks: pd.DataFrame, truth: pd.DataFrame, threshold: float,
             names: list[str], labels: int, train_s: float, wall: float) -> dict:
    """Point scores of the raw picks above ``threshold`` against the truth centre lines."""
    kept = picks[picks["score"] > threshold]
    p = evaluate(kept, truth, radius_vox=FIBRE_RADIUS_VOX, tomograms=names).iloc[-1]
    return {"setting": f"picks before tracing, {tag}", "kind": kind, "labels": labels,
            "threshold": float(threshold), "seconds": train_s, "wall_s": wall,
            "n_points": int(p["n_picks"]), "precision": float(p["precision"]),
            "recall": float(p["recall"]), "f1": float(p["f1"])}


def _traced_row(tag: str, kind: str, picks: pd.DataFrame, truth: pd.DataFrame,
                threshold: float, link: float, names: list[str], labels: int, train_s: float,
                wall: float) -> dict:
    """Trace the picks above ``threshold`` (``trace_table`` defaults, ``link`` voxels) and
    score the fibres (:func:`evaluate_fibers`, radius :data:`FIBRE_RADIUS_VOX`)."""
    kept = picks[picks["score"] > threshold]
    t0 = time.perf_counter()
    traced = trace_table(kept, link_distance_vox=link)
    wall += time.perf_counter() - t0
    m = evaluate_fibers(traced, truth, radius_vox=FIBRE_RADIUS_VOX, tomograms=names).iloc[-1]
    return {"setting": f"traced, link {link:.3g} vox, {tag}", "kind": kind, "labels": labels,
            "threshold": float(threshold), "link_vox": float(link), "seconds": train_s,
            "wall_s": wall, "n_points": int(m["n_points"]),
            "precision": float(m["point_precision"]), "recall": float(m["point_recall"]),
            "f1": float(m["point_f1"]), "found_fibers": int(m["found_fibers"]),
            "n_true_fibers": int(m["n_true_fibers"]),
            "traced_fibers": int(m["n_traced_fibers"]),
            "true_traced_fibers": int(m["true_traced_fibers"]),
            "merged_fibers": _merged(traced, truth, FIBRE_RADIUS_VOX)}


def filament_rows(*, seed: int = 0, train_shape=(64, 256, 256), n_test: int = 3,
                  links=(LINK_VOX,), epochs: int | None = None, iterations: int | None = None,
                  train_seed: int = 0, workdir: Path = WORKDIR,
                  reuse_models: bool = False, train_kwargs: dict | None = None) -> list[dict]:
    """Rows (setting, threshold, point precision / recall / F1, fibres found / traced /
    merged, ``wall_s``) of the filament benchmark: raw picks, and fibres traced with each link
    distance of ``links`` (voxels), at the automatic, a lower and the tuned-on-truth
    threshold (tuned per link distance for the traced point F1)."""
    preset = "filament"
    radius = preset_parameters(preset)["sizes_a"]["filament"] / 2 / VOXEL_A
    t0 = time.perf_counter()
    train = simulated(preset, 0, train_shape, seed, workdir)
    tests = [simulated(preset, i, HELD_OUT, seed, workdir) for i in range(1, n_test + 1)]
    names = [v.name for v in tests]
    truth = species(tests, "filament", extra=("fiber_id",))
    labels = _fibre_labels(train.truth)
    print(f"filament: training {'x'.join(map(str, train_shape))} "
          f"({train.truth[train.truth['species'] == 'filament']['fiber_id'].nunique()} "
          f"filaments, {len(labels)} centre-line labels on half of one), {n_test} held-out "
          f"({truth.groupby(['tomogram', 'fiber_id']).ngroups} filaments, {len(truth)} "
          f"centre-line points); radius {radius:.2f} vox, links {list(links)} vox, matching "
          f"radius {FIBRE_RADIUS_VOX:g} vox; data {time.perf_counter() - t0:.0f} s", flush=True)

    t0 = time.perf_counter()
    kwargs = {"particle_radius_vox": radius, "shape": "fiber", "seed": train_seed}
    if epochs:
        kwargs["epochs"] = epochs
    if iterations:
        kwargs["iterations_per_epoch"] = iterations
    kwargs.update(train_kwargs or {})
    path = workdir / _model_name("filament", seed, train_seed, epochs, iterations, train_kwargs)
    model, train_s = train_model(train.tomogram, labels, path=path, reuse=reuse_models, **kwargs)
    cal = auto_calibration(model, train.tomogram, labels, radius, shape="fiber")
    picks, on, off, spacing = [], [], [], []
    for v in tests:
        heat = predict_heatmap(model, v.tomogram, device="cpu")
        # as `milopyp localize` picks a fibre target: ridge points (any threshold below
        # keeps the same points: the ridge test does not depend on it)
        p = find_ridge_points(heat, threshold=0.0, tomogram=v.name)
        picks.append(p)
        t = truth[truth["tomogram"] == v.name][["x", "y", "z"]].to_numpy(np.float64)
        zyx = np.rint(t[:, ::-1]).astype(int)
        on.append(heat[zyx[:, 0], zyx[:, 1], zyx[:, 2]])
        xyz = p[["x", "y", "z"]].to_numpy(np.float64)
        off.append(p["score"].to_numpy()[~_near(xyz, t, 2 * radius)])
        # spacing of the picks along the centre lines (above 0.3 x the label median)
        good = xyz[_near(xyz, t, FIBRE_RADIUS_VOX) & (p["score"].to_numpy() > 0.3 * float(
            cal.get("label_peak_median", cal["threshold"])))]
        if len(good) > 1:
            spacing.append(cKDTree(good).query(good, k=2)[0][:, 1])
    picks_df = pd.concat(picks, ignore_index=True)
    wall = time.perf_counter() - t0
    on_a, off_a = np.concatenate(on), np.sort(np.concatenate(off))[::-1]
    nn = np.concatenate(spacing) if spacing else np.full(1, np.nan)
    median = float(cal.get("label_peak_median", cal["threshold"] / FIBER_THRESHOLD_FRACTION))
    auto = float(cal["threshold"])
    print(f"  heat map on true centre lines: median {np.median(on_a):.3g} (q10 "
          f"{np.quantile(on_a, 0.1):.3g}); peaks > {2 * radius:.0f} vox from any filament: "
          f"top {', '.join(f'{s:.3g}' for s in off_a[:5])}; label-peak median {median:.3g}; "
          f"ridge points on the centre lines are {np.median(nn):.1f} vox apart "
          f"(median nearest neighbour; q90 {np.quantile(nn, 0.9):.1f}); train {train_s:.0f} s,"
          f" infer {wall - train_s:.0f} s", flush=True)
    rows = []
    lab = len(labels)
    for tag, kind, thr in (("automatic threshold", "auto", auto),
                           ("0.9 x label median (globular rule)", "high", 0.9 * median)):
        rows.append(_raw_row(tag, kind, picks_df, truth, thr, names, lab, train_s, wall))
        rows += [_traced_row(tag, kind, picks_df, truth, thr, link, names, lab, train_s, wall)
                 for link in links]
    # tuned on truth: per link, the best traced point F1 over fractions of the label median
    grid = [f * median for f in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
    for link in links:
        t0 = time.perf_counter()
        f1 = [_traced_row("", "", picks_df, truth, thr, link, names, lab, 0.0, 0.0)["f1"]
              for thr in grid]
        best = grid[int(np.argmax(f1))]
        tag = f"tuned on truth ({best / median:.1f} x median)"
        if max(f1) > 0:
            rows.append(_raw_row(tag, "oracle", picks_df, truth, best, names, lab, train_s,
                                 wall))
        else:  # no threshold of the grid traces anything: say so, at the automatic one
            best, tag = auto, "tuned on truth: no threshold traces a fibre"
        rows.append(_traced_row(tag, "oracle", picks_df, truth, best, link, names, lab,
                                train_s, wall + time.perf_counter() - t0))
    return rows


# ---------------------------------------------------------------------------- main


MEMBRANE_COLUMNS = [("setting", "setting"), ("labels", "labels"), ("threshold", "threshold"),
                    ("n_picks", "picks"), ("precision", "precision"), ("recall", "recall"),
                    ("f1", "F1"), ("ap", "AP"), ("free", "free picked"),
                    ("seconds", "train s"), ("wall_s", "wall s")]
FILAMENT_COLUMNS = [("setting", "setting"), ("threshold", "threshold"),
                    ("n_points", "points"), ("precision", "point P"), ("recall", "point R"),
                    ("f1", "point F1"), ("fibres", "fibres found"), ("traced", "traced"),
                    ("merged_fibers", "merged"), ("wall_s", "wall s")]


def _fmt(rows: list[dict], columns) -> str:
    shown = []
    for r in rows:
        r = dict(r)
        r["threshold"] = "-" if not np.isfinite(r["threshold"]) else f"{r['threshold']:.3g}"
        for k in ("seconds", "wall_s"):
            r[k] = "-" if r.get(k) is None else f"{r[k]:.0f}"
        for k in ("precision", "recall", "f1", "ap"):
            if k in r:
                r[k] = f"{r[k]:.3f}"
        if "free_picked" in r:
            r["free"] = f"{r['free_picked']:.2f} ({r['free_tp']}/{r['n_free']})"
        if "found_fibers" in r:
            r["fibres"] = f"{r['found_fibers']}/{r['n_true_fibers']}"
            r["traced"] = f"{r['traced_fibers']} ({r['true_traced_fibers']} on truth)"
        shown.append(r)
    return format_table(shown, columns)


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise SystemExit(f"bad size {text!r}: expected ZxYxX")
    return tuple(int(p) for p in parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help="comma list of membrane,filament")
    p.add_argument("--quick", action="store_true",
                   help="60 iterations per epoch and 2 held-out tomograms")
    p.add_argument("--seed", type=int, default=0, help="data and labels seed (0)")
    p.add_argument("--train-seed", type=int, default=0, help="training seed (0)")
    p.add_argument("--spike-labels", type=int, default=25, help="attached-spike labels (25)")
    p.add_argument("--spike-train-shape", default="64x384x384",
                   help="membrane training tomogram ZxYxX (64x384x384)")
    p.add_argument("--links", default=f"{LINK_VOX:g}",
                   help="comma list of fibre link distances, voxels (12.5: the workflow's "
                        "default, 0.6 x the diameter)")
    p.add_argument("--train-kwargs", type=json.loads, default={},
                   help="JSON dict of extra train_localizer arguments (experiments)")
    p.add_argument("--threads", type=int, default=1, help="torch / DoG threads (1)")
    p.add_argument("--workdir", type=Path, default=WORKDIR, help="cache and models")
    p.add_argument("--reuse-models", action="store_true",
                   help="reuse finished model checkpoints in the workdir (diagnostics)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="log training progress")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    if set(wanted) - set(ROWS):
        raise SystemExit(f"--rows: unknown {sorted(set(wanted) - set(ROWS))}; use "
                         f"{','.join(ROWS)}")
    torch.set_num_threads(args.threads)
    iterations = 60 if args.quick else None
    n_test = 2 if args.quick else 3
    common = {"seed": args.seed, "n_test": n_test, "iterations": iterations,
              "train_seed": args.train_seed, "workdir": args.workdir,
              "reuse_models": args.reuse_models, "train_kwargs": args.train_kwargs}
    t_start = time.perf_counter()
    print(f"machine: {machine_line()}; torch {torch.__version__}, {args.threads} thread(s)")
    out: dict[str, list[dict]] = {}
    if "membrane" in wanted:
        out["membrane"] = membrane_rows(n_labels=args.spike_labels, threads=args.threads,
                                        train_shape=_shape(args.spike_train_shape), **common)
        print("\n" + _fmt(out["membrane"], MEMBRANE_COLUMNS) + "\n", flush=True)
    if "filament" in wanted:
        links = [float(v) for v in args.links.split(",") if v.strip()]
        out["filament"] = filament_rows(links=links, **common)
        print("\n" + _fmt(out["filament"], FILAMENT_COLUMNS) + "\n", flush=True)
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
