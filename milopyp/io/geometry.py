"""The tilt-series geometry record (``geometry/{tomogram}.json``): one reader, one writer.

Written by ``milopyp check-geometry`` (:func:`milopyp.geometry.check_geometry` plus the
verdict), read by ``milopyp patches`` and ``milopyp provenance``. Keys used downstream:
``sign`` (±1), ``bin`` (tilt-series pixels per tomogram voxel), ``offset_x_vox``,
``offset_y_vox`` (tomogram voxels) and ``contrast`` (``same`` | ``inverted``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from milopyp.errors import MilopypError
from milopyp.io.atomic import write_text

FORMAT = "milopyp-geometry/1"
REQUIRED = ("sign", "bin", "offset_x_vox", "offset_y_vox", "contrast")


def write_geometry(path: str | os.PathLike, record: dict) -> None:
    """Write a geometry record as JSON (atomically), tagged with :data:`FORMAT`."""
    write_text(path, json.dumps({"format": FORMAT, **record}, indent=2, sort_keys=True) + "\n")


def read_geometry(path: str | os.PathLike) -> dict:
    """Read a geometry record; MilopypError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise MilopypError(f"{path}: geometry record not found; run `milopyp check-geometry` first")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MilopypError(
            f"{path}: not valid JSON ({err.msg}); rerun `milopyp check-geometry`"
        ) from err
    if not isinstance(record, dict):
        record = {}
    missing = [key for key in REQUIRED if key not in record]
    if missing or record.get("format") != FORMAT or record["sign"] not in (1, -1):
        raise MilopypError(
            f"{path}: not a {FORMAT} record (missing {list(missing)} or bad sign); rerun "
            "`milopyp check-geometry`"
        )
    return record
