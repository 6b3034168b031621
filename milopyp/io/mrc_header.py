"""MRC headers: shape, voxel size (Å) and their checks, without reading the voxels.

The header half of :mod:`milopyp.io.mrc` (which re-exports the public functions here):
the voxel size is ``cella.x / mx`` (mrcfile's ``voxel_size.x``) in Å; a header without one
is an error naming the fix, never an assumed scale. Shapes are ``(nz, ny, nx)``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import mrcfile
import numpy as np
from mrcfile.utils import data_shape_from_header

from milopyp.errors import MilopypError

log = logging.getLogger("milopyp.io.mrc")  # the messages read as the MRC reader's


def _require_file(path: Path, what: str, hint: str) -> None:
    if not path.exists():
        raise MilopypError(f"{path}: {what} not found; {hint}")
    if not path.is_file():
        raise MilopypError(f"{path}: expected a {what} file, found a directory or special file")


def _raw_voxel_size_a(header) -> float:
    """``cella.x / mx`` of a header in Å (0 when ``mx`` is 0; may be NaN or negative)."""
    mx = int(header.mx)
    return float(header.cella.x) / mx if mx > 0 else 0.0


#: what to do when a file has no voxel size, by kind of file
_VOXEL_FIX = {
    "tomogram": "set `voxel_size:` (Å) in the config or pass --voxel-size-a",
    "tilt series": "set `tiltseries_pixel_size:` (Å) in the config or pass --tilt-pixel-size-a",
}

#: paths already warned about (a header is read by several commands and rules)
_WARNED: set[tuple[str, str]] = set()


def _warn_once(path: Path, what: str, message: str, *args) -> None:
    key = (str(path), what)
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message, *args)


def _voxel_size_from_header(
    header, path: Path, kind: str = "tomogram", override_a: float | None = None
) -> float:
    """The voxel size in Å: ``override_a`` when given, else the header's ``cella.x / mx``.

    A header without one (0, negative, NaN) is an error naming the fix: nothing downstream may
    run on an assumed scale. Exactly 1 Å, what IMOD writes when no pixel size was given, is
    kept with a warning.
    """
    if override_a is not None:
        size = float(override_a)
        if not (math.isfinite(size) and size > 0):
            raise MilopypError(f"{path}: voxel size must be > 0 Å, got {size}; {_VOXEL_FIX[kind]}")
        return size
    size = _raw_voxel_size_a(header)
    if not math.isfinite(size) or size <= 0:
        raise MilopypError(
            f"{path}: the MRC header has no voxel size (cella.x={float(header.cella.x):g}, "
            f"mx={int(header.mx)}); "
            f"{_VOXEL_FIX[kind]}"
        )
    if size == 1.0:
        _warn_once(
            path, "1A", "%s: header voxel size is exactly 1 Å, what IMOD writes when none was "
            "given; if that is not the real size, %s", path, _VOXEL_FIX[kind],
        )
    return size


def _header_voxel_or_error(header, path: Path, kind: str, override_a: float | None):
    """:func:`_voxel_size_from_header`, or its error returned (raised after the shape check)."""
    try:
        return _voxel_size_from_header(header, path, kind, override_a)
    except MilopypError as err:
        return err


def check_axes(shape_zyx: tuple[int, int, int], path) -> str | None:
    """A one-line warning when a tomogram's z is larger than its x or y (likely swapped axes),
    else None. ``shape_zyx``: ``(nz, ny, nx)``."""
    nz, ny, nx = (int(n) for n in shape_zyx)
    if nz <= min(nx, ny):
        return None
    other = "y" if ny < nz else "x"
    return (
        f"{path}: z ({nz}) is larger than {other} ({ny if other == 'y' else nx}) in this "
        f"[z, y, x] volume of shape {(nz, ny, nx)}: the axes are probably swapped (e.g. an "
        f"IMOD `tilt` output before `trimvol -rx`); rotate it so that z is the thin axis"
    )


def _not_mrc(path: Path, err: Exception) -> MilopypError:
    return MilopypError(
        f"{path}: not a readable MRC file ({err}); give an MRC volume (.mrc/.rec/.st/.ali)"
    )


def _check_shape(shape: tuple[int, ...], path: Path, kind: str) -> tuple[int, int, int]:
    """Return ``shape`` as 3 ints, or raise if it is not a 3-D volume/stack."""
    if kind == "tomogram":
        expected, fix = "a 3-D tomogram [z, y, x]", "give a 3-D MRC volume"
    else:
        expected, fix = "a tilt series [n_tilts, y, x]", "give an MRC image stack"
    if len(shape) == 4:
        raise MilopypError(
            f"{path}: expected {expected}, got a stack of volumes of shape {shape}; {fix}"
        )
    if len(shape) != 3 or (kind == "tomogram" and shape[0] == 1):
        raise MilopypError(f"{path}: expected {expected}, got shape {shape}; {fix}")
    if min(shape) < 1:
        raise MilopypError(f"{path}: expected {expected}, got empty shape {shape}; {fix}")
    if kind == "tomogram":
        message = check_axes(shape, path)
        if message:
            _warn_once(path, "axes", "%s", message)
    return int(shape[0]), int(shape[1]), int(shape[2])



_IMOD_STAMP = 1146047817  # IMOD's header stamp (bytes 152-155), flags at 156-159


def _imod_unsigned_bytes(header) -> bool:
    """True when an IMOD header says mode-0 bytes are unsigned (stamp set, flag bit 0 clear).

    MRC2014 defines mode 0 as signed int8 (mrcfile reads it so); IMOD marks signed bytes with
    bit 0 of its flags and wrote unsigned bytes without it.
    """
    if int(header.mode) != 0:
        return False
    extra = header.extra2.tobytes()  # header bytes 112-195
    order = ">" if header.dtype["mode"].byteorder == ">" else "<"
    stamp = int(np.frombuffer(extra[40:44], order + "i4")[0])
    flags = int(np.frombuffer(extra[44:48], order + "i4")[0])
    return stamp == _IMOD_STAMP and not flags & 1


def _new_header(shape: tuple[int, int, int], voxel_size_a: float, kind: str):
    """An MRC2014 header (mrcfile's defaults) for float32 data of ``shape`` ``(n, ny, nx)``:
    a volume (``kind`` tomogram) or an image stack, voxel size in Å, no extended header."""
    from mrcfile.mrcinterpreter import MrcInterpreter

    mrc = MrcInterpreter()  # in memory, no file
    mrc._create_default_attributes()  # as mrcfile's docs advise for a write-only stream
    mrc.set_data(np.zeros((1, 1, 1), np.float32))  # mode 2, native byte order
    if kind == "tomogram":
        mrc.set_volume()
    else:
        mrc.set_image_stack()
    header = mrc.header
    n, ny, nx = (int(v) for v in shape)
    header.nx = header.mx = nx
    header.ny = header.my = ny
    header.nz = n
    header.mz = n if kind == "tomogram" else 1
    mrc.voxel_size = voxel_size_a
    return header


def read_header(
    path: str | os.PathLike, *, voxel_size_a: float | None = None
) -> tuple[tuple[int, int, int], float]:
    """Shape ``(nz, ny, nx)`` and voxel size (Å) of an MRC volume, reading only its header.

    ``voxel_size_a`` (Å), when given, is returned instead of the header's; without it a
    header without a voxel size raises.
    """
    path = Path(path)
    _require_file(path, "tomogram", "check the `tomograms:` pattern")
    try:
        with mrcfile.open(path, mode="r", permissive=False, header_only=True) as mrc:
            shape = tuple(int(v) for v in data_shape_from_header(mrc.header))
            voxel_size_a = _header_voxel_or_error(mrc.header, path, "tomogram", voxel_size_a)
    except MilopypError:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise _not_mrc(path, err) from err
    shape_zyx = _check_shape(shape, path, "tomogram")
    if isinstance(voxel_size_a, MilopypError):
        raise voxel_size_a
    return shape_zyx, voxel_size_a


def read_header_voxel_size(path: str | os.PathLike) -> float | None:
    """The voxel size in Å an MRC header records (``cella.x / mx``), or None when it records
    none (0, negative, NaN). Reads only the header; a file that is not MRC raises. Unlike
    :func:`read_header` it neither raises nor warns on a missing or 1 Å size: for callers
    that hold the size from elsewhere (a RELION tomograms.star) and check the two."""
    path = Path(path)
    _require_file(path, "tomogram", "check the tomogram's path")
    try:
        with mrcfile.open(path, mode="r", permissive=False, header_only=True) as mrc:
            size = _raw_voxel_size_a(mrc.header)
    except (ValueError, OSError, EOFError) as err:
        raise _not_mrc(path, err) from err
    return size if math.isfinite(size) and size > 0 else None


def common_voxel_size(voxel_sizes_a: Mapping[str, float], source: str,
                      rtol: float = 0.01) -> float:
    """The one voxel size (Å) of a campaign's tomograms (``name -> voxel size in Å``).

    Tomograms at different voxel sizes (more than ``rtol`` apart) would be trained and picked
    at one scale, so they raise, listing every size on one line; milopyp does not rescale
    (bin or resample them to one voxel size first, or set `voxel_size:` if the headers are
    wrong).
    """
    if not voxel_sizes_a:
        raise MilopypError(f"{source}: no tomograms")
    values = np.array([float(v) for v in voxel_sizes_a.values()])
    if values.max() - values.min() <= rtol * values.min():
        return float(values[0])
    groups: dict[float, list[str]] = {}
    for name, size in voxel_sizes_a.items():
        groups.setdefault(round(float(size), 3), []).append(str(name))
    listing = "; ".join(
        f"{size:g} Å: {', '.join(names[:4])}{f' (+{len(names) - 4})' if len(names) > 4 else ''}"
        for size, names in sorted(groups.items())
    )
    raise MilopypError(
        f"{source}: tomograms at different voxel sizes ({listing}); milopyp trains and picks at "
        f"one scale: resample them to one voxel size (e.g. IMOD `binvol`/`squeezevol`) or run "
        f"one campaign per voxel size (or set `voxel_size:` if the headers are wrong)"
    )


def read_header_sizes(path: str | os.PathLike) -> tuple[tuple[int, int, int], float | None]:
    """Shape ``(nz, ny, nx)`` of an MRC volume and the voxel size in Å its header records (None
    when it records none: 0, negative, NaN), from one read of the header.

    Checks the shape as :func:`read_header` does (a 3-D volume; a z larger than x or y is
    logged); unlike it, neither raises nor warns on a missing or 1 Å voxel size: for callers
    that hold the size from elsewhere (a RELION tomograms.star) and check the two.
    """
    path = Path(path)
    _require_file(path, "tomogram", "check the tomogram's path")
    try:
        with mrcfile.open(path, mode="r", permissive=False, header_only=True) as mrc:
            shape = tuple(int(v) for v in data_shape_from_header(mrc.header))
            size = _raw_voxel_size_a(mrc.header)
    except (ValueError, OSError, EOFError) as err:
        raise _not_mrc(path, err) from err
    shape_zyx = _check_shape(shape, path, "tomogram")
    return shape_zyx, (size if math.isfinite(size) and size > 0 else None)
