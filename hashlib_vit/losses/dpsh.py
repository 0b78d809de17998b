"""DPSH — Deep Pairwise-Supervised Hashing (Li et al., IJCAI 2016), METHODS.md §5.2.

``Theta_ij = 1/2 u_i.u_j``; mean over pairs (in-batch ordered pairs i != j, or batch x memory bank)
of ``softplus(Theta_ij) - s_ij Theta_ij`` (the stable form of the negative pairwise log-likelihood),
plus ``eta * mean((u - sign(u))^2)`` (sign(0) = +1). No output activation.
Multi-label: ``s_ij = 1`` when the items share at least one label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import LossResult, PairwiseLoss


class DPSHLoss(PairwiseLoss):
    name = "dpsh"
    defaults = {"eta": 0.1, **PairwiseLoss.pair_defaults}

    def forward(self, out, labels, index=None):
        u = out.u.float()
        other, s, mask = self.partners(u, labels, index)
        theta = 0.5 * (u @ other.T)
        likelihood = (F.softplus(theta) - s * theta)[mask].mean()
        b = torch.where(u >= 0, 1.0, -1.0)
        quant = (u - b).pow(2).mean()
        total = likelihood + self.hparams["eta"] * quant
        return LossResult(total, {"pair": likelihood.detach(), "quant": quant.detach()})
