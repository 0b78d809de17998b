"""GreedyHash (Su et al., NeurIPS 2018), METHODS.md §5.7.

Forward ``b = sign(u)`` (sign(0) = +1); backward straight-through: ``dL/du := dL/db``. A bias-free
classifier ``W`` (C x K), owned by this loss and trained jointly (with the new modules' learning
rate), sees ``b``:

    L = CE(W b_i, y_i) + alpha * mean(| |u_ik| - 1 |^3)

alpha = 0.1 (CIFAR; 1 for ImageNet), exponent 3. Multi-label data (``multi_label=True``): the CE is
replaced by BCE-with-logits averaged over the classes [I].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DataError
from .base import HashLoss, LossResult


def sign_ste(u: torch.Tensor) -> torch.Tensor:
    """``sign(u)`` (0 -> +1) forward, identity gradient backward (straight-through estimator)."""
    b = torch.where(u >= 0, 1.0, -1.0).to(u.dtype)
    return u + (b - u).detach()


class GreedyHashLoss(HashLoss):
    name = "greedyhash"
    defaults = {"alpha": 0.1, "exponent": 3.0}

    def __init__(self, bits, num_classes, multi_label=False, **hp):
        super().__init__(bits, num_classes, multi_label, **hp)
        self.classifier = nn.Linear(bits, num_classes, bias=False)

    def forward(self, out, labels, index=None):
        u = out.u.float()
        b = sign_ste(u)
        logits = self.classifier(b)
        labels = labels.float()
        if self.multi_label:
            cls = F.binary_cross_entropy_with_logits(logits, labels)
        else:
            if not torch.all(labels.sum(1) == 1):
                raise DataError("greedyhash with multi_label=False needs one-hot labels; got rows with "
                                f"{sorted(set(labels.sum(1).tolist()))} labels (use multi_label=True for multi-hot data)")
            cls = F.cross_entropy(logits, labels.argmax(1))
        penalty = (u.abs() - 1).abs().pow(self.hparams["exponent"]).mean()
        total = cls + self.hparams["alpha"] * penalty
        return LossResult(total, {"cls": cls.detach(), "penalty": penalty.detach()})
