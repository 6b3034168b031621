"""Tilt-series geometry check on the independent devset: verdict and margin per tomogram.

Runs ``milopyp check-geometry`` (as the workflow does) on every
``../shared/devset/<set>/tomograms/TS_*.rec`` with its ``tiltseries/TS_*.st`` + ``.tlt`` and
prints one row per tomogram: the verdict, the sign, the mean NCC of each sign at the high
tilts, the margin, the binning, the x/y offset, the contrast and the seconds taken. As a
control, the same tomogram mirrored in z (the volume flipped, the tilt series kept) must come
out with the other sign at the same margin (columns ``mirror``).

    .venv/bin/python benchmarks/geometry.py                      # every devset tomogram
    .venv/bin/python benchmarks/geometry.py --sets crowded --workdir /tmp/geometry
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from milopyp.cli import main as milopyp_main
from milopyp.geometry import check_geometry
from milopyp.io.mrc import read_tilt_series, read_tomogram

DEVSET = Path(__file__).resolve().parents[2] / "shared" / "devset"


def check_one(tomogram: Path, tilt_series: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    rc = milopyp_main(["check-geometry", "--tomogram", str(tomogram), "--tilt-series",
                       str(tilt_series), "-o", str(out)])
    seconds = time.perf_counter() - t0
    if rc != 0:
        return {"verdict": "STOPPED", "seconds": seconds}
    record = json.loads(out.read_text())
    vol, voxel_a = read_tomogram(tomogram)
    stack, angles, pixel_a = read_tilt_series(tilt_series)
    mirror = check_geometry(vol[::-1], stack, angles, header_ratio=voxel_a / pixel_a)
    return {**record, "seconds": seconds, "mirror_sign": mirror["sign"],
            "mirror_margin": mirror["margin"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devset", type=Path, default=DEVSET, help="devset folder")
    parser.add_argument("--sets", nargs="+", default=["crowded", "insitu", "virus"])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the geometry records go (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        rows = []
        for name in args.sets:
            for tomogram in sorted((args.devset / name / "tomograms").glob("TS_*.rec")):
                stem = tomogram.name.split(".")[0]
                tilt_series = args.devset / name / "tiltseries" / f"{stem}.st"
                out = workdir / name / f"{stem}.json"
                rows.append((name, stem, check_one(tomogram, tilt_series, out)))
    header = ("| set | tomogram | verdict | sign | NCC +1 | NCC −1 | margin | bin | offset x, y "
              "(vox) | contrast | mirrored in z: sign, margin | s |")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for name, stem, r in rows:
        if r["verdict"] == "STOPPED":
            print(f"| {name} | {stem} | stopped (see the error above) |" + " |" * 9
                  + f" {r['seconds']:.1f} |")
            continue
        print(f"| {name} | {stem} | {r['verdict']} | {r['sign']:+d} | {r['scores']['+1']:.3f} | "
              f"{r['scores']['-1']:.3f} | {r['margin']:.3f} | {r['bin']} | "
              f"{r['offset_x_vox']:.2f}, {r['offset_y_vox']:.2f} | {r['contrast']} | "
              f"{r['mirror_sign']:+d}, {r['mirror_margin']:.3f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
