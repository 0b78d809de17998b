"""Issue 18, kind 4: the disk fills (or a folder cannot be written).

Every write of the package goes through ``utils.atomic_write`` (or, for the step log and the feature cache,
through ``utils.write_error``): a full disk is one :class:`DiskFullError` naming the file, saying the disk is
full, with the free and needed bytes; nothing partial is left that a later run would trust; the temporary
file of a killed write is removed by the next write to the folder.

A full disk is simulated by a file object whose ``write`` raises ENOSPC after a byte budget (what the
kernel does), handed to the writer through ``os.fdopen`` of :mod:`hashlib_vit.utils`.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from hashlib_vit import utils
from hashlib_vit.errors import DiskFullError, HashlibVitError, WriteError
from hashlib_vit.train.checkpoint import load_checkpoint, save_checkpoint


class _FullDisk:
    """A binary file that accepts ``budget`` bytes, then raises ENOSPC on write (or on fsync: ``at="fsync"``)."""

    def __init__(self, f, budget: int):
        self._f, self.budget = f, budget

    def write(self, data):
        if len(data) > self.budget:
            self.budget = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(budget, only=suffix)``: writes of files ending in ``only`` fail after ``budget`` bytes."""
    real = os.fdopen

    def install(budget: int, only: str = ""):
        def fdopen(fd, *a, **k):
            f = real(fd, *a, **k)
            name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
            return _FullDisk(f, budget) if only in name.rsplit(".tmp", 1)[0] else f

        monkeypatch.setattr(utils.os, "fdopen", fdopen)

    return install


def _state(n: int = 200_000) -> dict:
    return {"version": 1, "step": 3, "model": {"w": torch.arange(n, dtype=torch.float32)}}


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- full disk
def test_checkpoint_on_full_disk_is_one_clear_error_and_keeps_the_previous_one(tmp_path, full_disk):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state(10))
    before = path.read_bytes()
    full_disk(100_000, only="checkpoint.pt")
    with pytest.raises(DiskFullError) as err:
        save_checkpoint(path, _state())
    msg = str(err.value)
    # not torch's chained "unexpected pos ... vs ..." error: one message naming the file and the cause
    assert "disk is full" in msg and str(path) in msg and "free now on the disk of" in msg
    assert "unexpected pos" not in msg and len(msg) < 600
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert isinstance(err.value, HashlibVitError) and err.value.filename == str(path)
    assert temps(tmp_path) == []  # nothing partial left
    assert path.read_bytes() == before and load_checkpoint(path)["model"]["w"].numel() == 10


def test_full_disk_at_fsync_or_rename(tmp_path, monkeypatch):
    def no_space(*a):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(utils.os, "fsync", no_space)
    with pytest.raises(DiskFullError, match=r"disk quota is exceeded: cannot write file .*a\.json.* 5 bytes needed"):
        utils.atomic_write_text(tmp_path / "a.json", "hello")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(utils.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(DiskFullError):
        utils.atomic_write_text(tmp_path / "b.json", "x")
    assert list(tmp_path.iterdir()) == []


def test_tables_folder_on_full_disk_names_the_file(tmp_path, full_disk):
    from hashlib_vit.results.rundir import RunDir

    rd = RunDir(tmp_path / "run")
    rd.prepare()
    full_disk(10, only="metrics.json")
    with pytest.raises(DiskFullError, match=r"disk is full: cannot write file .*metrics\.json"):
        rd.write_json("metrics.json", {"map": 0.5, "pad": "x" * 100})
    assert temps(rd.path) == [] and not (rd.path / "metrics.json").exists()


def test_step_log_on_full_disk(tmp_path, monkeypatch):
    from hashlib_vit.train.steplog import StepLog

    log = StepLog(tmp_path / "train_log.csv")
    log.write({"step": 1, "loss": 0.5})
    real_open = open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, s):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, k):
            return getattr(self.f, k)

    log.close()
    log = StepLog(tmp_path / "train_log.csv")
    monkeypatch.setattr("builtins.open", lambda *a, **k: Full(real_open(*a, **k)) if "a" in (a[1:2] or ("r",))[0]
                        else real_open(*a, **k))
    with pytest.raises(DiskFullError, match=r"cannot write step log .*train_log\.csv"):
        log.write({"step": 2, "loss": 0.4})


def test_feature_cache_write_error_is_the_same_error():
    e = utils.write_error(OSError(errno.ENOSPC, "No space left on device"), "/x/cache", what="feature cache",
                          needed=3 * 2**20)
    assert isinstance(e, DiskFullError) and "3,145,728 bytes (3.0 MiB) needed" in str(e)
    other = OSError(errno.EIO, "I/O error")
    assert utils.write_error(other, "/x/y") is other  # anything else passes through unchanged


# ----------------------------------------------------------------------------- folders that cannot be written
def test_permission_denied_and_read_only_are_named(tmp_path, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(utils.tempfile, "mkstemp", denied)
    with pytest.raises(WriteError, match=r"cannot write file .*x\.txt: permission denied \(EACCES\)") as err:
        utils.atomic_write_text(tmp_path / "x.txt", "x")
    assert not isinstance(err.value, DiskFullError) and isinstance(err.value, PermissionError) is False
    assert isinstance(err.value, OSError)

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(utils.tempfile, "mkstemp", read_only)
    with pytest.raises(WriteError, match="read-only"):
        utils.atomic_write_text(tmp_path / "x.txt", "x")


def test_a_file_where_a_folder_is_needed(tmp_path):
    (tmp_path / "results").write_text("I am a file")
    with pytest.raises(WriteError, match=r"results.* is a file, not a folder"):
        utils.atomic_write_text(tmp_path / "results" / "run" / "metrics.json", "{}")
    from hashlib_vit.results.rundir import RunDir

    with pytest.raises(WriteError, match=r"run directory .*results.* is a file, not a folder"):
        RunDir(tmp_path / "results" / "run").prepare()


# ----------------------------------------------------------------------------- stale temporary files
def test_stale_temps_are_removed_by_the_next_write(tmp_path):
    host = utils.host_tag()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    dead_tmp = tmp_path / f".checkpoint.pt.{host}-{dead}-abcd1234.tmp"  # its writer was killed
    old_tmp = tmp_path / ".checkpoint.pt.k2j4h5g6.tmp"  # the earlier name, an hour old
    own_tmp = tmp_path / f".checkpoint.pt.{host}-{os.getpid()}-zzzz9999.tmp"  # our pid, reused after a kill
    live_tmp = tmp_path / f".checkpoint.pt.{host}-1-live0000.tmp"  # pid 1 is alive: its write goes on
    other_host = tmp_path / ".checkpoint.pt.otherhost-77-abcdefgh.tmp"  # another machine, recent
    unrelated = tmp_path / ".notes.tmp"
    for p in (dead_tmp, old_tmp, own_tmp, live_tmp, other_host, unrelated):
        p.write_bytes(b"\0" * 1000)
    old = time.time() - utils.TMP_STALE_SECONDS - 60
    os.utime(old_tmp, (old, old))
    save_checkpoint(tmp_path / "checkpoint.pt", _state(10))
    left = temps(tmp_path)
    assert left == sorted([live_tmp.name, other_host.name, unrelated.name])
    os.utime(other_host, (old, old))  # an hour without a change: its writer is gone
    utils.atomic_write_text(tmp_path / "other.txt", "x")
    assert temps(tmp_path) == sorted([live_tmp.name, unrelated.name])


def test_killed_checkpoint_write_leaves_a_temp_that_the_next_write_removes(tmp_path):
    """A real SIGKILL in the middle of a checkpoint write (the writer is slowed down so the kill lands mid-way)."""
    path = tmp_path / "checkpoint.pt"
    child = textwrap.dedent(f"""
        import time, torch
        from hashlib_vit.utils import atomic_write
        def slow(f):
            f.write(b"\\0" * 300000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        atomic_write({str(path)!r}, slow)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(utils.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.kill()
        proc.wait(10)
    finally:
        proc.kill()
    left = temps(tmp_path)
    assert len(left) == 1 and (tmp_path / left[0]).stat().st_size == 300000 and not path.exists()
    save_checkpoint(path, _state(10))
    assert temps(tmp_path) == [] and load_checkpoint(path)["step"] == 3


def test_training_run_with_a_full_disk_at_the_checkpoint(tmp_path, full_disk):
    from hashlib_vit.experiment import run_experiment

    full_disk(1000, only="checkpoint")
    with pytest.raises(DiskFullError, match=r"disk is full: cannot write file .*checkpoint"):
        run_experiment(backbone="vit32_test", bits=8, epochs=1, batch_size=64, progress=False, device="cpu",
                       run_dir=str(tmp_path / "run"), checkpoint_every_steps=2)
    rd = tmp_path / "run"
    assert not (rd / "metrics.json").exists()
    assert [p for p in rd.rglob("*.tmp")] == []


def test_a_write_of_unknown_size_says_how_much_was_written_when_the_disk_filled(tmp_path, full_disk):
    full_disk(3000, only="blob.bin")

    def write(f):
        for _ in range(10):
            f.write(b"x" * 1000)

    with pytest.raises(DiskFullError, match=r"3,000 bytes had been written when it filled \(the file needs more\)"):
        utils.atomic_write(tmp_path / "blob.bin", write)
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path):
    """Issue 20 (a student edition handed out as 0600): an atomically written file gets 0o666 less the umask,
    as open() gives, not the private mode of the temporary file it was written as."""
    from hashlib_vit.utils import atomic_write_text

    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        made = atomic_write_text(tmp_path / "atomic.txt", "x")
    finally:
        os.umask(old)
    assert made.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o644
