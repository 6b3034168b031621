"""CPU contention: localiser training steps with 2 torch threads, idle vs. beside a busy
process, with OpenMP's default wait policy and with ``OMP_WAIT_POLICY=PASSIVE``.

Every run is a fresh interpreter (OpenMP reads its settings when torch loads) that times
``--steps`` training steps of :func:`milopyp.localize.train.train_localizer` on a small
random tomogram (crop 8 x 48 x 48, 8 base channels): after a warm-up call, the time of a
call with ``1 + steps`` steps minus that of a call with 1 step (so model set-up is not
counted), divided by ``steps``. "busy" starts one
``python -c 'while True: pass'`` beside it, as another Snakemake job or user would be.

    .venv/bin/python benchmarks/contention.py [--steps 3] [--cpus 0,1]

``--cpus`` pins the training run and the busy process to these CPUs (default: the CPUs
this process may use); with 2 threads on 2 CPUs the busy process takes one of them.
Prints one table row per case (seconds per step, and the ratio to idle with the same
policy). Takes about 1-3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
import numpy as np
import torch
from milopyp.localize.train import train_localizer

torch.set_num_threads(2)
rng = np.random.default_rng(0)
tomogram = rng.normal(size=(24, 96, 96)).astype(np.float32)
labels = rng.uniform([8, 8, 4], [88, 88, 20], size=(12, 3))
times = []
for steps in (1, 1, 1 + int(sys.argv[1])):  # the first call pays one-off costs
    t0 = time.perf_counter()
    train_localizer([tomogram], [labels], particle_radius_vox=4.0, epochs=1,
                    iterations_per_epoch=steps, crop=(8, 48, 48), batch_size=2,
                    class_prior=1e-3, bin_factor=1, base_channels=8, seed=0,
                    device="cpu")
    times.append(time.perf_counter() - t0)
print("@@" + json.dumps({"per_step_s": (times[2] - times[1]) / int(sys.argv[1]),
                         "threads": torch.get_num_threads()}))
"""


def _pinned(cmd: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def run_case(policy: str | None, busy: bool, steps: int, cpus: str | None) -> dict:
    """Seconds per training step for one wait policy (None: OpenMP's default) and load."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env["OMP_NUM_THREADS"] = "2"
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    hog = None
    if busy:
        hog = subprocess.Popen(_pinned([sys.executable, "-c", "while True: pass"], cpus))
        time.sleep(0.5)
    try:
        done = subprocess.run(_pinned([sys.executable, "-c", _CHILD, str(steps)], cpus),
                              env=env, cwd=REPO, capture_output=True, text=True, check=False)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if done.returncode != 0:
        raise RuntimeError(f"training run failed:\n{done.stderr[-2000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("@@")][-1]
    return json.loads(line[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (3)")
    parser.add_argument("--cpus", default=None,
                        help="CPU list for taskset, e.g. 0,1 (default: no pinning)")
    args = parser.parse_args()
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before the runs; "
          f"2 torch threads, {args.steps} steps per case")
    print("| wait policy | load | s / step | × idle |")
    print("|---|---|---|---|")
    for policy in (None, "PASSIVE"):
        idle = None
        for busy in (False, True):
            r = run_case(policy, busy, args.steps, args.cpus)
            idle = idle or r["per_step_s"]
            print(f"| {policy or 'default'} | {'busy' if busy else 'idle'} | "
                  f"{r['per_step_s']:.3f} | {r['per_step_s'] / idle:.1f} |", flush=True)


if __name__ == "__main__":
    main()
