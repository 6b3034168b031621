"""Provenance records: config, seed, package versions, git commit; the `provenance` command."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from milopyp.cli import main as cli_main
from milopyp.errors import MilopypError
from milopyp.provenance import PACKAGES, collect_provenance, git_state, package_versions

REPO = Path(__file__).resolve().parents[1]


def test_record_holds_config_seed_versions_and_time():
    config = {"tomograms": "data/*.mrc", "seed": 7, "explore": {"epochs": 3}}
    now = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    record = collect_provenance(config, now=now, repo_dir=REPO)
    assert record["seed"] == 7
    assert record["config"] == config
    assert record["created"] == "2025-01-02T03:04:05+00:00"
    import numpy

    assert record["packages"]["numpy"] == numpy.__version__
    assert record["packages"]["milopyp"] is not None
    assert record["host"]["hostname"]
    json.dumps(record)  # JSON-ready as it is


def test_missing_package_is_none_and_alternatives_are_tried():
    versions = package_versions([("no-such-dist-xyz",), ("no-such-dist-abc", "numpy")])
    assert versions["no-such-dist-xyz"] is None
    import numpy

    assert versions["no-such-dist-abc"] == numpy.__version__


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_commit_of_a_checkout_and_dirty_flag(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    (repo / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    state = git_state(repo)
    assert state == {"commit": head, "dirty": False, "repo": str(repo.resolve())}
    (repo / "untracked.csv").write_text("results do not make a checkout dirty\n")
    assert git_state(repo)["dirty"] is False
    (repo / "a.txt").write_text("two\n")
    assert git_state(repo)["dirty"] is True


def test_not_a_checkout_gives_none(tmp_path):
    assert git_state(tmp_path) is None
    assert collect_provenance({"seed": 1}, repo_dir=tmp_path)["git"] is None


def test_command_writes_json_from_config_json(tmp_path):
    out = tmp_path / "results" / "provenance.json"
    config = {"tomograms": "x/*.mrc", "seed": 11}
    code = cli_main(["provenance", "--config-json", json.dumps(config), "-o", str(out),
                     "--repo", str(tmp_path), "--extra", "snakefile=/a/Snakefile"])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["seed"] == 11 and record["config"] == config
    assert record["git"] is None
    assert record["extra"] == {"snakefile": "/a/Snakefile"}
    assert not [p for p in out.parent.iterdir() if p.name != "provenance.json"]  # no temp left


def test_command_reads_and_completes_a_configfile(tmp_path):
    configfile = tmp_path / "c.yaml"
    configfile.write_text("tomograms: 'data/*.mrc'\nseed: 4\n")
    out = tmp_path / "provenance.json"
    assert cli_main(["provenance", "--configfile", str(configfile), "-o", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["seed"] == 4
    assert record["config"]["explore"]["batch_size"] == 256  # defaults filled in
    assert record["config"]["explore"]["epochs"] is None  # chosen by device when training
    assert record["geometry"] is None and record["explore"] is None


def test_command_records_the_geometry_and_the_exploration_settings(tmp_path):
    from milopyp.io.geometry import write_geometry

    write_geometry(tmp_path / "t01.json", {
        "tomogram": "t01", "sign": -1, "bin": 2, "offset_x_vox": 1.5, "offset_y_vox": 0.0,
        "contrast": "same", "verdict": "detected", "margin": 0.4, "scores": {"+1": 0.2, "-1": 0.6},
        "warnings": [], "per_angle": [{"angle_deg": 54.0}],
    })
    (tmp_path / "settings.json").write_text(json.dumps(
        {"device": "cpu", "epochs": 15, "width": 16, "lr": 0.2,
         "source": {"epochs": "cpu default", "width": "set", "lr": "cpu default"}}))
    out = tmp_path / "provenance.json"
    assert cli_main(["provenance", "--config-json", '{"seed": 1}', "--geometry",
                     str(tmp_path / "t01.json"), "--explore-settings",
                     str(tmp_path / "settings.json"), "-o", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["geometry"]["t01"]["sign"] == -1 and record["geometry"]["t01"]["bin"] == 2
    assert "per_angle" not in record["geometry"]["t01"]  # the details stay in geometry/*.json
    assert record["explore"]["source"]["epochs"] == "cpu default"


@pytest.mark.parametrize(
    "text, fragment",
    [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object")],
)
def test_bad_config_json_is_a_one_line_error(tmp_path, capsys, text, fragment):
    out = tmp_path / "p.json"
    assert cli_main(["provenance", "--config-json", text, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_parse_extra_rejects_missing_equals():
    from milopyp.provenance import parse_extra

    with pytest.raises(MilopypError, match="KEY=VALUE"):
        parse_extra(["novalue"])


def test_command_line_entry_point(tmp_path):
    out = tmp_path / "p.json"
    result = subprocess.run(
        [sys.executable, "-m", "milopyp", "provenance", "--config-json", '{"seed": 3}', "-o",
         str(out)],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["seed"] == 3


def _dist_name(requirement: str) -> str:
    import re

    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_conda_env_and_provenance_cover_every_dependency_of_pyproject():
    """envs/milopyp.yaml (for --software-deployment-method conda) lists every runtime
    dependency of pyproject.toml, with the same torch pin; provenance records them all."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = {_dist_name(d): d for d in project["dependencies"]}
    env = yaml.safe_load((REPO / "envs" / "milopyp.yaml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    in_env = {_dist_name(d) for d in conda + pip}
    # Snakemake itself runs outside the job environment (it starts the jobs).
    missing = sorted(set(deps) - in_env - {"snakemake"})
    assert not missing, f"envs/milopyp.yaml lacks {missing}"
    torch_pin = deps["torch"].replace(" ", "")
    assert torch_pin in [d.replace(" ", "") for d in pip + conda], (torch_pin, pip)
    python = next(d for d in conda if _dist_name(d) == "python")
    minimum = project["requires-python"].removeprefix(">=")
    major_minor = tuple(int(x) for x in python.split("=")[-1].split(".")[:2])
    assert major_minor >= tuple(int(x) for x in minimum.split(".")[:2])
    recorded = {name for names in PACKAGES for name in names}
    assert set(deps) <= recorded, f"provenance does not record {sorted(set(deps) - recorded)}"
