"""``milopyp export``: collect the picks of all tomograms into one CSV and one STAR file.

``--picks`` are per-tomogram tables (``tomogram, x, y, z, score[, fiber_id]``; voxels; a
table without a ``tomogram`` column is named after its file). Each tomogram's shape and
voxel size come from its MRC header among ``--tomograms`` (matched by name: the file name up
to the first dot, or the stem); ``--voxel-size`` overrides the headers' voxel size.

Outputs (atomic writes):

* ``--csv``: every pick, columns ``tomogram, x, y, z, score[, fiber_id], ...`` (voxels);
* ``-o``: a RELION-5 STAR file. It starts with the comment ``# version 50001`` (as RELION 5
  writes) and holds a single ``data_particles`` loop: ``rlnTomoName``,
  ``rlnCoordinateX/Y/Z`` (voxels), ``rlnCenteredCoordinateX/Y/ZAngst`` (Å from each
  tomogram's centre ``n / 2``, RELION 5's definition), ``rlnAutopickFigureOfMerit`` (score) and, for fibres,
  ``rlnHelicalTubeID``. There is no ``data_optics`` and no ``data_global`` block: RELION 5's
  Import > Coordinates takes optics and tomogram geometry from its ``tomograms.star``.
  See :mod:`milopyp.export`.

* ``--copick-config``: the picks also go into that copick project, one picks file per
  tomogram (= run): ``object_name`` = ``--copick-object`` (the target's name; an error when
  the project has no such pickable object), ``user_id`` milopyp, ``session_id``
  ``--copick-session`` ("0"), positions in Å (voxels x voxel size), scores included; an
  earlier file of the same object, user and session is replaced. ``--copick-summary`` writes
  the counts per run as JSON (the workflow's output of that step). See
  :mod:`milopyp.io.copick`.

Tomograms without picks contribute no rows (their tables hold a header line only); if no
tomogram has picks both files are still written (headers only) and a warning is logged. An
empty pick file (0 bytes: a cut-off write) is an error, not "no picks".
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import pandas as pd

from milopyp.errors import MilopypError

HELP = "collect picks into one CSV and a RELION-5 STAR file"
log = logging.getLogger(__name__)

STAR_VERSION_LINE = "# version 50001"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--picks", nargs="+", required=True, metavar="FILE",
                        help="per-tomogram pick tables (picks/{tomogram}.csv or fibres)")
    parser.add_argument("--tomograms", nargs="+", required=True, metavar="MRC",
                        help="tomogram MRC files (shape and voxel size for RELION-5 Å)")
    parser.add_argument("-o", "--output", default=None,
                        help="STAR file to write (picks.star); -o and/or --csv")
    parser.add_argument("--csv", default=None, metavar="FILE",
                        help="also write all picks as one CSV (picks.csv)")
    parser.add_argument("--voxel-size", type=float, default=None, metavar="A",
                        help="voxel size in Å for every tomogram (default: each MRC header)")
    parser.add_argument("--copick-config", default=None, metavar="JSON",
                        help="also write the picks into this copick project (its config.json)")
    parser.add_argument("--copick-object", default=None, metavar="NAME",
                        help="pickable object the picks are of (the target's name)")
    parser.add_argument("--copick-session", default="0", metavar="ID",
                        help="session_id of the copick picks (0); user_id is milopyp")
    parser.add_argument("--copick-summary", default=None, metavar="JSON",
                        help="write the copick picks per run as JSON")


def _geometry(paths: list[str], voxel_size_a: float | None):
    """``name -> (shape_zyx, voxel_size_a)``; each MRC is known by stem and first-dot name."""
    from milopyp.io.mrc import read_header

    geometry: dict[str, tuple[tuple[int, int, int], float]] = {}
    owner: dict[str, str] = {}
    for p in paths:
        shape_zyx, voxel = read_header(p, voxel_size_a=voxel_size_a)
        for name in dict.fromkeys((Path(p).name.split(".")[0], Path(p).stem)):
            if name in owner and owner[name] != p:
                raise MilopypError(
                    f"{p}: tomogram name {name!r} is also that of {owner[name]}; give each "
                    f"tomogram once"
                )
            owner[name] = p
            geometry[name] = (shape_zyx, voxel)
    return geometry


def main(args: argparse.Namespace) -> None:
    import starfile

    from milopyp.export import combine_picks, relion_particles
    from milopyp.io.atomic import atomic_path, prepare_outputs
    from milopyp.io.coords import check_inside, read_picks

    if not args.output and not args.csv and not args.copick_config:
        raise MilopypError(
            "nothing to write: give -o picks.star, --csv picks.csv and/or --copick-config"
        )
    if args.copick_config and not args.copick_object:
        raise MilopypError("--copick-config needs --copick-object, the pickable object's name")
    if args.voxel_size is not None and not (args.voxel_size > 0 and math.isfinite(args.voxel_size)):
        raise MilopypError(f"--voxel-size must be > 0 Å, got {args.voxel_size}")
    prepare_outputs(args.output, args.csv, args.copick_summary)
    geometry = _geometry(list(args.tomograms), args.voxel_size)
    frames = []
    for path in args.picks:
        df = read_picks(path)
        unknown = sorted(set(df["tomogram"].astype(str)) - set(geometry))
        if unknown:
            raise MilopypError(
                f"{path}: picks of tomogram(s) {unknown[:8]} have no MRC among --tomograms "
                f"({', '.join(sorted(set(geometry))[:8])}); add the tomogram files"
            )
        for name, sub in df.groupby("tomogram"):
            check_inside(sub, geometry[str(name)][0], f"{path} (tomogram {name})")
        frames.append(df)
    picks = combine_picks(frames)
    if "score" in picks.columns and picks["score"].isna().any():
        log.warning("%d of %d picks have no score", int(picks["score"].isna().sum()), len(picks))
    if len(picks) == 0:
        log.warning(
            "no picks in any of the %d pick table(s); writing empty %s",
            len(args.picks), " and ".join(p for p in (args.output, args.csv) if p),
        )
    particles = relion_particles(picks, geometry, source=", ".join(args.picks[:3]))
    if args.copick_config:
        _export_copick(args, picks, geometry)

    if args.csv:
        with atomic_path(args.csv) as tmp:
            picks.to_csv(tmp, index=False)
        log.info("wrote %s (%d picks)", args.csv, len(picks))
    if not args.output:
        return
    with atomic_path(args.output) as tmp:
        starfile.write({"particles": particles}, tmp)
        text = tmp.read_text(encoding="utf-8")
        tmp.write_text(f"{STAR_VERSION_LINE}\n{text}", encoding="utf-8")
    counts = picks["tomogram"].value_counts()
    log.info(
        "wrote %s (%d picks in %d tomogram(s)%s)", args.output, len(picks), len(counts),
        ": " + ", ".join(f"{k} {int(v)}" for k, v in sorted(counts.items())) if len(counts) else "",
    )


def _export_copick(args: argparse.Namespace, picks: pd.DataFrame, geometry) -> None:
    import json

    from milopyp.io import copick as cp
    from milopyp.io.atomic import write_text

    root = cp.open_project(args.copick_config)
    runs = sorted({Path(p).name.split(".")[0] for p in args.tomograms})
    voxel_sizes = {name: geometry[name][1] for name in runs}
    counts = cp.write_picks(
        root, picks, voxel_sizes, args.copick_object, session_id=str(args.copick_session),
        source=args.copick_config,
    )
    log.info(
        "wrote %d picks of %s into copick project %s (user %s, session %s): %s",
        sum(counts.values()), args.copick_object, args.copick_config, cp.USER_ID,
        args.copick_session, ", ".join(f"{k} {v}" for k, v in counts.items()),
    )
    if args.copick_summary:
        summary = {"copick_config": str(args.copick_config), "object_name": args.copick_object,
                   "user_id": cp.USER_ID, "session_id": str(args.copick_session),
                   "picks": counts}
        write_text(args.copick_summary, json.dumps(summary, indent=1) + "\n")
