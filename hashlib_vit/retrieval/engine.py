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

Presets (``protocol=``): ``"default"`` (the values above) and ``"deephash"`` (ties ``numpy``,
normaliser ``retrieved``, zero-relevant and zero-label queries count as 0, ``drop_last``): a
compatibility mode reproducing DeepHash-pytorch's ``CalcTopMap`` numbers on float32 ±1 codes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch

from ..errors import ConfigError, DataError, bad_choice
from .codes import as_packed, dist_dtype, np_hamming_block, np_words, torch_hamming_block

__all__ = ["EvalOptions", "PRESETS", "evaluate", "resolve_options"]


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


def resolve_options(protocol=None, **overrides) -> tuple[str, EvalOptions]:
    """(preset name, options): a preset name / dict / ``data.Protocol`` plus explicit overrides."""
    name = "default"
    base: dict = {}
    if protocol is None:
        pass
    elif isinstance(protocol, str):
        if protocol not in PRESETS:
            raise bad_choice("protocol", protocol, PRESETS)
        name, base = protocol, dict(PRESETS[protocol])
    elif isinstance(protocol, dict):
        name, base = "custom", dict(protocol)
    elif hasattr(protocol, "topk") and hasattr(protocol, "name"):  # a hashlib_vit.data.Protocol
        name = "default"
    else:
        raise ConfigError(f"protocol={protocol!r} must be None, a preset name ({', '.join(PRESETS)}), "
                          "a dict of options or a data Protocol")
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


def _prepare_labels(query_labels, db_labels, nq: int, nd: int, qname="query_labels", dname="db_labels"):
    """-> ("class", qcls (Q,) int64, dcls (N,) int64, zero_label (Q,) bool) or ("multi", qwords, dwords, zero)."""
    ql, dl = _as_array(query_labels, qname), _as_array(db_labels, dname)
    for y, name, n in ((ql, qname, nq), (dl, dname, nd)):
        if y.ndim not in (1, 2):
            raise DataError(f"{name} must be class indices (n,) or multi-hot (n, C), got shape {y.shape}")
        if y.shape[0] != n:
            what = "query_codes" if name == qname else "db_codes"
            raise DataError(f"{name} has {y.shape[0]} rows but {what} has {n}")
        if y.dtype.kind == "f" and np.isnan(y).any():
            raise DataError(f"{name} contains NaN")
        if y.ndim == 1:
            if y.dtype.kind not in "iub":
                raise DataError(f"{name}: 1-D labels must be integer class indices, got dtype {y.dtype}")
            if y.size and y.min() < 0:
                raise DataError(f"{name}: class indices must be >= 0, found {int(y.min())}")
        elif not np.isin(y, (0, 1)).all():
            bad = y[~np.isin(y, (0, 1))].flat[0]
            raise DataError(f"{name}: multi-hot labels must be 0/1, found {bad!r}")
    if ql.ndim == 1 and dl.ndim == 1:
        return "class", ql.astype(np.int64), dl.astype(np.int64), np.zeros(nq, bool)
    C = (ql if ql.ndim == 2 else dl).shape[1]

    def multi_hot(y, name):
        if y.ndim == 2:
            return y.astype(bool)
        if y.size and y.max() >= C:
            raise DataError(f"{name}: class index {int(y.max())} is out of range for {C} classes")
        out = np.zeros((len(y), C), bool)
        out[np.arange(len(y)), y] = True
        return out

    qm, dm = multi_hot(ql, qname), multi_hot(dl, dname)
    if qm.shape[1] != dm.shape[1]:
        raise DataError(f"{qname} have {qm.shape[1]} classes but {dname} have {dm.shape[1]}")
    zero = ~qm.any(1)
    if (qm.sum(1) <= 1).all() and (dm.sum(1) == 1).all():  # single-label given as one-hot: fast path
        qc = np.where(zero, -1, qm.argmax(1)).astype(np.int64)
        return "class", qc, dm.argmax(1).astype(np.int64), zero
    qw = np_words(np.packbits(qm, axis=1))
    dw = np_words(np.packbits(dm, axis=1))
    signed = {np.uint8: np.int8, np.uint16: np.int16, np.uint32: np.int32, np.uint64: np.int64}[qw.dtype.type]
    return "multi", qw.view(signed), dw.view(signed), zero


# ----------------------------------------------------------------------------- chunk kernels
def _relevance(kind, qlab, dlab, s, e) -> torch.Tensor:
    if kind == "class":
        return dlab[None, :] == qlab[s:e, None]
    rel = None
    for w in range(dlab.shape[1]):
        r = (dlab[None, :, w] & qlab[s:e, None, w]) != 0
        rel = r if rel is None else rel | r
    return rel


def _row_hist(key: torch.Tensor, nbins: int) -> torch.Tensor:
    r = key.shape[0]
    if key.device.type == "cpu":
        return torch.stack([torch.bincount(key[i], minlength=nbins) for i in range(r)])
    off = torch.arange(r, device=key.device)[:, None] * nbins
    return torch.bincount((key.long() + off).view(-1), minlength=r * nbins).view(r, nbins)


def _top_relevance(D, Rl, M: int, cn: torch.Tensor, ties: str) -> torch.Tensor:
    """(r, M) bool: relevance of the first M items of each query's ranking (D: distances, Rl: relevance)."""
    r, N = D.shape
    if ties == "numpy" or D.device.type == "cpu":
        Dn, Rn = D.cpu().numpy(), Rl.cpu().numpy()
        if ties == "numpy":  # DeepHash-pytorch: np.argsort(float32 hamm) (default kind), row by row
            order = np.argsort(Dn.astype(np.float32), axis=1)[:, :M]
            out = np.take_along_axis(Rn, order, 1)
        elif M == N:
            out = np.take_along_axis(Rn, np.argsort(Dn, axis=1, kind="stable"), 1)
        else:
            dstar = (cn < M).sum(1).cpu().numpy()  # the distance group holding rank M
            out = np.empty((r, M), bool)
            for i in range(r):
                cand = np.flatnonzero(Dn[i] <= dstar[i])
                o = np.argsort(Dn[i, cand], kind="stable")[:M]
                out[i] = Rn[i, cand[o]]
        return torch.from_numpy(out).to(D.device)
    order = torch.sort(D, dim=1, stable=True).indices[:, :M]
    return torch.gather(Rl, 1, order)


def _lchoose(a, b):
    return torch.lgamma(a + 1) - torch.lgamma(b + 1) - torch.lgamma(a - b + 1)


def _tie_aware_ap(n, npos, K: int, Rall, harm, normalizer: str):
    """Expected AP@K over random orderings inside tie groups, from per-distance counts (r, B+1) float64."""
    cn = n.cumsum(1)
    L = cn - n
    Lp = npos.cumsum(1) - npos
    dstar = (cn < K).sum(1, keepdim=True)  # boundary group index (groups < dstar are fully inside the top K)
    Li = L.long()

    def h1(Lb, cnt):  # sum_{t=L+1}^{L+cnt} 1/t
        return harm[(Lb + cnt).long()] - harm[Lb.long()]

    ratio = torch.where(n > 1, (npos - 1) / (n - 1).clamp(min=1), torch.zeros_like(n))
    H1 = harm[(Li + n.long())] - harm[Li]
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
    logp = _lchoose(pb[:, None], hc) + _lchoose((nb - pb)[:, None], m[:, None] - hc)
    logp = torch.where(valid, logp, torch.full_like(logp, -math.inf))
    p = torch.exp(logp - logp.max(1, keepdim=True).values)
    p = p / p.sum(1, keepdim=True)
    mm = m[:, None]
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


def evaluate(query_codes, db_codes, query_labels, db_labels, topk: int | None = None, *, protocol=None,
             bits: int | None = None, ties: str | None = None, ap_normalizer: str | None = None,
             zero_relevant: str | None = None, zero_label: str | None = None, empty_radius: str | None = None,
             drop_last: bool | None = None, seed: int | None = None, radius: int | None = None,
             precision_at=None, pr_points: int | None = None, pr_ranks=None, curves: bool = False,
             tie_aware: bool = True, device=None, chunk: int | None = None) -> dict:
    """All retrieval metrics of one evaluation, as a dict of scalars (plus curves with ``curves=True``).

    Parameters
    ----------
    query_codes, db_codes : (Q, B) / (N, B) codes, ±1 or {0,1} (numpy or torch, CPU or CUDA), or packed
        ``uint8 (n, ceil(B/8))`` when ``bits=B`` is given (layout: :mod:`hashlib_vit.retrieval.codes`).
    query_labels, db_labels : class indices (n,) or multi-hot 0/1 (n, C); relevant = shares >= 1 label.
    topk : mAP cut-off K (``None``: the whole database). ``protocol``: ``None``/``"default"``,
        ``"deephash"``, a dict of options, or a ``data.Protocol`` (its ``topk`` is used when ``topk`` is None).
    ties, ap_normalizer, zero_relevant, zero_label, empty_radius, drop_last, seed : see the module docstring.
    radius : the Hamming radius of ``precision_radius`` / ``recall_radius`` (default 2).
    precision_at : ranks N of ``precision_at_N`` / ``recall_at_N`` (default 100, 500, 1000, 2000; defaults
        larger than the database are skipped, explicit ones must fit).
    curves : add ``pr_hamming`` (precision/recall at every radius 0..B) and ``pr_rank`` (at ``pr_ranks``,
        default ``pr_points`` ranks evenly spaced up to K) as small lists.
    tie_aware : compute ``map_tie_aware`` (expected AP@K over random tie orders).
    device : ``None`` runs numpy popcount on CPU (or torch on the codes' CUDA device); a torch device runs
        the torch path there. ``chunk`` : queries per block (memory is O(chunk x N) bytes).
    """
    preset, opts = resolve_options(protocol, ties=ties, ap_normalizer=ap_normalizer, zero_relevant=zero_relevant,
                                   zero_label=zero_label, empty_radius=empty_radius, drop_last=drop_last,
                                   seed=seed, radius=radius, pr_points=pr_points,
                                   precision_at=None if precision_at is None else tuple(precision_at))
    if topk is None and protocol is not None and hasattr(protocol, "topk") and not isinstance(protocol, dict):
        topk = protocol.topk
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

    # -- device / backend
    use_torch = device is not None or any(isinstance(x, torch.Tensor) and x.device.type != "cpu" for x in (qp, dp))
    if use_torch:
        dev = torch.device(device) if device is not None else (qp.device if isinstance(qp, torch.Tensor)
                                                               and qp.device.type != "cpu" else dp.device)
        qp_t, dp_t = torch.as_tensor(qp).to(dev), torch.as_tensor(dp).to(dev)
    else:
        dev = torch.device("cpu")
        qp = qp.cpu().numpy() if isinstance(qp, torch.Tensor) else qp
        dp = dp.cpu().numpy() if isinstance(dp, torch.Tensor) else dp
        qwords, dwords = np_words(qp), np_words(dp)
    qlab_t = torch.from_numpy(qlab).to(dev)
    dlab_np = dlab
    if opts.ties == "random":  # shuffle the database once: stable ranking then breaks ties by the permutation
        perm = np.random.default_rng(opts.seed).permutation(N)
        dlab_np = dlab[perm]
        if use_torch:
            dp_t = dp_t[torch.from_numpy(perm).to(dev)]
        else:
            dwords = np.ascontiguousarray(dwords[perm])
    if kind == "class":
        small = max(int(dlab_np.max(initial=0)), int(qlab.max(initial=0))) < 2**15
        dlab_t = torch.from_numpy(dlab_np.astype(np.int16 if small else np.int64)).to(dev)
        qlab_t = qlab_t.to(torch.int16 if small else torch.int64)
    else:
        dlab_t = torch.from_numpy(np.ascontiguousarray(dlab_np)).to(dev)
    harm = torch.cat([torch.zeros(1, dtype=torch.float64),
                      torch.cumsum(1.0 / torch.arange(1, N + 1, dtype=torch.float64), 0)]).to(dev)

    if chunk is None:
        chunk = 2**21 // N if not use_torch else 2**27 // (N * max(8, qp_t.shape[1]))
    chunk = max(1, min(Q, int(chunk)))
    nbins = 2 * (B + 1)
    f64 = torch.float64
    ap = np.zeros(Q)
    ap_t = np.zeros(Q)
    rall = np.zeros(Q)
    rad_p = np.zeros((Q, B + 1))
    rad_r = np.zeros((Q, B + 1))
    p_at_v = np.zeros((Q, len(p_at)))
    r_at_v = np.zeros((Q, len(p_at)))
    pr_p = np.zeros((Q, len(pr)))
    pr_r = np.zeros((Q, len(pr)))
    ranks = torch.arange(1, K + 1, dtype=f64, device=dev)
    Dbuf = None if use_torch else np.empty((chunk, N), dist_dtype(B))
    wbuf = None if use_torch else np.empty(N, dwords.dtype)
    for s in range(0, Q, chunk):
        e = min(Q, s + chunk)
        r = e - s
        if use_torch:
            D = torch_hamming_block(qp_t[s:e], dp_t)
            if B <= 127:
                D = D.to(torch.uint8)
        else:
            Dn = np_hamming_block(qwords[s:e], dwords, Dbuf[:r], wbuf)
            D = torch.from_numpy(Dn)
            if B > 127:
                D = D.to(torch.int16)
        Rl = _relevance(kind, qlab_t, dlab_t, s, e)
        key = D + D
        key += Rl
        H = _row_hist(key, nbins).to(f64)
        n = H[:, 0::2] + H[:, 1::2]
        npos = H[:, 1::2]
        cn = n.cumsum(1)
        cp = npos.cumsum(1)
        Rq = cp[:, -1]
        # Hamming-radius precision / recall (every radius 0..B)
        prec = torch.where(cn > 0, cp / cn.clamp(min=1), torch.full_like(cp, math.nan))
        rec = torch.where(Rq[:, None] > 0, cp / Rq[:, None].clamp(min=1), torch.zeros_like(cp))
        # rank-based metrics on the first M items of the ranking
        top = _top_relevance(D, Rl, M, cn, opts.ties)
        hits = top.cumsum(1, dtype=f64)
        topK = top[:, :K].to(f64)
        S = (topK * hits[:, :K] / ranks).sum(1)
        if opts.ap_normalizer == "retrieved":
            norm = hits[:, K - 1]
        else:
            norm = torch.minimum(Rq, torch.full_like(Rq, float(K)))
        apq = torch.where(norm > 0, S / norm.clamp(min=1), torch.zeros_like(S))
        if tie_aware:
            ap_t[s:e] = _tie_aware_ap(n, npos, K, Rq, harm, opts.ap_normalizer).cpu().numpy()
        ap[s:e] = apq.cpu().numpy()
        rall[s:e] = Rq.cpu().numpy()
        rad_p[s:e] = prec.cpu().numpy()
        rad_r[s:e] = rec.cpu().numpy()
        for j, nn in enumerate(p_at):
            p_at_v[s:e, j] = (hits[:, nn - 1] / nn).cpu().numpy()
            r_at_v[s:e, j] = torch.where(Rq > 0, hits[:, nn - 1] / Rq.clamp(min=1), torch.zeros_like(Rq)).cpu().numpy()
        for j, nn in enumerate(pr):
            pr_p[s:e, j] = (hits[:, nn - 1] / nn).cpu().numpy()
            pr_r[s:e, j] = torch.where(Rq > 0, hits[:, nn - 1] / Rq.clamp(min=1), torch.zeros_like(Rq)).cpu().numpy()

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
        "eval_protocol": preset,
        "ties": opts.ties,
        "ap_normalizer": opts.ap_normalizer,
        "zero_relevant": opts.zero_relevant,
        "zero_label": opts.zero_label,
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
