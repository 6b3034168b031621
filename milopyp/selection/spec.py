"""Selection documents: what a user's YAML/JSON selection asks for.

Formats (see :mod:`milopyp.selection`): ``explorer`` (the explorer's ``selection.json``),
``clusters`` (``{clusters: [3, 5]}``, optionally ``points: [...]``) and ``seeds``
(``{seeds: <coordinate table>}`` or ``{seeds: [{tomogram, x, y, z}, ...]}``, voxels), each
optionally with ``negatives``. :func:`spec_from_document` turns the parsed mapping into a
:class:`SelectionSpec`; nothing here opens a file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from milopyp.errors import MilopypError

log = logging.getLogger(__name__)

FORMATS = ("explorer", "clusters", "seeds", "coordinates")
#: keys of a selection document that select something
SELECT_KEYS = ("clusters", "points", "seeds")
#: other keys a selection document may carry (ignored, but not warned about)
KNOWN_KEYS = (*SELECT_KEYS, "negatives", "tomogram", "source", "n_points", "comment",
              "description")
#: keys of a ``negatives:`` mapping
NEGATIVE_KEYS = ("clusters", "points", "seeds", "tomogram", "n_points")
#: columns of the label files
EXPLORER_SOURCE = "milopyp explorer"
#: how seed-chosen clusters become labels: the members nearest the seeds, or all members


@dataclass
class NegativeSpec:
    """What a selection's ``negatives`` asks for: ``clusters`` and ``points`` (ids of
    points.csv), ``seeds`` (inline ``tomogram, x, y, z`` voxels) or ``seeds_file`` (a
    coordinate table, relative to the selection file's folder)."""

    clusters: list[int] = field(default_factory=list)
    points: list[int] = field(default_factory=list)
    seeds: pd.DataFrame | None = None
    seeds_file: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.clusters or self.points or self.seeds_file
                    or (self.seeds is not None and len(self.seeds) > 0))


@dataclass
class SelectionSpec:
    """What a selection document asks for (before it is resolved against points.csv).

    ``seeds`` holds inline seeds (``tomogram, x, y, z`` in voxels, tomogram may be None when
    the document gives none); ``seeds_file`` a seed-table path as written in the document
    (relative to the selection file's folder); ``tomogram`` the document's default tomogram.
    """

    format: str
    clusters: list[int] = field(default_factory=list)
    points: list[int] = field(default_factory=list)
    seeds: pd.DataFrame | None = None
    seeds_file: str | None = None
    tomogram: str | None = None
    n_points: int | None = None
    negatives: NegativeSpec = field(default_factory=NegativeSpec)

    @property
    def selects_something(self) -> bool:
        return bool(
            self.clusters
            or self.points
            or self.seeds_file
            or (self.seeds is not None and len(self.seeds) > 0)
        )


def nothing_selected(source) -> MilopypError:
    """The error for a selection that lists no clusters, points, seeds or rows."""
    return MilopypError(
        f"selection {source} selects nothing; open explorer.html, tick clusters and press "
        f"Save selection, or list clusters: [..]"
    )


# --------------------------------------------------------------------------- parsing


def _int_list(value, key: str, source) -> list[int]:
    """A YAML/JSON value as a list of ints (None -> [], a single int -> [it])."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[int] = []
    for item in items:
        number = None
        if isinstance(item, bool):
            number = None
        elif isinstance(item, (int, np.integer)) or (
            isinstance(item, float) and math.isfinite(item) and item == int(item)
        ):
            number = int(item)
        elif isinstance(item, str) and item.strip().lstrip("-").isdigit():
            number = int(item.strip())
        if number is None:
            raise MilopypError(
                f"{source}: {key}: expected a list of integer ids, found {item!r}; write e.g. "
                f"{key}: [3, 5]"
            )
        out.append(number)
    return sorted(set(out))


def _inline_seeds(value: list, default_tomogram: str | None, source) -> pd.DataFrame:
    """``[{tomogram, x, y, z}, ...]`` or ``[[x, y, z], ...]`` as a seed table."""
    rows = []
    for i, item in enumerate(value):
        if isinstance(item, Mapping):
            low = {str(k).strip().lower(): v for k, v in item.items()}
            missing = [c for c in ("x", "y", "z") if c not in low]
            if missing:
                raise MilopypError(
                    f"{source}: seed {i} ({dict(item)}) has no {', '.join(missing)}; write "
                    f"each seed as {{tomogram: NAME, x: .., y: .., z: ..}} in voxels"
                )
            xyz = [low["x"], low["y"], low["z"]]
            tomogram = low.get("tomogram", default_tomogram)
        elif isinstance(item, (list, tuple)) and len(item) == 3:
            xyz = list(item)
            tomogram = default_tomogram
        else:
            raise MilopypError(
                f"{source}: seed {i} is {item!r}; write each seed as "
                f"{{tomogram: NAME, x: .., y: .., z: ..}} (voxels)"
            )
        try:
            values = [float(v) for v in xyz]
        except (TypeError, ValueError):
            values = [math.nan]
        if not all(math.isfinite(v) for v in values):
            raise MilopypError(
                f"{source}: seed {i} has coordinates {xyz!r}; expected three finite numbers "
                f"x, y, z in voxels"
            )
        rows.append(
            {"tomogram": None if tomogram is None else str(tomogram), "x": values[0],
             "y": values[1], "z": values[2]}
        )
    return pd.DataFrame(rows, columns=["tomogram", "x", "y", "z"])


def _seeds_value(value, tomogram: str | None, key: str, source):
    """A ``seeds:`` value as ``(table or None, file or None)``."""
    if isinstance(value, str):
        return None, (value.strip() or None)
    if isinstance(value, (list, tuple)):
        return _inline_seeds(list(value), tomogram, source), None
    if value is None:
        return None, None
    raise MilopypError(
        f"{source}: {key}: expected a path to a coordinate table or a list of "
        f"{{tomogram, x, y, z}}, found {type(value).__name__} {value!r}"
    )


def negatives_from_value(value, tomogram: str | None, source) -> NegativeSpec:
    """Read a document's ``negatives:`` value.

    Forms: a mapping ``{clusters: [ids], points: [ids], seeds: <table path or list>}``
    (optionally ``tomogram``), a path to a coordinate table, or a list of
    ``{tomogram, x, y, z}`` (voxels). None gives an empty spec.
    """
    if value is None:
        return NegativeSpec()
    if isinstance(value, (str, list, tuple)):
        seeds, seeds_file = _seeds_value(value, tomogram, "negatives", source)
        return NegativeSpec(seeds=seeds, seeds_file=seeds_file)
    if not isinstance(value, Mapping):
        raise MilopypError(
            f"{source}: negatives: expected {{clusters: [..], seeds: ..}}, a coordinate table "
            f"path or a list of {{tomogram, x, y, z}}; found {type(value).__name__} {value!r}"
        )
    keys = {str(k).strip().lower(): v for k, v in value.items()}
    unknown = sorted(set(keys) - set(NEGATIVE_KEYS))
    if unknown:
        raise MilopypError(
            f"{source}: negatives: unknown key(s) {unknown}; use clusters: [ids], points: "
            f"[ids] or seeds: (a coordinate table or a list of {{tomogram, x, y, z}})"
        )
    own = keys.get("tomogram")
    tomogram = tomogram if own is None else str(own)
    seeds, seeds_file = _seeds_value(keys.get("seeds"), tomogram, "negatives: seeds", source)
    return NegativeSpec(
        clusters=_int_list(keys.get("clusters"), "negatives: clusters", source),
        points=_int_list(keys.get("points"), "negatives: points", source),
        seeds=seeds,
        seeds_file=seeds_file,
    )


def spec_from_document(doc: Mapping, source) -> SelectionSpec:
    """Read a parsed YAML/JSON selection document (formats explorer, clusters, seeds).

    Raises when the mapping has none of ``clusters``, ``points``, ``seeds`` (unknown format)
    or when it selects nothing.
    """
    keys = {str(k).strip().lower(): v for k, v in doc.items()}
    if "negatives" in keys and not any(k in keys for k in SELECT_KEYS):
        raise MilopypError(
            f"{source}: the selection lists only negatives (what is not the target); also "
            f"say what is: clusters: [..], points: [..] or seeds: [..]"
        )
    if not any(k in keys for k in SELECT_KEYS):
        raise MilopypError(
            f"{source}: unknown selection format: a mapping with keys {sorted(keys)[:8]} but "
            f"none of clusters:, points:, seeds:; write e.g. clusters: [3, 5], save the "
            f"selection from explorer.html, or give a coordinate table (x, y, z)"
        )
    unknown = sorted(set(keys) - set(KNOWN_KEYS))
    if unknown:
        log.warning("%s: ignoring unknown keys %s", source, unknown)
    tomogram = keys.get("tomogram")
    tomogram = None if tomogram is None else str(tomogram)
    seeds, seeds_file = _seeds_value(keys.get("seeds"), tomogram, "seeds", source)
    if str(keys.get("source", "")).strip() == EXPLORER_SOURCE:
        fmt = "explorer"
    elif "seeds" in keys:
        fmt = "seeds"
    else:
        fmt = "clusters"
    n_points = keys.get("n_points")
    spec = SelectionSpec(
        format=fmt,
        clusters=_int_list(keys.get("clusters"), "clusters", source),
        points=_int_list(keys.get("points"), "points", source),
        seeds=seeds,
        seeds_file=seeds_file,
        tomogram=tomogram,
        n_points=int(n_points)
        if isinstance(n_points, (int, float)) and not isinstance(n_points, bool)
        and math.isfinite(n_points)
        else None,
        negatives=negatives_from_value(keys.get("negatives"), tomogram, source),
    )
    if not spec.selects_something:
        raise nothing_selected(source)
    return spec

