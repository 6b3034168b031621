"""Read and write tomograms, tilt series (MRC) and tilt angles (IMOD ``.tlt``).

Arrays follow mrcfile's axis order: a tomogram is float32 ``[z, y, x]``, a tilt series
float32 ``[n_tilts, y, x]``. Voxel sizes are in Å (``voxel_size_a``), taken from the header
(``cella.x / mx``, i.e. mrcfile's ``voxel_size.x``). Any suffix is accepted (``.mrc``,
``.rec``, ``.st``, ``.ali``, ``.mrcs``, ``.map``): mrcfile identifies an MRC file by its
header, not its name, and opens gzip/bzip2-compressed files transparently.

Every write goes through :func:`milopyp.io.atomic.atomic_path` and writes the file slab by
slab (z-slabs of about ``_SLAB_BYTES``, plain file writes, no memory map), so an interrupted
write never leaves a file at the final path, no full float32 copy of the input is made and a
full disk is a one-line error naming the output (not a ``Bus error``).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import mrcfile
import numpy as np

from milopyp.errors import MilopypError
from milopyp.io.atomic import atomic_path, write_text
from milopyp.io.mrc_header import (  # noqa: F401  (the header half; public names re-exported)
    _check_shape,
    _header_voxel_or_error,
    _imod_unsigned_bytes,
    _new_header,
    _not_mrc,
    _require_file,
    _warn_once,
    check_axes,
    common_voxel_size,
    read_header,
    read_header_sizes,
    read_header_voxel_size,
)


def tomogram_name(path: str | os.PathLike) -> str:
    """The name of the tomogram in file ``path``: its file name up to the first dot
    (``data/tomo_001.rec.mrc`` -> ``tomo_001``). The one rule: the workflow's wildcards,
    the tables' ``tomogram`` column and every command's default name follow it."""
    return Path(path).name.split(".")[0]

log = logging.getLogger(__name__)

# Bytes of float32 handled at once when checking, converting or writing large arrays.
_SLAB_BYTES = 64 * 2**20

_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZ")  # gzip, bzip2 (mrcfile.open reads both)


# --------------------------------------------------------------------------- helpers


def _slabs(n: int, plane_elements: int) -> Iterator[slice]:
    """Slices along the first axis covering ``n`` planes, each about ``_SLAB_BYTES``."""
    step = max(1, _SLAB_BYTES // max(1, 4 * plane_elements))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _is_compressed(path: Path) -> bool:
    with open(path, "rb") as fh:
        start = fh.read(212)
    return start[208:212] != b"MAP " and start[:2] in _COMPRESSED_MAGIC


def _count_nonfinite(data: np.ndarray) -> int:
    """Number of NaN/Inf values of a [n, y, x] array, counted slab by slab."""
    if not np.issubdtype(data.dtype, np.floating):
        return 0
    plane = data.shape[1] * data.shape[2]
    return int(sum(np.count_nonzero(~np.isfinite(data[s])) for s in _slabs(data.shape[0], plane)))


def _open_stack(
    path: str | os.PathLike, kind: str, *, mmap: bool, check_finite: bool,
    voxel_size_a: float | None = None,
) -> tuple[np.ndarray, float]:
    """Read a 3-D MRC file as float32 [n, y, x] plus its voxel size (Å; ``voxel_size_a``
    when given, else the header's)."""
    path = Path(path)
    hint = "check the `tomograms:` pattern" if kind == "tomogram" else "check the tilt-series path"
    _require_file(path, kind, hint)
    if mmap and _is_compressed(path):
        log.info("%s is compressed and cannot be memory-mapped; reading it into memory", path)
        mmap = False
    opener = mrcfile.mmap if mmap else mrcfile.open
    try:
        with warnings.catch_warnings(record=True) as caught:
            # e.g. "file is larger than expected": harmless, so logged rather than raised
            warnings.simplefilter("always", RuntimeWarning)
            with opener(path, mode="r", permissive=False) as mrc:
                voxel_size_a = _header_voxel_or_error(mrc.header, path, kind, voxel_size_a)
                data = mrc.data
                unsigned = _imod_unsigned_bytes(mrc.header)
    except MilopypError:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise _not_mrc(path, err) from err
    for w in caught:
        log.warning("%s: %s", path, w.message)
    if data is None:
        raise _not_mrc(path, ValueError("no data block"))
    _check_shape(tuple(data.shape), path, kind)
    if isinstance(voxel_size_a, MilopypError):  # a shape error, if any, comes first
        raise voxel_size_a
    if np.iscomplexobj(data):
        raise MilopypError(
            f"{path}: expected real-valued voxels, got complex MRC mode ({data.dtype}); "
            f"give a real-space {kind}"
        )
    if unsigned and data.dtype == np.dtype(np.int8):
        log.info("%s: IMOD header marks mode-0 bytes as unsigned; reading them as uint8", path)
        data = data.view(np.uint8)

    if data.dtype == np.dtype(np.float32):  # native-endian float32: no copy
        if not mmap:
            # mrcfile marks the array read-only; its buffer is our private bytearray
            try:
                data.flags.writeable = True
            except ValueError:
                data = data.copy()
    else:
        # Other modes (int8/int16/uint16/float16, big-endian) are converted in memory:
        # this needs nz*ny*nx*4 bytes even when mmap=True.
        log.info("%s: converting %s voxels to float32 in memory", path, data.dtype)
        data = np.asarray(data, dtype=np.float32)

    if check_finite:
        source = "reconstruction" if kind == "tomogram" else "tilt series"
        n_bad = _count_nonfinite(data)
        if n_bad:
            raise MilopypError(
                f"{path}: contains {n_bad} NaN/Inf voxels of {data.size}; fix the {source} "
                f"or replace them (e.g. numpy.nan_to_num) and write the file again"
            )
    return data, voxel_size_a


def _write_stack(path: str | os.PathLike, data, voxel_size_a: float, kind: str) -> None:
    """Write [n, y, x] data atomically as MRC mode 2 (float32), slab by slab."""
    path = Path(path)
    src = data if isinstance(data, np.ndarray) else np.asarray(data)
    _check_shape(tuple(src.shape), path, kind)
    if np.iscomplexobj(src):
        raise MilopypError(f"{path}: cannot write complex data ({src.dtype}) as a {kind}")
    voxel_size_a = float(voxel_size_a)
    if not math.isfinite(voxel_size_a) or voxel_size_a <= 0:
        raise MilopypError(
            f"{path}: voxel size must be a positive number of Å, got {voxel_size_a}; "
            f"pass --voxel-size-a"
        )
    n, ny, nx = src.shape
    total, total_sq, n_bad = 0.0, 0.0, 0
    dmin, dmax = math.inf, -math.inf
    header = _new_header((n, ny, nx), voxel_size_a, kind)
    # plain buffered writes, no memory map: a full disk is an OSError here (a one-line error
    # from atomic_path), where a written-to map of a sparse file dies of SIGBUS
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(bytes(header.nbytes))  # the header, once its statistics are known
        for s in _slabs(n, ny * nx):
            slab = np.ascontiguousarray(src[s], dtype=np.float32)
            finite = np.isfinite(slab)
            if not finite.all():
                n_bad += int(np.count_nonzero(~finite))
                continue
            if not n_bad:
                fh.write(memoryview(slab).cast("B"))
            total += float(slab.sum(dtype=np.float64))
            total_sq += float(np.square(slab, dtype=np.float64).sum())
            dmin = min(dmin, float(slab.min()))
            dmax = max(dmax, float(slab.max()))
        if n_bad:
            raise MilopypError(
                f"{path}: refusing to write {n_bad} NaN/Inf voxels of {src.size}; "
                f"the {kind} was computed wrongly"
            )
        mean = total / src.size
        header.dmin, header.dmax, header.dmean = dmin, dmax, mean
        header.rms = math.sqrt(max(0.0, total_sq / src.size - mean * mean))
        fh.seek(0)
        fh.write(header.tobytes())


# --------------------------------------------------------------------------- public API


def read_tomogram(
    path: str | os.PathLike, *, mmap: bool = False, check_finite: bool = True,
    voxel_size_a: float | None = None,
) -> tuple[np.ndarray, float]:
    """Read a tomogram as float32 ``[z, y, x]`` and its voxel size in Å.

    MRC modes 0, 1, 2, 6 and 12 (int8, int16, float32, uint16, float16; IMOD's unsigned
    bytes too) are read as float32. With ``mmap=True`` a float32 file is returned as a
    read-only ``np.memmap`` (nothing is loaded); a file in another mode is loaded and
    converted, which needs ``4 * nz * ny * nx`` bytes of memory. ``check_finite`` scans the
    voxels in z-slabs and raises on NaN/Inf. ``voxel_size_a`` (Å) replaces the header's; a
    header without a voxel size and no ``voxel_size_a`` raise. A z larger than x or y is
    logged as a warning (likely swapped axes).
    """
    return _open_stack(path, "tomogram", mmap=mmap, check_finite=check_finite,
                       voxel_size_a=voxel_size_a)


def write_tomogram(path: str | os.PathLike, data_zyx, voxel_size_a: float) -> None:
    """Write a ``[z, y, x]`` array atomically as MRC mode 2 (float32) with voxel size in Å."""
    _write_stack(path, data_zyx, voxel_size_a, "tomogram")


def read_angles(path: str | os.PathLike) -> np.ndarray:
    """Tilt angles in degrees, float64 ``(n,)``, from an IMOD ``.tlt``/``.rawtlt`` file.

    One angle per line; blank lines are ignored.
    """
    path = Path(path)
    _require_file(path, "tilt-angle file", "give the .tlt/.rawtlt file of the tilt series")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise MilopypError(f"{path}: not a text file of tilt angles ({err})") from err
    angles = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            raise MilopypError(
                f"{path}: line {number} is {text[:40]!r}, expected one tilt angle in degrees "
                f"per line; fix the angle file"
            ) from None
        if not math.isfinite(value):
            raise MilopypError(f"{path}: line {number} is {text!r}, expected a finite angle")
        angles.append(value)
    if not angles:
        raise MilopypError(
            f"{path}: contains no tilt angles; expected one angle in degrees per line"
        )
    return np.asarray(angles, dtype=np.float64)


def write_angles(path: str | os.PathLike, angles_deg) -> None:
    """Write tilt angles (degrees) atomically, one per line (IMOD ``.tlt``)."""
    angles = np.asarray(angles_deg, dtype=np.float64)
    if angles.ndim != 1 or angles.size == 0 or not np.all(np.isfinite(angles)):
        raise MilopypError(
            f"{path}: expected a non-empty 1-D array of finite angles, got shape {angles.shape}"
        )
    write_text(path, "".join(f"{float(a)!r}\n" for a in angles))


def angles_path_for(path: str | os.PathLike) -> Path:
    """The angle file read for a tilt series: ``<stem>.tlt``, else ``<stem>.rawtlt``."""
    path = Path(path)
    for suffix in (".tlt", ".rawtlt"):
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise MilopypError(
        f"{path}: no tilt angles found beside it (looked for {path.with_suffix('.tlt')} and "
        f"{path.with_suffix('.rawtlt')}); give the angle file"
    )


def read_tilt_series(
    path: str | os.PathLike,
    angles_path: str | os.PathLike | None = None,
    *,
    mmap: bool = False,
    check_finite: bool = True,
    pixel_size_a: float | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Read a tilt series: float32 ``[n_tilts, y, x]``, angles (deg, ``(n,)``), pixel size Å.

    Angles come from ``angles_path`` or else ``<stem>.tlt`` then ``<stem>.rawtlt`` beside
    ``path``; their count must equal the number of images. ``pixel_size_a`` (Å) replaces the
    header's; a header without a pixel size and no ``pixel_size_a`` raise.
    """
    path = Path(path)
    _require_file(path, "tilt series", "check the tilt-series path")
    angle_file = Path(angles_path) if angles_path is not None else angles_path_for(path)
    angles = read_angles(angle_file)
    stack, voxel_size_a = _open_stack(path, "tilt series", mmap=mmap, check_finite=check_finite,
                                      voxel_size_a=pixel_size_a)
    if stack.shape[0] != angles.size:
        raise MilopypError(
            f"{path} has {stack.shape[0]} tilt images but {angle_file} has {angles.size} "
            f"angles; give the matching angle file"
        )
    return stack, angles, voxel_size_a


def write_tilt_series(path: str | os.PathLike, stack, angles_deg, voxel_size_a: float) -> None:
    """Write a ``[n, y, x]`` stack (MRC mode 2, image stack) and ``<stem>.tlt`` beside it.

    Both writes are atomic; the angle file is written first.
    """
    path = Path(path)
    if path.suffix in (".tlt", ".rawtlt"):
        raise MilopypError(f"{path}: a tilt series needs an image suffix such as .st or .mrc")
    n = np.shape(stack)[0] if np.ndim(stack) else 0
    n_angles = np.size(angles_deg)
    if n != n_angles:
        raise MilopypError(
            f"{path}: {n} tilt images but {n_angles} angles; give one angle per image"
        )
    write_angles(path.with_suffix(".tlt"), angles_deg)
    _write_stack(path, stack, voxel_size_a, "tilt series")
