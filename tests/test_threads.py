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
