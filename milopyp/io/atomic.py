"""Atomic writes: write to a temporary file in the target's folder, then rename.

An interrupted job (crash, ``kill -9``, node failure) therefore never leaves a file
at the final path that looks finished. What it can leave is its temporary file
(``.{stem}.XXXXXXXX.tmp{suffixes}`` beside the output); :func:`prepare_outputs`, called at
the start of every command, removes those of the command's own outputs that are older
than the run, and checks that the outputs' folders are writable before any computation.

A write that fails because the disk is full, the quota is spent, the file system is
read-only or permission is denied raises :class:`~milopyp.errors.MilopypError` naming
the final path and the cause, on one line; the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from milopyp.errors import MilopypError

log = logging.getLogger(__name__)

#: errno -> (cause, fix) of the write failures told in one line
WRITE_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free space there or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free space in your quota or write elsewhere"),
    errno.EROFS: ("read-only file system", "write the results to a writable folder"),
    errno.EACCES: ("permission denied", "make the folder writable or write elsewhere"),
}


def write_error(final: str | os.PathLike, err: OSError) -> MilopypError | None:
    """The one-line error for a failed write of ``final`` (its cause and the fix), or None
    when ``err`` is not one of :data:`WRITE_ERRORS`."""
    if err.errno not in WRITE_ERRORS:
        return None
    cause, fix = WRITE_ERRORS[err.errno]
    return MilopypError(f"{final}: cannot write the output ({cause}); {fix}")


def reserve(fh, nbytes: int) -> None:
    """Allocate ``nbytes`` of the open scratch file ``fh`` before it is memory-mapped, so that
    a full disk fails here (an ``OSError``) and not as a SIGBUS while the map is written.
    Where the system (macOS) or the file system cannot allocate, the file is only extended
    (sparse), its space taken as it is written."""
    nbytes = max(int(nbytes), 1)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fh.fileno(), 0, nbytes)
            return
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    fh.truncate(nbytes)


def _temp_affixes(final: Path) -> tuple[str, str]:
    """Prefix and suffix of the temporary files of ``final`` (``.{stem}.`` and ``.tmp{suffixes}``)."""
    return f".{final.stem}.", f".tmp{''.join(final.suffixes)}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the final suffix (``.mrc``, ``.csv``, ...) so that writers
    which choose a format by extension behave the same. On any exception the temporary
    file is removed and the final path is left untouched; an ``OSError`` of
    :data:`WRITE_ERRORS` (disk full, read-only, ...) becomes a one-line
    :class:`MilopypError` naming ``path``.
    """
    final = Path(path)
    prefix, suffix = _temp_affixes(final)
    tmp = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=final.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        # mkstemp makes 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, final)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        translated = None
        if isinstance(err, OSError) and _about_output(err, final, tmp):
            translated = write_error(final, err)
        if translated is not None:
            raise translated from err
        raise


def _about_output(err: OSError, final: Path, tmp: Path | None) -> bool:
    """Whether ``err`` is about writing ``final``: no file named (a ``write``/``close`` of
    the open temporary file), a temporary file of ``final``, the final path or a folder
    above it; not an input read inside the ``with`` block."""
    if err.filename is None:
        return True
    named = Path(os.fsdecode(err.filename))
    prefix, _ = _temp_affixes(final)
    return (named in (final, tmp) or named in final.parents
            or (named.parent == final.parent and named.name.startswith(prefix)))


def umask() -> int:
    """The process umask (read without changing it): permissions of the files written."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Raise a one-line :class:`MilopypError` unless a file can be created beside ``path``
    (in the output's folder, made if missing; with ``folder=True`` inside the folder
    ``path``): called before any long computation, so that a read-only or full results
    folder fails at once and not after training."""
    final = Path(path)
    where = final if folder else final.parent
    prefix, suffix = (".probe.", ".tmp") if folder else _temp_affixes(final)
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=where)
        try:
            os.write(fd, b"\0")  # a full disk refuses the first block
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise write_error(final, err) or MilopypError(
            f"{final}: cannot write the output ({err.strerror or err}); check the folder "
            f"{where}"
        ) from err


def stale_entries(folder: str | os.PathLike, prefix: str, suffix: str, before: float, *,
                  directories: bool = False) -> list[Path]:
    """The files (or, with ``directories``, folders) in ``folder`` named as ``tempfile``
    names them, ``{prefix}XXXXXXXX{suffix}``, last modified before ``before`` (seconds
    since the epoch): what a killed run left there."""
    pattern = re.compile(re.escape(prefix) + r"[a-z0-9_]{8}" + re.escape(suffix))
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            kind = entry.is_dir if directories else entry.is_file
            if pattern.fullmatch(entry.name) and kind(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < before:
                        found.append(Path(entry.path))
    return sorted(found)


def stale_temp_files(path: str | os.PathLike, before: float) -> list[Path]:
    """The temporary files :func:`atomic_path` made for ``path`` (``.{stem}.XXXXXXXX.tmp
    {suffixes}`` in its folder) last modified before ``before`` (seconds since the epoch)."""
    final = Path(path)
    return stale_entries(final.parent, *_temp_affixes(final), before)


def prepare_outputs(*paths: str | os.PathLike | None, started: float | None = None) -> None:
    """At the start of a command: for each output path (None skipped), remove the temporary
    files an earlier, killed run left beside it (older than ``started``, default now) and
    check that its folder is writable (:func:`check_writable`)."""
    started = time.time() if started is None else started
    for path in paths:
        if path is None:
            continue
        for stale in stale_temp_files(path, started):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
                log.info("removed %s, left by an interrupted run", stale)
        check_writable(path)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
