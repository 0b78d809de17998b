"""Small shared helpers: atomic file writes, checksums, seeding, device choice, environment facts."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


# ----------------------------------------------------------------------------- files
def atomic_write(path: str | os.PathLike, write) -> Path:
    """Create ``path`` through ``write(binary_file)`` on a temporary file in the same folder, fsync, then
    rename over ``path``.

    A reader never sees a half-written file, and an interrupted write (even a kill) leaves the old file
    intact and no temporary file behind (except after a hard kill, as a hidden ``.name.*.tmp``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
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
