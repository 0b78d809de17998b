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
use (about 2 s) and cached on disk next to the module when that folder is writable (about 0.5 s to load).
"""
from __future__ import annotations

_KERNEL = None
_ERROR: Exception | None = None


def kernel():
    """The compiled kernel, or raise the ImportError / compilation error that prevents it."""
    global _KERNEL, _ERROR
    if _KERNEL is None and _ERROR is None:
        try:
            from ._rank_numba import rank_chunk

            _KERNEL = rank_chunk
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

