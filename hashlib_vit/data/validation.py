"""A validation split carved from the training split, for choosing hyper-parameters without the queries.

:func:`carve_validation` takes ``per_class`` items of every class out of the training split (seeded,
recorded with its checksum like every split); query and database are never touched. A run evaluates
its validation items as queries against the rest of the training split (the items it trains on) as
the database: the validation items are not in that database, so there are no self-matches, and the
query set stays unseen. The reported mAP stays the query set's (see ``RunConfig.val_per_class``).

Single-label protocols: ``per_class`` items of each class. Multi-label protocols (NUS-WIDE, COCO),
where "of a class" is ambiguous: ``per_class x num_classes`` items drawn from the whole training split.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..errors import DataError
from .datasets import FileSplit, Split
from .splits import split_checksum

#: The spawn key that separates the validation draw from the split draw of the same seed.
VALIDATION_STREAM = 0x7A11D


def _subset(split: Split | FileSplit, pos: np.ndarray, name: str) -> Split | FileSplit:
    ids = [split.ids[i] for i in pos.tolist()]
    labels = split.labels[torch.as_tensor(pos)]
    if isinstance(split, FileSplit):
        out = FileSplit(split.root, ids, labels, check_files=False, name=name)
        out.skipped, out.skipped_examples = (split.skipped, split.skipped_examples) if name == "train" else (0, [])
        return out
    return Split(split.images[torch.as_tensor(pos)], labels, ids)


def validation_positions(labels: np.ndarray, per_class: int, seed: int, *, protocol: str = "") -> np.ndarray:
    """Positions (sorted, int64) of the validation items among the training split's rows ``labels`` (N, C).

    Single-label rows: ``per_class`` of each class; multi-label: ``per_class * C`` of all, uniformly.
    Drawn with numpy's PCG64 seeded by ``(seed, VALIDATION_STREAM)``. Raises DataError when a class has
    fewer than ``per_class + 1`` training items (one must stay for training), or the multi-label draw
    would take half of the training split or more.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(VALIDATION_STREAM,)))
    n, c = labels.shape
    where = f" of protocol {protocol!r}" if protocol else ""
    if (labels.sum(1) == 1).all():
        classes = labels.argmax(1)
        counts = np.bincount(classes, minlength=c)
        short = np.flatnonzero(counts <= per_class)
        if len(short):
            k = int(short[0])
            raise DataError(f"val_per_class={per_class}: the training split{where} has only {int(counts[k])} items of "
                            f"class {k} (and {len(short) - 1} more classes have {per_class} or fewer); a validation "
                            f"split leaves at least one training item per class: use val_per_class <= "
                            f"{int(counts.min()) - 1}")
        order = np.argsort(classes, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        picked = [order[s + rng.choice(int(counts[k]), per_class, replace=False)] for k, s in enumerate(starts)]
        return np.sort(np.concatenate(picked)).astype(np.int64)
    size = per_class * c
    if 2 * size >= n:
        raise DataError(f"val_per_class={per_class}: a multi-label validation split takes val_per_class x classes = "
                        f"{size} items, half or more of the {n} training items{where}; use val_per_class <= "
                        f"{max(0, (n - 1) // (2 * c))}")
    return np.sort(rng.choice(n, size, replace=False)).astype(np.int64)


def carve_validation(data, per_class: int, seed: int):
    """``data`` (a ProtocolData) with ``per_class`` items per class moved from ``train`` into ``validation``.

    Returns a new ProtocolData (``data`` is unchanged): ``train`` without the validation items,
    ``validation`` a split of the same kind (in memory or on disk), ``checksums`` with ``"validation"``
    and the reduced ``"train"`` (the full training split's as ``"train_full"``). ``per_class`` 0 returns
    ``data``. Raises DataError as :func:`validation_positions`, or when ``data`` already has one.
    """
    if not per_class:
        return data
    if getattr(data, "validation", None) is not None:
        raise DataError("the data already holds a validation split; load the protocol again to carve another")
    labels = data.train.labels.numpy()
    val = validation_positions(labels, per_class, seed, protocol=data.protocol.name)
    rest = np.setdiff1d(np.arange(len(labels)), val)
    train, validation = _subset(data.train, rest, "train"), _subset(data.train, val, "validation")
    checks = {**data.checksums, "train_full": data.checksums.get("train", ""),
              "train": split_checksum(train.ids, train.labels.numpy()),
              "validation": split_checksum(validation.ids, validation.labels.numpy())}
    return dataclasses.replace(data, train=train, validation=validation, checksums=checks)


__all__ = ["carve_validation", "validation_positions", "VALIDATION_STREAM"]
