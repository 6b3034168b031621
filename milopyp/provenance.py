"""Provenance of a run: config, seed, package versions, git commit, host and time.

``collect_provenance`` returns a plain dict (JSON-ready) so that a results folder can say how
it was made. It reads installed package metadata (no heavy imports: torch is not imported)
and asks ``git`` for the commit of the milopyp checkout when there is one.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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
    ("bokeh",),
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
