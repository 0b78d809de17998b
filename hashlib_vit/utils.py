"""Small shared helpers: atomic file writes, checksums, seeding, device choice, environment facts."""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch


# ----------------------------------------------------------------------------- files
#: A temporary file or folder whose writer cannot be checked (another host, or an older name without a
#: pid) is stale once it has not been modified for this many seconds; a live writer modifies it all along.
TMP_STALE_SECONDS = 3600
#: The errno values of a full disk or an exceeded quota.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
_LIVE_TEMPS: set[str] = set()  # temporary paths this process is writing now (other threads' writes are live)
# .<target>.<host>-<pid>-<8 random>.tmp (this version) and .<target>.<8 random>.tmp (earlier versions)
_TMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9_-]+?)-(?P<pid>\d+)-[a-z0-9_]{8}\.tmp$")
_OLD_TMP_RE = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def host_tag() -> str:
    """This machine's name as it appears in temporary file names (letters, digits, ``_`` and ``-``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user (or cannot be asked: assume alive)
        return True
    return True


def temp_is_stale(path: str | os.PathLike, host: str | None, pid: int | None, *, now: float | None = None) -> bool:
    """Whether a temporary file or folder left by a write is stale (its writer is gone), so that it may be
    removed. The rule:

    * written by this process (``pid`` is ours on this host): stale unless this process is writing it
      now (a pid reused after a kill, as happens in containers, must not keep a dead write's file);
    * written on this host by another pid: stale when that pid is no longer running;
    * otherwise (another host, or a name without a pid): stale when it was last modified more than
      :data:`TMP_STALE_SECONDS` ago. A live writer keeps modifying its file; a temp of a live process that
      reused a dead writer's pid is caught by this age rule too.
    """
    path = Path(path)
    if str(path) in _LIVE_TEMPS:
        return False
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    if age > TMP_STALE_SECONDS:
        return True
    if host == host_tag() and pid is not None:
        return pid == os.getpid() or not _pid_alive(pid)
    return False


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the stale temporary files (:func:`temp_is_stale`) that killed :func:`atomic_write` calls left
    in ``folder`` (``.<name>.<host>-<pid>-<random>.tmp``, and ``.<name>.<random>.tmp`` of earlier versions);
    returns the removed paths. Called by every :func:`atomic_write` on its folder; never raises (a temp
    that cannot be removed is left for the next write)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        name = e.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        m = _TMP_RE.match(name)
        host, pid = (m["host"], int(m["pid"])) if m else (None, None)
        if (m or _OLD_TMP_RE.match(name)) and temp_is_stale(e.path, host, pid):
            try:
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path)
                else:
                    os.unlink(e.path)
                removed.append(Path(e.path))
            except OSError:
                pass
    return removed


def make_temp_dir(folder: str | os.PathLike, name: str) -> Path:
    """A new temporary folder ``folder/.<name>.<host>-<pid>-<random>.tmp`` for a write that builds a whole
    folder and renames it into place (the feature cache); stale ones of killed writers are removed first
    (:func:`clean_stale_temps`). Call :func:`release_temp` once it is renamed or removed. Raises
    :class:`~hashlib_vit.errors.WriteError` / :class:`~hashlib_vit.errors.DiskFullError` naming ``folder``."""
    make_dirs(folder)
    clean_stale_temps(folder)
    try:
        tmp = tempfile.mkdtemp(prefix=f".{name}.{host_tag()}-{os.getpid()}-", suffix=".tmp", dir=folder)
    except OSError as e:
        raise_write_error(e, Path(folder) / name, what="folder")
    _LIVE_TEMPS.add(tmp)
    return Path(tmp)


def release_temp(path: str | os.PathLike) -> None:
    """Mark the temporary file or folder ``path`` of this process as no longer being written."""
    _LIVE_TEMPS.discard(str(path))


def _fmt_bytes(n: int) -> str:
    return f"{n:,} bytes ({n / 2**20:.1f} MiB)" if n >= 2**20 else f"{n:,} bytes"


def write_error(e: OSError, path: str | os.PathLike, *, what: str = "file", needed: int | None = None,
                at_least: bool = False) -> "Exception":
    """The package's error for an ``OSError`` ``e`` raised while writing ``path`` (a file or folder):

    * ENOSPC / EDQUOT -> :class:`~hashlib_vit.errors.DiskFullError` ("the disk is full" / "the disk quota is
      exceeded"), naming the file, the free bytes of its disk and ``needed`` (``at_least``: a lower bound,
      the bytes written before the disk filled) when known;
    * EACCES / EPERM / EROFS -> :class:`~hashlib_vit.errors.WriteError` naming the folder that is not
      writable (permission denied, or a read-only file system);
    * ENOTDIR / EEXIST -> :class:`~hashlib_vit.errors.WriteError`: a file stands where a folder is needed;
    * anything else: ``e`` itself (returned unchanged).

    Returns the exception to raise (:func:`raise_write_error` raises it)."""
    from .errors import DiskFullError, WriteError

    path = Path(path)
    folder = path if what == "folder" else path.parent
    code = errno.errorcode.get(e.errno, str(e.errno))
    if e.errno in DISK_FULL_ERRNOS:
        free = None
        for p in (folder, *folder.parents):
            try:
                free = shutil.disk_usage(p).free
                break
            except OSError:
                continue
        if needed is None:
            need = ""
        elif at_least:  # a lower bound: what was written before the disk filled (freed again since)
            need = f"; {_fmt_bytes(needed)} had been written when it filled (the file needs more)"
        else:
            need = f", {_fmt_bytes(needed)} needed"
        have = "" if free is None else f"; {_fmt_bytes(free)} free now on the disk of {folder}"
        cause = "the disk quota is exceeded" if e.errno != errno.ENOSPC else "the disk is full"
        err = DiskFullError(f"{cause}: cannot write {what} {path} ({e.strerror or code}, errno {code}){have}{need}. "
                            f"Nothing was written there (an earlier {path.name}, if any, is unchanged). Free some "
                            "space, or write to another disk")
    elif e.errno in _NOT_WRITABLE:
        why = "the file system is read-only" if e.errno == errno.EROFS else "permission denied"
        bad = Path(e.filename) if getattr(e, "filename", None) else folder
        err = WriteError(f"cannot write {what} {path}: {why} ({code}) on {bad}; expected a folder this user can "
                         "write to. Nothing was written there")
    elif e.errno in (errno.ENOTDIR, errno.EEXIST):
        bad = Path(e.filename) if getattr(e, "filename", None) else folder
        err = WriteError(f"cannot write {what} {path}: {bad} (or a folder above it) is a file, not a folder "
                         f"({code}). Nothing was written there")
    else:
        return e
    err.errno, err.strerror, err.filename = e.errno, e.strerror, str(path)
    return err


def raise_write_error(e: OSError, path: str | os.PathLike, **kw) -> NoReturn:
    """Raise :func:`write_error` ``(e, path, **kw)`` from ``e``, or ``e`` itself when it is not a disk-full
    or not-writable error: what an ``except OSError as e`` around a write does."""
    err = write_error(e, path, **kw)
    if err is e:
        raise e
    raise err from e


def make_dirs(folder: str | os.PathLike, what: str = "folder") -> Path:
    """``mkdir -p folder``; a folder that cannot be made (permission denied, read-only, disk full) raises
    :class:`~hashlib_vit.errors.WriteError` / :class:`~hashlib_vit.errors.DiskFullError` naming it
    (``what``: its kind in the message, e.g. ``"run directory"``)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise_write_error(e, folder, what=what if what != "file" else "folder")
    return folder


class _Recorder:
    """The binary file handed to a writer: counts the bytes written and keeps the first ``OSError`` that
    ``write``/``flush`` raised, whatever the writer (``torch.save``'s zip writer) turns it into."""

    def __init__(self, f):
        self._f, self.written, self.error = f, 0, None

    def write(self, data):
        try:
            n = self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise
        self.written += len(data) if n is None else n
        return n

    def flush(self):
        try:
            return self._f.flush()
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def _file_mode() -> int:
    """The mode ``open()`` gives a new file now: 0o666 less the process umask (from /proc/self/status where
    there is one, which leaves the umask untouched; else set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write, *, size: int | None = None) -> Path:
    """Create ``path`` through ``write(binary_file)`` on a temporary file in the same folder, fsync, then
    rename over ``path`` (``size``: the bytes it will hold, when known, for the disk-full message). The file
    gets the mode a plain ``open()`` would give it (0o666 less the umask, usually 0o644), not the private
    0o600 of a temporary file: a run directory or a student edition is meant to be shared.

    A reader never sees a half-written file, and an interrupted write leaves the old file intact and no
    temporary file behind. A hard kill can leave the temporary file ``.<name>.<host>-<pid>-<random>.tmp``;
    every later write to the same folder removes such stale files (:func:`clean_stale_temps`).

    Raises :class:`~hashlib_vit.errors.DiskFullError` (ENOSPC / EDQUOT, from the writer's ``write`` —
    even when ``torch.save`` wraps it in its own error —, ``flush``, ``fsync`` or the rename) naming the
    file, the free bytes and the bytes needed, and :class:`~hashlib_vit.errors.WriteError` for a folder
    that cannot be written (permission denied, read-only); in both cases the temporary file is removed
    first. Other errors of ``write`` propagate unchanged.
    """
    path = Path(path)
    make_dirs(path.parent)
    clean_stale_temps(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{host_tag()}-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise_write_error(e, path, needed=size)
    _LIVE_TEMPS.add(tmp)
    rec = None
    stage = "write"
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), _file_mode())
            rec = _Recorder(f)
            write(rec)
            stage = "flush"
            f.flush()
            os.fsync(f.fileno())
        stage = "rename"
        os.replace(tmp, path)
    except BaseException as e:
        _LIVE_TEMPS.discard(tmp)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cause = rec.error if rec is not None and rec.error is not None else (
            e if isinstance(e, OSError) and (stage != "write" or rec is None) else None)
        if cause is not None:
            written = rec.written if rec is not None else 0
            err = write_error(cause, path, needed=size if size is not None else (written or None),
                              at_least=size is None)
            if err is not cause:
                raise err from cause
        raise
    _LIVE_TEMPS.discard(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`; its errors)."""
    return atomic_write(path, lambda f: f.write(data), size=len(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`; its errors)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy / torch / Path values into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file", *, expect: type | None = dict) -> Any:
    """Read a JSON file the package wrote (or a user gave), checked: the one JSON reader of the package.

    ``what`` names the file's kind in the error ("metrics.json of a run", "split manifest", ...);
    ``expect`` is the type of the top-level value (``dict``, ``list``, or None for any).

    Raises :class:`~hashlib_vit.errors.DataError` naming the file and ``what`` when it does not exist,
    cannot be read, is not UTF-8 JSON (with the line and column), or its top level is not ``expect``.
    Field checks of each file kind are done by that kind's reader on the returned value.
    """
    from .errors import DataError

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{what} {path} cannot be read: {e}") from e
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                        "it is damaged or was not written by this package") from e
    if expect is not None and not isinstance(obj, expect):
        raise DataError(f"{what} {path} holds a JSON {type(obj).__name__}; expected a JSON "
                        f"{'object' if expect is dict else expect.__name__}")
    return obj


def _plain(value):
    """A numpy scalar as the plain Python value (for messages: 7.5, not np.float64(7.5))."""
    return value.item() if isinstance(value, np.generic) else value


def read_csv(path: str | os.PathLike, what: str = "CSV file", *, required=(), numeric=(), integer=(),
             choices: dict | None = None, text=None, **pandas_options):
    """Read a CSV file the package wrote (or a user gave), checked: the one CSV reader of the package.

    ``path`` may end in ``.gz`` (gzip). ``what`` names the file's kind in the error. Checks, each raising
    :class:`~hashlib_vit.errors.DataError` naming ``what``, the file, the line (1 = the header) and the
    column: the file exists, is UTF-8 text, parses as CSV (no NUL bytes, no unterminated quote), has a
    header and every line has as many fields as the header (a truncated or garbled line); the
    ``required`` columns are present; the ``numeric`` columns hold numbers (empty cells allowed) and the
    ``integer`` columns whole numbers (empty cells allowed; ``numeric="*"``: every column not in
    ``integer``); a column of ``choices`` ({column: allowed
    values}) holds only those values. ``text``: the file's contents when already read.
    Returns a pandas DataFrame (numeric columns as float64, integer columns as float64 with NaN for
    empty cells: pandas' own reading). ``pandas_options`` go to :func:`pandas.read_csv`.
    """
    import csv
    import gzip
    import io

    import pandas as pd

    from .errors import DataError

    path = Path(path)
    if text is None:
        try:
            raw = path.read_bytes()
            if path.suffix == ".gz":
                raw = gzip.decompress(raw)
            text = raw.decode("utf-8")
        except FileNotFoundError:
            raise DataError(f"{what} {path} does not exist") from None
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise DataError(f"{what} {path} cannot be read as UTF-8 text: {e}; it is damaged or was not written by "
                            "this package") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(f"{what} {path}, line {line}: holds NUL bytes (zeros left by a crash or a damaged disk); the "
                        "file is damaged or was not written by this package")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise DataError(f"{what} {path} is empty or has no header line; expected a CSV file with columns "
                            f"{list(required) or '...'}")
        lines, end = [], reader.line_num  # the first physical line of every data row (pandas' row order)
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row or row == [""]:
                continue  # a blank line (pandas skips it too)
            if len(row) != len(header):
                raise DataError(f"{what} {path}, line {start}: {len(row)} fields, the header has "
                                f"{len(header)} ({', '.join(header)}); the line is truncated or damaged")
            lines.append(start)
    except csv.Error as e:
        raise DataError(f"{what} {path}, line {reader.line_num}: not valid CSV ({e}); the file is damaged") from None
    try:
        df = pd.read_csv(io.StringIO(text), **pandas_options)
    except (ValueError, pd.errors.ParserError) as e:  # pragma: no cover - the csv pass above catches these
        raise DataError(f"{what} {path}: not valid CSV ({e})") from None
    if len(lines) != len(df):  # pragma: no cover - the two parsers agree on plain CSV
        lines = list(range(2, len(df) + 2))
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{what} {path}: column(s) {missing} missing; found {list(df.columns)}, expected at least "
                        f"{list(required)}")
    if numeric == "*":
        numeric = [c for c in df.columns if c not in integer]
    for col in list(numeric) + list(integer):
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if not bad.any() and col in integer:
            bad = values.notna() & (values != values.round())
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{what} {path}, line {lines[i]}, column {col!r}: {_plain(df[col].iloc[i])!r}; expected "
                            f"{'a whole number' if col in integer else 'a number'} (or an empty cell)")
        df[col] = values
    for col, allowed in (choices or {}).items():
        if col not in df.columns:
            continue
        bad = ~df[col].isin(list(allowed))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{what} {path}, line {lines[i]}, column {col!r}: {_plain(df[col].iloc[i])!r}; expected one of "
                            f"{', '.join(map(str, sorted(allowed)))}")
    return df


#: Elements of one row block (:func:`row_blocks`): 4 Mi, so a block's temporaries stay a few MB.
BLOCK_ELEMENTS = 2 ** 22


def row_blocks(n: int, width: int, elements: int = BLOCK_ELEMENTS):
    """``(start, stop)`` of consecutive row blocks of an ``(n, width)`` array, each of about ``elements``
    elements (at least one row): what keeps the temporaries of a row-wise computation O(block), whatever
    the width (10,000 classes, 64-bit codes x a large pool, ...)."""
    step = max(1, elements // max(1, width))
    return ((s, min(n, s + step)) for s in range(0, n, step))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte pieces (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- randomness
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; make CPU kernels deterministic where torch allows."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def batch_generator(seed: int, *counters: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator whose state depends only on (seed, counters).

    Used for shuffling and augmentation so that the random stream of epoch e / batch b is the same
    whether a run is uninterrupted or resumed from a checkpoint.
    """
    h = hashlib.sha256(repr((int(seed),) + tuple(int(c) for c in counters)).encode()).digest()
    g = torch.Generator(device=device)
    g.manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
    return g


# ----------------------------------------------------------------------------- devices
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU. Anything else is passed to torch.device (checked)."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError(f"device={device!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'")
    return dev


# ----------------------------------------------------------------------------- provenance
def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The commit of the checkout that holds this package (or `cwd`), with '+dirty' if modified."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def env_info(device: torch.device | str | None = None) -> dict:
    """Versions, device and commit, as recorded in every run directory's env.json."""
    import timm

    from . import __version__

    dev = resolve_device(device or "auto")
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "hashlib_vit": __version__,
        "git_commit": git_commit(),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


# ----------------------------------------------------------------------------- paths
def project_root() -> Path | None:
    """The checkout this package lives in (a folder holding pyproject.toml and hashlib_vit/), if any.

    Looked up from the working directory first (a notebook opened in ``notebooks/``), then from the
    package's own location (an editable install).
    """
    starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
    for start in starts:
        for p in (start, *start.parents):
            if (p / "pyproject.toml").is_file() and (p / "hashlib_vit").is_dir():
                return p
    return None


def resolve_path(path: str | os.PathLike | None) -> Path | None:
    """Relative paths are taken from the project root (so ``results/...`` lands in the checkout's
    results/ folder whether a notebook runs from JupyterLab in notebooks/ or from papermill at the
    root); outside a checkout they are taken from the working directory."""
    if path is None:
        return None
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute():
        return p
    root = project_root()
    return (root / p) if root else p.resolve()


# ----------------------------------------------------------------------------- progress bars
#: The environment variable that overrides the progress-bar policy (:func:`progress_mode`): ``0`` (also
#: ``off``/``false``/``no``) never draws a bar, ``1`` (``on``/``true``/``yes``) always draws one (a widget in a
#: Jupyter kernel, text elsewhere), ``auto`` or unset follows the policy.
PROGRESS_ENV = "HASHLIB_VIT_PROGRESS"
_PROGRESS_OFF, _PROGRESS_ON = {"0", "off", "false", "no"}, {"1", "on", "true", "yes"}
#: The programs that mark a kernel's parent as a headless executor: papermill, nbval (pytest), nbconvert
#: (``jupyter nbconvert --execute``), ``jupyter execute``, nbclient run as a module, and this package's own
#: command line, which starts kernels only headless (run-grid, reproduce, site).
HEADLESS_PARENTS = frozenset({"papermill", "pytest", "py.test", "nbval", "nbclient", "nbconvert", "jupyter-nbconvert",
                              "jupyter-execute", "hashlib-vit", "hashlib_vit"})
_PYTHON_RE = re.compile(r"^(python|pypy)[0-9.]*(\.exe)?$")


def _parent_cmdline() -> list[str]:
    """The command line of this process's parent (``[]`` when it cannot be read)."""
    return list(_cmdline_of(os.getppid()))


@functools.lru_cache(maxsize=4)
def _cmdline_of(ppid: int) -> tuple[str, ...]:
    """The command line of process ``ppid``, read once per pid (every progress bar of a kernel asks; without
    /proc it costs a ``ps`` process)."""
    try:
        with open(f"/proc/{ppid}/cmdline", "rb") as f:
            return tuple(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
    except OSError:
        pass
    try:  # macOS and other systems without /proc
        out = subprocess.run(["ps", "-o", "command=", "-p", str(ppid)], capture_output=True, text=True, timeout=5)
        return tuple(out.stdout.split())
    except (OSError, subprocess.SubprocessError):
        return ()


def _in_jupyter_kernel() -> bool:
    """Whether this process is an IPython kernel (a ZMQ shell), the way tqdm.auto tells."""
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        ip = get_ipython()
        return ip is not None and "IPKernelApp" in ip.config
    except Exception:  # noqa: BLE001 - a broken IPython is no kernel for the bars
        return False


def parent_program(cmdline: list[str]) -> str:
    """The program a command line runs: the executable's name, or for a Python interpreter the module after
    ``-m`` or the script's name (``.py`` dropped); ``jupyter SUB`` gives ``jupyter-SUB``; ``-c`` code gives
    ``"-c"``; ``""`` for an empty line. Only these words count, never the arguments (a path argument that
    contains ``pytest`` does not make ``jupyter lab`` a test run)."""
    if not cmdline:
        return ""
    name, rest = os.path.basename(cmdline[0].replace("\\", "/")), list(cmdline[1:])
    if _PYTHON_RE.match(name.lower()):
        name = ""
        while rest:
            tok = rest.pop(0)
            if tok in ("-m", "-c"):
                name = rest.pop(0) if tok == "-m" and rest else tok
                break
            if tok in ("-X", "-W"):  # options with an argument
                rest = rest[1:]
            elif not tok.startswith("-"):
                name = os.path.basename(tok.replace("\\", "/"))
                break
    name = name.lower().removesuffix(".py")
    if name == "jupyter" and rest and not rest[0].startswith("-"):
        name = f"jupyter-{rest[0].lower()}"
    return name


def headless_parent(cmdline: list[str]) -> bool:
    """Whether a kernel's parent command line (``["python", "-m", "papermill", ...]``) is a headless executor:
    its :func:`parent_program` is one of :data:`HEADLESS_PARENTS` (papermill, pytest/nbval, nbconvert,
    ``jupyter execute``, nbclient, and this package's ``hashlib-vit`` / ``python -m hashlib_vit``, whose
    grids, reproductions and site builds run notebooks headless). A Jupyter server (``jupyter lab``,
    ``jupyter-notebook``, ``jupyter server``), VS Code or any other parent is not headless."""
    return parent_program(cmdline) in HEADLESS_PARENTS


def progress_mode(*, setting: str | None = None, in_kernel: bool | None = None,
                  parent_cmdline: list[str] | None = None, tty: bool | None = None) -> str:
    """Which progress bars this process draws: ``"widget"`` (ipywidgets, in an interactive Jupyter frontend),
    ``"text"`` (tqdm's text bar on stderr) or ``"off"`` (nothing at all).

    The policy: in a Jupyter kernel, ``"off"`` when its parent process is a headless executor
    (:func:`headless_parent`: papermill, nbval/pytest, nbconvert, nbclient), so executed notebooks carry no
    bar output that differs from run to run; otherwise (JupyterLab, Notebook, VS Code) ``"widget"``, or
    ``"text"`` when ipywidgets is not installed. Outside a kernel (the command line): ``"text"`` when stderr is
    a terminal, else ``"off"`` (logs and CI stay clean). The environment variable :data:`PROGRESS_ENV`
    (``HASHLIB_VIT_PROGRESS``) overrides: ``0`` always off, ``1`` always on (widget in a kernel with
    ipywidgets, else text), ``auto``/unset the policy.

    The keyword arguments replace the facts read from the process (for tests): ``setting`` the variable's
    value, ``in_kernel``, ``parent_cmdline`` (list of words) and ``tty`` (stderr is a terminal).
    Raises ConfigError for a value of the variable other than those above.
    """
    raw = os.environ.get(PROGRESS_ENV, "auto") if setting is None else setting
    value = raw.strip().lower() or "auto"
    if value not in _PROGRESS_OFF | _PROGRESS_ON | {"auto"}:
        from .errors import ConfigError

        raise ConfigError(f"{PROGRESS_ENV}={raw!r}: expected 0, 1 or auto")
    if value in _PROGRESS_OFF:
        return "off"
    kernel = _in_jupyter_kernel() if in_kernel is None else in_kernel
    if kernel:
        if value == "auto" and headless_parent(_parent_cmdline() if parent_cmdline is None else parent_cmdline):
            return "off"
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return "text"
        return "widget"
    if value in _PROGRESS_ON:
        return "text"
    try:
        is_tty = sys.stderr.isatty() if tty is None else tty
    except (AttributeError, ValueError):  # a replaced or closed stderr
        is_tty = False
    return "text" if is_tty else "off"


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm progress bar drawn as :func:`progress_mode` decides: an ipywidgets bar (``tqdm.notebook``) in an
    interactive Jupyter frontend, a text bar on a terminal, and a disabled bar (it draws and prints nothing,
    ``update``/``set_postfix``/``close`` still work) when the mode is ``"off"`` or ``enabled`` is false (the
    caller's ``progress=False``). ``iterable`` and ``kwargs`` are tqdm's (``total``, ``desc``, ``unit``,
    ``leave``, ...). The one place the library makes its bars (training, encoding, the feature cache, grids).
    """
    mode = progress_mode() if enabled else "off"
    if mode == "widget":
        from tqdm.notebook import tqdm as bar_cls
    else:
        from tqdm.std import tqdm as bar_cls
    return bar_cls(iterable, disable=mode == "off", **kwargs)
