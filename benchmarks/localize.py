"""Speed and peak memory of the localiser: training (s/epoch) and tiled inference.

Prints a table: stage | tomogram size | seconds | peak RSS (MB). Each measurement runs in
a fresh subprocess, so the peak RSS (``ru_maxrss`` of that process: Python + torch +
tomogram + heat map + activations) belongs to that stage alone. Tomograms are Gaussian
noise with bright blobs (no simulator needed).

    python benchmarks/localize.py                  # CPU, 128×512×512, 160×512×512, 256×1024×1024
    python benchmarks/localize.py --quick          # small sizes, a few seconds
    python benchmarks/localize.py --device cuda --threads 8
    python benchmarks/localize.py --stages infer --sizes 160x512x512

Targets (2 CPU cores, 160×512×512): inference ≤ 10 s and ≤ 2 GB; training ≤ 3 min, ≤ 2 GB.
Inference includes contrast matching (:mod:`milopyp.localize.spectrum`) with every
frequency raised, its dearest case, before the heat map; the profile check
(:mod:`milopyp.localize.profile`) of up to 1,000 peaks is timed after the peaks.
``fiber-picks``: the ridge points of a fibre heat map
(:func:`milopyp.localize.peaks.find_ridge_points`) at the most voxels the fibre threshold's
guard lets through (3 % above the threshold), on a heat map of 60 random straight tubes
over noise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

#: particle radius of the timed runs: a ribosome (260 Å) at 12 Å, binned by 2 by default
RADIUS_VOX = 10.8
FULL_SIZES = ["128x512x512", "160x512x512", "256x1024x1024"]
QUICK_SIZES = ["32x128x128", "48x192x160"]


def _rss_kinds() -> str:
    """The process's resident memory now, anonymous (needs memory) and file-backed (the
    memory-mapped tomogram and raised copy: can be dropped), from /proc/self/status."""
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status)
    except OSError:
        return "resident memory by kind unknown"
    mb = {k: int(fields[k].split()[0]) / 1024 for k in ("RssAnon", "RssFile") if k in fields}
    return ", ".join(f"{k} {v:.0f} MB" for k, v in mb.items())


def _volume(shape_zyx: tuple[int, int, int], n_blobs: int, seed: int):
    """Noise tomogram with bright cubes-with-soft-edges at random centres; (volume, xyz)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vol = rng.standard_normal(shape_zyx, dtype=np.float32)
    r = 4
    xyz = np.stack([rng.integers(r, s - r, n_blobs) for s in shape_zyx[::-1]], axis=1)
    off = np.arange(-r, r + 1)
    dz, dy, dx = np.meshgrid(off, off, off, indexing="ij")
    blob = (3.0 * np.exp(-(dz**2 + dy**2 + dx**2) / (2 * 2.0**2))).astype(np.float32)
    for x, y, z in xyz:
        vol[z - r:z + r + 1, y - r:y + r + 1, x - r:x + r + 1] += blob
    return vol, xyz.astype(float)


def _child(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from milopyp.localize import find_peaks, predict_heatmap, train_localizer
    from milopyp.localize.train import BATCHNORM_BATCHES
    from milopyp.localize.unet import Localizer

    shape = tuple(int(v) for v in args.child_size.split("x"))
    if args.child_stage == "fiber-picks":
        _fiber_picks(shape)
        return
    n_vox = int(np.prod(shape))
    vol, xyz = _volume(shape, max(4, n_vox // 200_000), seed=0)
    result: dict = {}
    if args.child_stage == "train":
        import inspect

        defaults = {k: v.default for k, v in
                    inspect.signature(train_localizer).parameters.items()}
        iters = args.iterations
        t0 = time.perf_counter()
        model = train_localizer([vol], [xyz[: max(2, len(xyz) // 10)]],
                                particle_radius_vox=RADIUS_VOX, epochs=1,
                                iterations_per_epoch=iters, expected_particles=len(xyz),
                                seed=0, device=args.device)
        sec = time.perf_counter() - t0
        steps = defaults["epochs"] * defaults["iterations_per_epoch"]
        # the BatchNorm re-estimation after the last epoch, timed by train_localizer,
        # scaled to the default training's count of batches
        bn_s = model.batchnorm_seconds
        bn_full = bn_s * min(BATCHNORM_BATCHES, steps) / model.batchnorm_batches
        step_s = model.history[0]["seconds"] / iters  # the epoch's own time
        setup_s = sec - bn_s - model.history[0]["seconds"]  # binning, statistics: once
        result = {"seconds": sec, "note": f"1 epoch of {iters} iterations (bin "
                  f"{model.config.bin_factor}), {1000 * step_s:.0f} ms/it, set-up (binning) "
                  f"{setup_s:.1f} s, BatchNorm re-estimation {bn_s:.1f} s; default "
                  f"{defaults['epochs']} × {defaults['iterations_per_epoch']} it ≈ "
                  f"{setup_s + step_s * steps + bn_full:.0f} s (of which BatchNorm "
                  f"{bn_full:.0f} s; without the class prior's re-estimations)"}
    else:
        from milopyp.localize.scale import auto_bin_factor
        from milopyp.localize.unet import LocalizerConfig

        torch.manual_seed(0)
        # the network train_localizer builds by default for a ribosome at 12 Å
        model = Localizer(LocalizerConfig(z_dilations=(1, 2, 4),
                                          bin_factor=auto_bin_factor(2 * RADIUS_VOX))).eval()
        from milopyp.localize.infer import DEFAULT_FLIPS
        from milopyp.localize.spectrum import match_contrast, power_spectrum

        # contrast matching as `milopyp localize` does it, at its dearest: a reference 1.2
        # times this tomogram's power at every frequency, so that all of it is raised, the
        # raised copy on a memory-mapped temporary file (file-backed pages: in the peak RSS
        # while they are resident, but the kernel can write them out and drop them, so they
        # do not need the memory); none at another voxel size than the model's, as there
        own = power_spectrum(vol)
        reference = {**own, "power": [1.2 * p for p in own["power"]]}
        t0 = time.perf_counter()
        if args.rescale == 1.0:
            vol = match_contrast(reference, vol, on_disk=True)
        match_s = time.perf_counter() - t0
        # --rescale: the tomogram at another voxel size than the model's (milopyp localize
        # resamples it to the model's grid, milopyp.localize.stage.model_rescale)
        heat = predict_heatmap(model, vol, device=args.device, flips=DEFAULT_FLIPS,
                               bin_factor=model.config.bin_factor * args.rescale)
        sec = time.perf_counter() - t0
        t1 = time.perf_counter()
        picks = find_peaks(heat, kernel_vox=7, threshold=0.0, max_peaks=1000)
        peaks_s = time.perf_counter() - t1
        # the profile check of `milopyp localize` (a reference from 20 blobs), on every peak
        from milopyp.localize.profile import profile_reference, weigh_peaks

        reference = profile_reference([vol], [xyz[:20]], RADIUS_VOX,
                                      [picks[["x", "y", "z"]].to_numpy(np.float64)])
        t2 = time.perf_counter()
        if reference is not None:  # none on the quick sizes: too few blobs or peaks
            weigh_peaks(reference, vol, picks)
        check = (f"profile check of those {time.perf_counter() - t2:.1f} s"
                 if reference is not None else "no profile check (too few blobs or peaks)")
        result = {"seconds": sec, "note": f"contrast matching {match_s:.1f} s + heat map "
                  f"{sec - match_s:.1f} s ({DEFAULT_FLIPS} test-time flips, network "
                  f"grid {model.config.bin_factor * args.rescale:g} voxels); + peaks "
                  f"{peaks_s:.1f} s ({len(picks)} picks); + {check}; at the end "
                  f"{_rss_kinds()}"}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _fiber_picks(shape_zyx: tuple[int, int, int]) -> None:
    """Time the ridge points of a fibre heat map of ``shape_zyx`` (60 random straight tubes
    over noise, threshold at its 97th percentile); prints the child's JSON result."""
    import tracemalloc

    import numpy as np
    from scipy.ndimage import gaussian_filter

    from milopyp.localize import find_ridge_points
    from milopyp.localize.calibrate import FIBER_MAX_VOXEL_FRACTION, heatmap_quantile

    rng = np.random.default_rng(0)
    lines = np.zeros(shape_zyx, np.float32)
    for _ in range(60):
        a, b = (rng.uniform(0, 1, 3) * (np.array(shape_zyx) - 1) for _ in range(2))
        t = np.linspace(0.0, 1.0, 4 * int(np.linalg.norm(b - a)) + 2)[:, None]
        k = np.rint(a + t * (b - a)).astype(int)
        lines[k[:, 0], k[:, 1], k[:, 2]] = 1.0
    heat = gaussian_filter(lines, 2.0)
    del lines
    heat *= 0.8 / heat.max()
    heat += rng.normal(0.05, 0.02, shape_zyx).astype(np.float32)
    threshold = heatmap_quantile(heat, 1.0 - FIBER_MAX_VOXEL_FRACTION)
    tracemalloc.start()  # numpy's allocations: what the call adds to the heat map
    t0 = time.perf_counter()
    picks = find_ridge_points(heat, threshold=threshold)
    sec = time.perf_counter() - t0
    added_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    above = int((heat > threshold).sum())
    print(json.dumps({"seconds": sec, "peak_rss_mb": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024, "note": f"{len(picks)} ridge points of {above} "
        f"voxels above {threshold:.3g}; the call allocated at most {added_mb:.0f} MB beside "
        f"the heat map ({heat.nbytes / 2**20:.0f} MB); peak RSS includes making the heat map"}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    p.add_argument("--sizes", nargs="*", help="ZxYxX sizes (default: the three full sizes)")
    p.add_argument("--stages", default="train,infer",
                   help="comma list of train, infer, fiber-picks")
    p.add_argument("--iterations", type=int, default=None,
                   help="training iterations to time (default 100, quick 10)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--rescale", type=float, default=1.0,
                   help="infer: tomogram voxels per voxel of the model's training tomograms "
                        "(1: the same voxel size; 0.75: a 16 Å tomogram for a 12 Å model)")
    p.add_argument("--child-stage", help=argparse.SUPPRESS)
    p.add_argument("--child-size", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.iterations is None:
        args.iterations = 10 if args.quick else 100
    if args.child_stage:
        _child(args)
        return
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    rows = []
    header = f"{'stage':<14} {'tomogram size':<16} {'seconds':>8} {'peak RSS (MB)':>14}  notes"
    print(f"device {args.device}, torch threads {args.threads or 'default'}, "
          f"{os.cpu_count()} CPUs visible", flush=True)
    print(header)
    print("-" * len(header))
    for stage in stages:
        for size in sizes if stage != "train" else sizes[:1] if args.quick else sizes:
            cmd = [sys.executable, __file__, "--child-stage", stage, "--child-size", size,
                   "--device", args.device, "--iterations", str(args.iterations),
                   "--threads", str(args.threads), "--rescale", str(args.rescale)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(f"{stage:<14} {size:<16} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            name = {"train": "train (epoch)"}.get(stage, stage)
            row = f"{name:<14} {size:<16} {r['seconds']:>8.1f} {r['peak_rss_mb']:>14.0f}  {r['note']}"
            rows.append(row)
            print(row, flush=True)


if __name__ == "__main__":
    main()
