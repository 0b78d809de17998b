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
    for c in np.unique(classes):
        pos = np.flatnonzero(classes == c)
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
    rows = (" ".join(map(str, row)) for row in labels.astype(np.int64))
    return "".join(f"{i} {r}\n" for i, r in zip(ids, rows))


def split_checksum(ids, labels: np.ndarray) -> str:
    """sha256 of the split's list text (what is cached on disk)."""
    return sha256_bytes(split_lines(ids, labels).encode("utf-8"))
