"""CSQ — Central Similarity Quantization (Yuan et al., CVPR 2020), METHODS.md §5.5.

Hash centers c_1..c_C in {±1}^b: the first C rows of [H_b; -H_b] (H_b Hadamard) when b is a power
of two and 2b >= C; otherwise Bernoulli(0.5) rows with exactly b/2 ones, resampled (up to 20
tries) until the minimum pairwise distance exceeds b/4 and the mean is >= b/2 (a warning with the numbers
when no draw does; ``center_min_distance=d`` makes a minimum of d a requirement, an error when it cannot be
met; see docs/checks.md "Many classes"). A multi-label item's
center is sign(sum of its classes' centers) with zeros filled from one fixed random ±1 vector.
With h = tanh(u): mean BCE((h+1)/2, (c+1)/2) + lambda1 * mean((|h| - 1)^2). The BCE term is
computed as BCE-with-logits on 2u (since (tanh(u)+1)/2 = sigmoid(2u)): the same value, finite and
with useful gradients even where tanh saturates.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, bad_choice
from .base import HashLoss, LossResult
from .centers import (CenterDistanceWarning, count_shared, distance_advice, distinct_codes, expected_close_pairs,
                      max_codes_upper_bound, mean_pairwise_distance, pairwise_distance_range)

CENTER_METHODS = ("auto", "hadamard", "bernoulli")


def hadamard(n: int) -> np.ndarray:
    """Sylvester Hadamard matrix of order n (a power of two), entries ±1."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard order must be a power of two, got {n}")
    h = np.ones((1, 1), dtype=np.int64)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def hash_centers(num_classes: int, bits: int, seed: int = 0, method: str = "auto",
                 min_distance: int | None = None) -> torch.Tensor:
    """(C, K) float ±1 centers: Hadamard rows when possible (method 'auto'/'hadamard'), else Bernoulli.

    Bernoulli: each row has exactly K//2 entries +1 (row i from ``rng.choice`` of a PCG64 generator seeded
    with ``seed``); up to 20 draws, the first that meets the criterion is returned, otherwise the draw with
    the largest minimum pairwise Hamming distance. The criterion is CSQ's (min distance > K/4 and mean
    distance >= K/2) or, with ``min_distance``, min distance >= min_distance.

    Scale: the distances of a draw are computed in row blocks (memory O(C) rows of float32 per block, never
    C x C) and a draw is abandoned as soon as a pair shows it cannot be returned; the mean distance is
    computed in closed form. 10,000 classes x 64 bits take a few seconds. The values are those of the
    original all-pairs loop (same generator stream, same choice of draw).

    Raises ConfigError: bits/classes < 1; an unknown ``method``; 'hadamard' where it cannot serve; more
    classes than distinct codes of K bits with K//2 ones (C(K, K//2)); a ``min_distance`` that no code of
    C words and K bits can have (Plotkin/Hamming bounds) or that 20 random draws do not reach (the message
    gives the numbers and the bits at which random centres usually meet it). Warns
    (:class:`~hashlib_vit.losses.centers.CenterDistanceWarning`) when CSQ's own criterion is not met, and
    when the best draw repeated a center: the repeats are then drawn again until all C centers are
    distinct (always possible, C <= C(K, K//2) here; the other rows keep their values).
    """
    if method not in CENTER_METHODS:
        raise bad_choice("centers", method, CENTER_METHODS)
    if not isinstance(bits, int) or bits < 1 or num_classes < 1:
        raise ConfigError(f"hash centers need bits >= 1 and classes >= 1; got bits={bits!r}, classes={num_classes!r}")
    if min_distance is not None and (isinstance(min_distance, bool) or not isinstance(min_distance, (int, np.integer))
                                     or min_distance < 0):
        raise ConfigError(f"center_min_distance={min_distance!r} must be None or an integer >= 0 (bits)")
    pow2 = bits >= 1 and bits & (bits - 1) == 0
    if method in ("auto", "hadamard") and pow2 and 2 * bits >= num_classes:
        h = hadamard(bits)
        c = np.concatenate([h, -h])[:num_classes]
        got = pairwise_distance_range(c)[0]
        if min_distance is None or got >= min_distance or method == "hadamard":
            if min_distance is not None and got < min_distance:
                raise ConfigError(f"center_min_distance={min_distance}: Hadamard centers of {bits} bits for "
                                  f"{num_classes} classes are {got} apart; " +
                                  distance_advice(num_classes, bits, int(min_distance), got, True))
            return torch.from_numpy(c).float()
    if method == "hadamard":
        raise ConfigError(f"centers='hadamard' needs bits a power of two with 2*bits >= classes; got bits={bits}, "
                         f"classes={num_classes}")
    w = bits // 2
    n_codes = distinct_codes(bits, w)
    if num_classes > n_codes:
        need = next(k for k in range(bits, 4 * bits + 64) if distinct_codes(k, k // 2) >= num_classes)
        raise ConfigError(f"hash centers: {num_classes} classes cannot have distinct centers of {bits} bits: there "
                          f"are only {n_codes} codes of {bits} bits with exactly {w} ones (C({bits}, {w})); "
                          f"use at least {need} bits")
    if min_distance is not None:
        ub = max_codes_upper_bound(bits, int(min_distance))
        if num_classes > ub:
            raise ConfigError(f"center_min_distance={min_distance} cannot be met: {num_classes} classes at {bits} "
                              f"bits — " + distance_advice(num_classes, bits, int(min_distance), -1, True))
    crit = bits // 4 if min_distance is None else int(min_distance) - 1  # a draw fails on a pair at distance <= crit
    hopeless = min_distance is not None and expected_close_pairs(num_classes, bits, crit, w) > 30
    rng = np.random.default_rng(seed)
    choice, rows = rng.choice, np.repeat(np.arange(num_classes), w)
    best, best_score = None, -1
    for _ in range(20):
        c = np.full((num_classes, bits), -1, dtype=np.int8)
        c[rows, np.concatenate([choice(bits, w, replace=False) for _ in range(num_classes)])] = 1
        mean_ok = min_distance is not None or mean_pairwise_distance(c) >= bits / 2
        # this draw is returned only if it passes (min > crit and mean_ok) or beats the best so far (min > best):
        # stop scanning as soon as a pair rules both out
        stop = min(crit, best_score) if mean_ok else best_score
        got = pairwise_distance_range(c, stop_at=stop)[0]
        if got > crit and mean_ok:
            return torch.from_numpy(c).float()
        if got > best_score:
            best, best_score = c, got
        if hopeless:
            break
    if min_distance is not None:
        raise ConfigError(f"center_min_distance={min_distance} not reached: {num_classes} classes at {bits} bits, "
                          f"the best of the random draws has its closest centers {best_score} apart; "
                          + distance_advice(num_classes, bits, int(min_distance), best_score, True))
    if best_score == 0:  # classes sharing a center cannot be told apart: redraw the repeats (C <= C(K, K/2) here)
        shared = count_shared(best)
        best = _redraw_repeats(best, rng, w)
        best_score = pairwise_distance_range(best)[0]
        warnings.warn(f"hash centers: {shared} of {num_classes} classes shared a center in the best random draw at "
                      f"{bits} bits; their repeats were drawn again until every center is distinct",
                      CenterDistanceWarning, stacklevel=2)
    mean = mean_pairwise_distance(best)
    if best_score <= crit or mean < bits / 2:
        dup = f"; {count_shared(best)} classes share a center with another class" if best_score == 0 else ""
        warnings.warn(f"hash centers: {num_classes} classes at {bits} bits: the closest two centers are "
                      f"{best_score} bits apart (mean {mean:.2f}){dup}; CSQ asks for more than {bits / 4:g} "
                      f"(bits/4) and a mean >= {bits / 2:g}. " + distance_advice(
                          num_classes, bits, crit + 1, best_score, True, lambda k: k // 4 + 1)
                      + (". Classes that share a center cannot be told apart by this loss." if best_score == 0 else
                         ". Training works, but classes with close centers are harder to tell apart."),
                      CenterDistanceWarning, stacklevel=2)
    return torch.from_numpy(best).float()


def _redraw_repeats(c: np.ndarray, rng: np.random.Generator, w: int) -> np.ndarray:
    """``c`` (C, K) int8 ±1 with each row that repeats an earlier one drawn again (``w`` entries +1, from
    ``rng``) until all rows are distinct. Needs C <= C(K, w); the expected number of draws is at most
    about C(K, w) * ln(C(K, w) / (C(K, w) - C + 1)) (the coupon collector's)."""
    c = c.copy()
    bits = c.shape[1]
    seen: set[bytes] = set()
    for i in range(len(c)):
        while c[i].tobytes() in seen:
            c[i] = -1
            c[i, rng.choice(bits, w, replace=False)] = 1
        seen.add(c[i].tobytes())
    return c


def fill_vector(bits: int, seed: int) -> torch.Tensor:
    """The one fixed random ±1 vector that fills ties of multi-label targets."""
    g = np.random.default_rng(seed)
    return torch.from_numpy(np.where(g.random(bits) < 0.5, -1.0, 1.0)).float()


def label_targets(labels: torch.Tensor, centers: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """±1 target per item: ``sign(sum of the centers of its labels)``, zero entries taken from ``fill``.

    For one-hot labels this is the class's own center (CSQ, DPN; METHODS §5.5-5.6).
    """
    s = labels.float() @ centers
    return torch.where(s > 0, 1.0, torch.where(s < 0, -1.0, fill.expand_as(s)))


class CSQLoss(HashLoss):
    name = "csq"
    defaults = {"lambda1": 1e-4, "centers": "auto", "center_seed": 0, "center_min_distance": None}

    def __init__(self, bits, num_classes, multi_label=False, **hp):
        super().__init__(bits, num_classes, multi_label, **hp)
        self.register_buffer("centers", hash_centers(num_classes, bits, self.hparams["center_seed"],
                                                     self.hparams["centers"], self.hparams["center_min_distance"]))
        self.register_buffer("fill", fill_vector(bits, self.hparams["center_seed"] + 1))

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """±1 center of every item (single-label: its class center; multi-label: sign of the sum)."""
        return label_targets(labels, self.centers, self.fill)

    def forward(self, out, labels, index=None):
        u = out.u.float()
        h = torch.tanh(u)
        c = self.targets(labels)
        center = F.binary_cross_entropy_with_logits(2 * u, (c + 1) / 2)
        quant = (h.abs() - 1).pow(2).mean()
        total = center + self.hparams["lambda1"] * quant
        return LossResult(total, {"center": center.detach(), "quant": quant.detach()})
