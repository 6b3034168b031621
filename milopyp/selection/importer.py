"""A user's selection -> per-tomogram label files: all of ``milopyp import-selection``.

The selection file's format is detected from its content (:func:`milopyp.io.labels.read_selection`):
a selection document (``explorer``, ``clusters``, ``seeds``; these need ``points``, i.e.
explore/points.csv), a coordinate table used directly as labels, or
``copick:{object}:{user}:{session}`` (with ``copick_config``): the picks of that object, user
and session in a copick project, one run per campaign tomogram, converted from Å with each
tomogram's voxel size.

A coordinate table (the selection itself, a seeds file, a negatives table) is checked as
written, before any filter: an empty table (negatives may be empty), a row naming a tomogram
outside the campaign and (with MRC paths) a row outside its tomogram stop the run with one
line naming that file and the line.

Seeds (``seed_labels="nearest"``, the default) give few-shot labels: each seed's nearest
candidate (within ``seed_radius_vox``), then the members of the seeds' clusters nearest to a
seed in embedding space (``embeddings``; without them, the UMAP coordinates of points.csv),
in the seeds' tomograms (or ``label_tomograms``), up to ``max_seed_labels`` labels (default
:func:`~milopyp.selection.seeds.default_seed_label_cap`). ``"clusters"`` takes every member,
as clusters named explicitly always do. The log says how many labels came from where.

A document's ``negatives`` go to ``negatives_output``: one ``{tomogram}.csv`` per campaign
tomogram; negatives within ``seed_radius_vox`` of a label are dropped (a point cannot be
both). Output: see :func:`milopyp.io.labels.write_labels_folder`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from milopyp.errors import MilopypError
from milopyp.io import labels as io_labels
from milopyp.selection import resolve as res
from milopyp.selection import seeds as sd
from milopyp.selection.campaign import (
    campaign,
    check_inside,
    copick_labels,
    read_points,
    seed_table,
    shapes,
)
from milopyp.selection.spec import SELECT_KEYS, NegativeSpec, nothing_selected, spec_from_document

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Seeding:
    """How seeds become labels (see :func:`run`)."""

    radius_vox: float
    mode: str
    max_labels: int | None
    label_tomograms: list[str] | None
    embeddings: list[str] | None


def _seed_features(points, scope: set[str], embeddings: list[str] | None):
    """Features to rank cluster members by (rows of points), the metric and the space's name."""
    if embeddings:
        found = io_labels.read_embeddings(embeddings, scope)
        return sd.embedding_features(points, found, "--embeddings"), "cosine", "embedding"
    umap = sd.umap_features(points)
    if umap is None:
        raise MilopypError(
            "seeds: no --embeddings and no UMAP columns in --points to rank cluster members "
            "by; give --embeddings embeddings/*.npz or --seed-labels clusters"
        )
    return umap, "euclidean", "UMAP"


def _labels_from_seeds(points, spec, selection, points_path, known, geometry, explicit,
                       seeding: _Seeding, summary):
    """Labels the seeds add (rows of points) and the point ids of the seeds' candidates."""
    seeds = seed_table(spec, selection, known, geometry, tomogram=spec.tomogram)
    res.check_known_tomograms(seeds["tomogram"], known, selection, "its seeds")
    choice = sd.clusters_from_seeds(points, seeds, radius_vox=seeding.radius_vox,
                                    source=selection)
    for c, n in choice.votes.items():
        log.info("%s: cluster %d chosen by %d of %d seed(s)", selection, c, n, len(seeds))
    seed_ids = choice.assignments["point_id"].to_numpy(np.int64)
    summary.update(
        {"n_seeds": len(seeds), "seed_radius_vox": seeding.radius_vox,
         "seed_votes": {str(c): n for c, n in choice.votes.items()},
         "seed_labels": seeding.mode}
    )
    if seeding.mode == "clusters":
        extra = res.labels_from_ids(points, choice.clusters, seed_ids, selection, points_path)
        log.info("%s: seeds: every member of the chosen clusters: %s", selection,
                 res.describe_cluster_counts(res.cluster_counts(extra)))
        return extra, seed_ids, choice.clusters
    own = sd.SeedChoice(
        clusters=[c for c in choice.clusters if c not in explicit],
        votes=choice.votes, assignments=choice.assignments,
    )
    cap = seeding.max_labels or sd.default_seed_label_cap(len(seeds))
    seed_tomograms = set(seeds["tomogram"].astype(str))
    scope = set(seeding.label_tomograms or seed_tomograms)
    features, metric, space = _seed_features(points, scope | seed_tomograms, seeding.embeddings)
    near = sd.labels_near_seeds(points, own, features, max_labels=cap, tomograms=scope,
                                metric=metric)
    log.info("%s: %s", selection, near.describe(space))
    summary.update(
        {"max_seed_labels": cap, "seed_space": space,
         "labels_from_seeds": near.n_seeds, "labels_from_clusters": near.n_from_clusters,
         "dropped_by_seed_cap": near.n_dropped}
    )
    return near.labels, seed_ids, choice.clusters


def _labels_from_document(spec, selection: Path, points_path, known, geometry,
                          seeding: _Seeding, summary):
    """Labels of a selection document (explorer, clusters, seeds), the points table and the
    point ids of the seeds' own candidates; logs how many labels came from where."""
    points = read_points(points_path, selection)
    explicit = list(spec.clusters)
    labels = res.labels_from_ids(points, explicit, spec.points, selection, points_path)
    from_clusters = res.cluster_counts(labels[labels["cluster"].isin(explicit)])
    n_by_id = int((~labels["cluster"].isin(explicit)).sum())
    if explicit or spec.points:
        log.info("%s: %s selection: %s", selection, spec.format, "; ".join(
            part for part in (res.describe_cluster_counts(from_clusters) if explicit else "",
                              f"{n_by_id} from points listed by id" if spec.points else "")
            if part))
    seed_ids = np.zeros(0, np.int64)
    chosen = list(explicit)
    if spec.seeds_file or spec.seeds is not None:
        extra, seed_ids, by_seeds = _labels_from_seeds(
            points, spec, selection, points_path, known, geometry, explicit, seeding, summary
        )
        chosen = sorted(set(explicit) | set(by_seeds))
        labels = pd.concat([labels, extra], ignore_index=True)
        labels = labels.drop_duplicates("point_id").sort_values("point_id")
        labels = labels.reset_index(drop=True)
    if spec.n_points is not None and spec.n_points != len(labels):
        log.warning(
            "%s: the explorer counted %d selected points but %s gives %d; was the "
            "selection saved from this run's explorer?",
            selection, spec.n_points, points_path, len(labels),
        )
    outside = sorted(set(labels["tomogram"]) - set(known))
    if outside:
        n = int(labels["tomogram"].isin(outside).sum())
        log.warning(
            "%s: %d selected points of tomogram(s) %s that are not in --tomograms are "
            "dropped", points_path, n, outside[:8],
        )
        labels = res.restrict_tomograms(labels, known)
    summary.update(
        {"format": spec.format, "points_table": points_path, "clusters": chosen,
         "points": list(spec.points), "n_selected": len(labels)}
    )
    log.info("%s: %s selection, clusters %s + %d point id(s) -> %d points",
             selection, spec.format, chosen, len(spec.points), len(labels))
    return labels, points, seed_ids


def _negatives(spec, selection: Path, points, points_path, known, geometry):
    """The selection's negatives (``tomogram, x, y, z, source``) and how many came from
    where (``source -> count``)."""
    neg = spec.negatives if spec is not None else NegativeSpec()
    explicit_clusters = spec.clusters if spec is not None else []
    frames: dict[str, pd.DataFrame] = {}
    if neg.clusters or neg.points:
        both = sorted(set(neg.clusters) & set(explicit_clusters))
        if both:
            raise MilopypError(
                f"{selection}: cluster(s) {both} are selected and marked as negatives; a "
                f"cluster is either the target or not, remove it from one of the lists"
            )
        rows = res.labels_from_ids(points, neg.clusters, neg.points, selection, points_path)
        in_cluster = rows["cluster"].isin(neg.clusters)
        if neg.clusters:
            frames["cluster"] = rows[in_cluster]
        if neg.points:
            frames["point"] = rows[~in_cluster]
    if neg.seeds_file or (neg.seeds is not None and len(neg.seeds)):
        seeds = seed_table(neg, selection, known, geometry, tomogram=spec.tomogram,
                           allow_empty=True, what="negatives")
        res.check_known_tomograms(seeds["tomogram"], known, selection, "its negatives")
        frames["table" if neg.seeds_file else "seed"] = seeds
    negatives = res.negatives_table(frames)
    negatives = res.restrict_tomograms(negatives, known)
    check_inside(negatives, geometry, f"{selection} (negatives)")
    counts = {k: int((negatives["source"] == k).sum()) for k in frames}
    return negatives, counts


def _check_options(selection: Path, folders, seed_radius_vox, max_labels_per_tomogram,
                   max_seed_labels) -> None:
    if seed_radius_vox is None or not seed_radius_vox > 0:
        raise MilopypError(f"--seed-radius-vox must be > 0 voxels, got {seed_radius_vox}")
    for option, value in (("max-labels-per-tomogram", max_labels_per_tomogram),
                          ("max-seed-labels", max_seed_labels)):
        if value is not None and value < 1:
            raise MilopypError(f"--{option} must be >= 1, got {value}")
    for folder in folders:
        with contextlib.suppress(OSError):
            if selection.resolve().is_relative_to(folder.resolve()):
                raise MilopypError(
                    f"{selection}: the selection file lies inside the output folder {folder}, "
                    f"which is replaced; keep the selection elsewhere"
                )


def run(
    selection: str,
    tomograms: Sequence[str],
    output: str | Path,
    *,
    points: str | None = None,
    copick_config: str | None = None,
    voxel_size_a: float | None = None,
    seed_radius_vox: float = sd.SEED_RADIUS_VOX,
    max_labels_per_tomogram: int | None = None,
    label_tomograms: Sequence[str] | None = None,
    seed_labels: str = "nearest",
    max_seed_labels: int | None = None,
    embeddings: Sequence[str] | None = None,
    negatives_output: str | Path | None = None,
    seed: int = 0,
) -> dict:
    """Turn ``selection`` into the labels folder ``output`` (and the negatives folder
    ``negatives_output``, when given); returns the summary written to selection.json.

    ``selection``: a selection file or ``copick:OBJECT:USER:SESSION``; ``tomograms``: the
    campaign, names or MRC paths; ``points``: explore/points.csv (for documents);
    ``voxel_size_a``: voxel size in Å of every tomogram (default: each MRC header);
    ``seed_radius_vox``: a seed must lie within this many voxels of a candidate, and a
    negative this close to a label is dropped; ``max_labels_per_tomogram``: keep at most so
    many per tomogram (highest score first, else a sample seeded by ``seed``);
    ``label_tomograms``: keep the labels of these only; ``seed_labels``: ``"nearest"`` or
    ``"clusters"`` (:data:`~milopyp.selection.seeds.SEED_LABEL_MODES`); ``max_seed_labels``:
    cap of nearest mode; ``embeddings``: ``milopyp embed`` files to rank members by.
    """
    from milopyp.io.atomic import check_writable
    from milopyp.io.copick import parse_selection

    source = Path(selection)
    out = Path(output)
    negatives_out = Path(negatives_output) if negatives_output else None
    label_tomograms = list(label_tomograms) if label_tomograms else None
    outputs = [f for f in (out, negatives_out) if f is not None]
    _check_options(source, outputs, seed_radius_vox, max_labels_per_tomogram, max_seed_labels)
    seed_radius_vox = float(seed_radius_vox)
    # A failed run must not leave an earlier labels folder that looks current, nor the
    # half-built folders of a killed one; a read-only results folder fails here.
    started = time.time()
    for folder in outputs:
        io_labels.remove_old_output(folder)
        io_labels.remove_stale_builds(folder, started)
        check_writable(folder)

    known, geometry = campaign(tomograms, voxel_size_a)
    if label_tomograms:
        res.check_known_tomograms(label_tomograms, known, "--label-tomograms", "they")

    copick_spec = parse_selection(selection)
    if copick_spec is not None:
        kind = "coordinates"
        content = copick_labels(selection, copick_spec, copick_config, known, geometry,
                                voxel_size_a)
    else:
        kind, content = io_labels.read_selection(source, geometry, SELECT_KEYS)
    summary: dict = {"source": str(source), "format": None, "campaign_tomograms": known}
    spec, table, seed_ids = None, None, None
    if kind == "coordinates":
        labels = content
        if len(labels) == 0:
            raise nothing_selected(source)
        # as written, before any filter: the error names the user's file and line
        res.check_table_rows(labels, known, shapes(geometry), source)
        summary.update({"format": "coordinates", "clusters": [], "n_selected": len(labels)})
        log.info("%s: coordinate table, %d labels used directly", source, len(labels))
    else:
        spec = spec_from_document(content, source)
        seeding = _Seeding(seed_radius_vox, seed_labels, max_seed_labels, label_tomograms,
                           list(embeddings) if embeddings else None)
        labels, table, seed_ids = _labels_from_document(
            spec, source, points, known, geometry, seeding, summary
        )

    before = res.label_counts(labels)
    if label_tomograms:
        labels = res.restrict_tomograms(labels, label_tomograms)
    if max_labels_per_tomogram is not None:
        keep = labels["point_id"].isin(seed_ids).to_numpy() if seed_ids is not None else None
        labels = res.cap_per_tomogram(labels, max_labels_per_tomogram, seed=seed, keep=keep)
    if len(labels) == 0:
        filters = (f" after --label-tomograms {' '.join(label_tomograms)}"
                   if label_tomograms else "")
        raise MilopypError(
            f"selection {source} resolves to 0 labels{filters} (before filters: "
            f"{before or 'none'}); select clusters that hold points of these tomograms or "
            f"change --label-tomograms"
        )
    if "cluster" in labels.columns and spec is not None:
        log.info("labels after filters, by cluster: %s",
                 res.describe_cluster_counts(res.cluster_counts(labels)))
    labels = res.label_table(labels)
    check_inside(labels, geometry, source)
    counts = res.label_counts(labels)

    negatives, from_where = _negatives(spec, source, table, points, known, geometry)
    negatives, n_conflict = res.drop_negatives_near_labels(negatives, labels, seed_radius_vox)
    negative_counts = {name: int((negatives["tomogram"] == name).sum()) for name in known}
    if from_where:
        where = {"cluster": f"clusters {sorted(spec.negatives.clusters)}",
                 "point": "point ids", "seed": "seeds",
                 "table": f"table {spec.negatives.seeds_file}"}
        log.info(
            "negatives: %s; %d dropped (within %g voxels of a label); per tomogram: %s",
            ", ".join(f"{n} from {where[k]}" for k, n in from_where.items()),
            n_conflict, seed_radius_vox,
            ", ".join(f"{k} {v}" for k, v in negative_counts.items()),
        )
    else:
        log.info("negatives: none (a selection may list `negatives:`, what is not the target)")
    if from_where and negatives_out is None:
        log.warning("%s: %d negatives not written: no --negatives-output", source,
                    len(negatives))

    summary.update(
        {"label_tomograms": label_tomograms, "max_labels_per_tomogram": max_labels_per_tomogram,
         "seed": seed, "label_counts": counts, "n_labels": len(labels),
         "negatives_from": from_where, "negatives_dropped_near_labels": n_conflict,
         "negative_counts": negative_counts, "n_negatives": len(negatives)}
    )
    tables = {name: negatives[negatives["tomogram"] == name] for name in known}
    io_labels.write_labels_folder(out, labels, summary, negatives=tables,
                                  negatives_out=negatives_out)
    log.info(
        "wrote %s: %d labels in %d tomogram(s): %s", out, len(labels), len(counts),
        ", ".join(f"{k} {v}" for k, v in counts.items()),
    )
    if negatives_out is not None:
        log.info("wrote %s: %d negatives in %d file(s)", negatives_out, len(negatives),
                 len(tables))
    return summary
