"""``milopyp report``: a self-contained HTML page summarising a campaign.

Shows the picks per tomogram (and candidates per tomogram with ``--candidates``), the pick
score histogram (per tomogram, or overall beyond a dozen tomograms), the accuracy table of
``milopyp evaluate`` (``--metrics``) and any ``--figure`` images. Everything is embedded
(``data:`` URIs, inline style), so the file can be mailed or copied off a cluster and opened
offline.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from milopyp.errors import MilopypError

HELP = "HTML report of pick counts, score histograms and accuracy"
log = logging.getLogger(__name__)

MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--picks", nargs="+", required=True, metavar="FILE",
                        help="per-tomogram pick tables (x, y, z in voxels, score)")
    parser.add_argument("--candidates", nargs="*", default=None, metavar="FILE",
                        help="candidate tables, to show candidates per tomogram")
    parser.add_argument("--metrics", default=None, metavar="CSV",
                        help="accuracy table from `milopyp evaluate` (precision/recall/F1)")
    parser.add_argument("--fibers", nargs="*", default=None, metavar="FILE",
                        help="traced fibres per tomogram (fibers/{tomogram}.csv)")
    parser.add_argument("--fiber-metrics", default=None, metavar="CSV",
                        help="fibre accuracy table of `milopyp evaluate --fibers`")
    parser.add_argument("--figure", nargs="*", default=[], metavar="IMAGE",
                        help="images to embed (PNG, JPEG, SVG, ...)")
    parser.add_argument("--title", default="milopyp report", help="page title")
    parser.add_argument("-o", "--output", required=True, help="HTML file to write")


def _read_tables(paths: list[str]) -> pd.DataFrame:
    from milopyp.export import combine_picks
    from milopyp.io.coords import empty_points, read_coordinates

    frames = []
    for p in paths:
        if Path(p).is_file() and Path(p).stat().st_size == 0:
            frames.append(empty_points(["score"]))
        else:
            frames.append(read_coordinates(p))
    return combine_picks(frames)


def _read_metrics(path: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise MilopypError(f"{path}: metrics table not found; run `milopyp evaluate` first")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise MilopypError(
            f"{path}: not a readable metrics table ({err}); give the CSV of `milopyp evaluate`"
        ) from None
    if "tomogram" not in df.columns:
        raise MilopypError(
            f"{path}: no `tomogram` column (found {list(df.columns)}); give the CSV written by "
            f"`milopyp evaluate`"
        )
    return df


def _read_figure(path: str) -> tuple[str, bytes, str]:
    p = Path(path)
    mime = MIME.get(p.suffix.lower())
    if mime is None:
        raise MilopypError(
            f"{p}: cannot embed a {p.suffix or 'suffix-less'} file; give images "
            f"({', '.join(MIME)})"
        )
    if not p.is_file():
        raise MilopypError(f"{p}: figure not found; check the path")
    return p.name, p.read_bytes(), mime


def main(args: argparse.Namespace) -> None:
    from milopyp.io.atomic import prepare_outputs, write_text
    from milopyp.report import count_table, fiber_table, render_report, score_histogram_png

    prepare_outputs(args.output)
    picks = _read_tables(args.picks)
    candidates = _read_tables(args.candidates) if args.candidates else None
    metrics = _read_metrics(args.metrics) if args.metrics else None
    fiber_metrics = _read_metrics(args.fiber_metrics) if args.fiber_metrics else None
    fibers = fiber_table(_read_tables(args.fibers)) if args.fibers else None
    figures = [_read_figure(f) for f in args.figure]
    counts = count_table(picks, candidates)
    page = render_report(
        title=args.title,
        counts=counts,
        histogram_png=score_histogram_png(picks),
        metrics=metrics,
        figures=figures,
        sources=[*args.picks, *(args.candidates or []), *([args.metrics] if args.metrics else []),
                 *(args.fibers or [])],
        fibers=fibers,
        fiber_metrics=fiber_metrics,
    )
    write_text(args.output, page)
    log.info(
        "wrote %s (%d picks in %d tomogram(s), %d figure(s))",
        args.output, len(picks), len(counts) - 1, len(figures),
    )
