"""Retrieval: encoding, Hamming ranking and metrics."""
from .encode import encode
from .metrics import map_at_k


def evaluate(query_codes, db_codes, query_labels, db_labels, topk: int | None = None) -> dict:
    """All retrieval metrics of one evaluation as a dict (``map`` plus what the engine provides)."""
    n_db = len(db_codes)
    return {
        "map": map_at_k(query_codes, db_codes, query_labels, db_labels, topk=topk),
        "topk": "all" if topk is None else int(topk),
        "n_query": int(len(query_codes)),
        "n_database": int(n_db),
    }


__all__ = ["encode", "evaluate", "map_at_k"]
