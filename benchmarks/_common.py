"""Shared helpers of the benchmark scripts: per-stage time and peak memory, tables.

Each stage runs in a fresh Python subprocess (:func:`run_stage`), so its peak resident set
size (``VmHWM`` from ``/proc/self/status``, else ``ru_maxrss``) belongs to that stage alone.
The child times only the stage call (imports excluded) and reports its RSS before the call
(the interpreter and imported libraries), so a table can show both.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_MARK = "@@STAGE@@"

# Child program: import "module:function", call it with JSON kwargs, print one JSON line.
_CHILD = r"""
import importlib, json, resource, sys, time

def _status_kb(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None

spec, kwargs = sys.argv[1], json.loads(sys.argv[2])
module, _, name = spec.partition(":")
fn = getattr(importlib.import_module(module), name)
base_kb = _status_kb("VmRSS")
t0 = time.perf_counter()
result = fn(**kwargs)
seconds = time.perf_counter() - t0
peak_kb = _status_kb("VmHWM")
if peak_kb is None:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("@@STAGE@@" + json.dumps({"seconds": seconds, "peak_rss_mb": peak_kb / 1024,
      "base_rss_mb": (base_kb or 0) / 1024, "result": result}))
"""


def run_stage(spec: str, timeout: float | None = None, **kwargs) -> dict:
    """Run ``module:function(**kwargs)`` in a fresh interpreter; return its measurements.

    Returns a dict with ``seconds`` (the call only), ``peak_rss_mb`` (whole process, MiB),
    ``base_rss_mb`` (RSS before the call) and ``result`` (the function's JSON-able return).
    The child's stderr (logging) is passed through; a failing child raises RuntimeError.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, spec, json.dumps(kwargs)],
        stdout=subprocess.PIPE, text=True, env=env, timeout=timeout, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"stage {spec} failed (exit {proc.returncode}): {proc.stdout[-2000:]}")
    return json.loads(lines[-1][len(_MARK):])


def peak_rss_mb() -> float:
    """Peak RSS of the current process so far (MiB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def machine_line() -> str:
    """One line naming the machine: CPU model, usable cores, memory, Python, numpy, scipy."""
    import numpy
    import scipy

    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    try:
        load = f", load {os.getloadavg()[0]:.1f}"
    except OSError:
        load = ""
    return (
        f"{model or 'unknown CPU'}, {cpu_count()} usable cores{mem}{load}; "
        f"Python {platform.python_version()}, numpy {numpy.__version__}, "
        f"scipy {scipy.__version__}"
    )


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table; ``columns`` are (key, header) pairs; floats get 2 decimals."""

    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    header = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([header, sep, *body])


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):  # -> Timer
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
