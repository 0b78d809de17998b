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
from .datasets import Split
from .splits import SplitIndices, class_balanced_split, split_checksum

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

    def load(self, data_root: str | Path | None = None, seed: int = 0, **options) -> "ProtocolData":
        """Build (or read from the cache) the splits of this protocol with a fixed seed."""
        return self.loader(self, data_root=data_root, seed=seed, **options)

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
    protocol: Protocol
    query: Split
    train: Split
    database: Split
    class_names: list[str]
    seed: int
    checksums: dict[str, str] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"query": len(self.query), "train": len(self.train), "database": len(self.database)}


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)


def _one_hot(classes: np.ndarray, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(classes), num_classes).float()


def make_splits(protocol: Protocol, images: torch.Tensor, classes: np.ndarray, ids: list[str], seed: int,
                *, n_query_per_class: int, n_train_per_class: int, class_names: list[str],
                indices: SplitIndices | None = None) -> ProtocolData:
    """Class-balanced seeded split of an in-memory single-label pool into a ProtocolData.

    ``indices``: positions already chosen (e.g. a fixed official split); otherwise they are drawn
    per class with ``seed`` (train inside or outside the database as the protocol says).
    """
    idx = indices if indices is not None else class_balanced_split(
        classes, n_query_per_class, n_train_per_class, seed, train_in_database=protocol.train_in_database)
    labels = _one_hot(classes, protocol.num_classes)
    splits, checks = {}, {}
    for name in ("query", "train", "database"):
        pos = getattr(idx, name)
        sid = [ids[i] for i in pos]
        splits[name] = Split(images[torch.as_tensor(pos)], labels[torch.as_tensor(pos)], sid)
        checks[name] = split_checksum(sid, labels[torch.as_tensor(pos)].numpy())
    return ProtocolData(protocol, splits["query"], splits["train"], splits["database"], class_names, seed, checks)


# ----------------------------------------------------------------------------- digits (embedded)
def _load_digits(protocol: Protocol, data_root=None, seed: int = 0, **_):
    from .digits import load_digits_images

    images, classes = load_digits_images(protocol.img_size)
    ids = [f"digits/{i:04d}" for i in range(len(classes))]
    return make_splits(protocol, images, classes, ids, seed, n_query_per_class=protocol.n_query // 10,
                       n_train_per_class=protocol.n_train // 10, class_names=[str(i) for i in range(10)])


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
    ),
)


# ----------------------------------------------------------------------------- CIFAR-10
def resolve_data_root(protocol: Protocol, data_root) -> Path:
    from ..errors import DataError
    from ..utils import resolve_path

    root = data_root if data_root is not None else protocol.default_root
    if root is None:
        raise DataError(f"protocol {protocol.name!r} needs data_root. {protocol.source}")
    return resolve_path(root)


def _load_cifar10(protocol: Protocol, data_root=None, seed: int = 0, cache=None, verify: bool = True, **_):
    from .sources import cifar10_class_names, load_cifar10_pool

    root = resolve_data_root(protocol, data_root)
    pool = load_cifar10_pool(root, cache=cache, verify=verify)
    indices = None
    if protocol.name == "cifar10-2":  # the official split: test = query, train = train = database
        split = pool.split_names
        test, tr = np.flatnonzero(split == "test"), np.flatnonzero(split == "train")
        indices = SplitIndices(test, tr, tr)
    data = make_splits(protocol, pool.images, pool.classes, pool.ids, seed,
                       n_query_per_class=protocol.n_query // 10, n_train_per_class=protocol.n_train // 10,
                       class_names=cifar10_class_names(root), indices=indices)
    return data


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
        needs_data_root=True, hflip=True, pad_crop=4, default_root="../shared/data/cifar10"))
