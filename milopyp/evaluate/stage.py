"""The ``evaluate`` stage: pick and truth tables in, the metrics table (CSV, JSON, stdout) out
(``milopyp evaluate`` translates its options into :func:`run`).

Only tomograms that appear in the truth are scored; picks of other tomograms are ignored with
a warning, and a truth tomogram without picks counts all its particles as missed. The match
radius is ``radius_vox``, else ``radius_a`` Å, else its default (:mod:`milopyp.defaults`):
fibres :data:`~milopyp.defaults.FIBER_EVALUATION_RADIUS_VOX`, particles
``evaluation_radius_a(particle_diameter_a)``. Å need the voxel size: ``voxel_size_a``, else a
single ``voxel_size_a`` column value of the truth.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence

import pandas as pd

from milopyp import defaults
from milopyp.errors import MilopypError
from milopyp.evaluate.fiber_metrics import evaluate_fibers, format_fiber_table
from milopyp.evaluate.metrics import evaluate, format_table

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def read_tables(paths: Sequence[PathLike], what: str) -> pd.DataFrame:
    """The point tables ``paths`` as one (a ``score`` column only where some have a score);
    ``what`` "picks" reads them as pick tables (:func:`milopyp.io.coords.read_picks`)."""
    from milopyp.io.coords import read_coordinates, read_picks

    read = read_picks if what == "picks" else read_coordinates
    frames = [read(p) for p in paths]
    if not frames:
        raise MilopypError(f"no {what} files given")
    df = pd.concat(frames, ignore_index=True, sort=False)
    if "score" in df.columns and df["score"].isna().any() and not df["score"].isna().all():
        n = int(df["score"].isna().sum())
        log.warning("%d of %d %s have no score; they rank last for AP", n, len(df), what)
    if "score" in df.columns and df["score"].isna().all():
        df = df.drop(columns="score")
    return df


def match_radius_vox(truth: pd.DataFrame, *, radius_vox: float | None = None,
               radius_a: float | None = None, particle_diameter_a: float | None = None,
               voxel_size_a: float | None = None, fibers: bool = False) -> float:
    """The match radius in voxels (see the module docstring)."""
    if radius_vox is not None:
        if not radius_vox >= 0:
            raise MilopypError(f"--radius-vox must be >= 0 voxels, got {radius_vox}")
        return float(radius_vox)
    if radius_a is None and fibers:
        return float(defaults.FIBER_EVALUATION_RADIUS_VOX)
    if radius_a is None and particle_diameter_a is None:
        raise MilopypError("no match radius: give --radius-vox, --radius-a or "
                           "--particle-diameter-a (half a diameter)")
    flag = "--radius-a" if radius_a is not None else "--particle-diameter-a"
    if radius_a is None:
        radius_a = defaults.evaluation_radius_a(particle_diameter_a)
    voxel = voxel_size_a
    if voxel is None and "voxel_size_a" in truth.columns:
        values = pd.to_numeric(truth["voxel_size_a"], errors="coerce").dropna().unique()
        if len(values) == 1:
            voxel = float(values[0])
        elif len(values) > 1:
            raise MilopypError(
                f"truth tables hold several voxel sizes {sorted(values)[:5]} Å; {flag} needs "
                "one; pass --radius-vox, or evaluate each voxel size separately"
            )
    if voxel is None:
        raise MilopypError(f"the match radius {radius_a:g} Å ({flag}) needs the voxel size: "
                           "pass --voxel-size-a (Å) or give --radius-vox")
    if not (voxel > 0 and math.isfinite(voxel)):
        raise MilopypError(f"voxel size must be > 0 Å, got {voxel}")
    if not radius_a >= 0:
        raise MilopypError(f"{flag} must give a radius >= 0 Å, got {radius_a}")
    return float(radius_a) / float(voxel)


def filter_species(truth: pd.DataFrame, species: str | None,
                   paths: Sequence[PathLike]) -> pd.DataFrame:
    """The truth rows of the comma-separated ``species`` (all without)."""
    sources = ", ".join(map(str, paths))
    if not species:
        if "species" in truth.columns and truth["species"].nunique() > 1:
            log.info("scoring against every truth species: %s",
                     ", ".join(sorted(truth["species"].astype(str).unique())))
        return truth
    wanted = [s.strip() for s in species.split(",") if s.strip()]
    if "species" not in truth.columns:
        raise MilopypError(
            f"{sources}: --species {species} given but the truth has no `species` column "
            f"(columns {list(truth.columns)}); drop --species"
        )
    present = set(truth["species"].astype(str))
    unknown = [s for s in wanted if s not in present]
    if unknown:
        raise MilopypError(
            f"{sources}: species {unknown} not in the truth; it holds {sorted(present)}; fix "
            f"--species"
        )
    return truth[truth["species"].astype(str).isin(wanted)]


def run(picks: Sequence[PathLike], truth: Sequence[PathLike], output: PathLike, *,
        radius_vox: float | None = None, radius_a: float | None = None,
        particle_diameter_a: float | None = None, voxel_size_a: float | None = None,
        species: str | None = None, fibers: bool = False, min_coverage: float = 0.5,
        json_path: PathLike | None = None) -> pd.DataFrame:
    """Score the pick tables ``picks`` against the truth tables ``truth`` (``fibers``: traced
    fibres against true centre lines, a fibre found when ``min_coverage`` of its points match);
    write the metrics to ``output`` (CSV) and ``json_path``, print them; return them."""
    from milopyp.io.atomic import atomic_path, prepare_outputs, write_text

    prepare_outputs(output, json_path)
    found = read_tables(picks, "picks")
    truth_all = read_tables(truth, "truth")
    radius = match_radius_vox(truth_all, radius_vox=radius_vox, radius_a=radius_a,
                              particle_diameter_a=particle_diameter_a, voxel_size_a=voxel_size_a,
                              fibers=fibers)
    tomograms = sorted(truth_all["tomogram"].astype(str).unique())
    chosen = filter_species(truth_all, species, truth)
    outside = sorted(set(found["tomogram"].astype(str)) - set(tomograms))
    if outside:
        n = int(found["tomogram"].astype(str).isin(outside).sum())
        log.warning("%d picks of %d tomogram(s) without truth are ignored: %s", n, len(outside),
                    ", ".join(outside[:10]) + (" ..." if len(outside) > 10 else ""))
        found = found[~found["tomogram"].astype(str).isin(outside)]
    if not tomograms:
        raise MilopypError(f"{', '.join(map(str, truth))}: the truth holds no points; nothing "
                           f"to score")
    if fibers:
        metrics = evaluate_fibers(found, chosen, radius_vox=radius, tomograms=tomograms,
                                  min_coverage=min_coverage)
    else:
        metrics = evaluate(found, chosen, radius_vox=radius, tomograms=tomograms)
    with atomic_path(output) as tmp:
        metrics.to_csv(tmp, index=False)
    if json_path:
        doc = {"radius_vox": radius, "species": species.split(",") if species else None,
               "picks": list(map(str, picks)), "truth": list(map(str, truth)),
               "tomograms": _records(metrics.iloc[:-1]), "overall": _records(metrics.iloc[-1:])[0]}
        write_text(json_path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    print(f"matching radius {radius:.3g} voxels" + (f", species {species}" if species else ""))
    print(format_fiber_table(metrics) if fibers else format_table(metrics))
    return metrics


def _records(df: pd.DataFrame) -> list[dict]:
    """Rows as dicts with NaN -> None (valid JSON)."""
    out = []
    for row in df.to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else
                        (v.item() if hasattr(v, "item") else v)) for k, v in row.items()})
    return out
