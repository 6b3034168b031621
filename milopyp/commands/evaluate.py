"""``milopyp evaluate``: precision / recall / F1 / AP of picks against ground truth.

Picks and truth are point tables (CSV/TSV/STAR/txt) with a ``tomogram`` column (or named
after their file stem); matching is one-to-one within a radius, per tomogram (see
:mod:`milopyp.evaluate`). The table goes to ``-o`` (CSV), optionally ``--json``, and stdout.
Only tomograms that appear in the truth files are scored; picks of other tomograms are
ignored with a warning. A truth tomogram without picks counts all its particles as missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math

import pandas as pd

from milopyp.errors import MilopypError

HELP = "precision / recall / F1 of picks against ground truth"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--picks", nargs="+", required=True, metavar="FILE",
                        help="pick / candidate tables (x, y, z in voxels; `score` enables AP)")
    parser.add_argument("--truth", nargs="+", required=True, metavar="FILE",
                        help="ground-truth tables (x, y, z in voxels; optional `species`)")
    radius = parser.add_mutually_exclusive_group(required=True)
    radius.add_argument("--radius", type=float, metavar="VOX",
                        help="matching radius in voxels")
    radius.add_argument("--radius-a", type=float, metavar="A",
                        help="matching radius in Å (needs the voxel size: --voxel-size, or a "
                             "`voxel_size_a` column in the truth)")
    parser.add_argument("--voxel-size", type=float, default=None, metavar="A",
                        help="voxel size in Å, to convert --radius-a")
    parser.add_argument("--species", default=None,
                        help="comma-separated truth species to score against (default: all)")
    parser.add_argument("--fibers", action="store_true",
                        help="score traced fibres (tomogram, fiber_id, x, y, z) against true "
                             "centre lines: fibres found / total and point precision/recall/F1")
    parser.add_argument("--min-coverage", type=float, default=0.5,
                        help="with --fibers: fraction of a fibre's points within the radius "
                             "for it to count as found (0.5)")
    parser.add_argument("-o", "--output", required=True, help="metrics table to write (.csv)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write JSON here")


def _read_all(paths: list[str], what: str) -> pd.DataFrame:
    from milopyp.io.coords import read_coordinates

    frames = [read_coordinates(p) for p in paths]
    if not frames:
        raise MilopypError(f"no {what} files given")
    df = pd.concat(frames, ignore_index=True, sort=False)
    if "score" in df.columns and df["score"].isna().any() and not df["score"].isna().all():
        n = int(df["score"].isna().sum())
        log.warning("%d of %d %s have no score; they rank last for AP", n, len(df), what)
    if "score" in df.columns and df["score"].isna().all():
        df = df.drop(columns="score")
    return df


def _radius_vox(args: argparse.Namespace, truth: pd.DataFrame) -> float:
    if args.radius is not None:
        if not args.radius >= 0:
            raise MilopypError(f"--radius must be >= 0 voxels, got {args.radius}")
        return float(args.radius)
    voxel = args.voxel_size
    if voxel is None and "voxel_size_a" in truth.columns:
        values = pd.to_numeric(truth["voxel_size_a"], errors="coerce").dropna().unique()
        if len(values) == 1:
            voxel = float(values[0])
        elif len(values) > 1:
            raise MilopypError(
                f"truth tables hold several voxel sizes {sorted(values)[:5]} Å; --radius-a "
                "needs one; pass --radius in voxels, or evaluate each voxel size separately"
            )
    if voxel is None:
        raise MilopypError(
            f"--radius-a {args.radius_a} Å needs the voxel size: pass --voxel-size (Å) or give "
            "--radius in voxels"
        )
    if not (voxel > 0 and math.isfinite(voxel)):
        raise MilopypError(f"voxel size must be > 0 Å, got {voxel}")
    if not args.radius_a >= 0:
        raise MilopypError(f"--radius-a must be >= 0 Å, got {args.radius_a}")
    return float(args.radius_a) / float(voxel)


def _filter_species(truth: pd.DataFrame, species: str | None, paths: list[str]) -> pd.DataFrame:
    if not species:
        if "species" in truth.columns and truth["species"].nunique() > 1:
            log.info("scoring against every truth species: %s",
                     ", ".join(sorted(truth["species"].astype(str).unique())))
        return truth
    wanted = [s.strip() for s in species.split(",") if s.strip()]
    if "species" not in truth.columns:
        raise MilopypError(
            f"{', '.join(paths)}: --species {species} given but the truth has no `species` "
            f"column (columns {list(truth.columns)}); drop --species"
        )
    present = set(truth["species"].astype(str))
    unknown = [s for s in wanted if s not in present]
    if unknown:
        raise MilopypError(
            f"{', '.join(paths)}: species {unknown} not in the truth; it holds "
            f"{sorted(present)}; fix --species"
        )
    return truth[truth["species"].astype(str).isin(wanted)]


def main(args: argparse.Namespace) -> None:
    from milopyp.evaluate import evaluate, evaluate_fibers, format_fiber_table, format_table
    from milopyp.io.atomic import atomic_path, prepare_outputs, write_text

    prepare_outputs(args.output, args.json)
    picks = _read_all(args.picks, "picks")
    truth_all = _read_all(args.truth, "truth")
    radius_vox = _radius_vox(args, truth_all)
    tomograms = sorted(truth_all["tomogram"].astype(str).unique())
    truth = _filter_species(truth_all, args.species, args.truth)
    outside = sorted(set(picks["tomogram"].astype(str)) - set(tomograms))
    if outside:
        n = int(picks["tomogram"].astype(str).isin(outside).sum())
        log.warning(
            "%d picks of %d tomogram(s) without truth are ignored: %s", n, len(outside),
            ", ".join(outside[:10]) + (" ..." if len(outside) > 10 else ""),
        )
        picks = picks[~picks["tomogram"].astype(str).isin(outside)]
    if not tomograms:
        raise MilopypError(f"{', '.join(args.truth)}: the truth holds no points; nothing to score")
    if args.fibers:
        metrics = evaluate_fibers(picks, truth, radius_vox=radius_vox, tomograms=tomograms,
                                  min_coverage=args.min_coverage)
    else:
        metrics = evaluate(picks, truth, radius_vox=radius_vox, tomograms=tomograms)
    with atomic_path(args.output) as tmp:
        metrics.to_csv(tmp, index=False)
    if args.json:
        doc = {
            "radius_vox": radius_vox,
            "species": args.species.split(",") if args.species else None,
            "picks": list(args.picks),
            "truth": list(args.truth),
            "tomograms": _records(metrics.iloc[:-1]),
            "overall": _records(metrics.iloc[-1:])[0],
        }
        write_text(args.json, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    print(f"matching radius {radius_vox:.3g} voxels"
          + (f", species {args.species}" if args.species else ""))
    print(format_fiber_table(metrics) if args.fibers else format_table(metrics))


def _records(df: pd.DataFrame) -> list[dict]:
    """Rows as dicts with NaN -> None (valid JSON)."""
    out = []
    for row in df.to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else
                        (v.item() if hasattr(v, "item") else v)) for k, v in row.items()})
    return out
