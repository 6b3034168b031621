"""The workflow through a real SLURM scheduler with profiles/slurm.

A single-node SLURM on localhost (slurmctld + slurmd + munge, partitions `cpu` and `gpu`, one
fake GPU) is installed and started by scripts/slurm/start-slurm.sh when it is not already
running; that needs root (apt-get, /etc/slurm). Without root and without a running SLURM the
tests skip, unless MILOPYP_REQUIRE_SLURM=1 (as `make test` sets), which makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import BIN, REPO, simulate_campaign_data
from workflow_helpers import workflow_env as env

SCRIPTS = REPO / "scripts" / "slurm"


def slurm_is_up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False)
    return ping.returncode == 0 and "UP" in ping.stdout


@pytest.fixture(scope="module")
def slurm():
    """A running SLURM; started (and stopped afterwards) here when it was not running."""
    if slurm_is_up():
        yield
        return
    if os.geteuid() != 0:
        message = ("no running SLURM and not root: run `sudo scripts/slurm/start-slurm.sh` "
                   "to enable the SLURM tests")
        if os.environ.get("MILOPYP_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    start = subprocess.run(["bash", SCRIPTS / "start-slurm.sh"], capture_output=True, text=True,
                           timeout=900, check=False)
    if start.returncode != 0 or not slurm_is_up():
        pytest.fail(f"scripts/slurm/start-slurm.sh failed ({start.returncode}):\n"
                    f"{start.stderr[-4000:]}")
    yield
    subprocess.run(["bash", SCRIPTS / "stop-slurm.sh"], capture_output=True, check=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return simulate_campaign_data(tmp_path_factory.mktemp("sim") / "data", 2)


def slurm_jobs(workdir: Path) -> pd.DataFrame:
    """SLURM's record of the jobs run in ``workdir`` (kept 10 min after they end, MinJobAge)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-O",
         "JobID:|,Partition:|,Comment:|,State:|,WorkDir:|,tres-per-job:|,NumCPUs:|,MinMemory:"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    jobs = pd.DataFrame(
        [[c.strip() for c in row[:8]] for row in rows],
        columns=["id", "partition", "comment", "state", "workdir", "tres", "cpus", "mem"],
    )
    jobs["id"] = jobs["id"].astype(int)
    return jobs[jobs["workdir"] == str(workdir)]


def campaign(tmp_path: Path, dataset: Path, epochs: int = 2) -> Path:
    work = tmp_path.resolve()
    (work / "data").symlink_to(dataset)
    (work / "config.yaml").write_text(yaml.safe_dump({
        "tomograms": "data/tomograms/*.mrc",
        "tiltseries": "data/tiltseries/{tomogram}.st",
        "truth": "data/truth/{tomogram}.csv",
        "particle_diameter": 260,
        "seed": 3,
        "explore": {"train_tomograms": 1, "epochs": epochs, "batch_size": 16, "width": 8,
                    "k": 8, "classes": 3, "umap_neighbors": 10},
        "evaluation": {"species": "ribosome"},
    }))
    return work


def snakemake_slurm(work: Path, *extra) -> list:
    cores = str(min(os.cpu_count() or 1, 4))  # the test node's CPUs: a job cannot ask more
    return [BIN / "snakemake", "--snakefile", REPO / "Snakefile",
            "--profile", REPO / "profiles" / "slurm", "--configfile", work / "config.yaml",
            "--directory", work,
            # test overrides: the localhost cluster has no accounting daemon (no sacct) and no
            # accounts; poll fast; keep every SLURM log to inspect; fit the node's CPUs.
            "--slurm-status-command", "squeue", "--slurm-no-account",
            "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs",
            "--cores", cores, "--latency-wait", "10", *extra]


@pytest.mark.slow
def test_workflow_runs_through_slurm_with_the_slurm_profile(slurm, tmp_path, dataset):
    work = campaign(tmp_path, dataset)
    result = subprocess.run(snakemake_slurm(work, "--retries", "0"), cwd=work, env=env(),
                            capture_output=True, text=True, timeout=1500, check=False)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-8000:]
    assert "has been submitted with SLURM jobid" in log

    jobs = slurm_jobs(work)
    assert len(jobs) > 0, "no SLURM job ran in the campaign folder"
    assert (jobs["state"] == "COMPLETED").all(), jobs.to_string()
    by_rule = jobs.set_index("comment")
    # the training rule went to the GPU partition and asked for a GPU
    train = by_rule.loc["rule_train_explore"]
    assert train["partition"] == "gpu" and "gpu:1" in train["tres"], jobs.to_string()
    # the per-tomogram chain of both tomograms is one grouped SLURM job, on the CPU partition
    groups = jobs[jobs["comment"].str.contains("per_tomogram")]
    assert len(groups) == 1 and (groups["partition"] == "cpu").all(), jobs.to_string()
    assert (jobs["comment"].str.contains("embed")).sum() == 1, jobs.to_string()
    # fewer SLURM jobs than Snakemake jobs: 2 x (preprocess, candidates, patches, embed),
    # train_explore, cluster, evaluate_candidates (provenance runs on the submit host)
    assert len(jobs) <= 5, jobs.to_string()
    slurm_logs = list((work / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert len(slurm_logs) == len(jobs)

    results = work / "results"
    points = pd.read_csv(results / "explore" / "points.csv")
    assert set(points["tomogram"]) == {"tomo_000", "tomo_001"}
    for name in ("tomo_000", "tomo_001"):
        with np.load(results / "embeddings" / f"{name}.npz") as f:
            assert f["embeddings"].shape[1] == 128
        assert (results / "benchmarks" / "preprocess" / f"{name}.tsv").exists()
    assert (results / "provenance.json").exists()
    assert (results / "evaluation" / "candidates.csv").exists()

    again = subprocess.run(
        [BIN / "snakemake", "--snakefile", REPO / "Snakefile", "--profile",
         REPO / "profiles" / "slurm", "--configfile", work / "config.yaml", "--directory", work,
         "--slurm-status-command", "squeue", "--slurm-no-account", "--dry-run"],
        cwd=work, env=env(), capture_output=True, text=True, check=False)
    assert "Nothing to be done" in again.stdout + again.stderr


def trainer_pid(work: Path) -> int | None:
    """Process id of the `milopyp train-explore` that a SLURM job runs in ``work``."""
    import psutil

    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = proc.info["cmdline"] or []
        if "train-explore" in cmdline and proc.info["cwd"] == str(work):
            return proc.pid
    return None


@pytest.mark.slow
def test_killed_slurm_job_is_resubmitted_with_more_memory_and_training_resumes(
    slurm, tmp_path, dataset
):
    work = campaign(tmp_path, dataset, epochs=10)
    checkpoint = work / "results" / "explore" / "model.pt.ckpt"
    with open(work / "snakemake.log", "w") as log:
        proc = subprocess.Popen(snakemake_slurm(work, "--retries", "1"), cwd=work, env=env(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not checkpoint.exists():
            assert proc.poll() is None, (work / "snakemake.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "training never wrote a checkpoint"
            time.sleep(0.2)
        pid = trainer_pid(work)
        assert pid is not None, "no train-explore process found while its checkpoint grows"
        os.kill(pid, signal.SIGKILL)  # kill -9 of the job's work, mid-training
        rc = proc.wait(timeout=1500)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = (work / "snakemake.log").read_text()
    assert rc == 0, log[-8000:]

    train = slurm_jobs(work).query("comment == 'rule_train_explore'").sort_values("id")
    assert list(train["state"]) == ["FAILED", "COMPLETED"], train.to_string()
    first_mb, second_mb = (int(m.rstrip("M")) for m in train["mem"])
    assert second_mb >= 1.9 * first_mb  # the retry asked for about twice the memory
    train_log = (work / "results" / "logs" / "train_explore.log").read_text()
    assert "resum" in train_log, train_log[-2000:]
    assert (work / "results" / "explore" / "points.csv").exists()


def test_slurm_profile_is_valid_and_maps_gpu_rules(tmp_path):
    """Cheap check of the profile's content (no scheduler needed)."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.v8+.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["rerun-incomplete"] is True and profile["retries"] >= 1
    assert profile["latency-wait"] >= 30
    for rule in ("train_explore", "embed"):
        assert profile["set-resources"][rule]["slurm_partition"]
    assert {"preprocess=per_tomogram", "candidates=per_tomogram",
            "patches=per_tomogram"} <= set(profile["groups"])
    local = yaml.safe_load((REPO / "profiles" / "local" / "config.v8+.yaml").read_text())
    assert local["cores"] == "all" and "gpu=1" in local["resources"]
