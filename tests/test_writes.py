"""Writes that fail say so in one line, before the work: full disk, read-only folder, and the
temporary files of killed runs (milopyp.io.atomic, the MRC writer, the commands)."""

from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from milopyp import cli
from milopyp.errors import MilopypError
from milopyp.io import atomic, mrc


def _mount_tmpfs(path, options: str) -> bool:
    """Mount a tmpfs at ``path`` (root only); False where that is not allowed."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, check=False)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB file system (tmpfs): writes beyond it fail with ENOSPC."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=1m"):
        pytest.skip("needs root and a tmpfs mount for a small disk")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody may write into: a read-only tmpfs as root (chmod does not stop root),
    else a folder without write permission."""
    folder = tmp_path / "ro"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if not _mount_tmpfs(folder, "size=1m,ro"):
        pytest.skip("running as root without tmpfs mounts: no folder is read-only to root")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def _hidden(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def test_enospc_on_mrc_write_is_one_line_and_leaves_no_temp(small_disk):
    final = small_disk / "pre" / "tomo.mrc"
    data = np.ones((8, 256, 256), np.float32)  # 2 MiB > 1 MiB disk
    with pytest.raises(MilopypError) as err:
        mrc.write_tomogram(final, data, 10.0)
    message = str(err.value)
    assert message.startswith(f"{final}: ") and "no space left" in message
    assert "\n" not in message and ".tmp" not in message
    assert not final.exists() and _hidden(small_disk) == []
    # the disk is free again: a small one is written
    mrc.write_tomogram(final, data[:4, :64, :64].copy(), 10.0)
    assert mrc.read_header(final)[0] == (4, 64, 64)


def test_mrc_writer_maps_no_memory(tmp_path, monkeypatch):
    """Writes go through plain file writes (a full disk under a map is a SIGBUS)."""
    import mrcfile

    def refuse(*args, **kwargs):
        raise AssertionError("memory-mapped write")

    monkeypatch.setattr(mrcfile, "new_mmap", refuse)
    monkeypatch.setattr(np, "memmap", refuse)
    data = np.random.default_rng(0).normal(size=(6, 9, 13)).astype(np.float32)
    mrc.write_tomogram(tmp_path / "t.mrc", data, 4.0)
    with mrcfile.open(tmp_path / "t.mrc", permissive=False) as m:
        np.testing.assert_array_equal(m.data, data)
        assert m.voxel_size.x == pytest.approx(4.0) and m.is_volume()
        assert m.header.dmax == pytest.approx(data.max())
        assert m.header.rms == pytest.approx(data.std(), rel=1e-5)
    assert mrcfile.validate(str(tmp_path / "t.mrc"), print_file=io.StringIO())


def test_read_only_folder_fails_with_one_line(read_only):
    final = read_only / "results" / "picks.csv"
    with pytest.raises(MilopypError) as err:
        atomic.write_text(final, "x")
    assert str(err.value).startswith(f"{final}: cannot write the output (")
    with pytest.raises(MilopypError) as err:
        atomic.prepare_outputs(final)
    assert str(err.value).startswith(f"{final}: ") and "\n" not in str(err.value)


def test_an_input_error_inside_the_block_is_not_called_a_write_error(tmp_path):
    with pytest.raises(PermissionError), atomic.atomic_path(tmp_path / "out.csv"):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "input.mrc"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command, args", [
    ("train-localize", ["--tomograms", "t.mrc", "--labels", "t.csv",
                        "--particle-diameter", "100"]),
    ("train-explore", ["--patches", "p.npz"]),
    ("localize", ["--model", "m.pt", "--tomogram", "t.mrc"]),
    ("preprocess", ["--tomogram", "t.mrc"]),
    ("embed", ["--model", "m.pt", "--patches", "p.npz"]),
])
def test_read_only_results_fail_before_the_work(read_only, command, args, capsys, monkeypatch):
    """The output folder is checked first: the (missing) inputs are never reached."""
    import milopyp.explore.train as explore_train
    import milopyp.localize.train as localize_train

    def no_training(*a, **k):
        raise AssertionError("trained before checking the output folder")

    monkeypatch.setattr(localize_train, "train_localizer", no_training)
    monkeypatch.setattr(explore_train, "train_simsiam", no_training)
    out = read_only / "results" / "out.file"
    assert cli.main([command, *args, "-o", str(out)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and f"{out}: cannot write the output" in lines[0], lines


def test_stale_temps_of_own_outputs_are_removed(tmp_path):
    out = tmp_path / "picks" / "tomo_000.csv"
    out.parent.mkdir()
    old = out.parent / ".tomo_000.h5ybwcrs.tmp.csv"  # a killed job's
    fresh = out.parent / ".tomo_000.a1b2c3d4.tmp.csv"  # written during this run
    other = out.parent / ".tomo_001.h5ybwcrs.tmp.csv"  # another output's
    for p in (old, fresh, other):
        p.write_text("partial")
    hour_ago = time.time() - 3600
    for p in (old, other):
        os.utime(p, (hour_ago, hour_ago))
    atomic.prepare_outputs(out, started=time.time() - 60)
    assert not old.exists() and fresh.exists() and other.exists()


_KILLED_WRITE = """
import os, signal, sys
from milopyp.io.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half an MRC")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_between_write_and_rename_leaves_nothing_a_rerun_trips_on(tmp_path):
    tomogram = tmp_path / "tomo_000.mrc"
    rng = np.random.default_rng(0)
    mrc.write_tomogram(tomogram, rng.normal(size=(8, 24, 24)).astype(np.float32), 10.0)
    final = tmp_path / "preprocessed" / "tomo_000.mrc"
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITE, str(final)], check=False)
    assert killed.returncode == -signal.SIGKILL
    assert not final.exists() and len(_hidden(final.parent)) == 1  # the temp file stays
    past = time.time() - 5
    for p in final.parent.iterdir():
        os.utime(p, (past, past))
    assert cli.main(["preprocess", "--tomogram", str(tomogram), "-o", str(final)]) == 0
    assert _hidden(final.parent) == [] and mrc.read_header(final)[0] == (8, 24, 24)
