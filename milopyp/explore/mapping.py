"""The map of the exploration (``milopyp cluster``): over-cluster the embeddings of all
tomograms, project them with UMAP, draw the figures and write the explorer.

:func:`run` writes into the output folder (every file atomically):

* ``points.csv`` (:mod:`milopyp.io.exploration`): one row per candidate; ``point_id`` is the
  row number, in the order of the embedding files, and is what ``selection.json`` refers to;
* ``grid.png`` (2D grid of patches by UMAP position), ``gallery.png`` (per-cluster rows);
* ``colormaps/{tomogram}.png`` and ``colormaps/{tomogram}_clusters.mrc`` for each tomogram
  file whose stem matches a tomogram of the embeddings (:mod:`milopyp.visualize.colormap`);
* ``explorer.html`` (offline interactive explorer, :mod:`milopyp.visualize.explorer`);
* ``cluster_info.json``: parameters, k actually used, cluster sizes, timings, versions;
* ``features/{tomogram}.npz``: what the candidates were clustered and projected by (the
  embeddings beside their radial profiles, :func:`milopyp.cluster.with_profiles`), in the
  format of ``milopyp embed``'s files: the space in which ``milopyp import-selection`` ranks
  a seeded cluster's members.

UMAP compiles with numba on first use; set ``NUMBA_CACHE_DIR`` to a persistent writable
folder to keep the compiled code between runs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from milopyp import cluster as clustering
from milopyp.errors import MilopypError
from milopyp.io.mrc import tomogram_name

log = logging.getLogger(__name__)

#: fewest candidates (all tomograms together) that clustering and UMAP accept
MIN_POINTS = 10
#: the files written into the output folder (besides colormaps/{tomogram}*)
OUTPUT_FILES = ("points.csv", "grid.png", "gallery.png", "explorer.html", "cluster_info.json")
#: cluster volumes larger than this are drawn into a temporary memory-mapped file
_IN_MEMORY_BYTES = 1 << 30
#: Weight of the candidates' radial density profiles beside the embeddings in the clustering
#: and UMAP (:func:`milopyp.cluster.with_profiles`; each of the 6 standardised shells of
#: :func:`milopyp.localize.profile.radial_profiles` counts this many times an average
#: embedding dimension; 0: the embeddings alone). The exploration's 2D patches at CPU
#: settings did not tell the devset's ribosomes from the dense look-alike complexes of their
#: size (crowded: best cluster 51-53 % ribosomes); the rotationally averaged density does:
#: with it one crowded cluster is 72 % ribosomes (104 of 145; weights 0.5-2 gave 0.52-0.54,
#: the profiles alone 0.69; benchmarks/workflow.py, docs/accuracy.md, "Exploration and the
#: unattended path").
PROFILE_WEIGHT = 4.0


@dataclass
class _Set:
    """Candidates of one tomogram."""

    name: str
    embeddings: np.ndarray  # (n, D) float32
    xyz: np.ndarray  # (n, 3) float64
    score: np.ndarray  # (n,) float64
    patches: np.ndarray  # (n, h, w) float32, the display channel
    voxel_size_a: float | None


def _pick_channel(path: str, patches: np.ndarray, names: list[str], choice: str) -> np.ndarray:
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
    from milopyp.io.exploration import read_embeddings, read_patches

    patch_files = {}
    for p in patch_paths:
        f = read_patches(p)
        if f.tomogram in patch_files:
            raise MilopypError(
                f"{p}: tomogram {f.tomogram!r} also comes from {patch_files[f.tomogram].path}; "
                "give each patch file once"
            )
        patch_files[f.tomogram] = f
    sets: list[_Set] = []
    seen: dict[str, str] = {}
    for e in embedding_paths:
        emb = read_embeddings(e)
        name = emb.tomogram
        if name in seen:
            raise MilopypError(
                f"{e}: tomogram {name!r} also comes from {seen[name]}; give each embedding "
                "file once"
            )
        seen[name] = e
        if name not in patch_files:
            raise MilopypError(
                f"{e}: no patch file for tomogram {name!r} among --patches "
                f"({sorted(patch_files)}); add patches/{name}.npz"
            )
        pf = patch_files[name]
        n = len(emb.embeddings)
        if len(pf.patches) != n:
            raise MilopypError(
                f"{pf.path}: expected patches (N, C, h, w) with N = {n} as in {e}, got "
                f"shape {pf.patches.shape}; embed the same patch file again"
            )
        if not np.allclose(pf.xyz, emb.xyz, atol=1e-3):
            raise MilopypError(
                f"{e}: candidate positions differ from those of {pf.path}; embed the same patch "
                "file again"
            )
        if n == 0:
            log.warning("%s: no candidates in tomogram %s; skipped", e, name)
            continue
        vs = emb.voxel_size_a if emb.voxel_size_a is not None else pf.voxel_size_a
        sets.append(_Set(
            name=name, embeddings=emb.embeddings, xyz=emb.xyz,
            score=np.full(n, np.nan) if emb.score is None else emb.score,
            patches=_pick_channel(pf.path, pf.patches, pf.channels, channel), voxel_size_a=vs,
        ))
    return sets


def _reserve(fh, nbytes: int, final: Path) -> None:
    """Allocate ``nbytes`` of the scratch file ``fh`` before it is memory-mapped
    (:func:`milopyp.io.atomic.reserve`): a full disk then fails here, in one line naming
    ``final``, not as a SIGBUS in the map."""
    from milopyp.io.atomic import reserve, write_error

    try:
        reserve(fh, nbytes)
    except OSError as err:
        raise write_error(final, err) or err from None


def _write_bytes(path: Path, data: bytes) -> None:
    from milopyp.io.atomic import write_bytes

    write_bytes(path, data)
    log.info("wrote %s", path)


def _write_colormaps(out_dir: Path, tomogram_paths: list[str], points: pd.DataFrame,
                     colors: np.ndarray, patch_size_vox: int, voxel_sizes: dict, *,
                     particle_diameter_a: float | None, n_slabs: int,
                     cluster_mrc: bool) -> list[str]:
    """The colour map PNG (and cluster MRC) of each tomogram file that has candidates;
    returns the names of the tomograms drawn."""
    from milopyp.io.coords import check_inside
    from milopyp.io.mrc import read_tomogram, write_tomogram
    from milopyp.visualize import png_bytes
    from milopyp.visualize.colormap import (
        cluster_volume,
        colormap_image,
        marker_radius_vox,
        slab_centers,
    )

    names = set(points["tomogram"])
    written = []
    for t_path in tomogram_paths:
        stem = tomogram_name(t_path)
        if stem not in names:
            log.warning("%s: no candidates of a tomogram named %r; no colour map", t_path, stem)
            continue
        # the patches' voxel size (read or given upstream) stands in for a missing header one
        tomo, voxel_size_a = read_tomogram(t_path, mmap=True, check_finite=False,
                                           voxel_size_a=voxel_sizes.get(stem))
        rows = np.flatnonzero(points["tomogram"].to_numpy() == stem)
        mine = points.iloc[rows]
        check_inside(mine, tomo.shape, f"{t_path} (the candidates of {stem})")
        xyz = mine[["x", "y", "z"]].to_numpy(float)
        radius_vox = marker_radius_vox(patch_size_vox, particle_diameter_a,
                                       voxel_sizes.get(stem) or voxel_size_a)
        img = colormap_image(tomo, xyz, colors[rows], radius_vox=radius_vox,
                             z_centers=slab_centers(xyz, n_slabs))
        _write_bytes(out_dir / "colormaps" / f"{stem}.png", png_bytes(img))
        if cluster_mrc:
            labels = mine["cluster"].to_numpy()
            mrc_path = out_dir / "colormaps" / f"{stem}_clusters.mrc"
            if 4 * tomo.size <= _IN_MEMORY_BYTES:
                write_tomogram(mrc_path, cluster_volume(tomo.shape, xyz, labels, radius_vox),
                               voxel_size_a)
            else:  # bounded memory: draw into a temporary file, copied slab by slab
                with tempfile.TemporaryFile(dir=mrc_path.parent) as fh:
                    _reserve(fh, 4 * tomo.size, mrc_path)
                    vol = np.memmap(fh, dtype=np.float32, mode="w+", shape=tomo.shape)
                    cluster_volume(tomo.shape, xyz, labels, radius_vox, out=vol)
                    write_tomogram(mrc_path, vol, voxel_size_a)
                    del vol
            log.info("wrote %s", mrc_path)
        written.append(stem)
        del tomo
    return written


def _profiles(sets: list[_Set], tomogram_paths: list[str], particle_diameter_a: float | None,
              weight: float) -> np.ndarray | None:
    """Radial density profiles (:func:`milopyp.localize.profile.radial_profiles`) of every
    candidate, in the order of ``sets``, read from the tomogram files; None (and a log line
    saying why) when ``weight`` is 0, the particle diameter is not given or a tomogram's
    file is missing."""
    from milopyp.io.mrc import read_tomogram
    from milopyp.localize.profile import radial_profiles

    if weight <= 0:
        return None
    by_name = {tomogram_name(p): p for p in tomogram_paths}
    missing = [s.name for s in sets if s.name not in by_name]
    if particle_diameter_a is None or missing:
        log.info("clustering the embeddings alone: %s", "no particle diameter given"
                 if particle_diameter_a is None else f"no tomogram file for {missing[:3]}")
        return None
    out = []
    for s in sets:
        tomogram, voxel_size_a = read_tomogram(by_name[s.name], mmap=True, check_finite=False,
                                               voxel_size_a=s.voxel_size_a)
        out.append(radial_profiles(tomogram, s.xyz, particle_diameter_a / 2.0 / voxel_size_a))
        del tomogram  # one tomogram in memory at a time (an 8-bit file is converted)
    log.info("radial profiles of %d candidates beside the embeddings (weight %g)",
             sum(len(p) for p in out), weight)
    return np.concatenate(out)


def _versions() -> dict[str, str | None]:
    from milopyp.provenance import package_versions

    return package_versions((("milopyp",), ("numpy",), ("faiss-cpu", "faiss-gpu", "faiss"),
                             ("scikit-learn",), ("umap-learn",), ("numba",)))


def _timed(timings: dict, key: str, func, *args, **kwargs):
    t0 = time.perf_counter()
    out = func(*args, **kwargs)
    timings[key] = time.perf_counter() - t0
    return out


def run(
    embedding_paths: list[str],
    patch_paths: list[str],
    output_dir,
    *,
    tomogram_paths: list[str] = (),
    k: int = 200,
    n_classes: int = 10,
    umap_neighbors: int = 40,
    min_dist: float = 0.1,
    seed: int = 0,
    channel: str = "last",
    grid_size: int = 20,
    grid_layout: str = "fill",
    gallery_members: int = 8,
    max_explorer_points: int = 5000,
    particle_diameter_a: float | None = None,
    colormap_slices: int = 1,
    cluster_mrc: bool = True,
    profile_weight: float = PROFILE_WEIGHT,
) -> None:
    """Cluster, project and draw the candidates of all tomograms into ``output_dir``.

    k: k-means centres (clipped to N/4); n_classes: classes after spectral re-clustering;
    channel: patch channel shown (name, index or "last"); particle_diameter_a: sphere size
    (Å) in the colour maps, None: half the patch side; colormap_slices: slabs per colour map;
    profile_weight: weight of the candidates' radial profiles (:data:`PROFILE_WEIGHT`; they
    need ``tomogram_paths`` for every tomogram and ``particle_diameter_a``; 0: none).
    """
    from milopyp.io.atomic import prepare_outputs, write_text
    from milopyp.io.exploration import write_embedding_rows, write_points
    from milopyp.visualize import png_bytes
    from milopyp.visualize.explorer import explorer_html
    from milopyp.visualize.gallery import gallery_png
    from milopyp.visualize.grid import grid_image

    for opt, v in (("--k", k), ("--classes", n_classes), ("--grid-size", grid_size),
                   ("--umap-neighbors", umap_neighbors),
                   ("--max-explorer-points", max_explorer_points),
                   ("--colormap-slices", colormap_slices)):
        if v < 1:
            raise MilopypError(f"{opt} must be >= 1, got {v}")
    if umap_neighbors < 2:
        raise MilopypError(f"--umap-neighbors must be >= 2, got {umap_neighbors}")
    if particle_diameter_a is not None and particle_diameter_a <= 0:
        raise MilopypError(f"--particle-diameter-a must be > 0 Å, got {particle_diameter_a}")

    out_dir = Path(output_dir)
    stems = [tomogram_name(p) for p in tomogram_paths]
    prepare_outputs(*(out_dir / name for name in OUTPUT_FILES),
                    *(out_dir / "colormaps" / f"{stem}{end}" for stem in stems
                      for end in (".png", "_clusters.mrc")))
    sets = load_sets(embedding_paths, patch_paths, channel)
    prepare_outputs(*(out_dir / "features" / f"{s.name}.npz" for s in sets))
    n = sum(len(s.embeddings) for s in sets)
    if n < max(MIN_POINTS, n_classes):
        raise MilopypError(
            f"{', '.join(embedding_paths[:3])}{' ...' if len(embedding_paths) > 3 else ''}: "
            f"{n} candidates in all, clustering into {n_classes} classes needs at least "
            f"{max(MIN_POINTS, n_classes)}; add tomograms, lower the candidate threshold "
            "or ask for fewer --classes"
        )
    if len({s.patches.shape[1:] for s in sets}) > 1:
        raise MilopypError(
            f"patch files have different patch sizes {sorted({s.patches.shape[1:] for s in sets})}"
            "; cut all patches with the same --size-vox"
        )
    if len({s.embeddings.shape[1] for s in sets}) > 1:
        raise MilopypError(
            f"embedding files have different dimensions "
            f"{sorted({s.embeddings.shape[1] for s in sets})}; embed all tomograms with the same "
            "model"
        )
    emb = np.concatenate([s.embeddings for s in sets])
    patches = np.concatenate([s.patches for s in sets])
    xyz = np.concatenate([s.xyz for s in sets])
    log.info("%d candidates from %d tomograms, %d-D embeddings", n, len(sets), emb.shape[1])

    timings: dict[str, float] = {}
    profiles = _timed(timings, "profiles_s", _profiles, sets, list(tomogram_paths),
                      particle_diameter_a, profile_weight)
    weight = profile_weight if profiles is not None else 0.0  # what the clustering used
    features = clustering.with_profiles(emb, profiles, weight)
    labels, _ = _timed(timings, "overcluster_s", clustering.overcluster, features, k=k,
                       n_classes=n_classes, seed=seed)
    umap = {"n_neighbors": umap_neighbors, "min_dist": min_dist, "seed": seed}
    u2 = _timed(timings, "umap2_s", clustering.umap_project, features, n_components=2, **umap)
    u3 = _timed(timings, "umap3_s", clustering.umap_project, features, n_components=3, **umap)

    points = pd.DataFrame({
        "point_id": np.arange(n),
        "tomogram": np.concatenate([[s.name] * len(s.embeddings) for s in sets]),
        "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
        "score": np.concatenate([s.score for s in sets]),
        "cluster": labels,
        "umap_x": u2[:, 0].round(5), "umap_y": u2[:, 1].round(5),
        "umap3_x": u3[:, 0].round(5), "umap3_y": u3[:, 1].round(5), "umap3_z": u3[:, 2].round(5),
    })
    start = 0
    for s in sets:
        write_embedding_rows(out_dir / "features" / f"{s.name}.npz",
                             features[start:start + len(s.embeddings)], s.xyz, s.score, s.name,
                             s.voxel_size_a)
        start += len(s.embeddings)
    write_points(out_dir / "points.csv", points)
    log.info("wrote %s (%d points, %d clusters)", out_dir / "points.csv", n, labels.max() + 1)

    t0 = time.perf_counter()
    _write_bytes(out_dir / "grid.png", png_bytes(grid_image(
        patches, u2, grid_size=grid_size, labels=labels, layout=grid_layout, seed=seed)))
    _write_bytes(out_dir / "gallery.png", gallery_png(
        patches, labels, embeddings=emb, n_members=gallery_members, seed=seed))
    colormaps = _write_colormaps(
        out_dir, list(tomogram_paths), points, clustering.normalise_embedding_rgb(u3),
        patches.shape[-1], {s.name: s.voxel_size_a for s in sets},
        particle_diameter_a=particle_diameter_a, n_slabs=colormap_slices,
        cluster_mrc=cluster_mrc,
    )
    page = explorer_html(points, thumbnails=patches, max_points=max_explorer_points, seed=seed,
                         title=f"milopyp explorer: {out_dir}")
    write_text(out_dir / "explorer.html", page)
    log.info("wrote %s (%.1f MB)", out_dir / "explorer.html", len(page) / 1e6)
    timings["figures_s"] = time.perf_counter() - t0

    info = {
        "n_points": int(n),
        "tomograms": [s.name for s in sets],
        "k": k,
        "k_used": clustering.effective_k(n, k, n_classes),
        "classes": n_classes,
        "cluster_sizes": np.bincount(labels).tolist(),
        "profile_weight": weight,
        "umap_neighbors": umap_neighbors,
        "min_dist": min_dist,
        "seed": seed,
        "channel": channel,
        "grid_layout": grid_layout,
        "colormaps": colormaps,
        "timings": {key: round(v, 2) for key, v in timings.items()},
        "versions": _versions(),
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR"),
    }
    write_text(out_dir / "cluster_info.json", json.dumps(info, indent=1) + "\n")
