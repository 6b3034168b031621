"""``milopyp report``: options -> :func:`milopyp.report.run`.

A self-contained HTML page: picks per tomogram (and candidates with ``--candidates``), the
pick score histogram, the accuracy tables of ``milopyp evaluate``, what the localiser file says
about its training (``--model``; a warning first when it did not learn) and any ``--figure`` images,
all embedded (``data:`` URIs, inline style) so the file opens offline.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--picks", nargs="+", required=True, metavar="FILE",
        help="per-tomogram pick tables (x, y, z in voxels, score)")
    add("--candidates", nargs="*", default=None, metavar="FILE",
        help="candidate tables, to show candidates per tomogram")
    add("--metrics", default=None, metavar="CSV",
        help="accuracy table from `milopyp evaluate` (precision/recall/F1)")
    add("--fibers", nargs="*", default=None, metavar="FILE",
        help="traced fibres per tomogram (fibers/{tomogram}.csv)")
    add("--fiber-metrics", default=None, metavar="CSV",
        help="fibre accuracy table of `milopyp evaluate --fibers`")
    add("--figure", nargs="*", default=[], metavar="IMAGE",
        help="images to embed (PNG, JPEG, SVG, ...)")
    add("--model", default=None, metavar="PT",
        help="the target's localiser file (model.pt): its calibration, and a warning at the "
             "top when it did not learn the target")
    add("--title", default="milopyp report", help="page title")
    add("-o", "--output", required=True, help="HTML file to write")


def main(args: argparse.Namespace) -> None:
    from milopyp.report import run

    run(args.picks, args.output, candidates=args.candidates, metrics=args.metrics,
        fibers=args.fibers, fiber_metrics=args.fiber_metrics, figures=args.figure,
        title=args.title, model=args.model)
