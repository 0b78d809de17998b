"""Seeded, class-balanced splits and their DeepHash-style text form (``id l1 .. lC`` per line).

The text form is what gets cached on disk and checksummed: the same seed gives byte-identical split
text on any machine, and the sha256 of that text is recorded in each run's ``env.json``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..utils import sha256_bytes


@dataclass(frozen=True)
class SplitIndices:
    """Positions into a source pool (sorted ascending)."""

    query: np.ndarray
    train: np.ndarray
    database: np.ndarray


def class_balanced_split(
    classes: np.ndarray,
    n_query_per_class: int,
    n_train_per_class: int,
    seed: int,
    *,
    train_in_database: bool = True,
    n_database_per_class: int | None = None,
) -> SplitIndices:
    """Draw query / train / database positions per class with a fixed seed.

    * query: ``n_query_per_class`` items of every class, never in the database;
    * database: every remaining item (or ``n_database_per_class`` of them);
    * train: ``n_train_per_class`` items per class drawn from the non-query items; they stay inside
      the database when ``train_in_database`` (``cifar10-1`` style), otherwise they are removed from it
      (``cifar10`` style: query 1,000 / train 5,000 / database 54,000).

    The draw uses numpy's PCG64 generator seeded with ``seed``, one permutation per class in
    ascending class order, so the result depends only on (classes, sizes, seed).
    """
    classes = np.asarray(classes)
    if classes.ndim != 1:
        raise DataError(f"classes must be a 1-D array of class indices, got shape {classes.shape}")
    rng = np.random.Generator(np.random.PCG64(seed))
    q, t, d = [], [], []
    order = np.argsort(classes, kind="stable")  # positions grouped by class, ascending inside a class
    uniq, starts = np.unique(classes[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    for c, a, b in zip(uniq, starts, ends):  # O(N log N), not one scan of the pool per class
        pos = order[a:b]
        need = n_query_per_class + (0 if train_in_database else n_train_per_class)
        if n_database_per_class is not None:
            need = n_query_per_class + n_database_per_class + (0 if train_in_database else n_train_per_class)
        if len(pos) < max(need, n_query_per_class + n_train_per_class):
            raise DataError(
                f"class {c} has {len(pos)} items, fewer than the {max(need, n_query_per_class + n_train_per_class)} "
                f"the split needs (query {n_query_per_class}/class, train {n_train_per_class}/class)"
            )
        perm = pos[rng.permutation(len(pos))]
        q.append(perm[:n_query_per_class])
        rest = perm[n_query_per_class:]
        t.append(rest[:n_train_per_class])
        db = rest if train_in_database else rest[n_train_per_class:]
        if n_database_per_class is not None:
            db = db[:n_database_per_class]
        d.append(db)
    return SplitIndices(*(np.sort(np.concatenate(x)) for x in (q, t, d)))


def split_lines(ids, labels: np.ndarray) -> str:
    """DeepHash list text: one ``id l1 .. lC`` line per item (labels multi-hot 0/1)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"labels must be multi-hot (N, C), got shape {labels.shape}")
    for i in ids:  # what the list format cannot hold (a path may contain spaces: labels are read from the right)
        if not i or i != i.strip() or "\n" in i or "\r" in i:
            raise DataError(f"item id {i!r} cannot be written to a list file: an empty id, a line break or "
                            "whitespace at either end would not read back as the same path")
    ints = labels.astype(np.int64)
    if len(ints) and ints.shape[1] and ((ints == 0) | (ints == 1)).all() and np.array_equal(ints, labels):
        # fast path for 0/1 labels: "l1 l2 .. lC\n" rows built as one byte array
        n, c = ints.shape
        buf = np.full((n, 2 * c), 32, dtype=np.uint8)
        buf[:, ::2] = ints + 48
        buf[:, -1] = 10
        text = buf.tobytes().decode("ascii")
        w = 2 * c
        return "".join(f"{i} {text[k * w:(k + 1) * w]}" for k, i in enumerate(ids))
    rows = (" ".join(map(str, row)) for row in ints)
    return "".join(f"{i} {r}\n" for i, r in zip(ids, rows))


def split_checksum(ids, labels: np.ndarray) -> str:
    """sha256 of the split's list text (what is cached on disk)."""
    return sha256_bytes(split_lines(ids, labels).encode("utf-8"))


# ----------------------------------------------------------------------------- list files
SPLIT_NAMES = ("query", "train", "database")
# file stems of each split in a list folder: query = test.txt, train = train.txt, database = database.txt
# (DeepHash-pytorch / HashNet naming; query.txt / db.txt also read)
LIST_STEMS = {"query": ("test", "query"), "train": ("train",), "database": ("database", "db")}
MANIFEST = "checksums.json"


@dataclass
class ListFile:
    """A parsed DeepHash list file: one ``relative/path l1 .. lK`` line per item."""

    path: str  # the file it came from
    ids: list
    labels: np.ndarray  # uint8 (N, C) 0/1 (C classes)
    line_numbers: np.ndarray  # 1-based line of each item in the file

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sha256(self) -> str:
        """sha256 of the canonical text (what :func:`split_lines` writes)."""
        return split_checksum(self.ids, self.labels)


def _open_text(path) -> str:
    import gzip
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise DataError(f"list file {path} does not exist")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the suffix
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"list file {path} is a damaged gzip file: {e}") from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"list file {path} is not UTF-8 text: {e}") from e


def _bad_label_row(path, lineno: int, tokens: list[str], k: int) -> DataError | None:
    if len(tokens) != k:
        return DataError(f"{path}, line {lineno}: expected {k} labels after the path, got {len(tokens)}")
    for j, tok in enumerate(tokens):
        try:
            v = float(tok)
        except ValueError:
            v = None
        if v not in (0.0, 1.0):
            return DataError(f"{path}, line {lineno}: label {j + 1} is {tok!r}; labels must be 0 or 1")
    return None


def _label_count(s: str) -> int:
    """Labels at the end of one list line when the class count is not given: the trailing run of 0/1 tokens
    (all but the first token, which is always part of the path)."""
    tokens = s.split()
    k = 0
    for tok in reversed(tokens[1:]):
        if tok not in ("0", "1"):
            break
        k += 1
    return k


def parse_list_text(text: str, path: str = "<text>", num_classes: int | None = None) -> ListFile:
    """Parse DeepHash list text (see :class:`ListFile`), checking every line.

    Each line is ``relative/path l1 .. lK``: the labels are the last K whitespace-separated tokens and
    the path is everything before them, so a path may contain spaces (``my photos/cat 1.jpg 0 1 0``);
    K is ``num_classes`` or, when not given, the number of trailing 0/1 tokens of the first line.
    Blank lines are ignored, CRLF line ends and a UTF-8 byte-order mark are accepted.

    Raises DataError naming the file and line: a wrong number of labels (expected K, got M), a label
    that is not 0/1, a line without a path or without labels; an empty list is an error.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    lines, linenos = [], []
    k = num_classes
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if k is None:
            k = _label_count(s)
            if k == 0:
                raise DataError(f"{path}, line {lineno}: {s!r} has a path but no 0/1 labels "
                                f"(expected 'relative/path l1 .. lK')")
        lines.append(s)
        linenos.append(lineno)
    if not lines:
        raise DataError(f"{path} is empty: the split has no items")
    width = 2 * k - 1
    # the common layout, read vectorised: "<path> l1 l2 .. lK" with single spaces between the labels
    fast = np.array([len(s) > width + 1 and s[-width - 1] in " \t" for s in lines])
    ids = [s[:-width - 1].rstrip() if f else "" for s, f in zip(lines, fast)]
    labels = np.zeros((len(lines), k), dtype=np.uint8)
    if fast.any():
        buf = np.frombuffer("".join(s[-width:] for s, f in zip(lines, fast) if f).encode("latin-1", "replace"),
                            dtype=np.uint8).reshape(-1, width)
        ok = ((buf[:, 1::2] == 32).all(1) if k > 1 else np.ones(len(buf), bool)) & np.isin(buf[:, ::2], (48, 49)).all(1)
        rows = np.flatnonzero(fast)
        labels[rows[ok]] = buf[ok, ::2] - 48
        fast[rows[~ok]] = False
    for i in np.flatnonzero(~fast):  # any other spacing: the last k tokens are the labels
        parts = lines[i].rsplit(None, k)
        if len(parts) < k + 1:
            if len(parts) == 1:
                raise DataError(f"{path}, line {linenos[i]}: {lines[i][:80]!r} has a path but no labels "
                                f"(expected 'relative/path l1 .. l{k}')")
            raise DataError(f"{path}, line {linenos[i]}: expected {k} labels after the path, got "
                            f"{_label_count(lines[i])} ({lines[i][:80]!r})")
        err = _bad_label_row(path, linenos[i], parts[1:], k)
        if err is not None:
            raise err
        ids[i] = parts[0]
        labels[i] = np.asarray([float(t) for t in parts[1:]]) > 0.5
    for i, item in enumerate(ids):  # more 0/1 tokens than classes: a label row of the wrong width, not a path
        if item[-2:] in (" 0", " 1", "\t0", "\t1"):
            raise DataError(f"{path}, line {linenos[i]}: expected {k} labels after the path, got "
                            f"{_label_count(lines[i])} ({lines[i][:80]!r}); a path may contain spaces but not end "
                            "in a 0/1 token")
    return ListFile(str(path), ids, labels, np.asarray(linenos))


def read_list_file(path, num_classes: int | None = None) -> ListFile:
    """Read a DeepHash list file (plain or gzip) and check it (see :func:`parse_list_text`)."""
    return parse_list_text(_open_text(path), str(path), num_classes)


def find_list_file(folder, stem: str):
    """``folder/stem.txt`` or ``folder/stem.txt.gz`` (whichever exists) or None."""
    from pathlib import Path

    for name in (f"{stem}.txt", f"{stem}.txt.gz"):
        p = Path(folder) / name
        if p.is_file():
            return p
    return None


# ----------------------------------------------------------------------------- split files on disk
def write_split_files(folder, splits: dict, *, extra: dict | None = None) -> dict:
    """Write ``<name>.txt`` (DeepHash format) for each of ``splits`` = {name: (ids, labels)} into
    `folder`, each atomically, then ``checksums.json`` ({name: sha256} + `extra`) last. A folder
    without ``checksums.json`` is incomplete. Returns {name: sha256}."""
    import json
    from pathlib import Path

    from ..utils import atomic_write_bytes, atomic_write_text

    folder = Path(folder)
    sums = {}
    for name, (ids, labels) in splits.items():
        data = split_lines(ids, labels).encode("utf-8")
        sums[name] = sha256_bytes(data)
        atomic_write_bytes(folder / f"{name}.txt", data)
    atomic_write_text(folder / MANIFEST, json.dumps({"sha256": sums, **(extra or {})}, indent=2, sort_keys=True) + "\n")
    return sums


def read_split_files(folder, num_classes: int | None = None, names=SPLIT_NAMES) -> dict:
    """Read ``<name>.txt`` / ``<name>.txt.gz`` list files from `folder` -> {name: ListFile}.

    When ``checksums.json`` is present, every file's sha256 must match it (:func:`read_manifest`).
    """
    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"split folder {folder} does not exist")
    out = {}
    for name in names:
        p = find_list_file(folder, name)
        if p is None:
            raise DataError(f"split folder {folder} has no {name}.txt (nor {name}.txt.gz)")
        out[name] = read_list_file(p, num_classes)
    want = read_manifest(folder)
    for name, lf in out.items():
        if name in want and want[name] != lf.sha256:
            raise DataError(f"{lf.path}: sha256 {lf.sha256} does not match {folder / MANIFEST} ({want[name]})")
    return out


def read_manifest(folder) -> dict[str, str]:
    """The ``{split: sha256}`` of a split folder's ``checksums.json`` (``{}`` when there is none), checked.

    Raises DataError naming the file when it is not JSON (:func:`hashlib_vit.utils.read_json`), has no
    ``sha256`` mapping, or a value that is not a 64-digit hex sha256, naming the field.
    """
    import re
    from pathlib import Path

    from ..utils import read_json

    path = Path(folder) / MANIFEST
    if not path.exists():
        return {}
    man = read_json(path, "split manifest")
    sums = man.get("sha256")
    if not isinstance(sums, dict):
        raise DataError(f"split manifest {path}: field 'sha256' must be a mapping of split -> sha256, "
                        f"got {type(sums).__name__}")
    for name, value in sums.items():
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
            raise DataError(f"split manifest {path}: field 'sha256.{name}' = {value!r} is not a sha256 "
                            "(64 hexadecimal digits)")
    return dict(sums)


def split_cache_is_complete(folder) -> bool:
    from pathlib import Path

    folder = Path(folder)
    return (folder / MANIFEST).is_file() and all((folder / f"{n}.txt").is_file() for n in SPLIT_NAMES)
