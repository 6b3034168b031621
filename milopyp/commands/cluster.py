"""``milopyp cluster``: over-cluster the embeddings of all tomograms, project them with UMAP,
draw the figures and write the explorer.

Writes into the output folder (every file atomically):

* ``points.csv``: point_id, tomogram, x, y, z, score, cluster, umap_x, umap_y, umap3_x,
  umap3_y, umap3_z (one row per candidate; ``point_id`` is the row number, in the order of
  the ``--embeddings`` files, and is what ``selection.json`` refers to);
* ``grid.png`` (2D grid of patches by UMAP position), ``gallery.png`` (per-cluster rows);
* ``colormaps/{tomogram}.png`` and ``colormaps/{tomogram}_clusters.mrc`` for each
  ``--tomograms`` file whose stem matches a tomogram of the embeddings (see
  ``milopyp.visualize.colormap``);
* ``explorer.html`` (offline interactive explorer, see ``milopyp.visualize.explorer``);
* ``cluster_info.json``: parameters, k actually used, cluster sizes, timings, versions.

UMAP compiles with numba on first use; set ``NUMBA_CACHE_DIR`` to a persistent writable
folder to keep the compiled code between runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from milopyp.errors import MilopypError

HELP = "over-cluster embeddings, project with UMAP, draw figures and the explorer"
log = logging.getLogger(__name__)

#: fewest candidates (all tomograms together) that clustering and UMAP accept
MIN_POINTS = 10
#: the files written into the output folder (besides colormaps/{tomogram}*)
OUTPUT_FILES = ("points.csv", "grid.png", "gallery.png", "explorer.html", "cluster_info.json")
#: cluster volumes larger than this are drawn into a temporary memory-mapped file
_IN_MEMORY_BYTES = 1 << 30

POINT_COLUMNS = [
    "point_id",
    "tomogram",
    "x",
    "y",
    "z",
    "score",
    "cluster",
    "umap_x",
    "umap_y",
    "umap3_x",
    "umap3_y",
    "umap3_z",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embeddings",
        nargs="+",
        required=True,
        help="embedding files embeddings/{tomogram}.npz from `milopyp embed`",
    )
    parser.add_argument(
        "--patches",
        nargs="+",
        required=True,
        help="patch files patches/{tomogram}.npz (matched by their `tomogram`)",
    )
    parser.add_argument("-o", "--output", required=True, help="output folder (e.g. explore)")
    parser.add_argument(
        "--tomograms",
        nargs="*",
        default=[],
        help="tomogram MRC files for the colour maps (matched by file stem)",
    )
    parser.add_argument(
        "--k",
        type=int,
        default=200,
        help="k-means centres for over-clustering (200; clipped to N/4)",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=10,
        help="classes after spectral re-clustering of the centres (10)",
    )
    parser.add_argument(
        "--umap-neighbors",
        type=int,
        default=40,
        help="UMAP k-nearest-neighbour graph size (40, as in the paper)",
    )
    parser.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist (0.1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--channel",
        default="last",
        help="patch channel shown in figures: name (e.g. from the patch file's "
        "`channels`), index, or 'last' (= P_s, the default)",
    )
    parser.add_argument("--grid-size", type=int, default=20, help="cells per side of grid.png (20)")
    parser.add_argument(
        "--grid-layout",
        choices=("fill", "bin"),
        default="fill",
        help="grid.png: 'fill' assigns a sample of points one-to-one to all cells "
        "(default); 'bin' shows one patch per occupied UMAP bin",
    )
    parser.add_argument(
        "--gallery-members",
        type=int,
        default=8,
        help="patches per cluster in gallery.png besides the mean (8)",
    )
    parser.add_argument(
        "--max-explorer-points",
        type=int,
        default=5000,
        help="points shown in explorer.html; more are sampled per cluster (5000)",
    )
    parser.add_argument(
        "--particle-diameter",
        type=float,
        default=None,
        help="particle diameter in Å: sphere size in colour maps and the cluster "
        "MRC (default: half the patch size)",
    )
    parser.add_argument(
        "--colormap-slices",
        type=int,
        default=1,
        help="slabs per colour-map PNG, at candidate-z quantiles (1: the median)",
    )
    parser.add_argument(
        "--no-cluster-mrc",
        action="store_true",
        help="do not write colormaps/{tomogram}_clusters.mrc",
    )


@dataclass
class _Set:
    """Candidates of one tomogram."""

    name: str
    embeddings: np.ndarray  # (n, D) float32
    xyz: np.ndarray  # (n, 3) float64
    score: np.ndarray  # (n,) float64
    patches: np.ndarray  # (n, h, w) float32, the display channel
    voxel_size_a: float | None


def _scalar_str(value, default: str) -> str:
    try:
        return str(np.asarray(value).item())
    except (ValueError, TypeError):
        return default


def _load_npz(path: str, want: tuple[str, ...], producer: str) -> dict[str, np.ndarray]:
    if not Path(path).is_file():
        raise MilopypError(f"{path}: file not found; run `{producer}` first")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise MilopypError(
            f"{path}: not a readable .npz file ({err}); re-run `{producer}`"
        ) from err
    missing = [k for k in want if k not in data]
    if missing:
        raise MilopypError(
            f"{path}: missing arrays {missing} (found {sorted(data)}); give a file written by "
            f"`{producer}`"
        )
    return data


def _pick_channel(path: str, patches: np.ndarray, channels, choice: str) -> np.ndarray:
    names = [str(c) for c in np.atleast_1d(channels)] if channels is not None else []
    c = patches.shape[1]
    if choice == "last":
        return patches[:, c - 1]
    if choice in names:
        return patches[:, names.index(choice)]
    if choice.lstrip("-").isdigit() and -c <= int(choice) < c:
        return patches[:, int(choice)]
    raise MilopypError(
        f"{path}: --channel {choice!r} matches none of the {c} channels {names or list(range(c))}; "
        "give a channel name, an index or 'last'"
    )


def load_sets(embedding_paths: list[str], patch_paths: list[str], channel: str) -> list[_Set]:
    """Read embeddings and patches, pair them by tomogram name, check they agree."""
    patches_by_name: dict[str, tuple[str, dict]] = {}
    for p in patch_paths:
        d = _load_npz(p, ("patches", "xyz"), "milopyp patches")
        name = _scalar_str(d.get("tomogram", Path(p).stem), Path(p).stem)
        if name in patches_by_name:
            raise MilopypError(
                f"{p}: tomogram {name!r} also comes from {patches_by_name[name][0]}; give each "
                "patch file once"
            )
        patches_by_name[name] = (p, d)

    sets: list[_Set] = []
    seen: dict[str, str] = {}
    for e in embedding_paths:
        d = _load_npz(e, ("embeddings", "xyz"), "milopyp embed")
        name = _scalar_str(d.get("tomogram", Path(e).stem), Path(e).stem)
        if name in seen:
            raise MilopypError(
                f"{e}: tomogram {name!r} also comes from {seen[name]}; give each embedding file once"
            )
        seen[name] = e
        emb = np.asarray(d["embeddings"], dtype=np.float32)
        xyz = np.asarray(d["xyz"], dtype=np.float64).reshape(-1, 3)
        if emb.ndim != 2 or len(emb) != len(xyz):
            raise MilopypError(
                f"{e}: expected embeddings (N, D) and xyz (N, 3) with the same N, got "
                f"{emb.shape} and {d['xyz'].shape}; re-run `milopyp embed`"
            )
        if name not in patches_by_name:
            raise MilopypError(
                f"{e}: no patch file for tomogram {name!r} among --patches "
                f"({sorted(patches_by_name)}); add patches/{name}.npz"
            )
        p_path, pd_ = patches_by_name[name]
        patches = np.asarray(pd_["patches"])
        if patches.ndim != 4 or len(patches) != len(emb):
            raise MilopypError(
                f"{p_path}: expected patches (N, C, h, w) with N = {len(emb)} as in {e}, got "
                f"shape {patches.shape}; embed the same patch file again"
            )
        p_xyz = np.asarray(pd_["xyz"], dtype=np.float64).reshape(-1, 3)
        if p_xyz.shape != xyz.shape or not np.allclose(p_xyz, xyz, atol=1e-3):
            raise MilopypError(
                f"{e}: candidate positions differ from those of {p_path}; embed the same patch "
                "file again"
            )
        if len(emb) == 0:
            log.warning("%s: no candidates in tomogram %s; skipped", e, name)
            continue
        score = (
            np.asarray(d["score"], dtype=np.float64) if "score" in d else np.full(len(emb), np.nan)
        )
        vs = d.get("voxel_size_a", pd_.get("voxel_size_a"))
        sets.append(
            _Set(
                name=name,
                embeddings=emb,
                xyz=xyz,
                score=score.reshape(-1),
                patches=_pick_channel(p_path, patches, pd_.get("channels"), channel).astype(
                    np.float32
                ),
                voxel_size_a=None if vs is None else float(np.asarray(vs).item()),
            )
        )
    return sets


def _reserve(fh, nbytes: int, final: Path) -> None:
    """Allocate ``nbytes`` of the scratch file ``fh`` before it is memory-mapped: a full disk
    then fails here, in one line naming ``final``, not as a SIGBUS in the map."""
    import errno

    from milopyp.io.atomic import write_error

    try:
        os.posix_fallocate(fh.fileno(), 0, nbytes)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # file system cannot: map as before
            return
        raise write_error(final, err) or err from None


def _write_bytes(path: Path, data: bytes) -> None:
    from milopyp.io.atomic import write_bytes

    write_bytes(path, data)
    log.info("wrote %s", path)


def _write_colormaps(
    args: argparse.Namespace,
    out_dir: Path,
    points: pd.DataFrame,
    colors: np.ndarray,
    patch_size: int,
    voxel_sizes: dict[str, float | None],
) -> list[str]:
    from milopyp.io.mrc import read_tomogram, write_tomogram
    from milopyp.visualize import png_bytes
    from milopyp.visualize.colormap import colormap_image, draw_spheres

    names = set(points["tomogram"])
    written = []
    for t_path in args.tomograms:
        stem = Path(t_path).name.split(".")[0]
        if stem not in names:
            log.warning("%s: no candidates of a tomogram named %r; no colour map", t_path, stem)
            continue
        # the patches' voxel size (read or given upstream) stands in for a missing header one
        tomo, voxel_size_a = read_tomogram(t_path, mmap=True, check_finite=False,
                                           voxel_size_a=voxel_sizes.get(stem))
        rows = np.flatnonzero(points["tomogram"].to_numpy() == stem)
        xyz = points.loc[rows, ["x", "y", "z"]].to_numpy(float)
        shape_xyz = np.array(tomo.shape[::-1])
        outside = np.any((xyz < -0.5) | (xyz > shape_xyz - 0.5), axis=1)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise MilopypError(
                f"{t_path}: candidate {tuple(xyz[i])} (x, y, z) lies outside the tomogram of "
                f"shape (z, y, x) {tomo.shape}; give the tomogram the candidates were found in"
            )
        if args.particle_diameter:
            vs = voxel_sizes.get(stem) or voxel_size_a
            radius_vox = 0.5 * args.particle_diameter / vs
        else:
            radius_vox = patch_size / 4.0
        if args.colormap_slices > 1:
            qs = np.linspace(0, 1, args.colormap_slices + 2)[1:-1]
            z_centers = [round(v) for v in np.quantile(xyz[:, 2], qs)]
        else:
            z_centers = None
        img = colormap_image(tomo, xyz, colors[rows], radius_vox=radius_vox, z_centers=z_centers)
        _write_bytes(out_dir / "colormaps" / f"{stem}.png", png_bytes(img))
        if not args.no_cluster_mrc:
            values = points.loc[rows, "cluster"].to_numpy(np.float32) + 1.0
            mrc_path = out_dir / "colormaps" / f"{stem}_clusters.mrc"
            if 4 * tomo.size <= _IN_MEMORY_BYTES:
                vol = draw_spheres(np.zeros(tomo.shape, np.float32), xyz, values, radius_vox)
                write_tomogram(mrc_path, vol, voxel_size_a)
            else:  # bounded memory: draw into a temporary file, copied slab by slab
                with tempfile.TemporaryFile(dir=mrc_path.parent) as fh:
                    _reserve(fh, 4 * tomo.size, mrc_path)
                    vol = np.memmap(fh, dtype=np.float32, mode="w+", shape=tomo.shape)
                    draw_spheres(vol, xyz, values, radius_vox)
                    write_tomogram(mrc_path, vol, voxel_size_a)
                    del vol
            log.info("wrote %s", mrc_path)
        written.append(stem)
        del tomo
    return written


def _versions() -> dict[str, str | None]:
    from milopyp.provenance import package_versions

    return package_versions(
        (
            ("milopyp",),
            ("numpy",),
            ("faiss-cpu", "faiss-gpu", "faiss"),
            ("scikit-learn",),
            ("umap-learn",),
            ("numba",),
        )
    )


def main(args: argparse.Namespace) -> None:
    from milopyp.cluster import effective_k, normalise_embedding_rgb, overcluster, umap_project
    from milopyp.io.atomic import atomic_path, prepare_outputs, write_text
    from milopyp.visualize import png_bytes
    from milopyp.visualize.explorer import explorer_html
    from milopyp.visualize.gallery import gallery_png
    from milopyp.visualize.grid import grid_image

    for opt, v in (
        ("--k", args.k),
        ("--classes", args.classes),
        ("--grid-size", args.grid_size),
        ("--umap-neighbors", args.umap_neighbors),
        ("--max-explorer-points", args.max_explorer_points),
        ("--colormap-slices", args.colormap_slices),
    ):
        if v < 1:
            raise MilopypError(f"{opt} must be >= 1, got {v}")
    if args.umap_neighbors < 2:
        raise MilopypError(f"--umap-neighbors must be >= 2, got {args.umap_neighbors}")
    if args.particle_diameter is not None and args.particle_diameter <= 0:
        raise MilopypError(f"--particle-diameter must be > 0 Å, got {args.particle_diameter}")

    out_dir = Path(args.output)
    stems = [Path(p).name.split(".")[0] for p in (args.tomograms or [])]
    prepare_outputs(
        *(out_dir / name for name in OUTPUT_FILES),
        *(out_dir / "colormaps" / f"{stem}{end}" for stem in stems
          for end in (".png", "_clusters.mrc")),
    )
    sets = load_sets(args.embeddings, args.patches, args.channel)
    n = sum(len(s.embeddings) for s in sets)
    if n < max(MIN_POINTS, args.classes):
        raise MilopypError(
            f"{', '.join(args.embeddings[:3])}{' ...' if len(args.embeddings) > 3 else ''}: "
            f"{n} candidates in all, clustering into {args.classes} classes needs at least "
            f"{max(MIN_POINTS, args.classes)}; add tomograms, lower the candidate threshold "
            "or ask for fewer --classes"
        )
    sizes = {s.patches.shape[1:] for s in sets}
    if len(sizes) > 1:
        raise MilopypError(
            f"patch files have different patch sizes {sorted(sizes)}; cut all patches with the "
            "same --size"
        )
    dims = {s.embeddings.shape[1] for s in sets}
    if len(dims) > 1:
        raise MilopypError(
            f"embedding files have different dimensions {sorted(dims)}; embed all tomograms "
            "with the same model"
        )
    emb = np.concatenate([s.embeddings for s in sets])
    patches = np.concatenate([s.patches for s in sets])
    log.info("%d candidates from %d tomograms, %d-D embeddings", n, len(sets), emb.shape[1])

    timings = {}
    t0 = time.perf_counter()
    labels, _ = overcluster(emb, k=args.k, n_classes=args.classes, seed=args.seed)
    timings["overcluster_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    u2 = umap_project(
        emb, n_components=2, n_neighbors=args.umap_neighbors, min_dist=args.min_dist, seed=args.seed
    )
    timings["umap2_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    u3 = umap_project(
        emb, n_components=3, n_neighbors=args.umap_neighbors, min_dist=args.min_dist, seed=args.seed
    )
    timings["umap3_s"] = time.perf_counter() - t0

    points = pd.DataFrame(
        {
            "point_id": np.arange(n),
            "tomogram": np.concatenate([[s.name] * len(s.embeddings) for s in sets]),
            "x": np.concatenate([s.xyz[:, 0] for s in sets]),
            "y": np.concatenate([s.xyz[:, 1] for s in sets]),
            "z": np.concatenate([s.xyz[:, 2] for s in sets]),
            "score": np.concatenate([s.score for s in sets]),
            "cluster": labels,
            "umap_x": u2[:, 0].round(5),
            "umap_y": u2[:, 1].round(5),
            "umap3_x": u3[:, 0].round(5),
            "umap3_y": u3[:, 1].round(5),
            "umap3_z": u3[:, 2].round(5),
        }
    )[POINT_COLUMNS]
    with atomic_path(out_dir / "points.csv") as tmp:
        points.to_csv(tmp, index=False)
    log.info("wrote %s (%d points, %d clusters)", out_dir / "points.csv", n, labels.max() + 1)

    t0 = time.perf_counter()
    _write_bytes(
        out_dir / "grid.png",
        png_bytes(
            grid_image(
                patches,
                u2,
                grid_size=args.grid_size,
                labels=labels,
                layout=args.grid_layout,
                seed=args.seed,
            )
        ),
    )
    _write_bytes(
        out_dir / "gallery.png",
        gallery_png(
            patches, labels, embeddings=emb, n_members=args.gallery_members, seed=args.seed
        ),
    )
    colormaps = _write_colormaps(
        args,
        out_dir,
        points,
        normalise_embedding_rgb(u3),
        patches.shape[-1],
        {s.name: s.voxel_size_a for s in sets},
    )
    page = explorer_html(
        points,
        thumbnails=patches,
        max_points=args.max_explorer_points,
        seed=args.seed,
        title=f"milopyp explorer: {out_dir}",
    )
    write_text(out_dir / "explorer.html", page)
    log.info("wrote %s (%.1f MB)", out_dir / "explorer.html", len(page) / 1e6)
    timings["figures_s"] = time.perf_counter() - t0

    info = {
        "n_points": int(n),
        "tomograms": [s.name for s in sets],
        "k": args.k,
        "k_used": effective_k(n, args.k, args.classes),
        "classes": args.classes,
        "cluster_sizes": np.bincount(labels).tolist(),
        "umap_neighbors": args.umap_neighbors,
        "min_dist": args.min_dist,
        "seed": args.seed,
        "channel": args.channel,
        "grid_layout": args.grid_layout,
        "colormaps": colormaps,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "versions": _versions(),
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR"),
    }
    write_text(out_dir / "cluster_info.json", json.dumps(info, indent=1) + "\n")
