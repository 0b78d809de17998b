"""numba implementation of the engine's CPU kernel (imported lazily by :mod:`._kernels`; see there)."""
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic


@intrinsic
def popcount64(typingctx, x):
    """Hardware population count of a uint64 (LLVM ``ctpop``), as an int64 (int64 + uint64 is float64 in numba)."""
    if not (isinstance(x, types.Integer) and x.bitwidth == 64):
        return None

    def codegen(context, builder, sig, args):
        return builder.ctpop(args[0])

    return types.int64(types.uint64), codegen


@numba.njit(inline="always")
def _dist(q, dw, k):
    d = 0
    for w in range(dw.shape[1]):
        d += popcount64(q[w] ^ dw[k, w])
    return d


@numba.njit(inline="always")
def _shares_label(ql, dlab, k):
    acc = ql[0] & dlab[k, 0]
    for w in range(1, dlab.shape[1]):  # no early exit: a data-dependent branch per item costs more
        acc |= ql[w] & dlab[k, w]
    return 1 if acc != 0 else 0


@numba.njit(inline="always")
def _record(d, r, m, c2, rd, ru, rv):
    """One-pass scan step: note (distance, irrelevant and relevant items before it in its tie group)."""
    rd[m] = d
    ru[m] = c2[2 * d]
    rv[m] = c2[2 * d + 1]
    c2[2 * d + r] += 1
    return m + r  # branch-free: the slot is overwritten unless the item is relevant


@numba.njit(nogil=True, boundscheck=False)
def _scan(q, ql, dw, dlab, multi, c2, rd, ru, rv):
    """Scan the database in index order: fill the (2 * distance + relevance) histogram c2 and record
    every relevant item; returns their number."""
    N = dw.shape[0]
    m = 0
    if multi:
        for k in range(N):
            m = _record(_dist(q, dw, k), _shares_label(ql, dlab, k), m, c2, rd, ru, rv)
    else:
        c = ql[0]
        for k in range(N):
            m = _record(_dist(q, dw, k), 1 if dlab[k, 0] == c else 0, m, c2, rd, ru, rv)
    return m


@numba.njit(nogil=True, cache=True, boundscheck=False)
def rank_chunk(qw, dw, qlab, dlab, multi, s, e, K, M, cuts, min_k_norm, H, ap, hits):
    """Queries s..e-1: H[i-s] (distance, relevance) counts, AP@K in ap[i-s], hits at each cut rank.

    ``M`` is the deepest rank any metric needs (K and every cut, all <= M): relevant items of tie groups
    that start after rank M are left out of the counting sort. (A first pass for the histogram and a
    second one placing only the items of groups <= M's, measured, is slower even for short rankings.)
    """
    N = dw.shape[0]
    nkeys = H.shape[1]
    ngroups = nkeys // 2
    rd = np.empty(N + 1, np.int32)  # +1: the branch-free scan writes one slot past the last relevant item
    ru = np.empty(N + 1, np.int32)
    rv = np.empty(N + 1, np.int32)
    spos = np.empty(N, np.int64)
    c2 = np.zeros(nkeys, np.int64)
    start = np.zeros(ngroups, np.int64)
    rstart = np.zeros(ngroups, np.int64)
    for i in range(s, e):
        c2[:] = 0
        m = _scan(qw[i].copy(), qlab[i].copy(), dw, dlab, multi, c2, rd, ru, rv)
        acc = 0
        racc = 0
        gmax = ngroups - 1  # the last tie group that can hold a rank <= M
        for g in range(ngroups):
            start[g] = acc
            rstart[g] = racc
            acc += c2[2 * g] + c2[2 * g + 1]
            racc += c2[2 * g + 1]
            if acc >= M and g < gmax:
                gmax = g
        for j in range(nkeys):
            H[i - s, j] = c2[j]
        for j in range(m):  # counting sort: slot = rank among the relevant items = hits at that item
            g = rd[j]
            if g <= gmax:
                spos[rstart[g] + rv[j]] = start[g] + ru[j] + rv[j] + 1
        m = rstart[gmax] + c2[2 * gmax + 1]  # relevant items in groups 0..gmax fill slots 0..m-1
        S = 0.0
        nk = 0
        for t in range(m):
            p = spos[t]
            if p > K:
                break
            S += (t + 1) / p
            nk += 1
        norm = min(K, racc) if min_k_norm else nk
        ap[i - s] = S / norm if norm > 0 else 0.0
        for c in range(cuts.shape[0]):  # relevant items at positions <= cut (positions increase with the slot)
            lo = 0
            hi = m
            while lo < hi:
                mid = (lo + hi) // 2
                if spos[mid] <= cuts[c]:
                    lo = mid + 1
                else:
                    hi = mid
            hits[i - s, c] = lo
