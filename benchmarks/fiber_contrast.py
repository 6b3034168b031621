"""How visible each true filament is in a dataset's tomograms, by its direction to the tilt
axis, and the fibre heat map along it (a diagnostic, no training).

For every filament of ``--species`` in the truth tables (``filament_id`` set): its in-plane
angle to x (the tilt axis is y), the contrast of its walls (the mean density at ±``--wall``
voxels across it in the x-y plane less the density on its centre line, after a Gaussian
of σ 1 voxel; negative: walls darker than the lumen, as protein is dark) at its true z and
with the centre line shifted in z, and, with ``--heatmaps DIR`` (a ``benchmarks/
accuracy.py --rows fiber --save-picks DIR`` folder), the median of the heat map's
5 × 5 × 5 maximum along its centre line, beside the heat map's 97th, 99th and 99.9th
percentiles (the 97th is the fibre threshold's floor, ``FIBER_MAX_VOXEL_FRACTION``): a
filament whose centre line lies below the bulk of its heat map cannot be picked by any
threshold. ``--thresholds`` then picks each heat map's ridge points at each given threshold
(as ``milopyp localize`` with ``--threshold``), traces them (link distance 0.6 × the
diameter, as the workflow) and scores the fibres against the truth, per tomogram.

A filament across the tilt axis (along x) is seen edge-on by every tilt, so the missing
wedge takes its cross-section's z detail: its walls are fainter and spread in z.

``--oriented`` adds a classical matched filter, no learning: in each x-y plane of the
tomogram (smoothed by σ ``--sigma-z`` in z), for each of 36 in-plane directions, the
density averaged along that direction (Gaussian σ ``--sigma-along``, 2 across) at the two
walls (±0.8 × the radius) against the lumen and the outside (±1.6 × the radius); a
filament's response is the smaller of its two walls' contrasts, at the best direction. It
prints that response's median along each true centre line and the response's 99th and
99.9th percentiles over the tomogram: whether any line filter could find the filament.

    .venv/bin/python benchmarks/fiber_contrast.py --dataset ../shared/devset/insitu \\
        --heatmaps devset-results/s27/fiber_default
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d, map_coordinates, maximum_filter

from benchmarks.dataset import load_dataset

Z_SHIFTS = (-20, -10, -5, 0, 5, 10, 20)


def wall_contrast(volume: np.ndarray, centre_line: np.ndarray, wall_vox: float,
                  z_shift: float = 0.0) -> float:
    """Mean density at ±``wall_vox`` across the filament (in the x-y plane) less that on
    its centre line (x, y, z voxels, ``z_shift`` added), of a normalised ``volume``."""
    direction = centre_line[-1] - centre_line[0]
    across = np.cross(direction, [0.0, 0.0, 1.0])
    across /= np.linalg.norm(across)
    points = centre_line + np.array([0.0, 0.0, z_shift])

    def mean_at(offset: float) -> float:
        xyz = points + offset * across
        return float(map_coordinates(volume, [xyz[:, 2], xyz[:, 1], xyz[:, 0]], order=1,
                                     mode="nearest").mean())

    return 0.5 * (mean_at(-wall_vox) + mean_at(wall_vox)) - mean_at(0.0)


def median_along(volume: np.ndarray, centre_line: np.ndarray) -> float:
    """Median of ``volume`` [z, y, x] at the voxels nearest the (N, 3) x, y, z points."""
    ijk = np.clip(np.rint(centre_line[:, ::-1]).astype(int), 0, np.array(volume.shape) - 1)
    return float(np.median(volume[ijk[:, 0], ijk[:, 1], ijk[:, 2]]))


def oriented_response(volume: np.ndarray, radius_vox: float, sigma_along: float,
                      sigma_z: float, directions: int = 36) -> np.ndarray:
    """The two-wall line filter of ``--oriented`` on a [z, y, x] ``volume`` (normalised
    here): per voxel, the best direction's min over the two walls of (mean of lumen and
    outside) - wall, in standard deviations of the smoothed volume's density."""
    v = gaussian_filter1d((volume - volume.mean()) / volume.std(), sigma_z, axis=0)
    spectrum = np.fft.rfft2(v, axes=(1, 2))
    fy = np.fft.fftfreq(v.shape[1]) * v.shape[1]
    fx = np.fft.fftfreq(v.shape[2]) * v.shape[2]
    y, x = np.meshgrid(fy, fx, indexing="ij")
    wall = 0.8 * radius_vox
    best = np.full(v.shape, -np.inf, dtype=np.float32)

    def band(along: np.ndarray, across: np.ndarray, offset: float) -> np.ndarray:
        k = np.exp(-0.5 * (along / sigma_along) ** 2 - 0.5 * ((across - offset) / 2.0) ** 2)
        return np.fft.irfft2(spectrum * np.fft.rfft2(k / k.sum()), s=v.shape[1:], axes=(1, 2))

    for i in range(directions):
        angle = np.pi * i / directions
        along = x * np.cos(angle) + y * np.sin(angle)
        across = -x * np.sin(angle) + y * np.cos(angle)
        out1, wall1, lumen, wall2, out2 = (band(along, across, o * wall)
                                           for o in (-2, -1, 0, 1, 2))
        r = np.minimum(0.5 * (lumen + out1) - wall1, 0.5 * (lumen + out2) - wall2)
        np.maximum(best, r.astype(np.float32), out=best)
    return best


def trace_at_thresholds(ds, heatmaps: Path, species: str, radius_vox: float,
                        thresholds: list[float]) -> None:
    """Ridge picks of each saved fibre heat map at each threshold, traced and scored per
    tomogram (true fibres found, fibres traced, centre-line point precision and recall)."""
    import pandas as pd

    from milopyp.evaluate import evaluate_fibers
    from milopyp.fibers import trace_table
    from milopyp.localize.peaks import find_ridge_points

    scored = {}  # tomogram -> (heat map, its fibres' truth), each read once
    for tomo in ds.tomograms:
        path = heatmaps / f"fiber_{tomo.name}.npy"
        truth = tomo.truth[tomo.truth["species"] == species]
        if not truth.empty and path.exists():
            scored[tomo.name] = (np.load(path), pd.DataFrame(
                truth[["tomogram", "x", "y", "z", "filament_id"]].rename(
                    columns={"filament_id": "fiber_id"})))
    print("threshold  tomogram  picks  fibres traced  true fibres found (of)  "
          "point precision  point recall")
    for threshold in thresholds:
        for name, (heat, truth) in scored.items():
            picks = find_ridge_points(heat, threshold=threshold, tomogram=name)
            traced = trace_table(picks, link_distance_vox=0.6 * 2 * radius_vox)
            m = evaluate_fibers(traced, truth, radius_vox=radius_vox, tomograms=[name]).iloc[-1]
            print(f"{threshold:9.3f}  {name:8s}  {len(picks):5d}  "
                  f"{int(m['n_traced_fibers']):13d}  {int(m['found_fibers']):11d} "
                  f"({int(m['n_true_fibers'])})  {m['point_precision']:15.3f}  "
                  f"{m['point_recall']:12.3f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, required=True, help="dataset folder")
    p.add_argument("--species", default="microtubule", help="filament species (microtubule)")
    p.add_argument("--wall", type=float, default=8.0,
                   help="wall offset from the centre line, voxels (8: a 25 nm tube at 12 Å)")
    p.add_argument("--heatmaps", type=Path, default=None,
                   help="folder with fiber_<tomogram>.npy heat maps (--save-picks of the "
                        "fiber row)")
    p.add_argument("--oriented", action="store_true",
                   help="also the two-wall line filter's response (see module doc)")
    p.add_argument("--radius", type=float, default=10.4,
                   help="filament radius, voxels, for --oriented (10.4: 25 nm at 12 Å)")
    p.add_argument("--sigma-along", type=float, default=20.0,
                   help="--oriented: averaging along the direction, voxels (20)")
    p.add_argument("--sigma-z", type=float, default=8.0,
                   help="--oriented: smoothing in z, voxels (8)")
    p.add_argument("--thresholds", default=None, metavar="T1,T2,...",
                   help="with --heatmaps: pick, trace and score the fibres at each of these "
                        "heat-map thresholds")
    args = p.parse_args(argv)
    ds = load_dataset(args.dataset)
    if args.thresholds and args.heatmaps is not None:
        trace_at_thresholds(ds, args.heatmaps, args.species, args.radius,
                            [float(t) for t in args.thresholds.split(",")])
    print("tomogram  filament  points  angle to x (°)  wall contrast at z shift "
          + " ".join(f"{s:+d}" for s in Z_SHIFTS) + "   heat map median")
    for tomo in ds.tomograms:
        fil = tomo.truth[tomo.truth["species"] == args.species]
        if fil.empty:
            continue
        volume = tomo.data.astype(np.float32)
        response = None
        if args.oriented:
            response = oriented_response(volume, args.radius, args.sigma_along, args.sigma_z)
            inner = response[:, 20:-20, 20:-20]
            print(f"{tomo.name}: line filter (σ along {args.sigma_along:g}, z "
                  f"{args.sigma_z:g}) over the tomogram: 99 % {np.quantile(inner, 0.99):.3f}, "
                  f"99.9 % {np.quantile(inner, 0.999):.3f}")
        volume = gaussian_filter((volume - volume.mean()) / volume.std(), 1.0)
        heat = None
        if args.heatmaps is not None and (args.heatmaps / f"fiber_{tomo.name}.npy").exists():
            raw = np.load(args.heatmaps / f"fiber_{tomo.name}.npy")
            print(f"{tomo.name}: heat map 97 % {np.quantile(raw, 0.97):.3f}, 99 % "
                  f"{np.quantile(raw, 0.99):.3f}, 99.9 % {np.quantile(raw, 0.999):.3f}")
            heat = maximum_filter(raw, size=5)
        for fid, f in fil.groupby("filament_id"):
            line = f[["x", "y", "z"]].to_numpy(np.float64)
            d = line[-1] - line[0]
            angle = np.degrees(np.arccos(abs(d[0]) / np.linalg.norm(d[:2])))
            contrast = [wall_contrast(volume, line, args.wall, s) for s in Z_SHIFTS]
            along = "-"
            if heat is not None:
                along = f"{median_along(heat, line):.2f}"
            filtered = ""
            if response is not None:
                filtered = f"   line filter median {median_along(response, line):.3f}"
            print(f"{tomo.name:8s}  {int(fid):8d}  {len(line):6d}  {angle:14.0f}  "
                  + " ".join(f"{c:+.2f}" for c in contrast) + f"   {along}{filtered}")


if __name__ == "__main__":
    main()
