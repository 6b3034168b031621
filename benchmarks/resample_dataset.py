"""A devset-style folder at another voxel size, to train and score on with `accuracy.py`.

Every tomogram of ``--dataset`` (``tomograms/*``, ``truth/*.csv``, ``dataset.json``; see
``benchmarks/dataset.py``) is Fourier-resampled to ``--voxel-size`` Å as
``benchmarks/voxel_size.py`` resamples its copies (the same field of view; the truth moves
with it), and written to ``--out`` as an MRC (float32, the new voxel size in its header)
with its truth table and a ``dataset.json`` that records the new voxel size. Tilt series
are not copied. ``benchmarks/accuracy.py --dataset OUT`` then trains and scores there, as
on the devset itself: a network trained on a finer or coarser working grid (stop 40: the
insitu set at 18 Å, where the default bin gives the network an 18 Å grid instead of 24 Å).

    .venv/bin/python benchmarks/resample_dataset.py --dataset ../shared/devset/insitu \\
        --voxel-size 18 --out /tmp/insitu18
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dataset import load_dataset
from benchmarks.voxel_size import rescaled_copy
from milopyp.io.mrc import write_tomogram


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, required=True, help="devset-style folder")
    p.add_argument("--voxel-size", type=float, required=True, metavar="A",
                   help="voxel size of the copies, Å")
    p.add_argument("--out", type=Path, required=True, help="folder to write (must not exist)")
    args = p.parse_args(argv)
    if not args.voxel_size > 0:
        raise SystemExit(f"--voxel-size: expected a positive number of Å, got {args.voxel_size}")
    if args.out.exists():
        raise SystemExit(f"{args.out}: exists; give a new folder")
    ds = load_dataset(args.dataset)
    partial = args.out.with_name(args.out.name + ".partial")
    (partial / "tomograms").mkdir(parents=True, exist_ok=True)
    (partial / "truth").mkdir(exist_ok=True)
    shapes = set()
    for tomogram in ds.tomograms:
        copy = rescaled_copy(tomogram, args.voxel_size)
        shapes.add(copy.data.shape)
        write_tomogram(partial / "tomograms" / f"{tomogram.name}.mrc", copy.data,
                       args.voxel_size)
        copy.truth.drop(columns=["tomogram"]).to_csv(partial / "truth" / f"{tomogram.name}.csv",
                                                     index=False)
        print(f"{tomogram.name}: {tomogram.data.shape} at {tomogram.voxel_size_a:g} Å -> "
              f"{copy.data.shape} at {args.voxel_size:g} Å")
    meta_path = args.dataset / "dataset.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["voxel_size_a"] = args.voxel_size
    if len(shapes) == 1:  # one shape for the set, as the devset's own dataset.json
        meta["shape_zyx"] = list(shapes.pop())
    else:
        meta.pop("shape_zyx", None)
    meta.pop("tilt_series_shape", None)  # not copied
    meta["resampled_from"] = {"dataset": str(args.dataset),
                              "voxel_size_a": ds.tomograms[0].voxel_size_a}
    (partial / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    partial.rename(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
