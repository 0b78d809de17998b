"""CSQ — Central Similarity Quantization (Yuan et al., CVPR 2020), METHODS.md §5.5.

Hash centers c_1..c_C in {±1}^b: the first C rows of [H_b; -H_b] (H_b Hadamard) when b is a power
of two and 2b >= C; otherwise Bernoulli(0.5) rows with exactly b/2 ones, resampled (up to 20
tries) until the minimum pairwise distance exceeds b/4 and the mean is >= b/2. A multi-label item's
center is sign(sum of its classes' centers) with zeros filled from one fixed random ±1 vector.
With h = tanh(u): mean BCE((h+1)/2, (c+1)/2) + lambda1 * mean((|h| - 1)^2). The BCE term is
computed as BCE-with-logits on 2u (since (tanh(u)+1)/2 = sigmoid(2u)): the same value, finite and
with useful gradients even where tanh saturates.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, bad_choice
from .base import HashLoss, LossResult

CENTER_METHODS = ("auto", "hadamard", "bernoulli")


def hadamard(n: int) -> np.ndarray:
    """Sylvester Hadamard matrix of order n (a power of two), entries ±1."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard order must be a power of two, got {n}")
    h = np.ones((1, 1), dtype=np.int64)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def hash_centers(num_classes: int, bits: int, seed: int = 0, method: str = "auto") -> torch.Tensor:
    """(C, K) ±1 centers: Hadamard rows when possible (method 'auto'/'hadamard'), else Bernoulli.

    Bernoulli: each row has exactly K//2 entries +1; up to 20 draws, the first that meets the
    distance criterion is returned, otherwise the draw with the largest minimum distance.
    """
    if method not in CENTER_METHODS:
        raise bad_choice("centers", method, CENTER_METHODS)
    if not isinstance(bits, int) or bits < 1 or num_classes < 1:
        raise ConfigError(f"hash centers need bits >= 1 and classes >= 1; got bits={bits!r}, classes={num_classes!r}")
    pow2 = bits >= 1 and bits & (bits - 1) == 0
    if method in ("auto", "hadamard") and pow2 and 2 * bits >= num_classes:
        h = hadamard(bits)
        return torch.from_numpy(np.concatenate([h, -h])[:num_classes]).float()
    if method == "hadamard":
        raise ConfigError(f"centers='hadamard' needs bits a power of two with 2*bits >= classes; got bits={bits}, "
                         f"classes={num_classes}")
    rng = np.random.default_rng(seed)
    best, best_score = None, -1.0
    for _ in range(20):
        c = np.full((num_classes, bits), -1, dtype=np.int64)
        for i in range(num_classes):
            c[i, rng.choice(bits, bits // 2, replace=False)] = 1
        d = (bits - c @ c.T) / 2
        off = d[~np.eye(num_classes, dtype=bool)] if num_classes > 1 else np.array([bits])
        if off.min() > bits / 4 and off.mean() >= bits / 2:
            return torch.from_numpy(c).float()
        if off.min() > best_score:
            best, best_score = c, off.min()
    return torch.from_numpy(best).float()


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
    defaults = {"lambda1": 1e-4, "centers": "auto", "center_seed": 0}

    def __init__(self, bits, num_classes, multi_label=False, **hp):
        super().__init__(bits, num_classes, multi_label, **hp)
        self.register_buffer("centers", hash_centers(num_classes, bits, self.hparams["center_seed"],
                                                     self.hparams["centers"]))
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
