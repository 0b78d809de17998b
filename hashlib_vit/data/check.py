"""The one place where a loaded protocol's splits are checked against what the protocol defines.

:func:`check_protocol` verifies a :class:`~hashlib_vit.data.protocols.ProtocolData` — sizes (per class
where the protocol draws per class), the disjointness rules of the protocol, duplicates, the label format
and the split checksums — and returns a :class:`ProtocolReport`; a failed check raises
:class:`~hashlib_vit.errors.DataError` naming the split, what the protocol expects and what was found.

The rules are those of the protocol definitions (METHODS.md §1.1):

* query / train / database and the query-not-in-database rule: HashNet (Cao et al., ICCV 2017, §4.1)
  and DeepHash-pytorch's lists ``test.txt`` / ``train.txt`` / ``database.txt``;
* ``cifar10`` (train excluded from the database, 100 + 500 per class, 54,000 database): TransHash
  (Chen et al., 2021, §4.1) and VTS; ``cifar10-1`` (train inside the 59,000 database): DeepHash-pytorch,
  OrthoHash (Hoe et al., NeurIPS 2021, §4); ``cifar10-2`` (official split, train = database): GreedyHash
  (Su et al., NeurIPS 2018, §4);
* ``nuswide21`` / ``coco`` / ``imagenet100``: the HashNet / DeepHash-pytorch lists (train drawn from the
  database, queries outside it; multi-label items carry at least one label, unlabelled images pruned).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from .splits import SPLIT_NAMES, split_checksum


@dataclass(frozen=True)
class CheckResult:
    """One check of one split: what was checked, whether it held, what was expected and found."""

    check: str
    split: str
    ok: bool
    expected: str
    found: str

    def message(self, protocol: str) -> str:
        return f"{self.split} split of protocol {protocol!r}: {self.check}: expected {self.expected}, found {self.found}"


@dataclass
class ProtocolReport:
    """What :func:`check_protocol` found. ``to_frame()`` is the table of checks; ``sizes_frame()``,
    ``class_frame()`` and ``label_frame()`` are the sizes, items per class and labels-per-item tables."""

    protocol: str
    seed: int
    origin: str
    sizes: dict[str, int]
    expected_sizes: dict[str, int | None]
    declared_sizes: dict[str, int | None]
    skipped: dict[str, int]
    checksums: dict[str, str]
    file_checksums: dict[str, str | None]  # sha256 of the list file on disk (None: no file / not read)
    class_names: list[str]
    class_counts: dict[str, np.ndarray]  # split -> int64 (C,) items per class (multi-label: per label)
    labels_per_item: dict[str, np.ndarray]  # split -> int64 (N,)
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]

    def to_frame(self):
        """pandas DataFrame, one row per check: check, split, ok, expected, found."""
        import pandas as pd

        return pd.DataFrame([c.__dict__ for c in self.checks], columns=["check", "split", "ok", "expected", "found"])

    def sizes_frame(self):
        """pandas DataFrame indexed by split: items, expected, declared, skipped, sha256, file_sha256, file_matches
        (None where no list file was read, or where images were skipped: the split is then a subset of its file)."""
        import pandas as pd

        rows = []
        for n in SPLIT_NAMES:
            f = self.file_checksums.get(n)
            skipped = self.skipped.get(n, 0)
            rows.append({"split": n, "items": self.sizes[n], "expected": self.expected_sizes.get(n),
                         "declared": self.declared_sizes.get(n), "skipped": skipped,
                         "sha256": self.checksums.get(n), "file_sha256": f,
                         "file_matches": None if f is None or skipped else f == self.checksums.get(n)})
        return pd.DataFrame(rows).set_index("split")

    def class_frame(self):
        """pandas DataFrame: one row per class (index: class name), one column per split (items)."""
        import pandas as pd

        return pd.DataFrame({n: self.class_counts[n] for n in SPLIT_NAMES},
                            index=pd.Index(self.class_names, name="class"))

    def label_frame(self):
        """pandas DataFrame indexed by split: items, labels/item mean, min, max, items without label."""
        import pandas as pd

        rows = []
        for n in SPLIT_NAMES:
            k = self.labels_per_item[n]
            rows.append({"split": n, "items": len(k), "labels/item mean": round(float(k.mean()), 3),
                         "min": int(k.min()), "max": int(k.max()), "items without label": int((k == 0).sum())})
        return pd.DataFrame(rows).set_index("split")

    def __str__(self) -> str:
        head = (f"protocol {self.protocol!r}, {self.origin or 'hand-built'} split, seed {self.seed}: "
                f"{'all checks pass' if self.ok else f'{len(self.failures)} check(s) FAILED'}")
        w = max(len(c.check) for c in self.checks) if self.checks else 10
        lines = [head] + [f"  {'ok ' if c.ok else 'BAD'} {c.split:9s} {c.check:{w}s}  expected {c.expected}; "
                          f"found {c.found}" for c in self.checks]
        return "\n".join(lines)


def rule_sizes(data) -> tuple[dict[str, int | None], str]:
    """The split sizes a protocol's rule gives for `data` and a short statement of that rule.

    ``drawn`` (seeded, per class): ``n_query`` / ``n_train`` and database = pool - query (- train when
    the train set is outside the database); ``official``: database = train, query = pool - database;
    ``lists``: the declared sizes less the skipped (missing) images; ``imported`` / hand-built: not
    determined (``None``), only the structural checks apply.
    """
    p, origin, sizes = data.protocol, data.origin, data.sizes()
    if origin == "drawn" and data.pool_size is not None:
        db = data.pool_size - p.n_query - (0 if p.train_in_database else p.n_train)
        rule = (f"{p.n_query // p.num_classes} query + {p.n_train // p.num_classes} train per class from a pool of "
                f"{data.pool_size}, database = the rest ({'train included' if p.train_in_database else 'train excluded'})")
        return {"query": p.n_query, "train": p.n_train, "database": db}, rule
    if origin == "official" and data.pool_size is not None:
        return ({"query": data.pool_size - sizes["train"], "train": sizes["train"], "database": sizes["train"]},
                f"official split of a pool of {data.pool_size}: database = train, query = the rest")
    if origin == "lists":
        declared = {"query": p.n_query, "train": p.n_train, "database": p.n_database}
        skipped = {n: int(getattr(getattr(data, n), "skipped", 0)) for n in SPLIT_NAMES}
        return ({n: None if v is None else v - skipped[n] for n, v in declared.items()},
                "the protocol's list files (declared sizes less skipped missing images)")
    return {n: None for n in SPLIT_NAMES}, f"{origin or 'hand-built'} split: sizes as given"


def _ids_and_labels(split) -> tuple[list[str], np.ndarray]:
    return list(split.ids), split.labels.numpy()


def _example(items, k: int = 3) -> str:
    items = list(items)
    more = f" and {len(items) - k} more" if len(items) > k else ""
    return ", ".join(repr(i) for i in items[:k]) + more


def _check_sizes(data, expected, rule, out: list) -> None:
    sizes = data.sizes()
    for n in SPLIT_NAMES:
        want = expected.get(n)
        if want is not None:
            out.append(CheckResult("size", n, sizes[n] == want, f"{want} items ({rule})", f"{sizes[n]} items"))
    p = data.protocol
    if data.origin == "drawn" and not p.multi_label:
        for n, total in (("query", p.n_query), ("train", p.n_train)):
            per = total // p.num_classes
            counts = np.rint(getattr(data, n).labels.numpy().sum(0)).astype(np.int64)
            bad = np.flatnonzero(counts != per)
            names = [data.class_names[c] if c < len(data.class_names) else str(c) for c in bad]
            out.append(CheckResult("items per class", n, not len(bad), f"{per} items in each of the {p.num_classes} "
                                   f"classes", "as expected" if not len(bad) else
                                   f"class {names[0]!r} has {counts[bad[0]]}" + (f" ({len(bad)} classes differ)"
                                                                               if len(bad) > 1 else "")))


def _label_rows(y: np.ndarray):
    """(rows with a value other than 0/1, labels per row) of an (N, C) label matrix, in row blocks: the
    temporaries stay O(block) whatever the number of classes (10,000 classes x 100,000 items: no 1 GB masks)."""
    from ..utils import row_blocks

    n, c = y.shape
    bad, k = [], np.empty(n, np.float64)
    for s, e in row_blocks(n, c):
        blk = y[s:e]
        bad.append(s + np.flatnonzero(((blk != 0) & (blk != 1)).any(1)))
        k[s:e] = blk.sum(1)
    return np.concatenate(bad) if bad else np.zeros(0, np.int64), k


def _check_labels(data, ids_labels, out: list) -> None:
    p = data.protocol
    for n in SPLIT_NAMES:
        ids, y = ids_labels[n]
        if y.ndim != 2 or y.shape[1] != p.num_classes:
            out.append(CheckResult("label width", n, False, f"(N, {p.num_classes}) labels", f"shape {y.shape}"))
            continue
        not01, k = _label_rows(y)
        out.append(CheckResult("labels are 0/1", n, not len(not01), "every label 0 or 1",
                               "as expected" if not len(not01) else f"{len(not01)} rows with other values, e.g. "
                               f"{ids[not01[0]]!r}"))
        if p.multi_label:
            bad = np.flatnonzero(k < 1)
            out.append(CheckResult("label format", n, not len(bad), "at least one label per item (multi-label)",
                                   "as expected" if not len(bad) else f"{len(bad)} items without a label, e.g. "
                                   f"{_example(ids[i] for i in bad)}"))
        else:
            bad = np.flatnonzero(k != 1)
            out.append(CheckResult("label format", n, not len(bad), "exactly one class per row (single-label)",
                                   "as expected" if not len(bad) else f"{len(bad)} rows with another number of "
                                   f"labels, e.g. {ids[bad[0]]!r} with {int(k[bad[0]])}"))


def _check_duplicates(ids_labels, out: list) -> None:
    for n in SPLIT_NAMES:
        ids = ids_labels[n][0]
        seen, dup = set(), []
        for i in ids:
            if i in seen:
                dup.append(i)
            seen.add(i)
        out.append(CheckResult("no duplicates", n, not dup, "every item once",
                               "as expected" if not dup else f"{len(dup)} repeated items, e.g. {_example(dup)}"))


def _check_disjoint(data, ids_labels, out: list) -> None:
    p = data.protocol
    q, t, d = (set(ids_labels[n][0]) for n in SPLIT_NAMES)
    both = sorted(q & t)
    out.append(CheckResult("query not in train", "query", not both, "no query item in the training set",
                           "none" if not both else f"{len(both)} in both, e.g. {_example(both)}"))
    if p.query_in_database:
        out_ = sorted(q - d)
        out.append(CheckResult("query inside database", "query", not out_, "every query item in the database",
                               "all inside" if not out_ else f"{len(out_)} missing, e.g. {_example(out_)}"))
    else:
        both = sorted(q & d)
        out.append(CheckResult("query not in database", "database", not both, f"no query item in the database "
                               f"(protocol {p.name!r} excludes queries)", "none" if not both else
                               f"{len(both)} query items in the database, e.g. {_example(both)}"))
    if p.train_in_database:
        miss = sorted(t - d)
        out.append(CheckResult("train inside database", "train", not miss, f"every training item in the database "
                               f"(protocol {p.name!r} includes the training set)", "all inside" if not miss else
                               f"{len(miss)} training items not in the database, e.g. {_example(miss)}"))
    else:
        both = sorted(t & d)
        out.append(CheckResult("train not in database", "database", not both, f"no training item in the database "
                               f"(protocol {p.name!r} excludes the training set)", "none" if not both else
                               f"{len(both)} training items in the database, e.g. {_example(both)}"))
    # an item in two splits carries the same labels in both
    pos = {i: k for k, i in enumerate(ids_labels["database"][0])}
    for n in ("query", "train"):
        ids, y = ids_labels[n]
        rows = [(k, pos[i]) for k, i in enumerate(ids) if i in pos]
        if not rows:
            continue
        a, b = np.asarray(rows).T
        ydb = ids_labels["database"][1]
        bad = np.flatnonzero((y[a] != ydb[b]).any(1)) if y.shape[1:] == ydb.shape[1:] else np.arange(len(a))
        out.append(CheckResult("same labels as in the database", n, not len(bad), "identical label rows",
                               "as expected" if not len(bad) else f"{len(bad)} items differ, e.g. {ids[a[bad[0]]]!r}"))


def _file_checksums(data, files: bool) -> dict[str, str | None]:
    from pathlib import Path

    from .splits import LIST_STEMS, find_list_file, read_list_file

    out = {n: None for n in SPLIT_NAMES}
    if not files or not data.split_dir or not Path(data.split_dir).is_dir():
        return out
    for n in SPLIT_NAMES:
        for stem in (n,) + LIST_STEMS.get(n, ()):
            path = find_list_file(data.split_dir, stem)
            if path is not None:
                out[n] = read_list_file(path, data.protocol.num_classes).sha256
                break
    return out


def _check_checksums(data, ids_labels, file_sums, skipped, out: list) -> None:
    from .splits import MANIFEST, read_manifest

    manifest = read_manifest(data.split_dir) if data.split_dir else {}
    for n in SPLIT_NAMES:
        rec = data.checksums.get(n)
        now = split_checksum(*ids_labels[n])
        out.append(CheckResult("checksum recorded", n, rec == now, f"the sha256 of the split's list text ({now[:12]}..)",
                               f"{rec[:12]}.." if rec else "none recorded"))
        if file_sums[n] is not None and not skipped[n]:
            f = file_sums[n]
            out.append(CheckResult("list file on disk", n, f == now, f"{data.split_dir}: same sha256 ({now[:12]}..)",
                                   f"{f[:12]}.."))
        if n in manifest:
            out.append(CheckResult(f"{MANIFEST} entry", n, manifest[n] == now, f"same sha256 ({now[:12]}..)",
                                   f"{manifest[n][:12]}.."))


def check_protocol(data, *, expected_sizes: dict | None = None, files: bool = True,
                   strict: bool = True) -> ProtocolReport:
    """Check a loaded protocol's splits against the protocol's definition (sources: see the module doc).

    * ``data``: a :class:`~hashlib_vit.data.protocols.ProtocolData` (``Protocol.load(...)``); its
      ``origin`` says how the split was made and so which size rule applies (:func:`rule_sizes`);
    * sizes: equal to the rule's sizes, and for seeded per-class draws ``n_query / C`` and
      ``n_train / C`` items in every class; ``expected_sizes`` ({split: int}) replaces the rule's
      values for the splits it names (e.g. a list folder of another size);
    * disjointness as the protocol defines it: no query item in the training set; no query item in
      the database unless ``protocol.query_in_database``; the training set inside the database when
      ``protocol.train_in_database``, outside it otherwise; an item in two splits has the same labels;
    * no item twice in a split; labels 0/1 of width ``num_classes``, exactly one per row for a
      single-label protocol, at least one for a multi-label one;
    * checksums: ``data.checksums`` equal the sha256 of each split's list text recomputed now, the
      list file in ``data.split_dir`` (read when ``files``; not for splits with skipped images) and
      its ``checksums.json`` entry.

    Returns a :class:`ProtocolReport` (``to_frame()`` = one row per check). With ``strict`` (default) a
    failed check raises :class:`DataError` naming each failing split, what the protocol expects and
    what was found; ``strict=False`` returns the report with ``ok == False`` instead.
    """
    if not all(hasattr(data, a) for a in ("protocol", "query", "train", "database", "checksums")):
        raise DataError(f"check_protocol needs a ProtocolData (Protocol.load(...)), got {type(data).__name__}")
    p = data.protocol
    ids_labels = {n: _ids_and_labels(getattr(data, n)) for n in SPLIT_NAMES}
    want, rule = rule_sizes(data)
    if expected_sizes:
        unknown = set(expected_sizes) - set(SPLIT_NAMES)
        if unknown:
            raise DataError(f"expected_sizes names {sorted(unknown)}; splits are {list(SPLIT_NAMES)}")
        want = {**want, **expected_sizes}
        rule = "sizes given by the caller"
    skipped = {n: int(getattr(getattr(data, n), "skipped", 0)) for n in SPLIT_NAMES}
    checks: list[CheckResult] = []
    _check_sizes(data, want, rule, checks)
    _check_duplicates(ids_labels, checks)
    _check_labels(data, ids_labels, checks)
    _check_disjoint(data, ids_labels, checks)
    file_sums = _file_checksums(data, files)
    _check_checksums(data, ids_labels, file_sums, skipped, checks)
    report = ProtocolReport(
        protocol=p.name, seed=data.seed, origin=data.origin, sizes=data.sizes(), expected_sizes=want,
        declared_sizes={"query": p.n_query, "train": p.n_train, "database": p.n_database}, skipped=skipped,
        checksums=dict(data.checksums), file_checksums=file_sums, class_names=list(data.class_names),
        class_counts={n: np.rint(ids_labels[n][1].sum(0)).astype(np.int64) for n in SPLIT_NAMES},
        labels_per_item={n: np.rint(ids_labels[n][1].sum(1)).astype(np.int64) for n in SPLIT_NAMES},
        checks=checks)
    if strict and not report.ok:
        raise DataError("; ".join(c.message(p.name) for c in report.failures))
    return report
