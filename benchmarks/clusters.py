"""How well the exploration's clusters separate a target: per cluster, its members that are
the target, and the best cluster (and best union of clusters) as a picker.

Reads a finished exploration (``explore/points.csv``: tomogram, x, y, z, cluster, ...) and
truth tables (``species,x,y,z`` per tomogram, or with a ``tomogram`` column). A member is
the target when a truth particle of ``--species`` lies within ``--radius`` voxels (half the
diameter), matched one-to-one (:func:`milopyp.evaluate.evaluate`). Prints, per cluster, its
size, target members and purity; whether some cluster has a target majority; the F1 of the
best single cluster and of the best union of clusters (clusters added in order of purity),
each against all target particles of the tomograms, next to the candidates' recall (the
ceiling of any selection).

    .venv/bin/python benchmarks/clusters.py --points devset-results/insitu/explore/points.csv \\
        --truth '../shared/devset/insitu/truth/{tomogram}.csv' --species ribosome --radius 10.4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from milopyp.evaluate import greedy_match_by_score
from milopyp.io.coords import read_coordinates


def target_flags(points: pd.DataFrame, truth: pd.DataFrame, radius: float) -> np.ndarray:
    """Per point: matched one-to-one to a truth particle (in score order) within radius."""
    flags = np.zeros(len(points), dtype=bool)
    for name, p in points.groupby("tomogram"):
        t = truth[truth["tomogram"] == name][["x", "y", "z"]].to_numpy(np.float64)
        score = p["score"].to_numpy(np.float64) if "score" in p else np.ones(len(p))
        flags[points.index.get_indexer(p.index)] = greedy_match_by_score(
            p[["x", "y", "z"]].to_numpy(np.float64), score, t, radius)
    return flags


def cluster_table(points: pd.DataFrame, flags: np.ndarray, n_true: int) -> pd.DataFrame:
    g = pd.DataFrame({"cluster": points["cluster"].to_numpy(), "target": flags})
    t = g.groupby("cluster")["target"].agg(members="size", target="sum").reset_index()
    t["purity"] = t["target"] / t["members"]
    t["f1"] = 2 * t["target"] / (t["members"] + n_true)
    return t.sort_values("purity", ascending=False).reset_index(drop=True)


def best_union(table: pd.DataFrame, n_true: int) -> tuple[float, list[int]]:
    """Best F1 of the clusters taken in order of purity (a person ticks the purest first)."""
    members = np.cumsum(table["members"].to_numpy())
    hits = np.cumsum(table["target"].to_numpy())
    f1 = 2 * hits / (members + n_true)
    k = int(np.argmax(f1))
    return float(f1[k]), table["cluster"].iloc[: k + 1].astype(int).tolist()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", type=Path, required=True, help="explore/points.csv")
    p.add_argument("--truth", required=True, help="truth path pattern with {tomogram}")
    p.add_argument("--species", default="ribosome", help="target species (ribosome)")
    p.add_argument("--radius", type=float, required=True, help="match radius, voxels")
    args = p.parse_args(argv)
    points = pd.read_csv(args.points)
    parts = []
    for name in sorted(points["tomogram"].unique()):
        t = read_coordinates(args.truth.format(tomogram=name), tomogram=name)
        parts.append(t[t["species"] == args.species] if "species" in t else t)
    truth = pd.concat(parts, ignore_index=True)
    flags = target_flags(points, truth, args.radius)
    n_true = len(truth)
    table = cluster_table(points, flags, n_true)
    print(f"{len(points)} candidates in {points['tomogram'].nunique()} tomograms, "
          f"{table.shape[0]} clusters; {n_true} {args.species} particles, "
          f"{int(flags.sum())} of them among the candidates (recall {flags.sum() / n_true:.3f})")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    union_f1, chosen = best_union(table, n_true)
    majority = bool((table["purity"] > 0.5).any())
    print(f"cluster with a {args.species} majority: {'yes' if majority else 'no'}; best "
          f"cluster F1 {table['f1'].max():.3f}; best union of clusters {chosen} F1 "
          f"{union_f1:.3f}")
    return {"majority": majority, "best_cluster_f1": float(table["f1"].max()),
            "best_union_f1": union_f1, "recall": float(flags.sum() / n_true)}


if __name__ == "__main__":
    main()
