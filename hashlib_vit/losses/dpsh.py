"""DPSH — Deep Pairwise-Supervised Hashing (Li et al., IJCAI 2016), METHODS.md §5.2.

``Theta_ij = 1/2 u_i.u_j``; mean over in-batch ordered pairs i != j of
``softplus(Theta_ij) - s_ij Theta_ij`` (the stable form of the pairwise likelihood), plus
``eta * mean((u - sign(u))^2)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import HashLoss, LossResult, off_diagonal_mask, pair_similarity


class DPSHLoss(HashLoss):
    name = "dpsh"
    defaults = {"eta": 0.1}

    def forward(self, out, labels, index=None):
        u = out.u.float()
        n = u.shape[0]
        theta = 0.5 * (u @ u.T)
        s = pair_similarity(labels)
        mask = off_diagonal_mask(n, u.device)
        likelihood = (F.softplus(theta) - s * theta)[mask].mean()
        b = torch.where(u >= 0, 1.0, -1.0)
        quant = (u - b).pow(2).mean()
        total = likelihood + self.hparams["eta"] * quant
        return LossResult(total, {"pair": likelihood.item(), "quant": quant.item()})
