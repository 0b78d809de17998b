"""Compiled (numba) CPU backend of the evaluation engine: one linear pass over the database per query.

The stable ranking by (Hamming distance, database index) is never materialised. While the database is
scanned in index order, every item's distance ``d`` is computed (hardware popcount) and a counter per
distance gives the item's rank inside its tie group; relevant items record (group, rank in group, rank
among the group's relevant items). After the scan the group offsets are prefix sums of the counters,
and a counting sort of the relevant items by (group, rank among relevant) lists them in ranking order
with their exact 1-based positions: AP@K, the hits at every cut rank, and the (distance, relevance)
histogram follow in O(N + relevant) per query, against O(N log N) (or a radix pass plus a gather) for an
explicit sort. The result is identical to ranking with a stable sort (``ties="index"``); ``ties="random"``
permutes the database once before the call.

numba is imported lazily; :func:`available` says whether it can be used. Kernels are compiled on first
use (a second or two) and cached on disk next to this file when that folder is writable.
"""
from __future__ import annotations

import numpy as np

_KERNEL = None
_ERROR: Exception | None = None


def _build():
    from ._rank_numba import rank_chunk

    return rank_chunk


def kernel():
    """The compiled kernel, or raise the ImportError / compilation error that prevents it."""
    global _KERNEL, _ERROR
    if _KERNEL is None and _ERROR is None:
        try:
            _KERNEL = _build()
        except Exception as exc:  # numba missing or unusable on this platform
            _ERROR = exc
    if _KERNEL is None:
        raise _ERROR
    return _KERNEL


def available() -> bool:
    try:
        kernel()
        return True
    except Exception:
        return False


def u64_words(packed: np.ndarray) -> np.ndarray:
    """Packed bytes (n, nb) -> (n, ceil(nb/8)) uint64 words (zero padding adds nothing to a popcount)."""
    n, nb = packed.shape
    w = max(1, -(-nb // 8))
    out = np.zeros((n, w * 8), np.uint8)
    out[:, :nb] = packed
    return out.view(np.uint64)
