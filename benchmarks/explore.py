"""Speed and peak memory of the exploration module: SimSiam training, embedding, clustering.

Each measurement runs in a fresh Python process (peak RSS is its own; imports untimed):

- training throughput (patches/s; each patch gives two augmented views) of
  :func:`milopyp.explore.train.train_simsiam` on random 2-channel patches, ResNet18 of width
  64 at 64×64, batch 64 and 256: the second epoch is timed (the first warms up);
- embedding throughput (patches/s) of :func:`milopyp.explore.embed.embed_patches`;
- clustering of 10^5 × 128 points: FAISS k-means k = 500 + spectral clustering of the
  centres (:func:`milopyp.cluster.overcluster`, or FAISS k-means alone when that module is
  missing; the table says which).

    .venv/bin/python benchmarks/explore.py --quick          # ≈ 1–2 min on 2 CPU cores
    .venv/bin/python benchmarks/explore.py                   # more steps, 10^5 points
    .venv/bin/python benchmarks/explore.py --device cuda     # on a GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `milopyp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import format_table, machine_line, run_stage

# ----------------------------------------------------------------------------- stages
# (run in child processes through run_stage; they return JSON-able dicts)


def _setup(threads: int | None, device: str):
    import torch

    from milopyp.device import resolve_device

    if threads:
        torch.set_num_threads(int(threads))
    return resolve_device(device)


def train_stage(
    *,
    batch_size: int,
    steps: int,
    width: int,
    size: int,
    channels: int,
    device: str,
    threads: int | None,
) -> dict:
    """Train 2 epochs of ``steps`` steps on random patches; return epoch-2 throughput."""
    import numpy as np
    import torch

    from milopyp.explore.train import train_simsiam

    dev = _setup(threads, device)
    x = np.random.default_rng(0).standard_normal((batch_size * steps, channels, size, size))
    model = train_simsiam(
        x.astype(np.float32), epochs=2, batch_size=batch_size, width=width, seed=0, device=dev
    )
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return {
        "patches_per_s": model.train_history[-1]["patches_per_s"],
        "device": str(dev),
        "threads": torch.get_num_threads(),
    }


def embed_stage(
    *,
    n: int,
    batch_size: int,
    width: int,
    size: int,
    channels: int,
    device: str,
    threads: int | None,
) -> dict:
    """Embed ``n`` random patches (after a warm-up batch); return patches/s."""
    import numpy as np
    import torch

    from milopyp.explore.embed import embed_patches
    from milopyp.explore.simsiam import build_simsiam

    dev = _setup(threads, device)
    torch.manual_seed(0)
    model = build_simsiam(channels, width=width).to(dev).eval()
    x = np.random.default_rng(0).standard_normal((n, channels, size, size)).astype(np.float32)
    embed_patches(model, x[:batch_size], batch_size=batch_size, device=dev)  # warm-up
    t0 = time.perf_counter()
    emb = embed_patches(model, x, batch_size=batch_size, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"patches_per_s": len(emb) / dt, "device": str(dev), "threads": torch.get_num_threads()}


def cluster_stage(*, n: int, dim: int, k: int, n_classes: int) -> dict:
    """Over-cluster ``n`` × ``dim`` random points (Gaussian blobs); return what was timed."""
    import numpy as np

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, dim)).astype(np.float32) * 3
    x = centres[rng.integers(0, 50, n)] + rng.standard_normal((n, dim)).astype(np.float32)
    try:
        from milopyp.cluster import overcluster
    except ImportError:
        overcluster = None
    t0 = time.perf_counter()
    if overcluster is not None:
        labels, _ = overcluster(x, k=k, n_classes=n_classes, seed=0)
        what = f"milopyp.cluster.overcluster (k={k}, {n_classes} classes)"
    else:
        import faiss

        km = faiss.Kmeans(dim, k, niter=20, seed=0, verbose=False)
        km.train(x)
        labels = km.index.search(x, 1)[1][:, 0]
        what = f"faiss k-means only (k={k}; milopyp.cluster missing)"
    return {
        "seconds": time.perf_counter() - t0,
        "what": what,
        "n_labels": len(np.unique(labels)),
    }


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (cpu)")
    ap.add_argument("--quick", action="store_true", help="fewer steps and 10^4 points")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (all cores)")
    ap.add_argument("--width", type=int, default=64, help="ResNet18 width (64)")
    ap.add_argument("--size", type=int, default=64, help="patch size in pixels (64)")
    ap.add_argument("--channels", type=int, default=2, help="input channels (2)")
    ap.add_argument("--skip-cluster", action="store_true", help="leave out the clustering")
    args = ap.parse_args(argv)
    gpu = args.device != "cpu"
    net = {
        "width": args.width,
        "size": args.size,
        "channels": args.channels,
        "device": args.device,
        "threads": args.threads,
    }
    setting = f"ResNet18 w{args.width}, {args.channels}×{args.size}×{args.size}"
    rows = []
    for bs in (64, 256):
        steps = (2 if bs == 64 else 1) if args.quick and not gpu else (20 if gpu else 4)
        r = run_stage("benchmarks.explore:train_stage", batch_size=bs, steps=steps, **net)
        res = r["result"]
        rows.append(
            {
                "stage": "train",
                "setting": f"{setting}, batch {bs}, {steps} steps",
                "device": f"{res['device']} ({res['threads']} thr)",
                "rate": f"{res['patches_per_s']:.1f} patches/s",
                "seconds": r["seconds"],
                "rss": r["peak_rss_mb"],
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)
    n_embed = (512 if args.quick else 4096) * (16 if gpu else 1)
    r = run_stage("benchmarks.explore:embed_stage", n=n_embed, batch_size=256, **net)
    res = r["result"]
    rows.append(
        {
            "stage": "embed",
            "setting": f"{setting}, {n_embed} patches, batch 256",
            "device": f"{res['device']} ({res['threads']} thr)",
            "rate": f"{res['patches_per_s']:.1f} patches/s",
            "seconds": r["seconds"],
            "rss": r["peak_rss_mb"],
        }
    )
    print(rows[-1], file=sys.stderr, flush=True)
    if not args.skip_cluster:
        n, k = (10_000, 100) if args.quick else (100_000, 500)
        r = run_stage("benchmarks.explore:cluster_stage", n=n, dim=128, k=k, n_classes=20)
        rows.append(
            {
                "stage": "cluster",
                "setting": f"{n} × 128, {r['result']['what']}",
                "device": "cpu",
                "rate": f"{r['result']['seconds']:.1f} s",
                "seconds": r["seconds"],
                "rss": r["peak_rss_mb"],
            }
        )
    print(f"# milopyp exploration benchmark{' (quick)' if args.quick else ''}")
    print(machine_line())
    print()
    cols = [
        ("stage", "stage"),
        ("setting", "setting"),
        ("device", "device"),
        ("rate", "throughput / time"),
        ("seconds", "stage s"),
        ("rss", "peak RSS MiB"),
    ]
    print(format_table(rows, cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
