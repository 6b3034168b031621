"""OpenMP settings of the commands: idle threads sleep (PASSIVE) unless the user says otherwise."""

from __future__ import annotations

import os

from milopyp import cli


def test_openmp_passive_unless_the_user_sets_a_policy():
    env: dict[str, str] = {}
    assert cli.openmp_defaults(env) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert cli.openmp_defaults(env) == {} and env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_every_command_runs_with_passive_threads(monkeypatch, tmp_path):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    # a command that stops at once (nothing to write): the setting is made before it runs
    assert cli.main(["export", "--picks", "p.csv", "--tomograms", "t.mrc"]) == 2
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_threads_option_overrides_what_the_scheduler_set(monkeypatch):
    """Snakemake sets OMP_NUM_THREADS to min(rule threads, --cores); `milopyp --threads N`
    replaces it before torch loads, so the computation's thread count is the config's."""
    import subprocess
    import sys

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cli.main(["--threads", "2", "export", "--picks", "p.csv", "--tomograms", "t.mrc"]) == 2
    assert all(os.environ[name] == "2" for name in cli.THREAD_VARIABLES)
    code = "from milopyp import cli; cli.fix_threads(2); import torch; print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
    assert out == [str(min(2, os.cpu_count() or 1))]  # torch takes at most the machine's cores


def test_threads_must_be_positive(capsys):
    assert cli.main(["--threads", "0", "export", "--picks", "p.csv"]) == 2
    assert "--threads: expected a positive number, got 0" in capsys.readouterr().err
