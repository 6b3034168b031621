"""A trained model on the same tomograms at other voxel sizes: `milopyp localize` as a user runs it.

For every tomogram of a devset-style folder (``tomograms/*.rec``, ``truth/*.csv``,
``dataset.json``; see ``benchmarks/dataset.py``) and every voxel size asked for, the tomogram
is resampled by Fourier cropping or zero padding (as another package's binning would, not
by milopyp's own resampler) to ``round(n · native / new)`` voxels per axis and written as an
MRC with the new voxel size in its header; its truth moves with it (``x' = (x + 0.5) ·
native / new − 0.5``). Each copy goes through ``milopyp localize --model M`` with the
automatic threshold, in this process, and its picks are scored against that truth
(match radius half the target's diameter). The model, trained at the native voxel size,
reads each copy resampled to its own working grid (``milopyp.localize.stage.model_rescale``).
Printed per voxel size: F1 / precision / recall on the held-out tomograms (all but the
first) and the first (labelled) tomogram, and the floor: DoG with its threshold tuned on
the truth, on the same copies (``benchmarks/dataset.py``'s ``dog_rows``).

    .venv/bin/python benchmarks/voxel_size.py --dataset ../shared/devset/crowded \\
        --model DIR/full_model.pt --voxel-sizes 9,16,20,24

``--model-voxel-size A``: the voxel size the model was trained at, for model files that do
not record one (``benchmarks/dataset.py`` wrote none before stop 38): a copy stamped with it
is used. ``--no-resample`` scores each copy as if the model had been trained at its voxel
size (the header passed as the model's own, ``--voxel-size``): what a user got by
overriding the check before. ``--without-profile-check`` scores a copy of the model
without its profile check, which `localize` leaves out at another voxel size: the native
row then shows what the check alone is worth.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from milopyp.cli import openmp_defaults

openmp_defaults()  # as every milopyp command (OMP_WAIT_POLICY=PASSIVE), before torch loads

import numpy as np
import pandas as pd

from benchmarks._common import format_table, machine_line
from benchmarks.dataset import Dataset, Tomogram, dog_rows, load_dataset, split_scores, target_truth
from milopyp import cli
from milopyp.io.localizer import read_localizer, write_localizer
from milopyp.io.mrc import write_tomogram


def fourier_resample(volume: np.ndarray, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """``volume`` [z, y, x] on ``shape_zyx`` voxels covering the same box: its spectrum
    cropped (coarser) or zero-padded (finer) about the origin, amplitudes kept (float32)."""
    spectrum = np.fft.fftshift(np.fft.fftn(np.asarray(volume, dtype=np.float64)))
    out = np.zeros(shape_zyx, dtype=np.complex128)
    src, dst = [], []
    for n_in, n_out in zip(volume.shape, shape_zyx):
        n = min(n_in, n_out)
        a_in, a_out = n_in // 2 - n // 2, n_out // 2 - n // 2
        src.append(slice(a_in, a_in + n))
        dst.append(slice(a_out, a_out + n))
    out[tuple(dst)] = spectrum[tuple(src)]
    scale = np.prod(shape_zyx) / np.prod(volume.shape)
    return (np.fft.ifftn(np.fft.ifftshift(out)).real * scale).astype(np.float32)


def rescaled_copy(tomogram: Tomogram, voxel_size_a: float) -> Tomogram:
    """The tomogram and its truth at ``voxel_size_a`` (the same field of view)."""
    ratio = tomogram.voxel_size_a / voxel_size_a
    shape = tuple(round(n * ratio) for n in tomogram.data.shape)
    data = (tomogram.data if shape == tomogram.data.shape
            else fourier_resample(tomogram.data, shape))
    truth = tomogram.truth.copy()
    for axis in ("x", "y", "z"):
        truth[axis] = (truth[axis] + 0.5) * ratio - 0.5
    return Tomogram(tomogram.name, data, truth, voxel_size_a)


def stamped_model(path: Path, voxel_size_a: float | None, diameter_a: float, workdir: Path,
                  *, profile_check: bool = True) -> Path:
    """``path`` itself, or a copy recording ``voxel_size_a`` when the file records none,
    the particle radius (from ``diameter_a``, which sets `localize`'s NMS box) when its
    settings do not hold one (``benchmarks/dataset.py``'s files before stop 38), and without
    the profile check's reference when ``profile_check`` is False."""
    state = read_localizer(path, "cpu")
    recorded = state["voxel_size_a"]
    if recorded is not None and voxel_size_a is not None and abs(recorded - voxel_size_a) > 1e-6:
        raise SystemExit(f"{path}: trained at {recorded} Å, not {voxel_size_a} Å "
                         "(--model-voxel-size)")
    if recorded is None and voxel_size_a is None:
        raise SystemExit(f"{path}: the file records no voxel size; give --model-voxel-size")
    complete = "particle_radius_vox" in state["settings"]
    if recorded is not None and profile_check and complete:
        return path
    state = {k: v for k, v in state.items() if k not in ("format", "version")}
    state["voxel_size_a"] = float(recorded if recorded is not None else voxel_size_a)
    # the radius on the working grid, as train_localizer stores it
    state["settings"] = {"shape": "globular", "particle_radius_vox": 0.5 * diameter_a
                         / state["voxel_size_a"] / state["network"]["bin_factor"],
                         **state["settings"]}
    if not profile_check:
        state["calibration"] = {k: v for k, v in state["calibration"].items() if k != "profile"}
    copy = workdir / "model.pt"
    write_localizer(copy, state)
    return copy


def localize_copy(model: Path, tomogram: Tomogram, workdir: Path, *,
                  model_voxel_a: float | None) -> tuple[pd.DataFrame, float]:
    """``milopyp localize`` on the copy written as an MRC: its picks and seconds. With
    ``model_voxel_a``, that voxel size is passed as the copy's own (no resampling)."""
    mrc = workdir / f"{tomogram.name}_{tomogram.voxel_size_a:g}A.mrc"
    write_tomogram(mrc, tomogram.data, tomogram.voxel_size_a)
    picks = workdir / f"{mrc.stem}.csv"
    argv = ["localize", "--model", str(model), "--tomogram", str(mrc), "-o", str(picks),
            "--tomogram-name", tomogram.name, "--device", "cpu"]
    if model_voxel_a is not None:
        argv += ["--voxel-size", f"{model_voxel_a!r}"]
    t0 = time.perf_counter()
    if cli.main(argv) != 0:
        raise SystemExit(f"milopyp {' '.join(argv)} failed")
    return pd.read_csv(picks), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, required=True, help="devset-style folder")
    p.add_argument("--model", type=Path, required=True, help="model file (.pt)")
    p.add_argument("--target", default="ribosome", help="species picked (ribosome)")
    p.add_argument("--voxel-sizes", default="9,16,20,24",
                   help="comma-separated voxel sizes in Å; the native one is always scored")
    p.add_argument("--model-voxel-size", type=float, default=None, metavar="A",
                   help="voxel size the model was trained at, for files that record none")
    p.add_argument("--no-resample", action="store_true",
                   help="pass each copy's voxel size as the model's own (no resampling)")
    p.add_argument("--without-profile-check", action="store_true",
                   help="score a copy of the model without its profile check (as `localize` "
                        "runs at another voxel size), at every voxel size")
    p.add_argument("--threads", type=int, default=2, help="threads of the DoG floor (2)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S")
    print(machine_line())
    ds = load_dataset(args.dataset)
    native = ds.tomograms[0].voxel_size_a
    diameter_a = ds.diameters_a[args.target]
    sizes = [native] + [float(v) for v in args.voxel_sizes.split(",")
                        if abs(float(v) - native) > 1e-6]
    names = [t.name for t in ds.tomograms]
    print(f"dataset {args.dataset}: {len(names)} tomograms at {native:g} Å, target "
          f"{args.target} ({diameter_a:g} Å); labelled {names[0]}, held out {names[1:]}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="milopyp-voxel-size-") as tmp:
        workdir = Path(tmp)
        model = stamped_model(args.model, args.model_voxel_size, diameter_a, workdir,
                              profile_check=not args.without_profile_check)
        # --no-resample: each copy claims the model's voxel size
        forced_a = read_localizer(model, "cpu")["voxel_size_a"] if args.no_resample else None
        for size in sizes:
            copies = [rescaled_copy(t, size) for t in ds.tomograms]
            radius = 0.5 * diameter_a / size
            picks, seconds = [], 0.0
            for c in copies:
                found, s = localize_copy(model, c, workdir, model_voxel_a=forced_a)
                picks.append(found)
                seconds += s
            truth = target_truth(copies, args.target)
            scores = split_scores(pd.concat(picks, ignore_index=True), truth, -np.inf, radius,
                                  names[0], names[1:])
            floor = dog_rows(Dataset(ds.folder, copies, ds.diameters_a), args.target,
                             diameter_a / size, radius, args.threads)["floor"]
            shape = "x".join(map(str, copies[0].data.shape))
            rows.append({"voxel": f"{size:g} Å ({shape})",
                         "held": scores["held"]["f1"], "held_p": scores["held"]["precision"],
                         "held_r": scores["held"]["recall"], "lab": scores["lab"]["f1"],
                         "floor": f"{floor['held']['f1']:.3f} ({floor['lab']['f1']:.3f})",
                         "picks": sum(len(f) for f in picks), "seconds": seconds})
            r = rows[-1]
            print(f"  {r['voxel']}: held-out F1 {r['held']:.3f} (P {r['held_p']:.3f} / R "
                  f"{r['held_r']:.3f}), labelled {r['lab']:.3f}; floor {r['floor']}; "
                  f"{r['picks']} picks, localize {seconds:.1f} s", flush=True)
    print()
    print(format_table(rows, [("voxel", "voxel size (shape)"), ("held", "held-out F1"),
                              ("held_p", "P"), ("held_r", "R"), ("lab", "labelled F1"),
                              ("floor", "floor held-out (labelled)"), ("picks", "picks"),
                              ("seconds", "localize s")]))


if __name__ == "__main__":
    main()
