"""mAP@K in the HashNet / DeepHash-pytorch convention (METHODS.md §1.2), a thin view of :func:`evaluate`.

* relevance: query and item share at least one label;
* ranking: Hamming distance ascending, ties broken by database index (stable sort);
* AP@K normalised by the number of relevant items inside the top K; a query with none scores 0;
* codes are ±1 or {0,1} (sign(0) = +1 is applied by the encoder).
"""
from __future__ import annotations


def map_at_k(query_codes, db_codes, query_labels, db_labels, topk: int | None = None, chunk: int | None = None) -> float:
    """Mean average precision over the top ``topk`` database items (``None``: the whole database).

    ``query_codes`` (Q, b) and ``db_codes`` (N, b) are ±1 arrays (numpy or torch); labels are class
    indices or multi-hot 0/1 arrays. Returns a Python float; equals ``evaluate(...)["map"]`` with the
    default options (index ties, ``retrieved`` normaliser, zero-relevant queries count as 0).
    """
    from .engine import evaluate

    return evaluate(query_codes, db_codes, query_labels, db_labels, topk=topk, chunk=chunk, tie_aware=False,
                    precision_at=())["map"]
