"""Pairwise distances and distance bounds of ±1 class codes (hash centres, DPN targets, OrthoHash codebooks).

Everything here scales to 10,000+ classes: pairwise distances are computed in row blocks of the upper
triangle (memory O(block x C) float32, never a C x C matrix), the mean distance in closed form from the
column sums (O(C K)), and the bounds from log-binomials.

Distances between codes ``c_i, c_j`` in {±1}^K: ``d_ij = (K - c_i . c_j) / 2`` (Hamming). The bounds, for
codes of length n with minimum distance d (A(n, d) = the largest number of such codes):

* pigeonhole: at most 2^n distinct codes (C(n, w) with exactly w ones);
* Plotkin: for 2d > n, A(n, d) <= 2 floor(d / (2d - n)); A(2d, d) <= 4d;
* Hamming (sphere packing): A(n, d) <= 2^n / V(n, floor((d-1)/2)), V(n, r) = sum_{i<=r} C(n, i);
* Gilbert-Varshamov: A(n, d) >= 2^n / V(n, d-1) (such codes exist; random draws need not find them).
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["CenterDistanceWarning", "distinct_codes", "pairwise_distance_range", "mean_pairwise_distance",
           "max_codes_upper_bound", "gv_lower_bound", "expected_close_pairs", "bits_for_random", "distance_advice",
           "count_shared"]


class CenterDistanceWarning(UserWarning):
    """Class codes are closer than asked for (or shared between classes); the message gives the numbers."""


def distinct_codes(bits: int, weight: int | None = None) -> int:
    """How many distinct codes of ``bits`` bits exist (with exactly ``weight`` ones when given)."""
    return math.comb(bits, weight) if weight is not None else 2 ** bits


def _as_pm1(codes) -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    return np.asarray(codes)


def _packed_words(codes) -> np.ndarray:
    """±1 (or 0/1) codes (C, K) -> (C, ceil(K/64)) uint64, bit set where the code is positive."""
    b = np.packbits(_as_pm1(codes) > 0, axis=1)
    pad = -b.shape[1] % 8
    if pad:
        b = np.concatenate([b, np.zeros((b.shape[0], pad), np.uint8)], axis=1)
    return np.ascontiguousarray(b).view(np.uint64)


def pairwise_distance_range(codes, stop_at: int | None = None, block_bytes: int = 2 ** 25):
    """(min, max, (i, j)) Hamming distance over all pairs i < j of ±1 codes (C, K); (i, j) is a closest pair.

    Computed on bit-packed codes (XOR + popcount) in row blocks of the upper triangle: time O(C^2 K / 64),
    memory O(block_bytes + C K / 8), never a C x C matrix. ``stop_at``: stop as soon as a pair at distance
    <= stop_at is found (the returned min is then that pair's distance, an upper bound of the true
    minimum, and max is None). Fewer than 2 codes: (K, K, None).
    """
    a = _as_pm1(codes)
    n, k = a.shape
    if n < 2:
        return k, k, None
    words = _packed_words(a)
    rows = max(1, block_bytes // (10 * n))
    lo, hi, pair = k + 1, -1, None
    for s in range(0, n - 1, rows):
        e = min(n - 1, s + rows)
        d = np.zeros((e - s, n - s), np.uint16)
        for w in range(words.shape[1]):
            d += np.bitwise_count(words[s:e, w, None] ^ words[None, s:, w])
        below = np.tri(e - s, dtype=bool)  # self pairs and pairs j < i (counted in an earlier row)
        head = d[:, :e - s]
        head[below] = k + 1
        r, col = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[r, col] < lo:
            lo, pair = int(d[r, col]), (s + int(r), s + int(col))
        if stop_at is not None and lo <= stop_at:
            return lo, None, pair
        head[below] = 0
        hi = max(hi, int(d.max()))
    return lo, hi, pair


def mean_pairwise_distance(codes) -> float:
    """Mean Hamming distance over all ordered pairs i != j, in closed form: with s = the column sums,
    sum_{i != j} c_i . c_j = |s|^2 - C K. O(C K) time and memory."""
    a = _as_pm1(codes).astype(np.int64)
    n, k = a.shape
    if n < 2:
        return float(k)
    s = a.sum(0)
    cross = int(s @ s) - n * k
    return (n * (n - 1) * k - cross) / (2 * n * (n - 1))


def _log_volume(n: int, r: int) -> float:
    """log of V(n, r) = sum_{i <= r} C(n, i) (0 <= r)."""
    r = min(r, n)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(r + 1)]
    m = max(terms)
    return m + math.log(sum(math.exp(t - m) for t in terms))


def max_codes_upper_bound(bits: int, distance: int) -> int | float:
    """An upper bound on how many codes of ``bits`` bits can be pairwise at least ``distance`` apart
    (the smaller of the Plotkin and Hamming bounds; 2^bits for distance <= 1; 1 for distance > bits)."""
    n, d = bits, distance
    if d <= 1:
        return 2 ** n
    if d > n:
        return 1
    bounds = [math.exp(n * math.log(2) - _log_volume(n, (d - 1) // 2))]
    if 2 * d > n:
        bounds.append(2 * (d // (2 * d - n)))
    elif 2 * d == n:
        bounds.append(4 * d)
    b = min(bounds)
    return int(b) if b < 2 ** 62 else b


def gv_lower_bound(bits: int, distance: int) -> float:
    """Gilbert-Varshamov: codes of ``bits`` bits at least ``distance`` apart exist in at least this number."""
    if distance <= 1:
        return float(2 ** bits)
    return math.exp(bits * math.log(2) - _log_volume(bits, distance - 1))


def _log_pair_tail(bits: int, t: int, weight: int | None) -> float:
    """log P(d <= t) for two independent random codes (i.i.d. bits, or exactly ``weight`` ones each)."""
    if t < 0:
        return -math.inf
    if weight is None:
        return _log_volume(bits, t) - bits * math.log(2)
    w = weight
    lo = max(0, math.ceil(w - t / 2))  # d = 2 (w - overlap) <= t  <=>  overlap >= w - t/2
    terms = []
    for o in range(lo, w + 1):
        if w - o > bits - w:
            continue
        terms.append(math.lgamma(w + 1) - math.lgamma(o + 1) - math.lgamma(w - o + 1)
                     + math.lgamma(bits - w + 1) - math.lgamma(w - o + 1) - math.lgamma(bits - 2 * w + o + 1)
                     - (math.lgamma(bits + 1) - math.lgamma(w + 1) - math.lgamma(bits - w + 1)))
    if not terms:
        return -math.inf
    m = max(terms)
    return m + math.log(sum(math.exp(x - m) for x in terms))


def expected_close_pairs(num_classes: int, bits: int, t: int, weight: int | None = None) -> float:
    """Expected number of pairs at distance <= t among ``num_classes`` random codes."""
    pairs = num_classes * (num_classes - 1) / 2
    lp = _log_pair_tail(bits, t, weight)
    return 0.0 if lp == -math.inf or pairs == 0 else pairs * math.exp(lp)


def bits_for_random(num_classes: int, min_distance_of, half_weight: bool, start: int, limit: int = 4096) -> int | None:
    """Smallest bit count K >= start at which fewer than one pair of ``num_classes`` random codes is expected
    below ``min_distance_of(K)`` (a function of K), i.e. where a random draw usually meets it; None past limit."""
    for k in range(max(start, 1), limit + 1):
        w = k // 2 if half_weight else None
        if expected_close_pairs(num_classes, k, min_distance_of(k) - 1, w) < 1.0:
            return k
    return None


def distance_advice(num_classes: int, bits: int, wanted: int, achieved: int, half_weight: bool,
                    min_distance_of=None) -> str:
    """Plain-words explanation of why ``num_classes`` codes of ``bits`` bits are closer than ``wanted``."""
    w = bits // 2 if half_weight else None
    lam = expected_close_pairs(num_classes, bits, wanted - 1, w)
    ub = max_codes_upper_bound(bits, wanted)
    parts = []
    if num_classes > ub:
        parts.append(f"no code of {bits} bits holds {num_classes} words pairwise >= {wanted} apart (the "
                     f"Plotkin/Hamming bounds allow at most {ub:.4g})")
    else:
        gv = gv_lower_bound(bits, wanted)
        exist = (f"codes of {num_classes} words at this distance exist (the Gilbert-Varshamov bound guarantees "
                 f"{gv:.3g} words)" if gv >= num_classes else
                 f"whether {num_classes} such codes exist is open here (Gilbert-Varshamov guarantees only {gv:.3g} "
                 f"words, the Plotkin/Hamming bounds allow up to {ub:.4g})")
        parts.append(f"a random draw has about {lam:.3g} pairs closer than {wanted}; {exist}, but random "
                     "draws do not find them")
    need = bits_for_random(num_classes, min_distance_of or (lambda k: wanted), half_weight, bits + 1)
    if need is not None:
        parts.append(f"with {need} bits or more random codes usually meet it")
    if achieved >= 0:
        parts.append(f"or ask for a minimum of at most {achieved} (the closest pair here)")
    s = "; ".join(parts)
    return s[:1].upper() + s[1:]


def count_shared(codes) -> int:
    """How many codes (rows) equal an earlier row: O(C log C) on the packed rows."""
    words = _packed_words(codes)
    return int(len(words) - len(np.unique(words, axis=0)))
