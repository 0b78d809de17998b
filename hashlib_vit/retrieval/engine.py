"""The retrieval evaluation engine: exact metrics on bit-packed codes, in bounded-memory chunks.

One entry point, :func:`evaluate`. Every semantic choice is an explicit option with a default
(see ``docs/evaluation.md`` for the formulas):

``ties``            how items at equal Hamming distance are ordered for the rank-based metrics
                    (mAP@K, P@N, R@N, rank PR curve):
                    ``"index"``  stable, by database index (default);
                    ``"random"`` by a seeded random permutation of the database (``seed``), i.e. the
                                 database order is shuffled once before a stable ranking;
                    ``"numpy"``  numpy's default ``argsort`` (quicksort/introsort, SIMD on x86) of the
                                 float32 distance row, exactly as DeepHash-pytorch's ``CalcTopMap``.
``ap_normalizer``   ``"retrieved"`` (relevant items inside the top K; HashNet / DeepHash, default) or
                    ``"min_k_relevant"`` (min(K, number of relevant items in the database)).
``zero_relevant``   queries with labels but no relevant database item: ``"zero"`` (count as 0 in every
                    mean, default) or ``"exclude"`` (left out of every mean).
``zero_label``      queries whose label vector is all zero (never relevant to anything): same choice,
                    counted separately (``n_zero_label``).
``empty_radius``    precision at a Hamming radius that retrieves nothing: ``"zero"`` (default) or
                    ``"exclude"`` (mean over the queries that retrieve something).
``drop_last``       DeepHash-pytorch's ``topK=-1`` quirk: with ``topk=None`` (or -1) rank only the first
                    N-1 items (``gnd[0:-1]``). Off by default, on in the ``deephash`` preset.

``map_tie_aware`` is the expected AP@K over uniformly random orderings inside every tie group
(He et al., CVPR 2018, "Hashing as Tie-Aware Learning to Rank"), computed in closed form from the
per-distance histograms (with the ``retrieved`` normaliser and a top-K cut inside a tie group the
number of relevant retrieved items is hypergeometric and the expectation sums over it exactly).

Presets (``preset=``): ``"default"`` (the values above) and ``"deephash"`` (ties ``numpy``,
normaliser ``retrieved``, zero-relevant and zero-label queries count as 0, ``drop_last``): a
compatibility mode reproducing DeepHash-pytorch's ``CalcTopMap`` numbers on float32 ±1 codes.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch

from ..errors import ConfigError, DataError, bad_choice
from ..utils import resolve_device, row_blocks
from . import _kernels
from .codes import as_packed, dist_dtype, np_hamming_block, np_words, torch_hamming_block

__all__ = ["BACKENDS", "EvalOptions", "PRESETS", "evaluate", "resolve_options"]

BACKENDS = ("numba", "numpy", "torch")


@dataclass(frozen=True)
class EvalOptions:
    ties: str = "index"
    ap_normalizer: str = "retrieved"
    zero_relevant: str = "zero"
    zero_label: str = "zero"
    empty_radius: str = "zero"
    drop_last: bool = False
    seed: int = 0
    radius: int = 2
    precision_at: tuple = (100, 500, 1000, 2000)
    pr_points: int = 20


_CHOICES = {
    "ties": ("index", "random", "numpy"),
    "ap_normalizer": ("retrieved", "min_k_relevant"),
    "zero_relevant": ("zero", "exclude"),
    "zero_label": ("zero", "exclude"),
    "empty_radius": ("zero", "exclude"),
}

PRESETS: dict[str, dict] = {
    "default": {},
    "deephash": dict(ties="numpy", ap_normalizer="retrieved", zero_relevant="zero", zero_label="zero", drop_last=True),
}


def resolve_options(preset=None, **overrides) -> tuple[str, EvalOptions]:
    """(preset name, options): an evaluation preset (a name of :data:`PRESETS` or a dict of options) plus
    explicit overrides. An evaluation preset is not a data protocol: the protocol's ``topk`` is passed as
    ``evaluate(..., topk=...)``."""
    name = "default"
    base: dict = {}
    if preset is None:
        pass
    elif isinstance(preset, str):
        if preset not in PRESETS:
            raise bad_choice("preset", preset, PRESETS)
        name, base = preset, dict(PRESETS[preset])
    elif isinstance(preset, dict):
        name, base = "custom", dict(preset)
    else:
        raise ConfigError(f"preset={preset!r} must be None, a preset name ({', '.join(PRESETS)}) or a dict of "
                          "evaluation options")
    known = {f.name for f in fields(EvalOptions)}
    for k in list(base) + list(overrides):
        if k not in known:
            raise bad_choice("evaluation option", k, known)
    opts = EvalOptions(**base)
    given = {k: v for k, v in overrides.items() if v is not None}
    if any(getattr(opts, k) != v for k, v in given.items()):
        name = "custom" if name == "default" else f"{name}+custom"
    opts = replace(opts, **given)
    for k, choices in _CHOICES.items():
        if getattr(opts, k) not in choices:
            raise bad_choice(k, getattr(opts, k), choices)
    if not isinstance(opts.radius, (int, np.integer)) or opts.radius < 0:
        raise ConfigError(f"radius={opts.radius!r} must be a non-negative integer")
    if not isinstance(opts.pr_points, (int, np.integer)) or opts.pr_points < 1:
        raise ConfigError(f"pr_points={opts.pr_points!r} must be a positive integer")
    return name, opts


# ----------------------------------------------------------------------------- labels
def _as_array(x, name):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise DataError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _scan_multi_hot(y: np.ndarray, name: str):
    """Check a (n, C) 0/1 label matrix in row blocks (temporaries O(block), never a copy of the matrix);
    -> (labels per row (n,) int64, first label of each row (n,) int64)."""
    n, C = y.shape
    count = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    if y.dtype.kind == "f" and any(np.isnan(y[s:e]).any() for s, e in row_blocks(n, C)):
        raise DataError(f"{name} contains NaN")
    for s, e in row_blocks(n, C):
        blk = y[s:e]
        one = blk == 1
        if not (one | (blk == 0)).all():
            bad = blk[~(one | (blk == 0))].flat[0].item()
            raise DataError(f"{name}: multi-hot labels must be 0/1, found {bad!r}")
        count[s:e] = one.sum(1)
        first[s:e] = one.argmax(1)
    return count, first


def _packed_labels(y: np.ndarray, C: int) -> np.ndarray:
    """(n, ceil(C/8)) uint8 packed multi-hot rows of class indices (n,) or 0/1 rows (n, C), in row blocks."""
    n = len(y)
    out = np.zeros((n, -(-C // 8)), np.uint8)
    if y.ndim == 1:
        out[np.arange(n), y // 8] = (128 >> (y % 8)).astype(np.uint8)
        return out
    for s, e in row_blocks(n, C):
        out[s:e] = np.packbits(y[s:e] != 0, axis=1)
    return out


def _prepare_labels(query_labels, db_labels, nq: int, nd: int, qname="query_labels", dname="db_labels"):
    """-> ("class", qcls (Q,) int64, dcls (N,) int64, zero_label (Q,) bool) or ("multi", qwords, dwords, zero).

    Single-label data (class indices, or one-hot rows) is compared by class index whatever the number of
    classes; multi-hot rows are checked and bit-packed in row blocks: extra memory O(n C / 8) bytes for the
    packed labels plus O(2^22) per block, never an (n, C) bool or float copy."""
    ql, dl = _as_array(query_labels, qname), _as_array(db_labels, dname)
    scans = {}
    for y, name, n in ((ql, qname, nq), (dl, dname, nd)):
        if y.ndim not in (1, 2):
            raise DataError(f"{name} must be class indices (n,) or multi-hot (n, C), got shape {y.shape}")
        if y.shape[0] != n:
            what = "query_codes" if name == qname else "db_codes"
            raise DataError(f"{name} has {y.shape[0]} rows but {what} has {n}")
        if y.ndim == 1:
            if y.dtype.kind == "f" and np.isnan(y).any():
                raise DataError(f"{name} contains NaN")
            if y.dtype.kind not in "iub":
                raise DataError(f"{name}: 1-D labels must be integer class indices, got dtype {y.dtype}")
            if y.size and y.min() < 0:
                raise DataError(f"{name}: class indices must be >= 0, found {int(y.min())}")
        else:
            scans[name] = _scan_multi_hot(y, name)
    if ql.ndim == 1 and dl.ndim == 1:
        return "class", ql.astype(np.int64), dl.astype(np.int64), np.zeros(nq, bool)
    C = (ql if ql.ndim == 2 else dl).shape[1]
    for y, name in ((ql, qname), (dl, dname)):
        if y.ndim == 1 and y.size and y.max() >= C:
            raise DataError(f"{name}: class index {int(y.max())} is out of range for {C} classes")
    if ql.ndim == 2 and dl.ndim == 2 and ql.shape[1] != dl.shape[1]:
        raise DataError(f"{qname} have {ql.shape[1]} classes but {dname} have {dl.shape[1]}")
    qcount, qfirst = scans[qname] if ql.ndim == 2 else (np.ones(nq, np.int64), ql.astype(np.int64))
    dcount, dfirst = scans[dname] if dl.ndim == 2 else (np.ones(nd, np.int64), dl.astype(np.int64))
    zero = qcount == 0
    if (qcount <= 1).all() and (dcount == 1).all():  # single-label (one-hot or indices): compare class indices
        return "class", np.where(zero, -1, qfirst).astype(np.int64), dfirst, zero
    qw = np_words(_packed_labels(ql.astype(np.int64) if ql.ndim == 1 else ql, C))
    dw = np_words(_packed_labels(dl.astype(np.int64) if dl.ndim == 1 else dl, C))
    signed = {np.uint8: np.int8, np.uint16: np.int16, np.uint32: np.int32, np.uint64: np.int64}[qw.dtype.type]
    return "multi", qw.view(signed), dw.view(signed), zero


# ----------------------------------------------------------------------------- chunk kernels
# Every chunk of r queries yields two things: H (r, 2(B+1)) counts of (distance, relevant) pairs over
# the whole database, and top (r, M) the relevance of the first M ranked items. All metrics follow
# from these. The CPU path uses numpy popcount and uint8 arithmetic; the torch path runs on any device.
class _Ctx:
    pass


def _cpu_chunk(c, s: int, e: int):
    """numpy path, one query row at a time so that every (N,) temporary stays in the CPU cache."""
    r, N, M = e - s, c.N, c.M
    D2 = np.empty((1, N), dist_dtype(c.B))
    D = D2[0]
    R = np.empty(N, bool)
    key = np.empty(N, np.uint8 if c.B <= 127 else np.int16)
    kt = torch.from_numpy(key)
    wbuf = np.empty(N, c.dwords.dtype)
    H = torch.empty((r, c.nbins), dtype=torch.int64)
    ap = np.zeros(r)
    hits = np.zeros((r, len(c.cuts)))
    K = c.K
    for i in range(r):
        np_hamming_block(c.qwords[s + i:s + i + 1], c.dwords, D2, wbuf)
        if c.kind == "class":
            np.equal(c.dlab, c.qlab[s + i], out=R)
        else:
            R[:] = False
            for w in range(c.dlab.shape[0]):
                R |= np.bitwise_and(c.dlab[w], c.qlab[s + i, w]) != 0
        np.add(D, D, out=key, casting="unsafe")
        np.add(key, R, out=key, casting="unsafe")
        h = torch.bincount(kt, minlength=c.nbins)
        H[i] = h
        hn = h.numpy()
        if c.ties == "numpy":  # DeepHash-pytorch: np.argsort(float32 hamm) with numpy's default kind
            top = R[np.argsort(D.astype(np.float32))[:M]]
        elif M == N:
            top = R[np.argsort(D, kind="stable")]
        else:  # only items up to the distance group holding rank M can enter the top M
            dstar = int(np.searchsorted(np.cumsum(hn[0::2] + hn[1::2]), M))
            cand = np.flatnonzero(D <= dstar)
            top = R[cand[np.argsort(D[cand], kind="stable")[:M]]]
        pos = np.flatnonzero(top)  # 0-based ranks of the relevant items among the first M
        nk = int(np.searchsorted(pos, K))
        S = float((np.arange(1, nk + 1) / (pos[:nk] + 1.0)).sum())
        norm = nk if c.normalizer == "retrieved" else min(K, int(hn[1::2].sum()))
        ap[i] = S / norm if norm else 0.0
        hits[i] = np.searchsorted(pos, c.cuts)
    return H, ap, hits


def _numba_chunk(c, s: int, e: int):
    """Compiled path: one pass over the database per query, no sort (see :mod:`._kernels`)."""
    r = e - s
    H = np.empty((r, c.nbins), np.int64)
    ap = np.empty(r)
    hits = np.empty((r, len(c.cuts)), np.int64)
    c.kernel(c.qwords, c.dwords, c.qlab, c.dlab, c.kind == "multi", s, e, c.K, c.M, c.cuts,
             c.normalizer == "min_k_relevant", H, ap, hits)
    return torch.from_numpy(H), ap, hits


def _torch_chunk(c, s: int, e: int):
    r = e - s
    D = torch_hamming_block(c.qp[s:e], c.dp)
    if c.kind == "class":
        R = c.dlab[None, :] == c.qlab[s:e, None]
    else:
        R = torch.zeros(D.shape, dtype=torch.bool, device=D.device)
        for w in range(c.dlab.shape[0]):
            R |= (c.dlab[w][None, :] & c.qlab[s:e, w][:, None]) != 0
    key = (D + D + R).long() + torch.arange(r, device=D.device)[:, None] * c.nbins
    H = torch.bincount(key.view(-1), minlength=r * c.nbins).view(r, c.nbins)
    if c.ties == "numpy":
        top = torch.from_numpy(np.take_along_axis(R.cpu().numpy(), np.argsort(
            D.cpu().numpy().astype(np.float32), axis=1)[:, :c.M], 1)).to(D.device)
    else:
        top = torch.gather(R, 1, torch.sort(D, dim=1, stable=True).indices[:, :c.M])
    Rq = H[:, 1::2].sum(1).to(torch.float64)
    ap, hits = _rank_stats(top, c.K, c.cuts, c.normalizer, Rq)
    return H, ap.cpu().numpy(), hits.cpu().numpy()


def _rank_stats(top: torch.Tensor, K: int, cuts, normalizer: str, Rq: torch.Tensor):
    """From the relevance of the first M ranked items: AP@K and the hit counts at each rank in ``cuts``."""
    cs = top.cumsum(1, dtype=torch.int32)  # cumulative hits over the first M ranks
    csK = cs[:, :K].to(torch.float64)
    ranks = torch.arange(1, K + 1, dtype=torch.float64, device=top.device)
    S = (top[:, :K] * (csK / ranks)).sum(1)
    if normalizer == "retrieved":
        norm = csK[:, -1]
    else:
        norm = torch.minimum(Rq, torch.full_like(Rq, float(K)))
    ap = torch.where(norm > 0, S / norm.clamp(min=1), torch.zeros_like(S))
    idx = torch.as_tensor([int(n) - 1 for n in cuts], dtype=torch.long, device=top.device)
    return ap, cs[:, idx].to(torch.float64)


def _tie_aware_ap(n, npos, K: int, Rall, harm, lfact, normalizer: str):
    """Expected AP@K over random orderings inside tie groups, from per-distance counts (r, B+1) float64."""
    cn = n.cumsum(1)
    L = cn - n
    Lp = npos.cumsum(1) - npos
    dstar = (cn < K).sum(1, keepdim=True)  # boundary group index (groups < dstar are fully inside the top K)

    def h1(Lb, cnt):  # sum_{t=L+1}^{L+cnt} 1/t
        return harm[(Lb + cnt).long()] - harm[Lb.long()]

    ratio = torch.where(n > 1, (npos - 1) / (n - 1).clamp(min=1), torch.zeros_like(n))
    H1 = h1(L, n)
    H2 = n - (L + 1) * H1
    E = torch.where(n > 0, npos / n.clamp(min=1), torch.zeros_like(n)) * ((Lp + 1) * H1 + ratio * H2)
    d = torch.arange(n.shape[1], device=n.device)[None, :]
    S_prev = torch.where(d < dstar, E, torch.zeros_like(E)).sum(1)
    nb = n.gather(1, dstar)[:, 0]
    pb = npos.gather(1, dstar)[:, 0]
    Lb = L.gather(1, dstar)[:, 0]
    Lpb = Lp.gather(1, dstar)[:, 0]
    m = K - Lb
    H1c = h1(Lb, m)
    H2c = m - (Lb + 1) * H1c
    if normalizer == "min_k_relevant":
        rb = torch.where(nb > 1, (pb - 1) / (nb - 1).clamp(min=1), torch.zeros_like(nb))
        E_cut = pb / nb * ((Lpb + 1) * H1c + rb * H2c)
        norm = torch.minimum(Rall, torch.full_like(Rall, float(K)))
        return torch.where(norm > 0, (S_prev + E_cut) / norm.clamp(min=1), torch.zeros_like(norm))
    # retrieved normaliser: h = relevant items among the m taken from the boundary group ~ hypergeometric
    lo = torch.clamp(m - (nb - pb), min=0)
    hi = torch.minimum(m, pb)
    W = int((hi - lo).max().item()) + 1
    h = lo[:, None] + torch.arange(W, device=n.device, dtype=n.dtype)[None, :]
    valid = h <= hi[:, None]
    hc = torch.minimum(h, hi[:, None])
    mm = m[:, None]

    def lchoose(a, b):
        a, b = a.long(), b.long()
        return lfact[a] - lfact[b] - lfact[a - b]

    logp = lchoose(pb[:, None].expand_as(hc), hc) + lchoose((nb - pb)[:, None].expand_as(hc), mm - hc)
    logp = torch.where(valid, logp, torch.full_like(logp, -math.inf))
    p = torch.exp(logp - logp.max(1, keepdim=True).values)
    p = p / p.sum(1, keepdim=True)
    pair = torch.where(mm > 1, hc * (hc - 1) / (mm * (mm - 1)).clamp(min=1), torch.zeros_like(hc))
    num = S_prev[:, None] + hc / mm * (Lpb[:, None] + 1) * H1c[:, None] + pair * H2c[:, None]
    den = Lpb[:, None] + hc
    f = torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))
    return (p * f).sum(1)


# ----------------------------------------------------------------------------- entry point
def _check_k(value, name: str, n_db: int):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0 or value > n_db:
        raise DataError(f"{name}={value!r} must be an integer in 1..{n_db} (the database size)"
                        + (" or None for the whole database" if name == "topk" else ""))
    return int(value)


def evaluate(query_codes, db_codes, query_labels, db_labels, topk: int | None = None, *, preset=None,
             bits: int | None = None, ties: str | None = None, ap_normalizer: str | None = None,
             zero_relevant: str | None = None, zero_label: str | None = None, empty_radius: str | None = None,
             drop_last: bool | None = None, seed: int | None = None, radius: int | None = None,
             precision_at=None, pr_points: int | None = None, pr_ranks=None, curves: bool = False,
             tie_aware: bool = True, device=None, backend: str | None = None, chunk: int | None = None,
             threads: int | None = None) -> dict:
    """All retrieval metrics of one evaluation, as a dict of scalars (plus curves with ``curves=True``).

    Parameters
    ----------
    query_codes, db_codes : (Q, B) / (N, B) codes, ±1 or {0,1} (numpy or torch, CPU or CUDA), or packed
        ``uint8 (n, ceil(B/8))`` when ``bits=B`` is given (layout: :mod:`hashlib_vit.retrieval.codes`).
    query_labels, db_labels : class indices (n,) or multi-hot 0/1 (n, C); relevant = shares >= 1 label.
    topk : mAP cut-off K (``None``: the whole database; a data protocol's K is ``Protocol.topk``).
    preset : the evaluation preset: ``None``/``"default"``, ``"deephash"`` or a dict of options (the result's
        ``eval_protocol`` names it, ``+custom`` when explicit options change it).
    ties, ap_normalizer, zero_relevant, zero_label, empty_radius, drop_last, seed : see the module docstring.
    radius : the Hamming radius of ``precision_radius`` / ``recall_radius`` (default 2).
    precision_at : ranks N of ``precision_at_N`` / ``recall_at_N`` (default 100, 500, 1000, 2000; defaults
        larger than the database are skipped, explicit ones must fit).
    curves : add ``pr_hamming`` (precision/recall at every radius 0..B) and ``pr_rank`` (at ``pr_ranks``,
        default ``pr_points`` ranks evenly spaced up to K) as small lists.
    tie_aware : compute ``map_tie_aware`` (expected AP@K over random tie orders).
    device : ``None`` computes on the CPU (or with torch on the codes' CUDA device); a torch device runs the
        torch path there.
    backend : ``None``/``"auto"`` (torch when ``device`` is given or the codes are on a GPU; else the compiled
        ``"numba"`` kernel when numba is installed and ``ties`` is not ``"numpy"``; else ``"numpy"``),
        ``"numba"`` (one pass over the database per query, no sort), ``"numpy"`` (vectorised per query, a
        stable radix sort) or ``"torch"`` (batched sort; CPU or CUDA). All give the same numbers.
    chunk : queries per block (numpy/torch memory is O(chunk x N) bytes). ``threads`` : CPU worker threads
        over query blocks (default: the CPU count, at most 8).
    """
    preset_name, opts = resolve_options(preset, ties=ties, ap_normalizer=ap_normalizer, zero_relevant=zero_relevant,
                                   zero_label=zero_label, empty_radius=empty_radius, drop_last=drop_last,
                                   seed=seed, radius=radius, pr_points=pr_points,
                                   precision_at=None if precision_at is None else tuple(precision_at))
    qp, qbits = as_packed(query_codes, "query_codes", bits)
    dp, dbits = as_packed(db_codes, "db_codes", bits)
    if qbits != dbits:
        raise DataError(f"query_codes have {qbits} bits but db_codes have {dbits}")
    B = qbits
    Q, N = qp.shape[0], dp.shape[0]
    kind, qlab, dlab, zero_lab = _prepare_labels(query_labels, db_labels, Q, N)

    # -- the cut-off K and the ranks the rank-based metrics need
    if opts.drop_last and (topk is None or (isinstance(topk, (int, np.integer)) and topk == -1)):
        if N < 2:
            raise DataError("drop_last (DeepHash topK=-1) needs a database of at least 2 items")
        K = N - 1
        topk_out = "all"
    else:
        K = N if topk is None else _check_k(topk, "topk", N)
        topk_out = "all" if topk is None else K
    if precision_at is None:
        p_at = [n for n in opts.precision_at if n <= N]
    else:
        p_at = [_check_k(n, "precision_at", N) for n in opts.precision_at]
    if pr_ranks is None:
        pr = sorted({max(1, round(K * i / opts.pr_points)) for i in range(1, opts.pr_points + 1)}) if curves else []
    else:
        pr = sorted({_check_k(n, "pr_ranks", N) for n in pr_ranks})
    M = max([K, *p_at, *pr])
    rad = min(int(opts.radius), B)

    # -- device / backend, prepared once
    c = _Ctx()
    c.B, c.N, c.M, c.nbins, c.kind, c.ties = B, N, M, 2 * (B + 1), kind, opts.ties
    on_gpu = any(isinstance(x, torch.Tensor) and x.device.type != "cpu" for x in (qp, dp))
    if backend in (None, "auto"):
        backend = ("torch" if device is not None or on_gpu
                   else "numba" if opts.ties != "numpy" and B < 2**15 and _kernels.available() else "numpy")
    elif backend not in BACKENDS:
        raise bad_choice("backend", backend, ("auto",) + BACKENDS)
    elif backend == "numba":
        if opts.ties == "numpy":
            raise ConfigError("backend='numba' ranks ties by database index; ties='numpy' (numpy's argsort "
                              "order, the deephash preset) needs backend='numpy' or 'torch'")
        try:
            _kernels.kernel()
        except Exception as exc:
            raise ConfigError(f"backend='numba' is not usable here ({type(exc).__name__}: {exc}); "
                              "install numba or use backend='numpy'") from exc
    use_torch = backend == "torch"
    n_threads = max(1, threads if threads is not None else min(8, os.cpu_count() or 1))  # CPU worker threads
    perm = np.random.default_rng(opts.seed).permutation(N) if opts.ties == "random" else None
    if perm is not None:  # shuffle the database once: the stable ranking then breaks ties by the permutation
        dlab = dlab[perm]
    if kind == "class":
        top_cls = max(int(dlab.max(initial=0)), int(qlab.max(initial=0)))
        lab_dt = np.int8 if top_cls < 2**7 else np.int16 if top_cls < 2**15 else np.int64
        qlab, dlab = qlab.astype(lab_dt), dlab.astype(lab_dt)
    if backend == "numba":
        nlab_q = qlab.reshape(Q, -1)
        nlab_d = np.ascontiguousarray(dlab.reshape(N, -1))
    if kind == "multi":
        dlab = np.ascontiguousarray(dlab.T)  # (words, N)
    if use_torch:
        # the device asked for, else the codes' GPU, else the CPU (backend="torch" on CPU arrays or tensors)
        # (resolve_device: a ConfigError for a CUDA device on a machine without CUDA)
        dev = resolve_device(device) if device is not None else next(
            (x.device for x in (qp, dp) if isinstance(x, torch.Tensor) and x.device.type != "cpu"), torch.device("cpu"))
        c.qp = torch.as_tensor(qp).to(dev)
        c.dp = torch.as_tensor(dp).to(dev)
        if perm is not None:
            c.dp = c.dp[torch.from_numpy(perm).to(dev)]
        c.qlab, c.dlab = torch.from_numpy(qlab).to(dev), torch.from_numpy(dlab).to(dev)
        chunk_fn = _torch_chunk
        default_chunk = 2**27 // (N * max(8, c.qp.shape[1]))
    else:
        dev = torch.device("cpu")
        qp = qp.cpu().numpy() if isinstance(qp, torch.Tensor) else qp
        dp = dp.cpu().numpy() if isinstance(dp, torch.Tensor) else dp
        if backend == "numba":
            c.qwords, c.dwords = np_words(qp, wide=True), np_words(dp, wide=True)
            c.qlab, c.dlab, c.kernel = nlab_q, nlab_d, _kernels.kernel()
            chunk_fn = _numba_chunk
            # memory is O(N) per block whatever its size: blocks only balance the worker threads
            default_chunk = max(1, min(1024, -(-Q // (4 * n_threads))))
        else:
            c.qwords, c.dwords = np_words(qp), np_words(dp)
            c.qlab, c.dlab = qlab, dlab
            chunk_fn = _cpu_chunk
            default_chunk = 2**23 // N
        if perm is not None:
            c.dwords = np.ascontiguousarray(c.dwords[perm])
    chunk = max(1, min(Q, int(default_chunk if chunk is None else chunk)))
    harm = torch.cat([torch.zeros(1, dtype=torch.float64),
                      torch.cumsum(1.0 / torch.arange(1, N + 1, dtype=torch.float64), 0)]).to(dev)
    lfact = torch.lgamma(torch.arange(N + 2, dtype=torch.float64) + 1).to(dev)
    cuts = list(p_at) + list(pr)
    c.K, c.cuts, c.normalizer = K, np.asarray(cuts, dtype=np.int64), opts.ap_normalizer

    ap = np.zeros(Q)
    ap_t = np.zeros(Q)
    rall = np.zeros(Q)
    rad_p = np.zeros((Q, B + 1))
    rad_r = np.zeros((Q, B + 1))
    hits_at = np.zeros((Q, len(cuts)))

    def work(s):
        e = min(Q, s + chunk)
        H, apq, hits = chunk_fn(c, s, e)
        H = H.to(torch.float64)
        n = H[:, 0::2] + H[:, 1::2]
        npos = H[:, 1::2]
        cn = n.cumsum(1)
        cp = npos.cumsum(1)
        Rq = cp[:, -1]
        rad_p[s:e] = torch.where(cn > 0, cp / cn.clamp(min=1), torch.full_like(cp, math.nan)).cpu().numpy()
        rad_r[s:e] = torch.where(Rq[:, None] > 0, cp / Rq[:, None].clamp(min=1), torch.zeros_like(cp)).cpu().numpy()
        ap[s:e] = apq
        hits_at[s:e] = hits
        rall[s:e] = Rq.cpu().numpy()
        if tie_aware:
            ap_t[s:e] = _tie_aware_ap(n, npos, K, Rq, harm, lfact, opts.ap_normalizer).cpu().numpy()

    starts = range(0, Q, chunk)
    if use_torch:
        for s0 in starts:
            work(s0)
    else:  # numpy and torch release the GIL: chunks run in a few threads, torch kept single-threaded
        workers = min(len(starts), n_threads)
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            if workers == 1:
                for s0 in starts:
                    work(s0)
            else:
                with ThreadPoolExecutor(workers) as ex:
                    list(ex.map(work, starts))
        finally:
            torch.set_num_threads(prev)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_at_v = hits_at[:, :len(p_at)] / np.asarray(p_at, dtype=float)
        r_at_v = np.where(rall[:, None] > 0, hits_at[:, :len(p_at)] / np.maximum(rall, 1)[:, None], 0.0)
        pr_p = hits_at[:, len(p_at):] / np.asarray(pr, dtype=float)
        pr_r = np.where(rall[:, None] > 0, hits_at[:, len(p_at):] / np.maximum(rall, 1)[:, None], 0.0)

    zero_rel = (rall == 0) & ~zero_lab
    counted = np.ones(Q, bool)
    if opts.zero_label == "exclude":
        counted &= ~zero_lab
    if opts.zero_relevant == "exclude":
        counted &= ~zero_rel
    if not counted.any():
        raise DataError(f"no query is left to average: all {Q} queries have no relevant database item and "
                        f"zero_relevant={opts.zero_relevant!r}, zero_label={opts.zero_label!r}")

    def mean(v):
        return float(v[counted].mean())

    def radius_mean(col):
        v = rad_p[counted, col]
        if opts.empty_radius == "zero":
            return float(np.nan_to_num(v, nan=0.0).mean())
        v = v[~np.isnan(v)]
        return float(v.mean()) if v.size else None

    out = {
        "map": mean(ap),
        "topk": topk_out,
        "n_query": int(Q),
        "n_database": int(N),
    }
    if tie_aware:
        out["map_tie_aware"] = mean(ap_t)
    out[f"precision_radius{rad}"] = radius_mean(rad)
    out[f"recall_radius{rad}"] = mean(rad_r[:, rad])
    for j, nn in enumerate(p_at):
        out[f"precision_at_{nn}"] = mean(p_at_v[:, j])
    for j, nn in enumerate(p_at):
        out[f"recall_at_{nn}"] = mean(r_at_v[:, j])
    out.update({
        "bits": int(B),
        "topk_items": int(K),
        "n_counted": int(counted.sum()),
        "n_zero_relevant": int(zero_rel.sum()),
        "n_zero_label": int(zero_lab.sum()),
        "eval_protocol": preset_name,
        "ties": opts.ties,
        "ap_normalizer": opts.ap_normalizer,
        "zero_relevant": opts.zero_relevant,
        "zero_label": opts.zero_label,
        "empty_radius": opts.empty_radius,
        "backend": backend,
    })
    if curves:
        out["pr_hamming"] = {"radius": list(range(B + 1)),
                             "precision": [radius_mean(c) for c in range(B + 1)],
                             "recall": [mean(rad_r[:, c]) for c in range(B + 1)]}
        out["pr_rank"] = {"rank": pr, "precision": [mean(pr_p[:, j]) for j in range(len(pr))],
                          "recall": [mean(pr_r[:, j]) for j in range(len(pr))]}
    return out


def options_dict(opts: EvalOptions) -> dict:
    return asdict(opts)
