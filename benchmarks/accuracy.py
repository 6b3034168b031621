"""Picking accuracy on a crowded, low-dose simulated set: DoG floor, localiser, ablations.

Data (``milopyp.simulate``, preset ``crowded``): ribosomes, as many hollow decoys of the
ribosome's size and integrated density (only shape tells them apart) and smaller particles,
at 1 e/Å² per tilt. One training tomogram (``--train-shape``, larger in y–x so that it holds
enough ribosomes for the 100-label row) and ``--n-tomograms − 1`` held-out tomograms
(``--shape``). Labels: ribosome centres of the training tomogram drawn with ``--seed``
(nested: the first n of one permutation) and jittered by up to ``--jitter`` voxels per axis,
as a person clicks. Every score is on the held-out tomograms only, against the ribosomes
(matching radius = half the particle diameter, one-to-one, :func:`milopyp.evaluate.evaluate`).

Rows:
- ``DoG candidates (all)``: ``find_candidates`` with its default threshold (what the
  exploration module starts from);
- ``DoG, threshold tuned on truth``: the best F1 over score thresholds of the DoG peaks on the
  held-out tomograms (an upper bound for any DoG picker: the floor every learned picker must
  clear);
- the localiser (full model; no contrastive; no PU; full model with 10 / 25 / 55 / 100
  labels), trained with the library defaults (``train_localizer``: class prior estimated
  from the model, as ``milopyp train-localize`` does without ``--class-prior``), each at
  (a) the automatic threshold, as ``milopyp train-localize`` calibrates it and ``milopyp
  localize`` applies it (:mod:`milopyp.localize.calibrate`: each held-out tomogram's own
  split of its heat-map peaks, after the profile check; heat maps with the default
  test-time flips; no truth used) and (b) the best threshold tuned on truth (oracle,
  comparable with the DoG floor); AP is threshold-free (of every peak that passed the
  check). Picks are the heat map's local maxima in a box of about the particle radius, as
  ``milopyp localize`` picks them. ``--train-seeds 0,1,2`` trains each model once per seed
  and prints mean ± sd (single runs vary by a few F1 points).
- ``membrane`` and ``filament``: the tables of :mod:`benchmarks.accuracy_shapes` (presets
  ``membrane``: spikes attached to vesicles, the target, among free spikes of the same
  shape; ``filament``: tubes traced into fibres, scored as fibres found and point F1).

Simulated data are cached under ``benchmarks/out/accuracy/`` (git-ignored). Torch runs with
``--threads`` threads (1 by default: on 2 shared cores a second OpenMP thread that has to
wait for a busy core slowed training up to 10×; on an idle machine 2 threads are ~20% faster).

    .venv/bin/python benchmarks/accuracy.py              # default: ~6 min (2 cores, 1 busy)
    .venv/bin/python benchmarks/accuracy.py --quick      # ~1 min: 3 rows, 60 steps/epoch
    .venv/bin/python benchmarks/accuracy.py --rows full,no-pu --train-seeds 0,1,2
    .venv/bin/python benchmarks/accuracy.py --rows full -v --threshold-study  # diagnostics
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from milopyp.cli import openmp_defaults

openmp_defaults()  # as every milopyp command (OMP_WAIT_POLICY=PASSIVE), before torch loads

import numpy as np
import pandas as pd
import torch

from benchmarks._common import REPO, format_table, machine_line
from benchmarks.dataset import tomogram_thresholds, weigh_peaks, without_z_face_picks
from milopyp.candidates import find_candidates
from milopyp.defaults import nms_kernel_vox
from milopyp.evaluate import evaluate, greedy_match_by_score
from milopyp.localize import find_peaks, predict_heatmap, train_localizer
from milopyp.localize.calibrate import (
    THRESHOLD_FRACTION,
    auto_threshold,
    calibrate_threshold,
    label_peak_scores,
    profile_floor,
)
from milopyp.localize.infer import DEFAULT_FLIPS
from milopyp.localize.spectrum import match_contrast
from milopyp.simulate import preset_parameters, simulate_tomogram, tomogram_seed

log = logging.getLogger("accuracy")

WORKDIR = REPO / "benchmarks" / "out" / "accuracy"
PRESET = "crowded"
TARGET = "ribosome"
ROWS = ("dog", "full", "no-contrastive", "no-pu", "labels", "membrane", "filament")
QUICK_ROWS = ("dog", "full", "no-pu")


def parse_size(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SystemExit(f"bad size {text!r}: expected ZxYxX, e.g. 64x256x256")
    return int(parts[0]), int(parts[1]), int(parts[2])


# ---------------------------------------------------------------------------- data


@dataclass
class Volume:
    name: str
    tomogram: np.ndarray  # float32 [z, y, x], protein bright
    truth: pd.DataFrame  # tomogram, species, x, y, z


def simulated(index: int, shape_zyx, voxel_size_a: float, seed: int, workdir: Path, *,
              preset: str = PRESET) -> Volume:
    """Tomogram ``index`` of the dataset (seeded from (seed, index)), cached as .npy + .csv."""
    name = f"tomo_{index:03d}"
    stem = f"{preset}_{'x'.join(map(str, shape_zyx))}_v{voxel_size_a:g}_s{seed}_{index:03d}"
    npy, csv = workdir / f"{stem}.npy", workdir / f"{stem}.csv"
    if npy.exists() and csv.exists():
        truth = pd.read_csv(csv)
        truth["tomogram"] = name
        return Volume(name, np.load(npy), truth)
    sim = simulate_tomogram(shape_zyx=tuple(shape_zyx), voxel_size_a=voxel_size_a,
                            seed=tomogram_seed(seed, index), preset=preset, name=name)
    workdir.mkdir(parents=True, exist_ok=True)
    tmp_npy, tmp_csv = npy.with_suffix(".tmp.npy"), csv.with_suffix(".tmp.csv")
    np.save(tmp_npy, sim.tomogram)
    sim.truth.to_csv(tmp_csv, index=False)
    tmp_npy.replace(npy)
    tmp_csv.replace(csv)
    return Volume(name, sim.tomogram, sim.truth)


def particle_diameter_vox(voxel_size_a: float) -> float:
    return preset_parameters(PRESET)["sizes_a"][TARGET] / voxel_size_a


def draw_labels(truth: pd.DataFrame, n: int, *, jitter_vox: float, seed: int,
                shape_zyx) -> np.ndarray:
    """(n, 3) x, y, z: the first n ribosomes of a seeded permutation, each moved by a uniform
    jitter in [−jitter, jitter] per axis (independent of n, so label sets are nested)."""
    xyz = truth.loc[truth["species"] == TARGET, ["x", "y", "z"]].to_numpy(np.float64)
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(xyz))
    shift = rng.uniform(-jitter_vox, jitter_vox, size=xyz.shape)
    out = xyz[order] + shift[order]
    hi = np.asarray(shape_zyx[::-1], dtype=np.float64) - 1
    return np.clip(out, 0, hi)[:n]


# ---------------------------------------------------------------------------- scoring


def ribosomes(vols: list[Volume]) -> pd.DataFrame:
    truth = pd.concat([v.truth for v in vols], ignore_index=True)
    return truth[truth["species"] == TARGET][["tomogram", "x", "y", "z"]]


def metrics_at(picks: pd.DataFrame, truth: pd.DataFrame, threshold: float, radius: float,
               names: list[str]) -> dict:
    """precision / recall / F1 of the picks with score > threshold, AP of all picks."""
    ap = float(evaluate(picks, truth, radius_vox=radius, tomograms=names).iloc[-1]["ap"])
    kept = picks[picks["score"] > threshold]
    m = evaluate(kept, truth, radius_vox=radius, tomograms=names).iloc[-1]
    return {"threshold": float(threshold), "precision": float(m["precision"]),
            "recall": float(m["recall"]), "f1": float(m["f1"]), "ap": ap,
            "n_picks": int(m["n_picks"])}


def best_threshold(picks: pd.DataFrame, truth: pd.DataFrame, radius: float) -> float:
    """Score threshold with the best pooled F1 (greedy matching in score order), chosen on
    the truth: picks above it are kept (returns just below the last kept score)."""
    scores, flags = [], []
    n_true = len(truth)
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
    k = np.arange(1, len(s) + 1)
    f1 = 2 * tp / (k + n_true)
    # a threshold can only cut between distinct scores: use the last index of each score
    last = np.r_[s[1:] != s[:-1], True]
    best = int(np.argmax(np.where(last, f1, -1.0)))
    nxt = s[best + 1] if best + 1 < len(s) else s[best] - 1.0
    return float(0.5 * (s[best] + nxt))


# ---------------------------------------------------------------------------- DoG


def dog_rows(tests: list[Volume], diameter: float, radius: float, threads: int) -> list[dict]:
    truth = ribosomes(tests)
    names = [v.name for v in tests]
    default, everything = [], []
    for v in tests:
        c = find_candidates(v.tomogram, particle_diameter_vox=diameter, threads=threads)
        c.insert(0, "tomogram", v.name)
        default.append(c)
        a = find_candidates(v.tomogram, particle_diameter_vox=diameter, threshold_std=-1e9,
                            threads=threads)
        a.insert(0, "tomogram", v.name)
        everything.append(a)
    default_df = pd.concat(default, ignore_index=True)
    all_df = pd.concat(everything, ignore_index=True)
    r1 = metrics_at(default_df, truth, -np.inf, radius, names)
    r1.update(setting="DoG candidates (all)", labels=0, kind="default", seconds=None)
    thr = best_threshold(all_df, truth, radius)
    r2 = metrics_at(all_df, truth, thr, radius, names)
    r2.update(setting="DoG, threshold tuned on truth", labels=0, kind="oracle", seconds=None)
    return [r1, r2]


# ---------------------------------------------------------------------------- localiser




def heat_stats(heat: np.ndarray, picks: pd.DataFrame, truth: pd.DataFrame, radius: float) -> str:
    """One line: heat-map peak values at true particles vs elsewhere (diagnostics)."""
    xyz = picks[["x", "y", "z"]].to_numpy(np.float64)
    t = truth[["x", "y", "z"]].to_numpy(np.float64)
    s = picks["score"].to_numpy()
    if len(xyz) == 0 or len(t) == 0:
        return "no peaks"
    d = np.sqrt(((xyz[:, None] - t[None]) ** 2).sum(-1)).min(1)
    on, off = s[d <= radius / 2], s[d > radius]
    return (f"heat max {heat.max():.3f}; peaks on particles {on.mean():.3f} ± {on.std():.3f} "
            f"(n={len(on)}), elsewhere {off.mean():.3f} ± {off.std():.3f} (n={len(off)}, "
            f"top-decile {np.quantile(off, 0.9) if len(off) else float('nan'):.3f})")


def thin(picks: pd.DataFrame, radius: float) -> pd.DataFrame:
    """Picks thinned greedily (strongest first, per tomogram) so no two lie within radius."""
    from scipy.spatial import cKDTree

    out = []
    for _, p in picks.groupby("tomogram"):
        p = p.sort_values("score", ascending=False, kind="stable")
        xyz = p[["x", "y", "z"]].to_numpy(np.float64)
        keep = np.ones(len(p), dtype=bool)
        for i, near in enumerate(cKDTree(xyz).query_ball_point(xyz, radius) if len(p) else []):
            if keep[i]:
                near = np.asarray(near, dtype=np.intp)
                keep[near[near > i]] = False
        out.append(p[keep])
    return pd.concat(out, ignore_index=True) if out else picks


def threshold_study(lp: np.ndarray, train_heat: np.ndarray, labels: np.ndarray,
                    picks: pd.DataFrame, truth: pd.DataFrame, radius: float, names: list[str],
                    kernel: int, prior: float | None) -> None:
    """Diagnostics (-v --threshold-study): held-out F1 of label-only threshold rules."""
    rules = {f"{f:g} x median": f * float(np.median(lp))
             for f in (0.5, 0.7, 0.8, THRESHOLD_FRACTION, 1.0)}
    rules.update({f"label q{q}": float(np.quantile(lp, q / 100)) for q in (0, 5, 10, 25)})
    # peaks of the labelled tomogram away from every label: a mixture of hidden particles
    # and background; the threshold halfway (in log) between the label median and their
    # 99th percentile, and the valley of the peak-score histogram (log scale)
    tp = find_peaks(train_heat, kernel_vox=kernel, threshold=0.0)
    xyz = tp[["x", "y", "z"]].to_numpy(np.float64)
    d = np.sqrt(((xyz[:, None] - labels[None]) ** 2).sum(-1)).min(1) if len(labels) else \
        np.full(len(xyz), np.inf)
    other = tp["score"].to_numpy()[d > radius]
    if prior is not None:
        # the estimated number of unlabelled particles: the K-th strongest peak away from
        # the labels (peaks thinned at r) as the threshold
        k = round(prior * train_heat.size)
        away = thin(tp.assign(tomogram="t"), radius)
        xyz_a = away[["x", "y", "z"]].to_numpy(np.float64)
        da = np.sqrt(((xyz_a[:, None] - labels[None]) ** 2).sum(-1)).min(1)
        sa = np.sort(away["score"].to_numpy()[da > radius / 2])[::-1]
        if 0 < k <= len(sa):
            kth = float(sa[k - 1])
            rules[f"K-th away peak (K={k})"] = kth
            rules["min(0.9 median, K-th)"] = min(kth, THRESHOLD_FRACTION * float(np.median(lp)))
            rules["0.95 K-th"] = 0.95 * kth
    if len(other):
        rules["geo(median, q99 other)"] = float(np.sqrt(np.median(lp) *
                                                        np.quantile(other, 0.99)))
        ls = np.log(np.clip(tp["score"].to_numpy(), 1e-6, None))
        hist, edges = np.histogram(ls, bins=60)
        lo = np.searchsorted(edges, np.log(np.quantile(lp, 0.05))) - 1
        hi = np.searchsorted(edges, np.log(np.median(other)))
        if 0 < hi < lo:
            k = hi + int(np.argmin(hist[hi:lo]))
            rules["histogram valley"] = float(np.exp(0.5 * (edges[k] + edges[k + 1])))
    parts = []
    for name, thr in rules.items():
        m = metrics_at(picks, truth, thr, radius, names)
        parts.append(f"{name}: thr {thr:.3g} F1 {m['f1']:.3f}")
    auto = auto_threshold(lp)
    thinned = thin(picks[picks["score"] > auto], radius)
    m = metrics_at(thinned, truth, auto, radius, names)
    parts.append(f"auto + greedy thinning at r: F1 {m['f1']:.3f} (P {m['precision']:.3f})")
    log.info("label peaks median %.3g (q10 %.3g, min %.3g); %s", np.median(lp),
             np.quantile(lp, 0.1), lp.min(), "; ".join(parts))


def train_and_score(setting: str, labels: np.ndarray, train: Volume, tests: list[Volume],
                    radius: float, args: argparse.Namespace, extra: dict,
                    seed: int) -> tuple[dict, dict]:
    """Train once (training seed ``seed``), pick on the held-out tomograms; the metrics at
    the automatic threshold and at the threshold tuned on truth."""
    kwargs = {"particle_radius_vox": radius, "epochs": args.epochs,
              "iterations_per_epoch": args.iterations, "seed": seed, "device": "cpu"}
    kwargs.update(args.train_kwargs)
    kwargs.update(extra)
    t0 = time.perf_counter()
    model = train_localizer([train.tomogram], [labels], **kwargs)
    train_s = time.perf_counter() - t0
    kernel = nms_kernel_vox(radius)
    t1 = time.perf_counter()
    # as `milopyp train-localize` calibrates and `milopyp localize` picks: test-time flips,
    # the profile check, each tomogram's own split of its peaks
    calibration = calibrate_threshold(model, [train.tomogram], [labels], radius, "cpu",
                                      flips=DEFAULT_FLIPS)
    floor = profile_floor(calibration)
    picks, heats = [], []
    for v in tests:  # raised where weaker than the labelled tomogram, as there
        volume = match_contrast(calibration["spectrum"], v.tomogram, v.name)
        heat = predict_heatmap(model, volume, device="cpu", flips=DEFAULT_FLIPS)
        p = find_peaks(heat, kernel_vox=kernel, threshold=args.min_score, tomogram=v.name)
        picks.append(weigh_peaks(calibration.get("profile"), volume, p, floor))
        heats.append(heat)
    infer_s = time.perf_counter() - t1
    picks_df = pd.concat(picks, ignore_index=True)
    truth = ribosomes(tests)
    names = [v.name for v in tests]
    log.info("%s (%d labels, seed %d): train %.0f s, infer %.0f s; %s", setting, len(labels),
             seed, train_s, infer_s,
             heat_stats(heats[0], picks[0], truth[truth["tomogram"] == names[0]], radius))
    if args.threshold_study:
        train_heat = predict_heatmap(model, train.tomogram, device="cpu", flips=DEFAULT_FLIPS)
        lp = label_peak_scores(train_heat, labels, radius / 2)
        prior = model.history[-1].get("prior") if model.history else None
        threshold_study(lp, train_heat, labels, picks_df, truth, radius, names, kernel, prior)
        del train_heat
    del heats
    depths = {v.name: int(v.tomogram.shape[0]) for v in tests}
    kept, thresholds = tomogram_thresholds(calibration, picks_df, names, depths=depths,
                                           radius_vox=radius)
    pickable = without_z_face_picks(picks_df, depths, radius)  # what `localize` can return
    a = metrics_at(kept, truth, -np.inf, radius, names)
    a["ap"] = metrics_at(pickable, truth, -np.inf, radius, names)["ap"]  # of every peak
    a["threshold"] = float(np.mean(list(thresholds.values())))
    b = metrics_at(pickable, truth, best_threshold(pickable, truth, radius), radius, names)
    for r in (a, b):
        r["seconds"] = train_s
    log.info("  seed %d: auto F1 %.3f (thr %.3g), tuned F1 %.3f, AP %.3f", seed, a["f1"],
             a["threshold"], b["f1"], b["ap"])
    if args.save_picks:
        out = args.workdir / "picks"
        out.mkdir(parents=True, exist_ok=True)
        picks_df.to_csv(out / f"{setting.replace(' ', '_')}_{len(labels)}_s{seed}.csv",
                        index=False)
    return a, b


def _mean(runs: list[dict]) -> dict:
    """Mean of each metric over runs, with its standard deviation as ``<key>_sd``."""
    out = {}
    for k in ("threshold", "precision", "recall", "f1", "ap", "seconds", "n_picks"):
        v = np.array([r[k] for r in runs], dtype=np.float64)
        out[k] = float(v.mean())
        out[f"{k}_sd"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    out["runs"] = len(runs)
    return out


def model_rows(setting: str, n_labels: int, train: Volume, tests: list[Volume], radius: float,
               args: argparse.Namespace, extra: dict) -> list[dict]:
    """Two rows (auto threshold, threshold tuned on truth), averaged over the training seeds."""
    labels = draw_labels(train.truth, n_labels, jitter_vox=args.jitter, seed=args.seed,
                         shape_zyx=train.tomogram.shape)
    runs = [train_and_score(setting, labels, train, tests, radius, args, extra, s)
            for s in args.train_seeds]
    a = _mean([r[0] for r in runs])
    b = _mean([r[1] for r in runs])
    a.update(setting=f"{setting}, auto threshold", labels=len(labels), kind="auto")
    b.update(setting=f"{setting}, threshold tuned on truth", labels=len(labels), kind="oracle")
    return [a, b]


# ---------------------------------------------------------------------------- main


COLUMNS = [("setting", "setting"), ("labels", "labels"), ("threshold", "threshold"),
           ("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("ap", "AP"),
           ("seconds", "train s")]


def _fmt(rows: list[dict]) -> str:
    shown = []
    for r in rows:
        r = dict(r)
        thr = r["threshold"]
        r["threshold"] = "-" if not np.isfinite(thr) else f"{thr:.3g}"
        r["seconds"] = "-" if r["seconds"] is None else f"{r['seconds']:.0f}"
        for k in ("precision", "recall", "f1", "ap"):
            r[k] = (f"{r[k]:.3f} ± {r[k + '_sd']:.3f}" if r.get("runs", 1) > 1
                    else f"{r[k]:.3f}")
        shown.append(r)
    return format_table(shown, COLUMNS)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--dataset" or a.startswith("--dataset=") for a in argv):
        # a folder of tomograms with truth that we did not make: benchmarks/dataset.py
        from benchmarks.dataset import main as dataset_main
        return dataset_main(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-tomograms", type=int, default=None,
                   help="tomograms in all: 1 for training + the rest held out (5; quick 3)")
    p.add_argument("--shape", default=None, help="held-out tomogram ZxYxX (64x256x256)")
    p.add_argument("--train-shape", default=None,
                   help="training tomogram ZxYxX (64x512x512: ~230 ribosomes; quick 64x384x384)")
    p.add_argument("--voxel-size", type=float, default=12.0, help="Å per voxel (12)")
    p.add_argument("--labels", type=int, default=55, help="labels of the ablation rows (55)")
    p.add_argument("--label-counts", default="10,25,55,100",
                   help="label counts of the 'labels' rows (10,25,55,100)")
    p.add_argument("--jitter", type=float, default=1.0,
                   help="label jitter, voxels per axis, uniform (1)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: library)")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations per epoch (default: library)")
    p.add_argument("--rows", default=None,
                   help=f"comma list of {','.join(ROWS)} (default all; quick "
                        f"{','.join(QUICK_ROWS)})")
    p.add_argument("--train-kwargs", type=json.loads, default={},
                   help="JSON dict of extra train_localizer arguments (experiments)")
    p.add_argument("--min-score", type=float, default=0.0,
                   help="heat-map peaks below this are never considered (0)")
    p.add_argument("--quick", action="store_true",
                   help="3 tomograms, rows dog,full,no-pu, 60 iterations per epoch (~6 min a "
                        "localiser row on 2 cores)")
    p.add_argument("--seed", type=int, default=0, help="data and labels seed (0)")
    p.add_argument("--train-seeds", default="0",
                   help="comma list of training seeds; models are trained once per seed and "
                        "their metrics averaged (0)")
    p.add_argument("--threads", type=int, default=1, help="torch / DoG threads (1)")
    p.add_argument("--workdir", type=Path, default=WORKDIR, help="cache and outputs")
    p.add_argument("--threshold-study", action="store_true",
                   help="log the held-out F1 of other label-only threshold rules")
    p.add_argument("--save-picks", action="store_true", help="write picks CSVs to workdir")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="log training progress")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    if args.n_tomograms is None:
        args.n_tomograms = 3 if args.quick else 5
    if args.n_tomograms < 2:
        raise SystemExit("--n-tomograms: need at least 2 (1 training + held-out)")
    shape = parse_size(args.shape or "64x256x256")
    train_shape = parse_size(args.train_shape or ("64x384x384" if args.quick else "64x512x512"))
    if args.quick:
        args.iterations = args.iterations or 60
    defaults = train_localizer.__kwdefaults__
    args.epochs = args.epochs or defaults["epochs"]
    args.iterations = args.iterations or defaults["iterations_per_epoch"]
    rows_wanted = [r.strip() for r in (args.rows or ",".join(QUICK_ROWS if args.quick else ROWS))
                   .split(",") if r.strip()]
    bad = set(rows_wanted) - set(ROWS)
    if bad:
        raise SystemExit(f"--rows: unknown {sorted(bad)}; use {','.join(ROWS)}")
    counts = [int(c) for c in args.label_counts.split(",") if c.strip()]
    args.train_seeds = [int(c) for c in args.train_seeds.split(",") if c.strip()]
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    print(f"machine: {machine_line()}; torch {torch.__version__}, {args.threads} thread(s)")
    diameter = particle_diameter_vox(args.voxel_size)
    radius = diameter / 2
    train = simulated(0, train_shape, args.voxel_size, args.seed, args.workdir)
    tests = [simulated(i, shape, args.voxel_size, args.seed, args.workdir)
             for i in range(1, args.n_tomograms)]
    n_ribo = int((train.truth["species"] == TARGET).sum())
    held = pd.concat([v.truth for v in tests])["species"].value_counts().to_dict()
    print(f"data: preset {PRESET}, {args.voxel_size:g} Å/voxel, training tomogram "
          f"{'x'.join(map(str, train_shape))} ({n_ribo} ribosomes), {len(tests)} held-out "
          f"{'x'.join(map(str, shape))} ({held}); ribosome diameter {diameter:.1f} voxels, "
          f"matching radius {radius:.1f}; labels jittered ±{args.jitter:g} voxel")
    print(f"training: {args.epochs} epochs × {args.iterations} iterations, seed(s) "
          f"{args.train_seeds}"
          + (f", extra {args.train_kwargs}" if args.train_kwargs else ""), flush=True)

    rows: list[dict] = []

    def report(new: list[dict]) -> None:
        rows.extend(new)
        for r in new:
            print(f"  {r['setting']:<52} labels {r['labels']:>3}  thr {r['threshold']:.3g}  "
                  f"P {r['precision']:.3f}  R {r['recall']:.3f}  F1 {r['f1']:.3f}  "
                  f"AP {r['ap']:.3f}" + ("" if r["seconds"] is None else
                                          f"  (train {r['seconds']:.0f} s)"), flush=True)

    if "dog" in rows_wanted:
        report(dog_rows(tests, diameter, radius, args.threads))
    done: dict[int, list[dict]] = {}
    if "full" in rows_wanted:
        done[args.labels] = model_rows("full model", args.labels, train, tests, radius, args, {})
        report(done[args.labels])
    if "no-contrastive" in rows_wanted:
        report(model_rows("no contrastive", args.labels, train, tests, radius, args,
                          {"contrastive": False}))
    if "no-pu" in rows_wanted:
        report(model_rows("no PU", args.labels, train, tests, radius, args, {"pu": False}))
    if "labels" in rows_wanted:
        for n in counts:
            if n > n_ribo:
                print(f"  skipping {n} labels: the training tomogram has {n_ribo} ribosomes")
                continue
            if n not in done:
                done[n] = model_rows("full model", n, train, tests, radius, args, {})
                report(done[n])
            elif n != args.labels or "full" not in rows_wanted:
                report(done[n])

    # the ablations, then the whole label series in order (the ablation label count again)
    series = sorted((r for r in rows if r["setting"].startswith("full model")),
                    key=lambda r: (r["labels"], r["kind"]))
    ordered = [r for r in rows if not (r["setting"].startswith("full model") and
                                       r["labels"] != args.labels)]
    if "labels" in rows_wanted:
        ordered += series
    if ordered:
        print()
        print(_fmt(ordered))
    floor = next((r["f1"] for r in rows if r["kind"] == "oracle" and r["setting"].startswith(
        "DoG")), None)
    if floor is not None:
        print(f"\ntuned-DoG floor F1 {floor:.3f} (an upper bound for DoG: threshold chosen on "
              f"the truth)")
        for r in ordered:
            if r["kind"] == "auto":
                print(f"  {r['setting']} ({r['labels']} labels): F1 {r['f1']:.3f}, "
                      f"{r['f1'] - floor:+.3f} over the floor")
    shapes = shape_tables(rows_wanted, args)
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"crowded": ordered, **shapes}, indent=1, default=float))


def shape_tables(rows_wanted: list[str], args: argparse.Namespace) -> dict[str, list[dict]]:
    """The membrane-spike and filament tables (:mod:`benchmarks.accuracy_shapes`)."""
    from benchmarks.accuracy_shapes import (
        FILAMENT_COLUMNS,
        LINK_VOX,
        MEMBRANE_COLUMNS,
        filament_rows,
        membrane_rows,
    )
    from benchmarks.accuracy_shapes import (
        _fmt as fmt_shapes,
    )

    common = {"seed": args.seed, "n_test": 2 if args.quick else 3,
              "iterations": 60 if args.quick else None, "train_seed": args.train_seeds[0],
              "workdir": args.workdir.parent / "accuracy_shapes"}
    out: dict[str, list[dict]] = {}
    if "membrane" in rows_wanted:
        print("\nmembrane: attached spikes (the target) among free ones of the same shape")
        out["membrane"] = membrane_rows(threads=args.threads, **common)
        print(fmt_shapes(out["membrane"], MEMBRANE_COLUMNS), flush=True)
    if "filament" in rows_wanted:
        print("\nfilament: microtubule-like tubes traced into fibres")
        out["filament"] = filament_rows(links=(LINK_VOX,), **common)
        print(fmt_shapes(out["filament"], FILAMENT_COLUMNS), flush=True)
    return out


if __name__ == "__main__":
    main()
