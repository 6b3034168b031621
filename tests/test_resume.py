"""Campaign resumability: SIGKILL mid-run then resume; adding tomograms reruns only their jobs.

Runs the real workflow (profiles/local, --cores 2) on tiny simulated tomograms. Slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from workflow_helpers import BIN, REPO, simulate_campaign_data
from workflow_helpers import workflow_env as env

PER_TOMOGRAM_RULES = {"preprocess", "candidates", "patches", "embed"}


def snakemake_args(workdir: Path, *extra) -> list:
    return [BIN / "snakemake", "--snakefile", REPO / "Snakefile",
            "--profile", REPO / "profiles" / "local", "--cores", "2",
            "--configfile", workdir / "config.yaml", "--directory", workdir, *extra]


def snakemake(workdir: Path, *extra, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(snakemake_args(workdir, *extra), cwd=workdir, env=env(),
                            capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(map(str, extra))} failed "
                             f"({result.returncode}):\n{result.stderr[-6000:]}")
    return result


def job_stats(output: str) -> dict[str, int]:
    """The "Job stats" table Snakemake prints before it runs (or dry-runs) anything."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    stats = {}
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        stats[parts[0]] = int(parts[1])
    return stats


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return simulate_campaign_data(tmp_path_factory.mktemp("sim") / "data", 4)


def campaign(work: Path, dataset: Path, names: list[str], **explore) -> Path:
    """A campaign folder whose data/tomograms/ links the tomograms ``names`` only."""
    (work / "data" / "tomograms").mkdir(parents=True)
    link_tomograms(work, dataset, names)
    (work / "data" / "tiltseries").symlink_to(dataset / "tiltseries")
    (work / "data" / "truth").symlink_to(dataset / "truth")
    config = {
        "tomograms": "data/tomograms/*.mrc",
        "tiltseries": "data/tiltseries/{tomogram}.st",
        "truth": "data/truth/{tomogram}.csv",
        "particle_diameter": 260,
        "seed": 3,
        "explore": {"train_tomograms": 1, "epochs": 2, "batch_size": 16, "width": 8,
                    "k": 8, "classes": 3, "umap_neighbors": 10, **explore},
        "evaluation": {"species": "ribosome"},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return work


def link_tomograms(work: Path, dataset: Path, names: list[str]) -> None:
    for name in names:
        (work / "data" / "tomograms" / f"{name}.mrc").symlink_to(
            dataset / "tomograms" / f"{name}.mrc")


def assert_outputs_intact(results: Path) -> None:
    """Every finished-looking file under ``results`` opens and parses."""
    checked = 0
    for path in sorted(results.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue  # hidden names are atomic-write temporaries, never final outputs
        suffix = path.suffix
        if suffix == ".csv":
            pd.read_csv(path)
        elif suffix == ".tsv":
            pd.read_csv(path, sep="\t")
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                for key in f.files:
                    f[key]
        elif suffix == ".mrc":
            with mrcfile.open(path, permissive=False) as m:
                assert np.isfinite(m.data).all(), path
        elif suffix == ".json":
            json.loads(path.read_text())
        elif suffix in (".pt", ".ckpt"):
            torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        elif suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>"), path
        else:
            continue
        checked += 1
    assert checked > 10, f"only {checked} files checked under {results}"


def mtimes(paths) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


def wait_for(predicate, proc: subprocess.Popen, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"no {what} after {timeout_s} s")
        time.sleep(0.1)


@pytest.mark.slow
def test_sigkill_during_training_then_resume_redoes_only_unfinished_jobs(tmp_path, dataset):
    # training on both tomograms: it starts only once both patch files exist (with one, the
    # scheduler could start it before tomo_001's patches, and the kill then caught 3 of 4)
    work = campaign(tmp_path, dataset, ["tomo_000", "tomo_001"], epochs=10, train_tomograms=2)
    results = work / "results"
    checkpoint = results / "explore" / "model.pt.ckpt"
    with open(work / "first.log", "w") as log:
        proc = subprocess.Popen(snakemake_args(work), cwd=work, env=env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Kill once training has written a checkpoint: Snakemake, its job shell and the
        # trainer are one process group, so this is `kill -9` of the whole campaign.
        wait_for(checkpoint.exists, proc, 600, "training checkpoint")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (results / "explore" / "model.pt").exists()
    finished = mtimes([*results.glob("candidates/*.csv"), *results.glob("patches/*.npz")])
    assert len(finished) == 4

    locked = snakemake(work, check=False)
    if locked.returncode != 0:  # a killed Snakemake leaves its lock behind
        assert "unlock" in locked.stderr, locked.stderr[-3000:]
        snakemake(work, "--unlock")
    resumed = snakemake(work)  # the profile sets rerun-incomplete

    stats = job_stats(resumed.stderr + resumed.stdout)
    assert stats.get("train_explore") == 1, stats
    assert not {"preprocess", "candidates", "patches"} & set(stats), stats
    assert mtimes(finished) == finished, "finished per-tomogram outputs were redone"

    train_log = (results / "logs" / "train_explore.log").read_text()
    assert "resum" in train_log, train_log[-2000:]
    assert "epoch 1/10 " not in train_log  # it continued, it did not start over
    model = torch.load(results / "explore" / "model.pt", map_location="cpu", weights_only=True)
    assert [h["epoch"] for h in model["history"]] == list(range(1, 11))

    assert_outputs_intact(results)
    points = pd.read_csv(results / "explore" / "points.csv")
    assert set(points["tomogram"]) == {"tomo_000", "tomo_001"}
    assert json.loads((results / "provenance.json").read_text())["seed"] == 3


@pytest.mark.slow
def test_adding_tomograms_runs_only_their_jobs_and_reuses_the_model(tmp_path, dataset):
    work = campaign(tmp_path, dataset, ["tomo_000", "tomo_001"])
    results = work / "results"
    snakemake(work)
    # provenance.json is rewritten: it records each tomogram's tilt-series geometry
    kept = mtimes([results / "explore" / "model.pt",
                   *results.glob("candidates/*.csv"), *results.glob("patches/*.npz"),
                   *results.glob("embeddings/*.npz"), *results.glob("geometry/*.json")])
    assert len(kept) == 1 + 4 * 2

    link_tomograms(work, dataset, ["tomo_002", "tomo_003"])
    dry = snakemake(work, "--dry-run")
    stats = job_stats(dry.stdout + dry.stderr)
    assert stats == {"preprocess": 2, "candidates": 2, "check_geometry": 2, "patches": 2,
                     "embed": 2, "cluster": 1, "evaluate_candidates": 1, "provenance": 1,
                     "all": 1}, stats
    planned = dry.stdout + dry.stderr
    assert "wildcards: tomogram=tomo_002" in planned
    assert "wildcards: tomogram=tomo_000" not in planned

    snakemake(work)
    assert mtimes(kept) == kept, "outputs of the first tomograms or the model were redone"
    points = pd.read_csv(results / "explore" / "points.csv")
    assert set(points["tomogram"]) == {f"tomo_00{i}" for i in range(4)}
    assert_outputs_intact(results)
