"""How visible each true filament is in a dataset's tomograms, by its direction to the tilt
axis, and the fibre heat map along it (a diagnostic, no training).

For every filament of ``--species`` in the truth tables (``filament_id`` set): its in-plane
angle to x (the tilt axis is y), the contrast of its walls (the mean density at ±``--wall``
voxels across it in the x-y plane less the density on its centre line, after a Gaussian
of σ 1 voxel; negative: walls darker than the lumen, as protein is dark) at its true z and
with the centre line shifted in z, and, with ``--heatmaps DIR`` (a ``benchmarks/
accuracy.py --rows fiber --save-picks DIR`` folder), the median of the heat map's
5 × 5 × 5 maximum along its centre line.

A filament across the tilt axis (along x) is seen edge-on by every tilt, so the missing
wedge takes its cross-section's z detail: its walls are fainter and spread in z.

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
from scipy.ndimage import gaussian_filter, map_coordinates, maximum_filter

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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, required=True, help="dataset folder")
    p.add_argument("--species", default="microtubule", help="filament species (microtubule)")
    p.add_argument("--wall", type=float, default=8.0,
                   help="wall offset from the centre line, voxels (8: a 25 nm tube at 12 Å)")
    p.add_argument("--heatmaps", type=Path, default=None,
                   help="folder with fiber_<tomogram>.npy heat maps (--save-picks of the "
                        "fiber row)")
    args = p.parse_args(argv)
    ds = load_dataset(args.dataset)
    print("tomogram  filament  points  angle to x (°)  wall contrast at z shift "
          + " ".join(f"{s:+d}" for s in Z_SHIFTS) + "   heat map median")
    for tomo in ds.tomograms:
        fil = tomo.truth[tomo.truth["species"] == args.species]
        if fil.empty:
            continue
        volume = tomo.data.astype(np.float32)
        volume = gaussian_filter((volume - volume.mean()) / volume.std(), 1.0)
        heat = None
        if args.heatmaps is not None and (args.heatmaps / f"fiber_{tomo.name}.npy").exists():
            heat = maximum_filter(np.load(args.heatmaps / f"fiber_{tomo.name}.npy"), size=5)
        for fid, f in fil.groupby("filament_id"):
            line = f[["x", "y", "z"]].to_numpy(np.float64)
            d = line[-1] - line[0]
            angle = np.degrees(np.arccos(abs(d[0]) / np.linalg.norm(d[:2])))
            contrast = [wall_contrast(volume, line, args.wall, s) for s in Z_SHIFTS]
            along = "-"
            if heat is not None:
                ijk = np.rint(line[:, ::-1]).astype(int)
                ijk = np.clip(ijk, 0, np.array(heat.shape) - 1)
                along = f"{np.median(heat[ijk[:, 0], ijk[:, 1], ijk[:, 2]]):.2f}"
            print(f"{tomo.name:8s}  {int(fid):8d}  {len(line):6d}  {angle:14.0f}  "
                  + " ".join(f"{c:+.2f}" for c in contrast) + f"   {along}")


if __name__ == "__main__":
    main()
