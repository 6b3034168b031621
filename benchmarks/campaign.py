"""Campaign scale: the whole workflow on 10 and 50 small simulated tomograms (--cores 2).

Simulates the largest campaign once (``milopyp simulate``), then for each size runs
``snakemake --profile profiles/local --cores 2`` in its own folder whose data/tomograms/ links
the first N tomograms, and prints per size:

- wall time of the run and of a dry run (DAG building and job selection, no jobs);
- time per tomogram of the per-tomogram rules (preprocess, candidates, patches, embed: the
  sum of their benchmark seconds, averaged over tomograms) and of the campaign-wide rules;
- scheduler overhead: wall time during which no job was running (Snakemake start-up, DAG,
  scheduling, bookkeeping between jobs), from the job intervals of the benchmark files
  (end = the file's mtime, start = end - seconds);
- how each grows from the smallest to the largest campaign.

    .venv/bin/python benchmarks/campaign.py                  # 10 and 50 tomograms
    .venv/bin/python benchmarks/campaign.py --sizes 4 8      # quicker
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import yaml

from benchmarks._common import REPO, format_table, machine_line

BIN = Path(sys.executable).parent
PER_TOMOGRAM = ("preprocess", "candidates", "patches", "embed")
CAMPAIGN_WIDE = ("train_explore", "cluster", "evaluate_candidates", "provenance")


def env() -> dict[str, str]:
    e = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")
    e.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
    return e


def simulate(data: Path, n: int, shape: list[int], seed: int) -> None:
    marker = data / f".complete-{n}-{'x'.join(map(str, shape))}-{seed}"
    if marker.exists():
        return
    shutil.rmtree(data, ignore_errors=True)
    subprocess.run([BIN / "milopyp", "simulate", "-o", data, "--n-tomograms", str(n),
                    "--shape", *map(str, shape), "--voxel-size", "12", "--preset", "demo",
                    "--seed", str(seed)], env=env(), check=True)
    marker.touch()


def make_campaign(work: Path, data: Path, n: int) -> None:
    shutil.rmtree(work, ignore_errors=True)
    (work / "data" / "tomograms").mkdir(parents=True)
    for path in sorted((data / "tomograms").glob("*.mrc"))[:n]:
        (work / "data" / "tomograms" / path.name).symlink_to(path)
    (work / "data" / "tiltseries").symlink_to(data / "tiltseries")
    (work / "data" / "truth").symlink_to(data / "truth")
    config = {
        "tomograms": "data/tomograms/*.mrc",
        "tiltseries": "data/tiltseries/{tomogram}.st",
        "truth": "data/truth/{tomogram}.csv",
        "particle_diameter": 260,
        "seed": 0,
        "explore": {"train_tomograms": 2, "epochs": 2, "batch_size": 32, "width": 8,
                    "k": 16, "classes": 4, "umap_neighbors": 15},
        "evaluation": {"species": "ribosome"},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(work: Path, cores: int, *extra: str) -> float:
    args = [BIN / "snakemake", "--snakefile", REPO / "Snakefile", "--profile",
            REPO / "profiles" / "local", "--cores", str(cores), "--configfile",
            work / "config.yaml", "--directory", work, "--quiet", "all", *extra]
    t0 = time.perf_counter()
    result = subprocess.run(args, cwd=work, env=env(), capture_output=True, text=True,
                            check=False)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(extra)} failed in {work}:\n"
                           f"{result.stderr[-4000:]}")
    return seconds


def job_table(results: Path) -> pd.DataFrame:
    """One row per job: rule, tomogram (or ""), seconds, start, end (epoch seconds)."""
    rows = []
    for path in (results / "benchmarks").rglob("*.tsv"):
        rel = path.relative_to(results / "benchmarks")
        rule, tomogram = (rel.parts[0], path.stem) if len(rel.parts) == 2 else (path.stem, "")
        seconds = float(pd.read_csv(path, sep="\t")["s"].iloc[-1])
        end = path.stat().st_mtime
        rows.append({"rule": rule, "tomogram": tomogram, "seconds": seconds,
                     "start": end - seconds, "end": end})
    return pd.DataFrame(rows)


def busy_seconds(jobs: pd.DataFrame) -> float:
    """Length of the union of the job intervals (time with at least one job running)."""
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(zip(jobs["start"], jobs["end"])):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def measure(work: Path, data: Path, n: int, cores: int) -> dict:
    make_campaign(work, data, n)
    dry = snakemake(work, cores, "--dry-run")
    t_start = time.time()
    wall = snakemake(work, cores)
    jobs = job_table(work / "results")
    jobs = jobs[jobs["end"] >= t_start - 1]  # this run's jobs only
    per_tomo = jobs[jobs["rule"].isin(PER_TOMOGRAM)]
    wide = jobs[jobs["rule"].isin(CAMPAIGN_WIDE)]
    idle = wall - busy_seconds(jobs)
    row = {
        "n": n,
        "jobs": len(jobs),
        "wall_s": wall,
        "dry_run_s": dry,
        "per_tomo_s": per_tomo["seconds"].sum() / n,
        "wide_s": wide["seconds"].sum(),
        "job_s": jobs["seconds"].sum(),
        "overhead_s": idle,
        "overhead_per_job_s": idle / max(1, len(jobs)),
    }
    for rule in PER_TOMOGRAM:
        row[rule] = per_tomo.loc[per_tomo["rule"] == rule, "seconds"].mean()
    for rule in ("train_explore", "cluster"):
        row[rule] = wide.loc[wide["rule"] == rule, "seconds"].sum()
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50],
                        help="campaign sizes in tomograms (10 50)")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (2)")
    parser.add_argument("--shape", type=int, nargs=3, default=[40, 128, 160],
                        metavar=("Z", "Y", "X"), help="tomogram shape in voxels (40 128 160)")
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "campaign",
                        help="where data and campaigns go (benchmarks/out/campaign)")
    args = parser.parse_args(argv)
    sizes = sorted(set(args.sizes))
    data = args.workdir / "data"
    print(f"machine: {machine_line()}")
    print(f"simulating {max(sizes)} tomograms of {'x'.join(map(str, args.shape))} voxels "
          f"into {data} ...", flush=True)
    simulate(data, max(sizes), args.shape, seed=0)

    rows = []
    for n in sizes:
        print(f"running the workflow on {n} tomograms (--cores {args.cores}) ...", flush=True)
        rows.append(measure(args.workdir / f"n{n}", data, n, args.cores))

    print()
    print(format_table(rows, [
        ("n", "tomograms"), ("jobs", "jobs"), ("wall_s", "wall s"),
        ("per_tomo_s", "per-tomogram rules s/tomogram"), ("wide_s", "campaign-wide rules s"),
        ("job_s", "sum of job s"), ("overhead_s", "no job running s"),
        ("overhead_per_job_s", "overhead s/job"), ("dry_run_s", "dry run s"),
    ]))
    print()
    print("seconds per job, by rule (mean over tomograms; campaign-wide rules: total)")
    print(format_table(rows, [("n", "tomograms"), *((r, r) for r in PER_TOMOGRAM),
                              ("train_explore", "train_explore"), ("cluster", "cluster")]))
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print()
        print(f"growth {a['n']} -> {b['n']} tomograms (x{b['n'] / a['n']:.1f}): "
              f"wall x{b['wall_s'] / a['wall_s']:.2f}, "
              f"per-tomogram time x{b['per_tomo_s'] / a['per_tomo_s']:.2f}, "
              f"overhead x{b['overhead_s'] / max(a['overhead_s'], 1e-9):.2f} "
              f"({a['overhead_per_job_s']:.2f} -> {b['overhead_per_job_s']:.2f} s/job), "
              f"dry run x{b['dry_run_s'] / a['dry_run_s']:.2f}")


if __name__ == "__main__":
    main()
