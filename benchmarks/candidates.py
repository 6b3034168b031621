"""Speed and peak memory of `milopyp preprocess` + `milopyp candidates` by tomogram size.

For each size (z x y x x) a tomogram is made once and saved under ``--workdir`` (reused on
later runs): simulated with ``milopyp.simulate`` (``demo`` preset) up to 48 M voxels, a
phantom above that (bright balls of the particle diameter, half-size distractor balls and
unit Gaussian noise; the simulator needs ~25x the volume in memory and minutes at
256 x 1024 x 1024). Then each stage runs its command's stage function
(``milopyp.preprocess.run``, ``milopyp.candidates.run``) in a fresh Python process, so its
peak RSS is its own, and the table gives seconds (the stage only, imports excluded), peak
RSS, candidates and the recall of the true particles (ribosomes / large balls) within half a
diameter.

    .venv/bin/python benchmarks/candidates.py            # all four sizes
    .venv/bin/python benchmarks/candidates.py --quick    # 64x256x256 and 128x512x512
    .venv/bin/python benchmarks/candidates.py --sizes 160x512x512 --threads 2
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

# Imported here so that the child processes import them before the timed call.
import milopyp.candidates
import milopyp.io.coords
import milopyp.io.mrc
import milopyp.preprocess
from benchmarks._common import REPO, Timer, format_table, machine_line, run_stage

ALL_SIZES = ("64x256x256", "128x512x512", "160x512x512", "256x1024x1024")
QUICK_SIZES = ALL_SIZES[:2]
SIMULATE_MAX_VOXELS = 48 * 2**20


def parse_size(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SystemExit(f"bad size {text!r}: expected ZxYxX, e.g. 160x512x512")
    return int(parts[0]), int(parts[1]), int(parts[2])


# ----------------------------------------------------------------------------- inputs


def make_phantom(shape_zyx, voxel_size_a: float, diameter_a: float, seed: int):
    """float32 [z, y, x] phantom and the (N, 3) x,y,z centres of its particle-sized balls.

    Balls of the particle diameter (amplitude 1) sit on a jittered lattice (spacing 1.6
    diameters, half the sites used), as many half-size balls (amplitude 1) in between, on
    unit Gaussian noise. Built in place: memory is the volume plus one small ball template.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape_zyx
    vol = rng.standard_normal(shape_zyx, dtype=np.float32)
    d = diameter_a / voxel_size_a
    spacing = 1.6 * d
    centres = []
    for zc in np.arange(d / 2 + 1, nz - d / 2 - 1, spacing):
        for yc in np.arange(d / 2 + 1, ny - d / 2 - 1, spacing):
            for xc in np.arange(d / 2 + 1, nx - d / 2 - 1, spacing):
                centres.append((xc, yc, zc))
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    jitter = rng.uniform(-0.15 * d, 0.15 * d, size=centres.shape)
    centres = centres + jitter
    big = rng.random(len(centres)) < 0.5
    small_centres = centres[~big] + rng.uniform(-0.1 * d, 0.1 * d, size=centres[~big].shape)
    for pts, radius in ((centres[big], d / 2), (small_centres, d / 4)):
        half = math.ceil(radius) + 2
        for x, y, z in pts:
            ix, iy, iz = (round(c) for c in (x, y, z))
            sl = tuple(slice(max(c - half, 0), min(c + half + 1, n))
                       for c, n in zip((iz, iy, ix), (nz, ny, nx)))
            gz, gy, gx = np.ogrid[sl[0], sl[1], sl[2]]
            r = np.sqrt((gx - x) ** 2 + (gy - y) ** 2 + (gz - z) ** 2)
            vol[sl] += np.clip(radius + 0.5 - r, 0.0, 1.0).astype(np.float32)
    return vol, centres[big]


def make_input(shape, source: str, workdir: Path, voxel_size_a: float, diameter_a: float,
               seed: int) -> tuple[Path, Path, str]:
    """Tomogram and truth files for ``shape`` (cached in ``workdir``): (mrc, truth csv, source)."""
    from milopyp.io.coords import points_frame, write_coordinates
    from milopyp.io.mrc import write_tomogram

    nz, ny, nx = shape
    if source == "auto":
        source = "simulate" if nz * ny * nx <= SIMULATE_MAX_VOXELS else "phantom"
    name = f"{source}_{nz}x{ny}x{nx}_v{voxel_size_a:g}_d{diameter_a:g}_s{seed}"
    mrc = workdir / f"{name}.mrc"
    truth = workdir / f"{name}_truth.csv"
    if mrc.is_file() and truth.is_file():
        return mrc, truth, source
    with Timer() as t:
        if source == "simulate":
            from milopyp.simulate import simulate_tomogram

            sim = simulate_tomogram(shape_zyx=shape, voxel_size_a=voxel_size_a, seed=seed,
                                    preset="demo", name=name)
            volume = sim.tomogram
            centres = sim.truth.loc[sim.truth["species"] == "ribosome", ["x", "y", "z"]]
            centres = centres.to_numpy(float)
            del sim
        else:
            volume, centres = make_phantom(shape, voxel_size_a, diameter_a, seed)
        write_tomogram(mrc, volume, voxel_size_a)
        del volume
        write_coordinates(truth, points_frame(centres, name))
    print(f"made {mrc.name} ({source}, {len(centres)} particles) in {t.seconds:.1f} s",
          file=sys.stderr)
    return mrc, truth, source


# ----------------------------------------------------------------------------- stages
# Run in child processes by benchmarks._common.run_stage.


def stage_preprocess(tomogram: str, output: str, threads: int | None) -> dict:
    milopyp.preprocess.run(tomogram, output, sigma_vox=1.0, threads=threads or None)
    return {}


def stage_candidates(tomogram: str, output: str, diameter_a: float,
                     threads: int | None) -> dict:
    milopyp.candidates.run(tomogram, output, particle_diameter_a=diameter_a,
                           threads=threads or None)
    return {}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(ALL_SIZES),
                   help="comma-separated ZxYxX sizes (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_SIZES)}")
    p.add_argument("--source", choices=("auto", "simulate", "phantom"), default="auto",
                   help="how to make the tomograms (auto: simulate up to 48 M voxels)")
    p.add_argument("--voxel-size", type=float, default=12.0, help="Å per voxel (12)")
    p.add_argument("--diameter", type=float, default=260.0, help="particle diameter, Å (260)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per stage (default: every usable core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "candidates",
                   help="where tomograms and outputs are kept (default: %(default)s)")
    args = p.parse_args(argv)
    sizes = [parse_size(s) for s in (QUICK_SIZES if args.quick else args.sizes.split(","))]
    args.workdir.mkdir(parents=True, exist_ok=True)

    from milopyp.evaluate import evaluate
    from milopyp.io.coords import read_coordinates

    rows = []
    base = None
    for shape in sizes:
        mrc, truth_path, source = make_input(shape, args.source, args.workdir, args.voxel_size,
                                             args.diameter, args.seed)
        size = "×".join(map(str, shape))
        pre = args.workdir / f"{mrc.stem}_pre.mrc"
        cand = args.workdir / f"{mrc.stem}_candidates.csv"
        r1 = run_stage("benchmarks.candidates:stage_preprocess", tomogram=str(mrc),
                       output=str(pre), threads=args.threads)
        r2 = run_stage("benchmarks.candidates:stage_candidates", tomogram=str(pre),
                       output=str(cand), diameter_a=args.diameter, threads=args.threads)
        picks = read_coordinates(cand)
        truth = read_coordinates(truth_path)
        picks["tomogram"] = truth["tomogram"].iloc[0] if len(truth) else mrc.stem
        radius = 0.5 * args.diameter / args.voxel_size
        metrics = evaluate(picks, truth, radius_vox=radius).iloc[-1]
        recall = f"{metrics['recall']:.3f} ({metrics['tp']}/{metrics['n_true']})"
        base = r1["base_rss_mb"]
        rows.append({"stage": "preprocess", "size": size, "source": source,
                     "seconds": r1["seconds"], "peak": r1["peak_rss_mb"]})
        rows.append({"stage": "candidates", "size": size, "source": source,
                     "seconds": r2["seconds"], "peak": r2["peak_rss_mb"],
                     "candidates": len(picks), "recall": recall})
        rows.append({"stage": "**total**", "size": size, "source": source,
                     "seconds": r1["seconds"] + r2["seconds"],
                     "peak": max(r1["peak_rss_mb"], r2["peak_rss_mb"]),
                     "candidates": len(picks), "recall": recall})
        for f in (pre,):
            f.unlink(missing_ok=True)
        print(f"done {size}: {r1['seconds'] + r2['seconds']:.2f} s", file=sys.stderr)

    print(f"# preprocess + candidates ({machine_line()})")
    print(f"# voxel {args.voxel_size:g} Å, particle diameter {args.diameter:g} Å "
          f"({args.diameter / args.voxel_size:.1f} voxels), threads "
          f"{args.threads or 'all usable'}; seconds = the command (read, compute, write), "
          f"imports excluded; peak RSS = the stage's whole process (interpreter and libraries "
          f"~{base or 0:.0f} MB); recall of the true particles within half a diameter")
    print(format_table(rows, [("stage", "stage"), ("size", "tomogram size (z×y×x)"),
                              ("source", "input"), ("seconds", "seconds"),
                              ("peak", "peak RSS (MB)"), ("candidates", "candidates"),
                              ("recall", "recall")]))
    return 0


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    sys.exit(main())
