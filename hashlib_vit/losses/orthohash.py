"""SL-ViT's single objective: OrthoHash-style cosine-margin softmax against fixed binary class codes
(METHODS.md §3.3-3.4; Hoe et al., NeurIPS 2021, inferred for Pei & Wang 2024 — see §3.2).

Every class ``c`` owns a FIXED code ``c_c in {-1,+1}^b`` (a buffer, never learned). With
``cos_ic = v_i.c_c / (|v_i| |c_c|)``:

* single-label: ``L = CE(s (cos_i - m onehot(y_i)), y_i)`` — a margin ``m`` on the true class's cosine;
* multi-label ("label smoothing" mode): ``L = -sum_c t_ic log softmax_c(s (cos_ic - m y_ic))`` with the
  soft target ``t_i = y_i / sum(y_i)``; for one-hot labels this is exactly the single-label loss.

There is no quantization term: for ``v`` rescaled to norm ``sqrt(K)``,
``|v - sgn v|^2 = 2K (1 - cos(v, sgn v))`` and ``cos(v, c) <= cos(v, sgn v)`` for every binary ``c``, so
raising the cosine to the class code also drives ``v`` toward a vertex of the hypercube. The loss
reports that quantization error of the batch (``parts["quant"]``, see :func:`quantization_error`) so
the training log shows it falling.

Options (all [I]/[C] choices of METHODS §3 are configurable): ``s`` (a number, or ``"sqrt_bits"`` for
``sqrt(K)``, or ``"log_classes"`` for ``sqrt(2 log(C-1))``), ``m``, the codebook (``"bernoulli"``
default, ``"hadamard"``, ``"maxhd"``) and its seed, and ``binary_forward`` (cosines of ``sgn(v)`` in
the forward pass, straight-through gradient to ``v``; an ablation).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, bad_choice
from ..utils import row_blocks
from .base import HashLoss, LossResult
from .centers import CenterDistanceWarning, _packed_words, count_shared
from .csq import hash_centers

CODEBOOKS = ("bernoulli", "hadamard", "maxhd")
SCALES = ("sqrt_bits", "log_classes")


def bernoulli_codebook(num_classes: int, bits: int, seed: int = 0) -> torch.Tensor:
    """(C, K) i.i.d. Bernoulli(0.5) entries mapped to ±1, from a seeded generator (OrthoHash's default)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.where(rng.random((num_classes, bits)) < 0.5, -1.0, 1.0)).float()


def maxhd_codebook(num_classes: int, bits: int, seed: int = 0, pool: int = 4096) -> torch.Tensor:
    """(C, K) ±1 codes chosen greedily for a large minimum pairwise Hamming distance ("MaxHD").

    From ``max(pool, 4 C)`` seeded random candidates (``rng.random((n, K)) < 0.5`` -> -1, in row blocks),
    start with the first one and repeatedly add the candidate whose minimum Hamming distance to the codes
    chosen so far is largest (ties: the earliest candidate). Deterministic for a given seed. Distances by
    XOR + popcount of bit-packed candidates: time O(C n K / 64), memory O(n K) bytes (10,000 classes x 64
    bits: about a second). Up to 1,024 classes the pool is ``pool`` (4,096), as before.
    """
    rng = np.random.default_rng(seed)
    pool = max(int(pool), num_classes, 4 * num_classes if num_classes > 1024 else 0)
    cand = np.empty((pool, bits), np.int8)
    for s, e in row_blocks(pool, bits):  # the same stream as one rng.random((pool, bits)) call
        cand[s:e] = np.where(rng.random((e - s, bits)) < 0.5, -1, 1)
    words = _packed_words(cand)

    def dist(j):
        d = np.bitwise_count(words[:, 0] ^ words[j, 0]).astype(np.int32)
        for w in range(1, words.shape[1]):
            d += np.bitwise_count(words[:, w] ^ words[j, w])
        return d

    chosen = [0]
    min_d = dist(0)  # distance of every candidate to the chosen set
    min_d[0] = -1
    for _ in range(1, num_classes):
        j = int(np.argmax(min_d))
        chosen.append(j)
        np.minimum(min_d, dist(j), out=min_d)
        min_d[j] = -1  # chosen candidates stay at -1 (minimum with -1)
    return torch.from_numpy(cand[chosen]).float()


def make_codebook(method: str, num_classes: int, bits: int, seed: int = 0) -> torch.Tensor:
    """The fixed ±1 class codes: ``"bernoulli"`` | ``"hadamard"`` (rows of [H_K; -H_K]) | ``"maxhd"``.

    Raises ConfigError for an unknown method, 'hadamard' where it cannot serve, and more classes than the
    2^K distinct codes of K bits; warns (CenterDistanceWarning) when two classes get the same code.
    """
    if method not in CODEBOOKS:
        raise bad_choice("codebook", method, CODEBOOKS)
    if bits < 63 and num_classes > 2 ** bits:
        raise ConfigError(f"loss_params codebook={method!r}: {num_classes} classes cannot have distinct codes of "
                          f"{bits} bits (there are only {2 ** bits}); use at least "
                          f"{max(1, (num_classes - 1).bit_length())} bits")
    if method == "bernoulli":
        cb = bernoulli_codebook(num_classes, bits, seed)
    elif method == "hadamard":
        try:
            return hash_centers(num_classes, bits, seed, method="hadamard")
        except ValueError as err:
            raise ConfigError(f"loss_params codebook='hadamard': {err}; use codebook='bernoulli' or 'maxhd'") from None
    else:
        cb = maxhd_codebook(num_classes, bits, seed)
    shared = count_shared(cb) if num_classes > 1 else 0
    if shared:
        warnings.warn(f"loss_params codebook={method!r}: {shared} of {num_classes} classes share their code with "
                      f"another class ({bits} bits, codebook_seed={seed}); those classes cannot be told apart: use "
                      "more bits, codebook='maxhd' or another codebook_seed", CenterDistanceWarning, stacklevel=2)
    return cb


def resolve_scale(s, bits: int, num_classes: int) -> float:
    """``s`` as a number: a positive number as given, ``"sqrt_bits"`` -> sqrt(K), ``"log_classes"`` -> sqrt(2 log(C-1))."""
    if isinstance(s, str):
        if s == "sqrt_bits":
            return math.sqrt(bits)
        if s == "log_classes":
            if num_classes < 3:
                raise ConfigError(f"loss_params s='log_classes' needs at least 3 classes (sqrt(2 log(C-1))), "
                                  f"got {num_classes}")
            return math.sqrt(2.0 * math.log(num_classes - 1))
        raise bad_choice("s", s, SCALES + ("<a positive number>",))
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0:
        raise ConfigError(f"loss_params s={s!r} must be a positive number or one of {SCALES}")
    return float(s)


def binarize_ste(v: torch.Tensor) -> torch.Tensor:
    """``sgn(v)`` (sgn(0)=+1) in the forward pass, identity gradient in the backward pass."""
    b = torch.where(v >= 0, 1.0, -1.0).to(v.dtype)
    return v + (b - v).detach()


def quantization_error(v: torch.Tensor) -> torch.Tensor:
    """Per-row ``|sqrt(K) v/|v| - sgn(v)|^2 / K = 2 (1 - cos(v, sgn v))``, in [0, 2); 0 at a hypercube vertex.

    A random Gaussian ``v`` gives about ``2 (1 - sqrt(2/pi)) = 0.40``.
    """
    v = v.float()
    b = torch.where(v >= 0, 1.0, -1.0)
    return 2.0 * (1.0 - F.cosine_similarity(v, b, dim=1, eps=1e-12))


class OrthoHashLoss(HashLoss):
    """Cosine-margin softmax (CE) against a fixed ±1 codebook; one term, no quantization weight."""

    name = "orthohash"
    defaults = {"s": 8.0, "m": 0.2, "codebook": "bernoulli", "codebook_seed": 0, "binary_forward": False}

    def __init__(self, bits, num_classes, multi_label=False, **hp):
        super().__init__(bits, num_classes, multi_label, **hp)
        h = self.hparams
        self.scale = resolve_scale(h["s"], self.bits, self.num_classes)
        m = h["m"]
        if isinstance(m, bool) or not isinstance(m, (int, float)) or m < 0:
            raise ConfigError(f"loss_params m={m!r} must be a number >= 0")
        self.margin = float(m)
        if not isinstance(h["binary_forward"], bool):
            raise ConfigError(f"loss_params binary_forward={h['binary_forward']!r} must be true or false")
        self.register_buffer("codebook", make_codebook(h["codebook"], self.num_classes, self.bits,
                                                       int(h["codebook_seed"])))

    def cosines(self, v: torch.Tensor) -> torch.Tensor:
        """(n, C) cosine of every output to every class code (of ``sgn(v)`` with STE when binary_forward)."""
        v = v.float()
        if self.hparams["binary_forward"]:
            v = binarize_ste(v)
        return F.normalize(v, dim=1, eps=1e-12) @ F.normalize(self.codebook, dim=1).T

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Soft targets ``y / sum(y)`` (rows sum to 1; one-hot stays one-hot; unlabelled rows stay 0)."""
        y = labels.float()
        return y / y.sum(1, keepdim=True).clamp_min(1.0)

    def forward(self, out, labels, index=None):
        v = out.u.float()
        y = labels.float()
        cos = self.cosines(v)
        logits = self.scale * (cos - self.margin * (y > 0).float())
        t = self.targets(y)
        per_item = -(t * F.log_softmax(logits, dim=1)).sum(1)
        labelled = y.sum(1) > 0
        ce = per_item[labelled].mean() if bool(labelled.any()) else per_item.sum() * 0.0
        with torch.no_grad():
            quant = quantization_error(v).mean()
            cos_target = ((cos * t).sum(1)[labelled]).mean() if bool(labelled.any()) else cos.new_zeros(())
        return LossResult(ce, {"ce": ce.detach(), "quant": quant.detach(), "cos_target": cos_target.detach()})


__all__ = ["OrthoHashLoss", "make_codebook", "bernoulli_codebook", "maxhd_codebook", "quantization_error",
           "binarize_ste", "resolve_scale", "CODEBOOKS", "SCALES"]
