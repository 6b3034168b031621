"""Shared by the workflow tests (test_workflow, test_resume, test_slurm): the environment the
`snakemake` and `milopyp` commands of this venv run in, and the small simulated campaign."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def workflow_env() -> dict[str, str]:
    """os.environ with this venv's bin first on PATH, a headless matplotlib and a shared
    numba cache (UMAP's JIT compiles once per checkout, not once per test)."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
    return env


def simulate_campaign_data(folder: Path, n_tomograms: int) -> Path:
    """``n_tomograms`` demo-preset tomograms of 40 x 128 x 160 voxels at 12 Å (seed 5), with
    tilt series and truth, in ``folder``; returns ``folder``."""
    subprocess.run([BIN / "milopyp", "simulate", "-o", folder, "--n-tomograms",
                    str(n_tomograms), "--shape", "40", "128", "160", "--voxel-size", "12",
                    "--preset", "demo", "--seed", "5"],
                   env=workflow_env(), check=True, capture_output=True)
    return folder
