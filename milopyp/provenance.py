"""Provenance of a run: config, seed, package versions, git commit, host and time.

``collect_provenance`` returns a plain dict (JSON-ready) so that a results folder can say how
it was made. It reads installed package metadata (no heavy imports: torch is not imported)
and asks ``git`` for the commit of the milopyp checkout when there is one. :func:`run` is the
stage of ``milopyp provenance``: it reads the config and the records of other steps and
writes ``provenance.json``.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import importlib.metadata
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from milopyp.errors import MilopypError

log = logging.getLogger(__name__)

#: Distributions whose versions are recorded; alternatives (e.g. faiss-gpu) are tried in order.
PACKAGES: tuple[tuple[str, ...], ...] = (
    ("milopyp",),
    ("numpy",),
    ("scipy",),
    ("pandas",),
    ("torch",),
    ("scikit-learn",),
    ("faiss-cpu", "faiss-gpu", "faiss"),
    ("umap-learn",),
    ("numba",),
    ("mrcfile",),
    ("starfile",),
    ("matplotlib",),
    ("jsonschema",),
    ("pyyaml",),
    ("snakemake",),
    ("snakemake-executor-plugin-slurm",),
)

#: Environment variables that say where a job ran (scheduler, visible GPUs).
ENVIRONMENT_KEYS = (
    "SLURM_JOB_ID",
    "SLURM_JOB_PARTITION",
    "SLURM_CLUSTER_NAME",
    "CUDA_VISIBLE_DEVICES",
)

SCHEMA_VERSION = 1


def package_versions(packages: Iterable[tuple[str, ...]] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, keyed by its first name; None when absent."""
    versions: dict[str, str | None] = {}
    for names in packages:
        found = None
        for name in names:
            try:
                found = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        versions[names[0]] = found
    return versions


def default_repo_dir() -> Path:
    """The folder that holds the milopyp package (the repository root of a checkout)."""
    return Path(__file__).resolve().parents[1]


def git_state(repo_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """Commit and dirtiness of the git checkout at ``repo_dir``; None when it is not one.

    Returns ``{"commit": 40 hex, "dirty": bool, "repo": path}``. Tracked files only decide
    ``dirty`` (results written inside the checkout do not make it dirty). Never raises: no
    git, no repository or a broken one all give None.
    """
    repo = Path(repo_dir) if repo_dir is not None else default_repo_dir()
    if not (repo / ".git").exists():  # a folder in a clone, or a file in a worktree
        return None
    try:
        commit = _git(repo, "rev-parse", "HEAD")
        status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if len(commit) != 40:
        return None
    return {"commit": commit, "dirty": bool(status), "repo": str(repo.resolve())}


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return result.stdout.strip()


def collect_provenance(
    config: Mapping[str, Any],
    *,
    repo_dir: str | os.PathLike | None = None,
    packages: Iterable[tuple[str, ...]] = PACKAGES,
    now: _dt.datetime | None = None,
    extra: Mapping[str, Any] | None = None,
    geometry: Mapping[str, Any] | None = None,
    explore: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON-ready record of how a results folder was made.

    Keys: ``schema_version``, ``created`` (ISO 8601, UTC), ``seed`` (config["seed"] or None),
    ``config`` (as given), ``packages`` (distribution -> version or None), ``git`` (see
    ``git_state``; None outside a checkout), ``host`` (hostname, platform, python, user),
    ``environment`` (scheduler job id, partition, visible GPUs, when set), ``extra``, and what
    the jobs decided rather than the config: ``geometry`` (tomogram -> tilt-series geometry
    used, from ``milopyp check-geometry``) and ``explore`` (the exploration settings used and
    where each came from, e.g. the CPU defaults); these two are None when not given.
    """
    now = now or _dt.datetime.now(_dt.timezone.utc)
    environment = {key: os.environ[key] for key in ENVIRONMENT_KEYS if key in os.environ}
    return {
        "schema_version": SCHEMA_VERSION,
        "created": now.astimezone(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": config.get("seed"),
        "config": dict(config),
        "packages": package_versions(packages),
        "git": git_state(repo_dir),
        "host": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "executable": sys.executable,
            "user": _user(),
        },
        "environment": environment,
        "extra": dict(extra or {}),
        "geometry": None if geometry is None else dict(geometry),
        "explore": None if explore is None else dict(explore),
    }


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no USER/LOGNAME and no passwd entry (some containers)
        return None


# --------------------------------------------------------------------------- the stage

#: the parts of a geometry record that provenance.json keeps (the rest is in geometry/*.json)
GEOMETRY_KEYS = ("sign", "verdict", "margin", "scores", "bin", "offset_x_vox", "offset_y_vox",
                 "contrast", "warnings")


def parse_config_json(text: str) -> dict:
    """The config given on the command line as JSON -> dict (MilopypError if not an object)."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise MilopypError(
            f"--config-json: not valid JSON ({err.msg} at character {err.pos}); "
            "quote the whole object, e.g. --config-json '{\"seed\": 0}'"
        ) from err
    if not isinstance(config, dict):
        raise MilopypError(
            f"--config-json: expected a JSON object of settings, got {type(config).__name__}; "
            "give e.g. '{\"seed\": 0}'"
        )
    return config


def read_json_object(path: str | os.PathLike, what: str) -> dict:
    """A JSON object from ``path`` (MilopypError naming the file otherwise)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MilopypError(f"{path}: cannot read the {what} ({err}); rerun the step that "
                           "writes it") from err
    if not isinstance(data, dict):
        raise MilopypError(f"{path}: expected a JSON object of {what}")
    return data


def parse_extra(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings -> dict (MilopypError on an item without ``=`` or key)."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MilopypError(f"--extra: expected KEY=VALUE, got {item!r}")
        extra[key] = value
    return extra


def run(
    output: str | os.PathLike,
    *,
    config_json: str | None = None,
    configfile: str | os.PathLike | None = None,
    repo_dir: str | os.PathLike | None = None,
    geometry_paths: Iterable[str | os.PathLike] = (),
    explore_settings: str | os.PathLike | None = None,
    extra: Iterable[str] = (),
) -> dict[str, Any]:
    """The ``provenance`` stage: write :func:`collect_provenance` as JSON to ``output``.

    The config comes from ``config_json`` (a JSON object, as the workflow passes it) or from
    ``configfile`` (a campaign's YAML, validated and completed with defaults). Also recorded:
    the :data:`GEOMETRY_KEYS` of each geometry record (``geometry/{tomogram}.json``), the
    exploration settings (``explore/settings.json``) and ``extra`` (``KEY=VALUE`` strings).
    Returns the record.
    """
    from milopyp.config import load_config
    from milopyp.io.atomic import prepare_outputs, write_text
    from milopyp.io.geometry import read_geometry

    prepare_outputs(output)
    config = parse_config_json(config_json) if config_json is not None else load_config(configfile)
    geometry = None
    if geometry_paths:
        geometry = {}
        for path in geometry_paths:
            full = read_geometry(path)
            geometry[full.get("tomogram", Path(path).stem)] = {k: full.get(k) for k in GEOMETRY_KEYS}
    explore = None
    if explore_settings:
        explore = read_json_object(explore_settings, "exploration settings")
    record = collect_provenance(config, repo_dir=repo_dir, extra=parse_extra(extra),
                                geometry=geometry, explore=explore)
    write_text(output, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    commit = record["git"]["commit"][:12] if record["git"] else "no git checkout"
    log.info("wrote %s (seed %s, milopyp %s, %s)", output, record["seed"],
             record["packages"].get("milopyp"), commit)
    return record
