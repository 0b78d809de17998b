"""Binary-code search with faiss: exact (IndexBinaryFlat) and approximate (IVF, HNSW) indexes.

Codes are the package's ±1 codes, {0,1} bits, or codes already packed by
:func:`hashlib_vit.retrieval.codes.pack_codes` (pass ``bits=``): the evaluator's packed layout is
exactly the one faiss binary indexes take (``d = 8 * ceil(B / 8)``; zero padding bits never change a
distance), so both work on the same bytes.

Exact search returns the same ranking as the evaluator: Hamming distance ascending, **ties broken by
database index**. faiss's heap does not promise an order inside a tie block, so ``search`` asks faiss
for the k nearest, then fetches every item within the k-th distance (a range search) and sorts
(distance, index) stably before cutting at k.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..utils import atomic_write_bytes, atomic_write_json, row_blocks
from .codes import as_packed, packed_bytes

KINDS = ("flat", "ivf", "hnsw")


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("faiss is needed for hashlib_vit.retrieval.index: pip install faiss-cpu") from e
    return faiss


@dataclass
class SearchResult:
    """Top-k per query: database positions ``ids`` (Q, k), Hamming ``distances`` (Q, k), and the
    items' ``labels`` when the index holds labels. ``-1`` ids / distances mark missing results
    (approximate indexes can return fewer than k)."""

    ids: np.ndarray
    distances: np.ndarray
    labels: np.ndarray | None = None

    def relevant(self, query_labels) -> np.ndarray:
        """(Q, k) bool: result j of query i shares a label with it (multi-hot labels (Q, C): a common
        label; class indices (Q,): the same class); missing results (id -1) are not relevant.
        Raises DataError when the index holds no labels or the query labels do not fit them."""
        if self.labels is None:
            raise DataError("this search result has no labels: build the index with labels= to judge relevance")
        ql = np.asarray(query_labels)
        if len(ql) != len(self.ids):
            raise DataError(f"query_labels have {len(ql)} rows but the search has {len(self.ids)} queries")
        if self.labels.ndim == 3:
            if ql.ndim != 2 or ql.shape[1] != self.labels.shape[2]:
                raise DataError(f"query_labels have shape {ql.shape}; expected (Q, {self.labels.shape[2]}) multi-hot "
                                "like the index's labels")
            # in query blocks: temporaries O(block x k x C) bools, not a float copy of all result labels
            q, k, c = self.labels.shape
            rel = np.empty((q, k), bool)
            for s, e in row_blocks(q, k * c):
                rel[s:e] = ((self.labels[s:e] != 0) & (ql[s:e, None, :] != 0)).any(-1)
        else:
            rel = self.labels == ql.reshape(len(ql), 1)
        return rel & (self.ids >= 0)

    def average_precision(self, query_labels) -> np.ndarray:
        """(Q,) float64 AP@k of each query from its top-k results: the mean of precision@j over the ranks j
        of the relevant results, normalised by the relevant items retrieved (0 when none); for an exact
        (flat) index its mean is the evaluator's mAP@k (:func:`hashlib_vit.retrieval.map_at_k`, topk=k)."""
        rel = self.relevant(query_labels)
        hits = np.cumsum(rel, axis=1)
        k = rel.shape[1]
        return (rel * hits / np.arange(1, k + 1)).sum(1) / np.maximum(rel.sum(1), 1)


class HashIndex:
    """A faiss binary index over packed codes, with labels kept alongside for the search API."""

    def __init__(self, bits: int, kind: str = "flat", *, nlist: int | None = None, nprobe: int = 8,
                 hnsw_m: int = 16, ef_search: int = 64):
        if kind not in KINDS:
            raise ConfigError(f"kind={kind!r} is not a known index; allowed: {', '.join(KINDS)}")
        if not isinstance(bits, int) or isinstance(bits, bool) or bits <= 0:
            raise ConfigError(f"bits={bits!r} must be a positive integer")
        self.bits, self.kind = bits, kind
        self.dim = 8 * packed_bytes(bits)  # faiss works on whole bytes
        self.nlist, self.nprobe, self.hnsw_m, self.ef_search = nlist, nprobe, hnsw_m, ef_search
        self.labels: np.ndarray | None = None
        self._index = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_codes(cls, codes, labels=None, kind: str = "flat", *, bits: int | None = None,
                   **options) -> "HashIndex":
        """Index ``codes`` (±1 / {0,1} ``(N, B)``, or packed uint8 with ``bits=B``) with optional labels."""
        packed, nbits = as_packed(_numpy(codes), "db_codes", bits)
        index = cls(nbits, kind, **options)
        index._add_packed(packed, labels)
        return index

    def _make(self, n_train: np.ndarray):
        faiss = _faiss()
        if self.kind == "flat":
            return faiss.IndexBinaryFlat(self.dim)
        if self.kind == "hnsw":
            idx = faiss.IndexBinaryHNSW(self.dim, self.hnsw_m)
            idx.hnsw.efSearch = self.ef_search
            return idx
        nlist = self.nlist or max(1, int(4 * np.sqrt(len(n_train))))
        quantizer = faiss.IndexBinaryFlat(self.dim)
        idx = faiss.IndexBinaryIVF(quantizer, self.dim, nlist)
        idx.own_fields = True
        quantizer.this.disown()
        idx.train(n_train)
        idx.nprobe = self.nprobe
        self.nlist = nlist
        return idx

    def add(self, codes, labels=None, *, bits: int | None = None) -> None:
        """Append database codes (same forms as :meth:`from_codes`)."""
        packed, nbits = as_packed(_numpy(codes), "db_codes", bits)
        if nbits != self.bits:
            raise DataError(f"db_codes have {nbits} bits but the index holds {self.bits}-bit codes")
        self._add_packed(packed, labels)

    def _add_packed(self, packed: np.ndarray, labels) -> None:
        packed = np.ascontiguousarray(packed)
        if labels is not None:
            labels = np.asarray(labels)
            if len(labels) != len(packed):
                raise DataError(f"labels have {len(labels)} rows but db_codes have {len(packed)}")
            self.labels = labels if self.labels is None else np.concatenate([self.labels, labels])
        elif self.labels is not None:
            raise DataError("this index holds labels: add() needs labels for the new codes too")
        if self._index is None:
            self._index = self._make(packed)
        self._index.add(packed)

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    # ------------------------------------------------------------------ searching
    def _queries(self, query_codes, bits: int | None) -> np.ndarray:
        if self.ntotal == 0:
            raise DataError("the index is empty: add database codes before searching")
        packed, nbits = as_packed(_numpy(query_codes), "query_codes", bits)
        if nbits != self.bits:
            raise DataError(f"query_codes have {nbits} bits but the index holds {self.bits}-bit codes")
        return np.ascontiguousarray(packed)

    def search(self, query_codes, k: int, *, bits: int | None = None) -> SearchResult:
        """k nearest database items per query (exact for ``flat``: ties by database index)."""
        q = self._queries(query_codes, bits)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise DataError(f"k={k!r} must be a positive integer")
        k = int(min(k, self.ntotal))
        if self.kind == "flat":
            dist, ids = self._exact_search(q, k)
        else:
            dist, ids = self._index.search(q, k)
        labels = None
        if self.labels is not None:
            valid = ids >= 0
            labels = self.labels[np.clip(ids, 0, None)]
            labels = np.where(valid[..., None] if labels.ndim == 3 else valid, labels, -1)
        return SearchResult(ids.astype(np.int64), dist.astype(np.int64), labels)

    def _exact_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k with ties ordered by database index.

        faiss returns the k nearest but orders a tie block arbitrarily (and may cut it anywhere). We
        ask for more neighbours than needed; when the deepest one retrieved is farther than the k-th,
        the whole tie block at the k-th distance is inside the answer and a stable (distance, index)
        sort gives the exact ranking. Queries whose tie block overflows are retried with twice the
        depth, and finally with a range search (every item within the k-th distance).
        """
        n = self.ntotal
        out_d = np.empty((len(q), k), dtype=np.int64)
        out_i = np.empty((len(q), k), dtype=np.int64)
        todo = np.arange(len(q))
        depth = min(n, max(2 * k, k + 64))
        while len(todo):
            dist, ids = self._index.search(q[todo], depth)
            complete = (dist[:, -1] > dist[:, k - 1]) | (depth >= n)
            for r in np.flatnonzero(complete):
                j = todo[r]
                order = np.lexsort((ids[r], dist[r]))[:k]
                out_d[j], out_i[j] = dist[r, order], ids[r, order]
            todo = todo[~complete]
            if len(todo) and depth >= 8 * k:  # huge tie blocks: fetch each block by range search
                for j in todo:
                    kth = int(self._index.search(q[j:j + 1], k)[0][0, -1])
                    _, d, i = self._index.range_search(q[j:j + 1], kth + 1)  # radius is exclusive
                    order = np.lexsort((i, d))[:k]
                    out_d[j], out_i[j] = d[order], i[order]
                break
            depth = min(n, depth * 2)
        return out_d, out_i

    def radius_search(self, query_codes, radius: int, *, bits: int | None = None) -> list[SearchResult]:
        """All items within Hamming distance ``radius`` (inclusive) of each query, sorted by
        (distance, database index); one SearchResult per query."""
        q = self._queries(query_codes, bits)
        if not isinstance(radius, (int, np.integer)) or radius < 0:
            raise DataError(f"radius={radius!r} must be an integer >= 0")
        lims, rd, ri = self._index.range_search(q, int(radius) + 1)
        results = []
        for j in range(len(q)):
            d, i = rd[lims[j]:lims[j + 1]].astype(np.int64), ri[lims[j]:lims[j + 1]].astype(np.int64)
            order = np.lexsort((i, d))
            ids = i[order]
            results.append(SearchResult(ids, d[order], None if self.labels is None else self.labels[ids]))
        return results

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (the faiss index) and ``path.meta.json`` (+ ``.labels.npy``), atomically."""
        faiss = _faiss()
        path = Path(path)
        if self._index is None:
            raise DataError("cannot save an empty index")
        data = faiss.serialize_index_binary(self._index)
        atomic_write_bytes(path, np.asarray(data).tobytes())
        if self.labels is not None:
            import io

            buf = io.BytesIO()
            np.save(buf, self.labels)
            atomic_write_bytes(path.with_name(path.name + ".labels.npy"), buf.getvalue())
        atomic_write_json(path.with_name(path.name + ".meta.json"),
                          {"bits": self.bits, "kind": self.kind, "nlist": self.nlist, "nprobe": self.nprobe,
                           "hnsw_m": self.hnsw_m, "ef_search": self.ef_search, "ntotal": self.ntotal,
                           "has_labels": self.labels is not None})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HashIndex":
        """Read an index written by :meth:`save`: ``path`` (the faiss index), ``path.meta.json`` and, when the
        metadata says so, ``path.labels.npy``; everything is checked before the index is returned.

        Raises DataError naming the file and the field when a file is missing or damaged: meta.json not a
        JSON object (:func:`hashlib_vit.utils.read_json`) or a field missing / of the wrong type (``bits`` a
        positive integer, ``kind`` one of :data:`KINDS`, ``ntotal`` an integer >= 0, ``has_labels`` a bool,
        ``nlist``/``nprobe``/``hnsw_m``/``ef_search`` integers or null); the index bytes not a faiss binary
        index (truncated or corrupt), of another kind or dimension than meta.json says (``bits``), or holding
        another number of items than ``ntotal``; the labels not a .npy array or with another number of rows."""
        from ..utils import read_json

        faiss = _faiss()
        path = Path(path)
        meta_path = path.with_name(path.name + ".meta.json")
        labels_path = path.with_name(path.name + ".labels.npy")
        if not path.is_file() or not meta_path.is_file():
            raise DataError(f"{path} (and {meta_path.name}) must exist: save an index with HashIndex.save first")
        meta = read_json(meta_path, "index metadata")
        where = f"index metadata {meta_path}"

        def field(key, kind: type, expected, *, optional=False, check=lambda v: True):
            if key not in meta:
                raise DataError(f"{where}: field {key!r} missing; expected {expected} (written by HashIndex.save)")
            v = meta[key]
            if v is None and optional:
                return None
            if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)) or not check(v):
                raise DataError(f"{where}: field {key!r} is {v!r}; expected {expected}")
            return v

        bits = field("bits", int, "a positive integer", check=lambda v: v > 0)
        kind = field("kind", str, f"one of {', '.join(KINDS)}", check=lambda v: v in KINDS)
        opts = {k: field(k, int, "a positive integer or null", optional=True, check=lambda v: v > 0)
                for k in ("nlist", "nprobe", "hnsw_m", "ef_search")}
        ntotal = field("ntotal", int, "an integer >= 0", check=lambda v: v >= 0)
        has_labels = field("has_labels", bool, "true or false")
        index = cls(bits, kind, **{k: v for k, v in opts.items() if v is not None or k == "nlist"})
        try:
            raw = faiss.deserialize_index_binary(np.frombuffer(path.read_bytes(), dtype=np.uint8))
        except (RuntimeError, ValueError, OSError) as e:  # faiss raises RuntimeError on truncated bytes
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            raise DataError(f"index file {path} is not a readable faiss binary index ({first}); it is truncated "
                            "or corrupt: build the index again and save it") from None
        want = {"flat": faiss.IndexBinaryFlat, "ivf": faiss.IndexBinaryIVF, "hnsw": faiss.IndexBinaryHNSW}[kind]
        if not isinstance(raw, want):
            raise DataError(f"index file {path} holds a {type(raw).__name__}, but {where} field 'kind' is {kind!r} "
                            f"({want.__name__})")
        if raw.d != index.dim:
            raise DataError(f"index file {path} holds {raw.d}-bit codes, but {where} field 'bits' is {bits} "
                            f"({index.dim} bits in whole bytes); the files are from different indexes")
        index._index = raw
        if index.ntotal != ntotal:
            raise DataError(f"index file {path} holds {index.ntotal} items, but {where} field 'ntotal' is {ntotal}; "
                            "the files are from different indexes")
        if index.kind == "ivf":
            index._index.nprobe = index.nprobe
        if index.kind == "hnsw":
            index._index.hnsw.efSearch = index.ef_search
        if has_labels:
            try:
                labels = np.load(labels_path, allow_pickle=False)
            except FileNotFoundError:
                raise DataError(f"{labels_path} does not exist, but {where} field 'has_labels' is true") from None
            except (OSError, ValueError, EOFError) as e:
                raise DataError(f"index labels {labels_path} are not a readable .npy array ({e}); truncated or "
                                "corrupt") from None
            if labels.ndim not in (1, 2) or len(labels) != ntotal:
                raise DataError(f"index labels {labels_path} have shape {labels.shape}; expected {ntotal} rows "
                                f"({where} field 'ntotal'): class indices (n,) or multi-hot (n, C)")
            index.labels = labels
        return index


def _numpy(codes):
    return codes.detach().cpu().numpy() if hasattr(codes, "detach") else np.asarray(codes)


def search_images(model, images, index: HashIndex, k: int, *, batch_size: int = 256, device=None) -> SearchResult:
    """Encode query images (float [0,1] or uint8 (n,3,H,W)) with a trained model and search the index."""
    from ..data.transforms import TensorTransform
    from .encode import encode_prepared

    tf = TensorTransform(model.img_size, resize=None if images.shape[-1] == model.img_size
                         else int(round(model.img_size * 256 / 224)))
    return index.search(encode_prepared(model, images, tf, batch_size=batch_size, device=device), k)


# ----------------------------------------------------------------------------- exact vs approximate search
def clustered_codes(n: int, bits: int, *, centers: np.ndarray | None = None, n_centers: int = 100,
                    flip: float = 0.1, seed: int = 0) -> np.ndarray:
    """``n`` synthetic ±1 codes (int8, (n, bits)) around random centres (``n_centers`` of them, or the
    given ``centers`` (m, bits)), each bit flipped with probability ``flip``: a database with the cluster
    structure of trained codes, for timing indexes at sizes no data set here has."""
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = np.where(rng.random((n_centers, bits)) < 0.5, -1, 1).astype(np.int8)
    c = centers[rng.integers(0, len(centers), n)]
    return np.where(rng.random(c.shape, dtype=np.float32) < flip, -c, c).astype(np.int8)


def distance_recall(approx_distances: np.ndarray, exact_distances: np.ndarray) -> float:
    """Recall of an approximate top-k by distance: the share of the exact top-k's Hamming distances
    (as a multiset per query) that the approximate top-k also found; missing results (-1) count as
    misses. Ties make ids ambiguous, distances are not. Returns a float in [0, 1]."""
    a, e = np.asarray(approx_distances), np.asarray(exact_distances)
    if a.shape != e.shape:
        raise DataError(f"approx_distances have shape {a.shape} but exact_distances {e.shape}; expected equal")
    hi = int(max(a.max(initial=0), e.max(initial=0))) + 1
    hits = 0
    for x, y in zip(a, e):  # per query: the multiset intersection of distances
        hits += int(np.minimum(np.bincount(x[x >= 0], minlength=hi), np.bincount(y, minlength=hi)).sum())
    return hits / e.size if e.size else 1.0


def benchmark_search(sizes, bits: int, *, n_queries: int = 200, k: int = 10, kinds=KINDS, nprobe: int = 8,
                     hnsw_m: int = 16, ef_search: int = 64, seed: int = 0) -> "pd.DataFrame":  # noqa: F821
    """Time exact (flat) against approximate (IVF with nlist = sqrt(n), HNSW) binary search on synthetic
    clustered codes (:func:`clustered_codes`, 100 centres, 10 % flipped bits) of each database size in
    ``sizes``, ``n_queries`` queries from the same clusters, top ``k``.

    Returns a DataFrame with one row per (size, index): ``database`` (n), ``index`` (kind), ``build_s``
    and ``search_s`` (wall seconds), ``queries_per_s`` and ``recall`` (:func:`distance_recall` against the
    flat index of the same database; 1.0 for flat). Raises ConfigError for an unknown kind."""
    import time

    import pandas as pd

    bad = [kd for kd in kinds if kd not in KINDS]
    if bad:
        raise ConfigError(f"kinds={list(kinds)} names unknown index(es) {bad}; allowed: {', '.join(KINDS)}")
    centers = clustered_codes(100, bits, centers=None, n_centers=100, flip=0.0, seed=seed)
    queries = clustered_codes(n_queries, bits, centers=centers, seed=seed + 1)
    rows = []
    for n in sizes:
        db = clustered_codes(int(n), bits, centers=centers, seed=seed + 2)
        exact = None
        for kind in ["flat"] + [kd for kd in kinds if kd != "flat"]:
            opts = {"ivf": dict(nlist=max(1, int(np.sqrt(n))), nprobe=nprobe),
                    "hnsw": dict(hnsw_m=hnsw_m, ef_search=ef_search)}.get(kind, {})
            t0 = time.perf_counter()
            index = HashIndex.from_codes(db, kind=kind, **opts)
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = index.search(queries, k)
            search = time.perf_counter() - t0
            exact = res.distances if kind == "flat" else exact
            if kind in kinds:
                rows.append(dict(database=int(n), index=kind, build_s=build, search_s=search,
                                 queries_per_s=len(queries) / max(search, 1e-12),
                                 recall=distance_recall(res.distances, exact)))
    return pd.DataFrame(rows)


__all__ = ["HashIndex", "KINDS", "SearchResult", "benchmark_search", "clustered_codes", "distance_recall",
           "search_images"]
