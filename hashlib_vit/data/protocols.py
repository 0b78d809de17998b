"""Retrieval protocols: named, documented objects that say what a benchmark is.

A protocol fixes the classes, single/multi-label relevance, the split sizes, whether the training
set is inside the database, the mAP cut-off ``topk`` (``None`` = the whole database) and where the
data comes from. ``load()`` returns a :class:`ProtocolData` with the three splits in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..registry import Registry
from ..errors import DataError
from .datasets import FileSplit, Split
from .splits import (SPLIT_NAMES, SplitIndices, class_balanced_split, read_manifest, read_split_files,
                     split_cache_is_complete, split_checksum, write_split_files)

PROTOCOLS: Registry["Protocol"] = Registry("protocol")


@dataclass(frozen=True)
class Protocol:
    name: str
    num_classes: int
    multi_label: bool
    topk: int | None
    n_query: int
    n_train: int
    n_database: int | None
    train_in_database: bool
    img_size: int
    source: str
    description: str
    loader: Callable[..., "ProtocolData"] = field(repr=False, compare=False, default=None)
    needs_data_root: bool = False
    hflip: bool = True  # training augmentation: random horizontal flip
    pad_crop: int = 4  # training augmentation at native size: pad + random crop (pixels)
    default_root: str | None = None  # data_root used when none is given (relative: from the project root)
    list_dir: str | None = None  # list-file protocols: default folder of test/train/database.txt[.gz]
    howto: str = ""  # how to obtain the data (shown when it is missing)
    seeded: bool = False  # the split is drawn per class with the seed (another seed, another split)
    query_in_database: bool = False  # False: queries are never in the database (every built-in protocol)

    def load(self, data_root: str | Path | None = None, seed: int = 0, **options) -> "ProtocolData":
        """Build (or read from the cache) the splits of this protocol with a fixed seed, checked.

        Every split is checked at load by :func:`hashlib_vit.data.check.check_protocol` (sizes by the
        protocol's rule, disjointness as the protocol defines it, duplicates, label format); the report
        is kept as ``data.report``. Raises DataError naming the split (and the file, line or folder where
        the loader knows it) and what the protocol expects.
        """
        import warnings

        from ..utils import resolve_path
        from .check import check_protocol

        split_dir = options.get("split_dir")
        if split_dir is not None and not resolve_path(split_dir).is_dir():  # before the images are looked for
            raise DataError(f"split_dir {str(split_dir)!r} (data_options of protocol {self.name!r}; looked for at "
                            f"{resolve_path(split_dir)}) is not a folder; expected a folder of query.txt / train.txt / "
                            "database.txt (see docs/data.md)")
        data = self.loader(self, data_root=data_root, seed=seed, **options)
        data.report = check_protocol(data, files=False, strict=False)
        # the paper's sizes of a list protocol vary between published copies of its lists: a warning there;
        # every other failed check (and sizes of drawn or official splits, fixed by the rule) is an error
        soft = [c for c in data.report.failures if c.check == "size" and data.origin in ("lists", "imported")]
        hard = [c for c in data.report.failures if c not in soft]
        if hard:
            where = f" (split files in {data.split_dir})" if data.split_dir and data.origin in ("lists", "imported") else ""
            raise DataError("; ".join(c.message(self.name) for c in hard) + where
                            + "; checked at load: see docs/checks.md")
        for c in soft:
            warnings.warn(c.message(self.name), UserWarning, stacklevel=2)
        return data

    def summary(self) -> dict:
        return {
            "protocol": self.name,
            "classes": self.num_classes,
            "labels": "multi-label" if self.multi_label else "single-label",
            "query": self.n_query,
            "train": self.n_train,
            "database": self.n_database,
            "train_in_database": self.train_in_database,
            "topk": "all" if self.topk is None else self.topk,
            "source": self.source,
        }


@dataclass
class ProtocolData:
    """The three splits of a protocol. Splits are in memory (:class:`Split`) or on disk (:class:`FileSplit`)."""

    protocol: Protocol
    query: Split | FileSplit
    train: Split | FileSplit
    database: Split | FileSplit
    class_names: list[str]
    seed: int
    checksums: dict[str, str] = field(default_factory=dict)  # split -> sha256 of its list text
    split_dir: str | None = None  # where the split list files are (cache or imported folder)
    # how the split was made: "drawn" (per class with the seed), "official" (a fixed split of the pool),
    # "lists" (the protocol's list files), "imported" (split_dir=); "" when unknown (hand-built)
    origin: str = ""
    pool_size: int | None = None  # items in the pool a drawn/official split was taken from
    report: object = field(default=None, repr=False)  # the check_protocol report made at load (Protocol.load)
    # items carved from train to choose hyper-parameters on (data/validation.py carve_validation); None: none
    validation: Split | FileSplit | None = None

    def skipped(self) -> dict:
        """Listed images left out with ``missing="skip"``: ``{split: {"count": n, "examples": [path, ...]}}``
        for the splits that lost any (recorded in the run's env.json and metrics.json)."""
        out = {}
        for n in SPLIT_NAMES:
            split = getattr(self, n)
            if getattr(split, "skipped", 0):
                out[n] = {"count": int(split.skipped), "examples": list(getattr(split, "skipped_examples", []))}
        return out

    def sizes(self) -> dict[str, int]:
        """Items per split (``validation`` too when there is one)."""
        out = {"query": len(self.query), "train": len(self.train), "database": len(self.database)}
        if self.validation is not None:
            out["validation"] = len(self.validation)
        return out

    @property
    def in_memory(self) -> bool:
        return all(isinstance(s, Split) for s in (self.query, self.train, self.database))

    def export(self, folder: str | Path) -> dict[str, str]:
        """Write query.txt / train.txt / database.txt (DeepHash format) + checksums.json into `folder`.

        Other frameworks read these files directly; :meth:`Protocol.load` reads them back with
        ``split_dir=folder``. Returns {split: sha256}.
        """
        return export_splits(self, folder)

    def checksum_table(self):
        """pandas DataFrame: split, items, sha256 (the values recorded in each run's env.json)."""
        import pandas as pd

        return pd.DataFrame([{"split": n, "items": len(getattr(self, n)), "sha256": self.checksums.get(n)}
                             for n in SPLIT_NAMES])


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)


def _one_hot(classes: np.ndarray, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(classes), num_classes).float()


def export_splits(data: ProtocolData, folder: str | Path) -> dict[str, str]:
    splits = {n: (getattr(data, n).ids, getattr(data, n).labels.numpy()) for n in SPLIT_NAMES}
    return write_split_files(folder, splits, extra={"protocol": data.protocol.name, "seed": data.seed})


def split_cache_folder(protocol_name: str, seed: int, cache=None) -> Path:
    from .sources import cache_dir

    return cache_dir(cache) / "splits" / protocol_name / f"seed{seed}"


def _sync_split_cache(data: ProtocolData, cache=None) -> Path:
    """Write the split list files into the cache (first time), or check them against this split.

    A cached split that differs from the one drawn now (changed data or code) is an error: a resumed
    or re-evaluated model must see the split it was trained with.
    """
    folder = split_cache_folder(data.protocol.name, data.seed, cache)
    if split_cache_is_complete(folder):
        import warnings

        from ..utils import sha256_file

        try:
            want = read_manifest(folder)
        except DataError as e:  # a damaged cache manifest is never trusted: the split drawn now is written again
            warnings.warn(f"{e}; writing the split cache {folder} again from the split drawn now", UserWarning,
                          stacklevel=2)
            export_splits(data, folder)
            return folder
        files = {n: folder / f"{n}.txt" for n in SPLIT_NAMES}
        got = {n: sha256_file(p) if p.is_file() else None for n, p in files.items()}  # each file hashed once
        damaged = [n for n in SPLIT_NAMES if got[n] != want.get(n)]
        if damaged:  # a list file that disagrees with its own manifest: damaged, never trusted, written again
            warnings.warn(f"split cache {folder}: {', '.join(n + '.txt' for n in damaged)} no longer match(es) the "
                          "sha256 in its checksums.json (edited or damaged); writing the split cache again from the "
                          "split drawn now", UserWarning, stacklevel=2)
            export_splits(data, folder)
            return folder
        for n in SPLIT_NAMES:  # the files agree with their manifest here: do they hold the split drawn now?
            if got[n] != data.checksums[n]:
                raise DataError(
                    f"the cached {n} split {files[n]} (sha256 {got[n]}) differs from the split drawn now "
                    f"for protocol={data.protocol.name!r}, seed={data.seed} (sha256 {data.checksums[n]}): the data "
                    f"or the split code changed. To use the cached split pass split_dir={str(folder)!r}; to replace "
                    f"it delete that folder")
    else:
        export_splits(data, folder)
    return folder


def _indices_from_files(files: dict, ids: list[str], labels: np.ndarray, protocol: Protocol) -> SplitIndices:
    """Map imported list files onto the pool (by id); labels must agree with the pool's."""
    pos_of = {i: n for n, i in enumerate(ids)}
    out = {}
    for name, lf in files.items():
        pos = np.empty(len(lf), dtype=np.int64)
        for j, i in enumerate(lf.ids):
            p = pos_of.get(i)
            if p is None:
                raise DataError(f"{lf.path}, line {lf.line_numbers[j]}: {i!r} is not an item of protocol "
                                f"{protocol.name!r} (ids look like {ids[0]!r})")
            pos[j] = p
        bad = np.flatnonzero((labels[pos] != lf.labels).any(1))
        if len(bad):
            j = bad[0]
            raise DataError(f"{lf.path}, line {lf.line_numbers[j]}: labels of {lf.ids[j]!r} differ from the data set's "
                            f"({lf.labels[j].tolist()} vs {labels[pos[j]].astype(int).tolist()})")
        out[name] = pos
    return SplitIndices(out["query"], out["train"], out["database"])


def make_splits(protocol: Protocol, images: torch.Tensor, classes: np.ndarray, ids: list[str], seed: int,
                *, n_query_per_class: int, n_train_per_class: int, class_names: list[str],
                indices: SplitIndices | None = None, split_dir: str | Path | None = None, cache=None,
                cache_splits: bool = True) -> ProtocolData:
    """Class-balanced seeded split of an in-memory single-label pool into a ProtocolData.

    * ``indices``: positions already chosen (e.g. a fixed official split); otherwise they are drawn
      per class with ``seed`` (train inside or outside the database as the protocol says);
    * ``split_dir``: import the split from DeepHash list files ``query|train|database.txt`` there;
    * ``cache_splits``: write the list files into the cache folder (or check them against it).
    """
    labels = _one_hot(classes, protocol.num_classes)
    if split_dir is not None:
        from ..utils import resolve_path

        split_dir = resolve_path(split_dir)
        idx = _indices_from_files(read_split_files(split_dir, protocol.num_classes), ids,
                                  labels.numpy().astype(np.uint8), protocol)
    elif indices is not None:
        idx = indices
    else:
        idx = class_balanced_split(classes, n_query_per_class, n_train_per_class, seed,
                                   train_in_database=protocol.train_in_database)
    splits, checks = {}, {}
    for name in SPLIT_NAMES:
        pos = torch.as_tensor(getattr(idx, name))
        sid = [ids[i] for i in pos.tolist()]
        if not sid:
            raise DataError(f"the {name} split of protocol {protocol.name!r} is empty")
        splits[name] = Split(images[pos], labels[pos], sid)
        checks[name] = split_checksum(sid, labels[pos].numpy())
    origin = "imported" if split_dir is not None else "official" if indices is not None else "drawn"
    data = ProtocolData(protocol, splits["query"], splits["train"], splits["database"], class_names, seed, checks,
                        origin=origin, pool_size=len(ids))
    if split_dir is not None:
        data.split_dir = str(split_dir)
    elif cache_splits:
        data.split_dir = str(_sync_split_cache(data, cache))
    return data


# ----------------------------------------------------------------------------- digits (embedded)
def _load_digits(protocol: Protocol, data_root=None, seed: int = 0, split_dir=None, cache=None,
                 cache_splits: bool = True, **_):
    from .digits import load_digits_images

    if data_root is not None:  # said, not silently ignored (a data_root meant for another protocol?)
        import warnings

        warnings.warn(f"protocol 'digits' is embedded (scikit-learn's handwritten digits): data_root={str(data_root)!r} "
                      "is not used", UserWarning, stacklevel=3)
    images, classes = load_digits_images(protocol.img_size)
    ids = [f"digits/{i:04d}" for i in range(len(classes))]
    return make_splits(protocol, images, classes, ids, seed, n_query_per_class=protocol.n_query // 10,
                       n_train_per_class=protocol.n_train // 10, class_names=[str(i) for i in range(10)],
                       split_dir=split_dir, cache=cache, cache_splits=cache_splits)


PROTOCOLS.register(
    "digits",
    Protocol(
        name="digits",
        num_classes=10,
        multi_label=False,
        topk=None,
        n_query=100,
        n_train=500,
        n_database=1697,
        train_in_database=True,
        img_size=32,
        source="scikit-learn's bundled handwritten digits (1,797 real 8x8 images, upsampled to 32x32 RGB); no download",
        description="Embedded default: 10 query + 50 train per class, seeded; query excluded from the database, "
        "train drawn from the database; mAP over the whole database.",
        loader=_load_digits,
        hflip=False,  # a mirrored digit is not the same digit
        pad_crop=2,
        seeded=True,
    ),
)


# ----------------------------------------------------------------------------- CIFAR-10
def resolve_data_root(protocol: Protocol, data_root) -> Path:
    from ..utils import resolve_path

    root = data_root if data_root is not None else protocol.default_root
    if root is None:
        raise DataError(f"protocol {protocol.name!r} needs data_root. {protocol.source}")
    return resolve_path(root)


def _load_cifar10(protocol: Protocol, data_root=None, seed: int = 0, cache=None, verify: bool = True,
                  split_dir=None, cache_splits: bool = True, download: bool = False, **_):
    from . import sources
    from .sources import cifar10_class_names, load_cifar10_pool

    root = resolve_data_root(protocol, data_root)
    if download:  # the official python batches through torchvision, unless root already holds CIFAR-10
        try:
            sources.detect_cifar10(root)
        except DataError:
            sources.download_cifar10(root)
    pool = load_cifar10_pool(root, cache=cache, verify=verify)
    indices = None
    if protocol.name == "cifar10-2":  # the official split: test = query, train = train = database
        split = pool.split_names
        test, tr = np.flatnonzero(split == "test"), np.flatnonzero(split == "train")
        indices = SplitIndices(test, tr, tr)
    data = make_splits(protocol, pool.images, pool.classes, pool.ids, seed,
                       n_query_per_class=protocol.n_query // 10, n_train_per_class=protocol.n_train // 10,
                       class_names=cifar10_class_names(root), indices=indices, split_dir=split_dir, cache=cache,
                       cache_splits=cache_splits)
    return data


from .sources import CIFAR10_HOWTO as _CIFAR_HOWTO  # noqa: E402

_CIFAR_SOURCE = ("CIFAR-10, all 60,000 images (50,000 train + 10,000 test batches) as one pool; data_root: the "
                 "official python batches (torchvision download), an image folder {train,test}/<class>/*, or the "
                 "per-class JPEG zips of ../shared/data/cifar10")

for _name, _nq, _nt, _nd, _tin, _desc in (
    ("cifar10", 1000, 5000, 54000, False,
     "100 query + 500 train per class drawn with a fixed seed from all 60,000 images; database = the 54,000 "
     "remaining images (train excluded); mAP@all (= @54,000). TransHash / VTS / DeepHash-pytorch `cifar10`."),
    ("cifar10-1", 1000, 5000, 59000, True,
     "100 query + 500 train per class drawn with a fixed seed; database = all 59,000 non-query images (train "
     "included); mAP@all. DeepHash-pytorch `cifar10-1`, OrthoHash (R=59000)."),
    ("cifar10-2", 10000, 50000, 50000, True,
     "The official split: query = the 10,000 test images, train = database = the 50,000 training images; "
     "mAP@all (50,000). GreedyHash setting. The seed does not change this split."),
):
    PROTOCOLS.register(_name, Protocol(
        name=_name, num_classes=10, multi_label=False, topk=None, n_query=_nq, n_train=_nt, n_database=_nd,
        train_in_database=_tin, img_size=32, source=_CIFAR_SOURCE, description=_desc, loader=_load_cifar10,
        needs_data_root=True, hflip=True, pad_crop=4, default_root="../shared/data/cifar10", howto=_CIFAR_HOWTO,
        seeded=_name != "cifar10-2"))


# ----------------------------------------------------------------------------- list-file protocols
from .splits import LIST_STEMS  # noqa: E402  (query = test.txt, DeepHash-pytorch / HashNet naming)


def _list_folder(protocol: Protocol, list_dir=None) -> Path:
    from ..utils import resolve_path

    folder = resolve_path(list_dir if list_dir is not None else protocol.list_dir)
    if folder is None:
        raise DataError(f"protocol {protocol.name!r} has no default list folder: pass list_dir= (a folder with "
                        f"train.txt, test.txt, database.txt). {protocol.howto}")
    if not folder.is_dir():
        raise DataError(f"list folder {folder} for protocol {protocol.name!r} does not exist. {protocol.howto}")
    return folder


def _list_path(protocol: Protocol, folder: Path, name: str) -> Path:
    from .splits import find_list_file

    stems = LIST_STEMS[name]
    path = next((p for p in (find_list_file(folder, s) for s in stems) if p is not None), None)
    if path is None:
        raise DataError(f"{folder} has no {stems[0]}.txt (nor .txt.gz) for the {name} split of protocol "
                        f"{protocol.name!r}. {protocol.howto}")
    return path


def list_files_of(protocol: Protocol, list_dir=None) -> dict:
    """Parse (and check) the protocol's three list files -> {split: ListFile}."""
    from .splits import read_list_file

    folder = _list_folder(protocol, list_dir)
    paths = {name: _list_path(protocol, folder, name) for name in LIST_STEMS}
    return {name: read_list_file(p, protocol.num_classes) for name, p in paths.items()}


def read_class_names(folder, num_classes: int) -> list[str]:
    """``classes.txt`` (``index name`` per line) next to the lists, else '0'..'C-1'."""
    p = Path(folder) / "classes.txt" if folder is not None else None
    names = [str(i) for i in range(num_classes)]
    if p is not None and p.is_file():
        for line in p.read_text().splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) < num_classes:
                names[int(parts[0])] = parts[1].strip()
    return names


def _load_lists(protocol: Protocol, data_root=None, seed: int = 0, list_dir=None, split_dir=None,
                missing: str = "error", check_files: bool = True, **_):
    """Image root `data_root` + list files (`split_dir` / `list_dir` / the protocol's default folder)."""
    from .splits import read_list_file

    if data_root is None and protocol.default_root is None:
        raise DataError(f"protocol {protocol.name!r} needs data_root (the image root the list paths are relative "
                        f"to). {protocol.howto}")
    root = resolve_data_root(protocol, data_root)
    if not root.is_dir():
        raise DataError(f"image root data_root={str(root)!r} for protocol {protocol.name!r} does not exist. "
                        f"{protocol.howto}")
    lists = _list_folder(protocol, split_dir if split_dir is not None else list_dir)
    splits, checks = {}, {}
    paths = {name: _list_path(protocol, lists, name) for name in LIST_STEMS}
    for name, path in paths.items():  # one split at a time: a missing image stops before the database is read
        lf = read_list_file(path, protocol.num_classes)
        splits[name] = FileSplit(root, lf.ids, lf.labels, missing=missing, check_files=check_files,
                                 name=f"{protocol.name} {name} split ({lf.path})")
        checks[name] = split_checksum(splits[name].ids, splits[name].labels.numpy())
    return ProtocolData(protocol, splits["query"], splits["train"], splits["database"],
                        read_class_names(lists, protocol.num_classes), seed, checks, split_dir=str(lists),
                        origin="imported" if split_dir is not None else "lists")


_LISTS = "../shared/data/hash_lists"
_DEEPHASH = "DeepHash-pytorch (github.com/swuxyj/DeepHash-pytorch, data/<name>/{train,test,database}.txt, MIT)"
for _p in (
    Protocol(
        name="nuswide21", num_classes=21, multi_label=True, topk=5000, n_query=2100, n_train=10500,
        n_database=193734, train_in_database=True, img_size=224,
        source="NUS-WIDE, the 21 most frequent concepts (195,834 images): " + _DEEPHASH + " lists nuswide_21/",
        description="2,100 query (100/concept) / 10,500 train (500/concept) / database = the remaining images "
        "(193,734 lines in DeepHash-pytorch's database.txt, train included); multi-label (relevant = shares a "
        "concept); mAP@5,000. VTS, CSQ, OrthoHash, DeepHash-pytorch.",
        loader=_load_lists, needs_data_root=True, list_dir=f"{_LISTS}/nuswide_21",
        howto="Images: NUS-WIDE (lms.comp.nus.edu.sg/research/NUS-WIDE.htm; Flickr photos, research use), laid "
        "out as data_root/images/NNNN_ID.jpg. Lists: " + _DEEPHASH + ", folder nuswide_21 (train/test copies in "
        "../shared/data/hash_lists/nuswide_21; its database.txt is not available here: pass list_dir=)."),
    Protocol(
        name="nuswide81", num_classes=81, multi_label=True, topk=5000, n_query=5000, n_train=10000,
        n_database=None, train_in_database=True, img_size=224,
        source="NUS-WIDE, all 81 concepts: HashNet lists (github.com/thuml/HashNet, caffe/data/nus_wide/)",
        description="5,000 query / 10,000 train (from the database) / database = the remaining images; "
        "multi-label; mAP@5,000. TransHash (its text: 81 concepts). The mapping to this exact list is inferred.",
        loader=_load_lists, needs_data_root=True, list_dir=None,
        howto="Images: NUS-WIDE (lms.comp.nus.edu.sg/research/NUS-WIDE.htm). Lists: HashNet "
        "(github.com/thuml/HashNet, caffe/data/nus_wide/{train,test,database}.txt; strip their './data/...' "
        "prefix) in a folder passed as list_dir=; not available here."),
    Protocol(
        name="coco", num_classes=80, multi_label=True, topk=5000, n_query=5000, n_train=10000,
        n_database=117218, train_in_database=True, img_size=224,
        source="MS-COCO 2014, HashNet pruning (122,218 labelled images, 80 categories): " + _DEEPHASH + " lists coco/",
        description="5,000 query / 10,000 train / 117,218 database (all images minus the queries, train "
        "included); multi-label; mAP@5,000. VTS, OrthoHash, CSQ.",
        loader=_load_lists, needs_data_root=True, list_dir=f"{_LISTS}/coco",
        howto="Images: MS-COCO 2014 train2014/ and val2014/ (cocodataset.org) under data_root. Lists: "
        + _DEEPHASH + ", folder coco (copies in ../shared/data/hash_lists/coco; database.txt.gz there is "
        "reconstructed from HashNet's lists)."),
    Protocol(
        name="imagenet100", num_classes=100, multi_label=False, topk=1000, n_query=5000, n_train=13000,
        n_database=128503, train_in_database=True, img_size=224,
        source="ImageNet-100 (HashNet split, 100 ILSVRC-2012 classes): " + _DEEPHASH + " lists imagenet/",
        description="5,000 query (val images of the 100 classes) / 13,000 train / 128,503 database (all train "
        "images of the 100 classes, train included); single-label; mAP@1,000. TransHash, VTS, CSQ, OrthoHash.",
        loader=_load_lists, needs_data_root=True, list_dir=f"{_LISTS}/imagenet",
        howto="Images: ILSVRC-2012 (image-net.org), laid out as data_root/image/nXXXXXXXX_N.JPEG (train) and "
        "data_root/val_image/ILSVRC2012_val_*.JPEG. Lists: " + _DEEPHASH + ", folder imagenet (copies in "
        "../shared/data/hash_lists/imagenet)."),
):
    PROTOCOLS.register(_p.name, _p)


# ----------------------------------------------------------------------------- custom image folders
def _load_folder(protocol: Protocol, data_root=None, seed: int = 0, split_dir=None, cache=None,
                 cache_splits: bool = True, splits: tuple[str, ...] | None = None, **_):
    from .sources import load_image_folder

    root = resolve_data_root(protocol, data_root)
    if not root.is_dir():
        raise DataError(f"image folder data_root={str(root)!r} for protocol {protocol.name!r} does not exist "
                        f"(expected root/<split>/<class>/*.jpg|png or root/<class>/*.jpg|png). {protocol.howto}")
    if splits is None:  # root/<split>/<class>/* when every sub-folder holds class folders, else root/<class>/*
        subs = [d for d in sorted(root.iterdir()) if d.is_dir()]
        nested = subs and all(any(e.is_dir() for e in d.iterdir()) for d in subs)
        splits = tuple(d.name for d in subs) if nested else None
    pool = load_image_folder(root, splits, size=protocol.img_size, cache=cache, kind=f"folder-{protocol.name}")
    if len(pool.class_names) != protocol.num_classes:
        raise DataError(f"{root} has {len(pool.class_names)} class folders {pool.class_names[:5]}..., protocol "
                        f"{protocol.name!r} expects {protocol.num_classes}")
    per_q, per_t = protocol.n_query // protocol.num_classes, protocol.n_train // protocol.num_classes
    need = per_q + per_t + (0 if protocol.train_in_database else 1)  # query + train, and a database item
    if split_dir is None:
        counts = np.bincount(pool.classes, minlength=len(pool.class_names))
        short = [(pool.class_names[c], int(counts[c])) for c in np.flatnonzero(counts < need)]
        if short:
            where = "/".join(["<split>"] if splits else []) + ("/" if splits else "")
            raise DataError(f"image folder {root}: each class needs at least {need} images ({per_q} query + {per_t} "
                            f"train{' + 1 database' if not protocol.train_in_database else ''} per class for protocol "
                            f"{protocol.name!r}); too few in " + ", ".join(f"{where}{n}/ ({k})" for n, k in short[:10])
                            + (f" and {len(short) - 10} more" if len(short) > 10 else ""))
    return make_splits(protocol, pool.images, pool.classes, pool.ids, seed, n_query_per_class=per_q,
                       n_train_per_class=per_t, class_names=pool.class_names, split_dir=split_dir, cache=cache,
                       cache_splits=cache_splits)


def image_folder_protocol(name: str, *, num_classes: int, query_per_class: int, train_per_class: int,
                          train_in_database: bool = True, topk: int | None = None, img_size: int = 32,
                          data_root: str | None = None, hflip: bool = True, pad_crop: int = 4,
                          register: bool = True) -> Protocol:
    """A protocol for a custom single-label image folder ``root/[<split>/]<class>/*.{jpg,png}``.

    All images (of every split folder) form one pool, resized to ``img_size`` and cached decoded;
    query / train items are drawn per class with the seed (as for CIFAR-10), the database is the
    rest (train inside it when ``train_in_database``). Registered under `name` unless register=False.
    """
    n_db = None
    p = Protocol(
        name=name, num_classes=num_classes, multi_label=False, topk=topk, n_query=query_per_class * num_classes,
        n_train=train_per_class * num_classes, n_database=n_db, train_in_database=train_in_database,
        img_size=img_size, source=f"image folder {data_root or '<data_root>'}: [<split>/]<class>/*.jpg|png",
        description=f"{query_per_class} query + {train_per_class} train per class drawn with the seed; database = "
        f"the rest ({'train included' if train_in_database else 'train excluded'}); "
        f"mAP@{'all' if topk is None else topk}.",
        loader=_load_folder, needs_data_root=True, hflip=hflip, pad_crop=pad_crop, default_root=data_root,
        howto="Lay the images out as data_root/<class>/*.jpg (or data_root/<split>/<class>/*.jpg).", seeded=True)
    if register:
        PROTOCOLS.register(name, p)
    return p
