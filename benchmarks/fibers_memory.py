"""Peak memory and time of fibre tracing (:func:`milopyp.fibers.trace`) on a flood of picks.

A fibre model whose heat map is saturated picks hundreds of thousands of points per
tomogram (issue 11: ~440,000 in 160×512×512; ``trace-fibers`` was killed at 12 GB). This
script traces ``--picks`` uniformly random picks (scores 0-0.5) in a ``--shape`` volume plus
``--lines`` straight filaments (a pick every 3 voxels, jitter 0.7 voxel, scores 0.6-1.0), in
a fresh subprocess per setting, and prints time, peak RSS, fibres and filaments recovered.

    python benchmarks/fibers_memory.py                        # 500,000 picks, 160x512x512
    python benchmarks/fibers_memory.py --max-picks 0          # no cap (chunked tracing only)
    python benchmarks/fibers_memory.py --module old_fibers.py --memory-limit-gb 10
                                                              # another fibers.py (before/after)

``--memory-limit-gb`` sets the child's address-space limit, so an implementation that needs
more fails with MemoryError instead of taking the machine down.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import format_table, machine_line, run_stage


def make_picks(n_random: int, shape_zyx, n_lines: int, seed: int):
    """(xyz (N, 3), scores (N,), lines: list of (a, b) end points), x, y, z voxels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    size_xyz = np.asarray(shape_zyx[::-1], float)
    xyz = [rng.uniform(0, 1, (n_random, 3)) * (size_xyz - 1)]
    scores = [rng.uniform(0.0, 0.5, n_random)]
    lines = []
    for _ in range(n_lines):
        a = rng.uniform(0.15, 0.85, 3) * size_xyz
        u = rng.normal(size=3)
        u[2] *= 0.2  # mostly in x-y, as microtubules in a thin tomogram
        u /= np.linalg.norm(u)
        half = min(150.0, 0.4 * min(size_xyz[:2]))
        a, b = np.clip(a - half * u, 2, size_xyz - 3), np.clip(a + half * u, 2, size_xyz - 3)
        s = np.arange(0.0, np.linalg.norm(b - a), 3.0)
        p = a + s[:, None] * (b - a) / np.linalg.norm(b - a) + rng.normal(0, 0.7, (len(s), 3))
        xyz.append(p)
        scores.append(rng.uniform(0.6, 1.0, len(p)))
        lines.append((a.tolist(), b.tolist()))
    return np.concatenate(xyz), np.concatenate(scores), lines


# Run in a child process by benchmarks._common.run_stage.
def stage_trace(n_random: int, shape_zyx: list, n_lines: int, seed: int, link: float,
                max_picks: int | None, module: str | None, memory_limit_gb: float | None):
    import importlib.util
    import resource

    import numpy as np

    if module:
        spec = importlib.util.spec_from_file_location("fibers_under_test", module)
        fibers = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = fibers  # dataclasses look their module up there
        spec.loader.exec_module(fibers)
    else:
        from milopyp import fibers
    if memory_limit_gb:
        limit = int(memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    xyz, scores, lines = make_picks(n_random, shape_zyx, n_lines, seed)
    kwargs = {} if max_picks is None else {"max_picks": max_picks or None}  # 0: no cap
    try:
        result = fibers.trace(xyz, link_distance_vox=link, scores=scores, **kwargs)
    except MemoryError:
        return {"status": f"MemoryError (address space > {memory_limit_gb:g} GB)"}
    found = 0
    for a, b in lines:
        a, b = np.asarray(a), np.asarray(b)
        for f in result.fibers:
            rel = f.points - a
            u = (b - a) / np.linalg.norm(b - a)
            d = np.linalg.norm(rel - np.outer(rel @ u, u), axis=1)
            if d.max() < 3.0 and f.length_vox > 0.8 * np.linalg.norm(b - a):
                found += 1
                break
    return {"status": "ok", "fibers": len(result.fibers), "lines_found": found,
            "summary": result.summary()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--picks", type=int, default=500_000, help="random picks (500000)")
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 512, 512],
                        metavar=("Z", "Y", "X"), help="volume, voxels (160 512 512)")
    parser.add_argument("--lines", type=int, default=5, help="real filaments (5)")
    parser.add_argument("--link", type=float, default=12.0,
                        help="link distance, voxels (12, the trace-fibers default)")
    parser.add_argument("--max-picks", type=int, default=None,
                        help="trace's max_picks (default: its default; 0 = no cap)")
    parser.add_argument("--module", default=None,
                        help="path of another fibers.py to measure (e.g. the previous version)")
    parser.add_argument("--memory-limit-gb", type=float, default=None,
                        help="address-space limit of the child, GB")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(machine_line(), flush=True)
    rows = []
    for n in (0, args.picks):
        r = run_stage("benchmarks.fibers_memory:stage_trace", n_random=n, shape_zyx=args.shape,
                      n_lines=args.lines, seed=args.seed, link=args.link,
                      max_picks=args.max_picks, module=args.module,
                      memory_limit_gb=args.memory_limit_gb)
        rows.append({"picks": f"{n:,} random + {args.lines} lines", **r["result"],
                     "seconds": r["seconds"], "peak": r["peak_rss_mb"],
                     "base": r["base_rss_mb"]})
    print(f"trace: {'x'.join(map(str, args.shape))} voxels, link {args.link:g} vox, max_picks "
          f"{'default' if args.max_picks is None else args.max_picks}, module "
          f"{args.module or 'milopyp.fibers'}")
    print(format_table(rows, [("picks", "picks"), ("status", "status"), ("seconds", "s"),
                              ("peak", "peak RSS (MB)"), ("base", "RSS before (MB)"),
                              ("fibers", "fibres"), ("lines_found", "lines found")]))
    for r in rows:
        if r.get("summary"):
            print(f"  {r['picks']}: {r['summary']}")


if __name__ == "__main__":
    main()
