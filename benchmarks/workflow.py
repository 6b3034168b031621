"""A dataset through the whole workflow, as a user runs it, scored against its truth.

Runs ``snakemake --profile profiles/local --configfile CONFIG`` (unless ``--no-run``: score a
finished run), then prints, for every target of the config that names a ``truth_species``:

- the picks the workflow wrote (``targets/<target>/picks/<tomogram>.csv``, at the thresholds
  `milopyp localize` chose) on the held-out tomograms (no labels) and on the labelled ones
  (``targets/<target>/labels/``), precision / recall / F1, and AP of the picks' scores;
- where the labels came from, and how many of them are the target (against the truth);
- beside them the floor: every DoG peak of the same tomograms with the score threshold tuned
  on the truth (:func:`benchmarks.dataset.dog_rows`);
- when the workflow ran the exploration: per cluster its members that are the target, and
  whether a cluster has a target majority (:mod:`benchmarks.clusters`).

    .venv/bin/python benchmarks/workflow.py --config benchmarks/devset/insitu.yaml

The configs' ``truth`` is a pattern ``.../truth/{tomogram}.csv`` of ``species,x,y,z`` tables;
the match radius is half the particle diameter.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from benchmarks._common import machine_line
from benchmarks.clusters import best_union, cluster_table, target_flags
from benchmarks.dataset import Dataset, Tomogram, dog_rows, metrics_at, nearest_species
from milopyp.config import load_config
from milopyp.io.coords import read_coordinates
from milopyp.io.mrc import read_tomogram

REPO = Path(__file__).resolve().parents[1]


def truth_table(pattern: str, names: list[str], species: str | None = None) -> pd.DataFrame:
    parts = []
    for name in names:
        t = read_coordinates(pattern.format(tomogram=name), tomogram=name)
        parts.append(t if species is None else t[t["species"] == species])
    return pd.concat(parts, ignore_index=True)


def label_purity(labels: pd.DataFrame, truth: pd.DataFrame, radius: float) -> str:
    """``species: count`` of the truth particle nearest each label within ``radius``."""
    counts: dict[str, int] = {}
    for name, lab in labels.groupby("tomogram"):
        for species in nearest_species(lab[["x", "y", "z"]].to_numpy(np.float64),
                                       truth[truth["tomogram"] == name], radius, "nothing"):
            counts[species] = counts.get(species, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, required=True, help="workflow config (YAML)")
    p.add_argument("--no-run", action="store_true", help="score a finished run only")
    p.add_argument("--cores", default="all", help="snakemake --cores (all)")
    p.add_argument("--threads", type=int, default=2, help="threads of the floor's DoG (2)")
    args = p.parse_args(argv)
    config = load_config(args.config)
    if not config["truth"]:
        raise SystemExit(f"{args.config}: no `truth` pattern to score against")
    print(f"machine: {machine_line()}")
    if not args.no_run:
        t0 = time.perf_counter()
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        subprocess.run(["snakemake", "--profile", "profiles/local", "--cores", args.cores,
                        "--configfile", str(args.config)], cwd=REPO, env=env, check=True)
        print(f"workflow: {time.perf_counter() - t0:.0f} s")
    results = REPO / config["results"]
    voxel_a = None
    radius = None
    for target, settings in (config.get("targets") or {}).items():
        species = settings.get("truth_species")
        if not species:
            continue
        folder = results / "targets" / target
        picks = pd.concat([pd.read_csv(f) for f in sorted((folder / "picks").glob("*.csv"))],
                          ignore_index=True)
        names = sorted(picks["tomogram"].unique())
        labels = pd.concat([pd.read_csv(f) for f in sorted((folder / "labels").glob("*.csv"))],
                           ignore_index=True)
        labelled = sorted(labels["tomogram"].unique())
        held = [n for n in names if n not in labelled]
        truth_all = truth_table(config["truth"], names)
        truth = truth_all[truth_all["species"] == species][["tomogram", "x", "y", "z"]]
        tomograms = {}
        tomogram_files = sorted(Path(REPO).glob(config["tomograms"])) if config["tomograms"] \
            else []
        for f in tomogram_files:
            if f.name.split(".")[0] in names:
                data, voxel_a = read_tomogram(f)
                tomograms[f.name.split(".")[0]] = data
        diameter_vox = config["particle_diameter"] / voxel_a
        radius = diameter_vox / 2
        print(f"\ntarget {target} ({species}): {len(names)} tomograms, {len(truth)} true; "
              f"labels in {labelled} ({len(labels)}: {label_purity(labels, truth_all, radius)})"
              f"; match radius {radius:.1f} voxels")
        order = [n for n in names if n in labelled][:1] + held  # floor: first labelled + held
        ds = Dataset(folder=results, diameters_a={}, tomograms=[
            Tomogram(n, tomograms[n], truth_all[truth_all["tomogram"] == n], voxel_a)
            for n in order])
        floor = dog_rows(ds, species, diameter_vox, radius, args.threads)["floor"]
        for part, part_names in (("held-out", held), ("labelled", labelled)):
            if not part_names:
                continue
            sel = picks[picks["tomogram"].isin(part_names)]
            t = truth[truth["tomogram"].isin(part_names)]
            m = metrics_at(sel, t, -np.inf, radius, part_names)
            f = floor["held" if part == "held-out" else "lab"]
            print(f"  workflow picks, {part} {part_names}: P {m['precision']:.3f} "
                  f"R {m['recall']:.3f} F1 {m['f1']:.3f} AP {m['ap']:.3f} ({m['n_picks']} "
                  f"picks, {m['n_true']} true) | floor (DoG, threshold tuned on truth) "
                  f"F1 {f['f1']:.3f}")
        points_path = results / "explore" / "points.csv"
        if points_path.exists():
            points = pd.read_csv(points_path)
            flags = target_flags(points, truth, radius)
            table = cluster_table(points, flags, len(truth))
            union_f1, chosen = best_union(table, len(truth))
            print(f"  exploration: {len(points)} candidates, recall {flags.sum() / len(truth):.3f};"
                  f" clusters with a {species} majority: "
                  f"{table.loc[table['purity'] > 0.5, 'cluster'].astype(int).tolist()}; best "
                  f"cluster F1 {table['f1'].max():.3f}; best union {chosen} F1 {union_f1:.3f}")
            print("    " + table.to_string(index=False, float_format=lambda v: f"{v:.3f}")
                  .replace("\n", "\n    "))


if __name__ == "__main__":
    main()
