"""mAP@K in the HashNet / DeepHash-pytorch convention (METHODS.md §1.2).

* relevance: query and item share at least one label;
* ranking: Hamming distance ascending, ties broken by database index (stable sort);
* AP@K normalised by the number of relevant items inside the top K; a query with none scores 0;
* codes are ±1 (sign(0) = +1 is applied by the encoder).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    raise DataError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def as_pm1_codes(codes, name: str) -> torch.Tensor:
    """Validate ±1 codes (n, K) and return them as an int8 tensor."""
    c = _as_tensor(codes, name)
    if c.ndim != 2:
        raise DataError(f"{name} must be a 2-D (items, bits) array of ±1 codes, got shape {tuple(c.shape)}")
    if c.shape[0] == 0:
        raise DataError(f"{name} is empty")
    if c.is_floating_point() and torch.isnan(c).any():
        raise DataError(f"{name} contains NaN; codes must be ±1")
    ok = (c == 1) | (c == -1)
    if not bool(ok.all()):
        bad = c[~ok][0].item()
        raise DataError(f"{name} must contain only -1 and +1 (binarise with sign, sign(0)=+1); found {bad!r}")
    return c.to(torch.int8)


def as_multi_hot(labels, n: int, name: str, num_classes: int | None = None) -> torch.Tensor:
    """Class indices (n,) or multi-hot (n, C) -> float multi-hot (n, C)."""
    y = _as_tensor(labels, name)
    if y.ndim == 1:
        if y.is_floating_point():
            raise DataError(f"{name}: 1-D labels must be integer class indices, got dtype {y.dtype}")
        if len(y) and y.min() < 0:
            raise DataError(f"{name}: class indices must be >= 0, found {int(y.min())}")
        c = int(num_classes if num_classes is not None else (int(y.max()) + 1 if len(y) else 1))
        y = torch.nn.functional.one_hot(y.long(), c)
    elif y.ndim != 2:
        raise DataError(f"{name} must be class indices (n,) or multi-hot (n, C), got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise DataError(f"{name} has {y.shape[0]} rows but its codes have {n}")
    return y.float()


def _prepare(query_codes, db_codes, query_labels, db_labels):
    qc = as_pm1_codes(query_codes, "query_codes")
    dc = as_pm1_codes(db_codes, "db_codes")
    if qc.shape[1] != dc.shape[1]:
        raise DataError(f"query_codes have {qc.shape[1]} bits but db_codes have {dc.shape[1]}")
    ql_raw, dl_raw = _as_tensor(query_labels, "query_labels"), _as_tensor(db_labels, "db_labels")
    num_classes = None
    if ql_raw.ndim == 1 and dl_raw.ndim == 1:
        num_classes = int(max(ql_raw.max().item() if len(ql_raw) else 0, dl_raw.max().item() if len(dl_raw) else 0)) + 1
    elif ql_raw.ndim == 2 or dl_raw.ndim == 2:
        num_classes = int((ql_raw if ql_raw.ndim == 2 else dl_raw).shape[1])
    ql = as_multi_hot(ql_raw, qc.shape[0], "query_labels", num_classes)
    dl = as_multi_hot(dl_raw, dc.shape[0], "db_labels", num_classes)
    if ql.shape[1] != dl.shape[1]:
        raise DataError(f"query_labels have {ql.shape[1]} classes but db_labels have {dl.shape[1]}")
    return qc, dc, ql, dl


def map_at_k(query_codes, db_codes, query_labels, db_labels, topk: int | None = None, chunk: int = 256) -> float:
    """Mean average precision over the top ``topk`` database items (``None``: the whole database).

    ``query_codes`` (Q, K) and ``db_codes`` (N, K) are ±1 arrays (numpy or torch); labels are class
    indices or multi-hot 0/1 arrays. Returns a Python float.
    """
    qc, dc, ql, dl = _prepare(query_codes, db_codes, query_labels, db_labels)
    n_db, bits = dc.shape
    if topk is None:
        topk = n_db
    if not isinstance(topk, (int, np.integer)) or isinstance(topk, bool) or topk <= 0 or topk > n_db:
        raise DataError(f"topk={topk!r} must be an integer in 1..{n_db} (the database size) or None for all")
    topk = int(topk)
    dcf = dc.float()
    ranks = torch.arange(1, topk + 1, dtype=torch.float64)
    total = 0.0
    for s in range(0, qc.shape[0], chunk):
        q = qc[s : s + chunk].float()
        # Hamming distance = (K - <q, d>) / 2, exact in float32 for ±1 codes
        dist = ((bits - q @ dcf.T) / 2).round().to(torch.int32)
        order = torch.sort(dist, dim=1, stable=True).indices[:, :topk]
        rel = ((ql[s : s + chunk] @ dl.T) > 0)
        rel = torch.gather(rel, 1, order).to(torch.float64)
        hits = rel.cumsum(1)
        r = rel.sum(1)
        ap = (rel * hits / ranks).sum(1) / r.clamp(min=1)
        total += float(ap.sum())
    return total / qc.shape[0]
