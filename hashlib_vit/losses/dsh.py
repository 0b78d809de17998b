"""DSH — Deep Supervised Hashing (Liu et al., CVPR 2016), METHODS.md §5.1.

Contrastive loss on raw outputs (no activation), ``d_ij = ||u_i - u_j||^2``, mean over pairs of
``1/2 s_ij d_ij + 1/2 (1 - s_ij) max(m - d_ij, 0)`` with margin ``m = 2K`` (``margin=None``), plus
``alpha * mean(| |u| - 1 |)`` (the L1 pull of every output toward ±1). ``alpha`` is 0.1 as in the
reference implementation (0.01 is the value usually cited for the paper).
Pairs are in-batch by default, batch x memory bank with ``memory_bank=True``; multi-label items are
similar when they share at least one label.
"""
from __future__ import annotations

from ..errors import ConfigError
from .base import LossResult, PairwiseLoss


class DSHLoss(PairwiseLoss):
    name = "dsh"
    defaults = {"alpha": 0.1, "margin": None, **PairwiseLoss.pair_defaults}

    def __init__(self, bits, num_classes, multi_label=False, **hp):
        super().__init__(bits, num_classes, multi_label, **hp)
        m = self.hparams["margin"]
        if m is not None and not (isinstance(m, (int, float)) and m > 0):
            raise ConfigError(f"margin={m!r} must be a positive number, or None for 2*bits")
        self.margin = float(2 * self.bits if m is None else m)

    def forward(self, out, labels, index=None):
        u = out.u.float()
        other, s, mask = self.partners(u, labels, index)
        # ||a-b||^2 from the Gram matrix (clamped: rounding can make it slightly negative)
        d = ((u * u).sum(1, keepdim=True) + (other * other).sum(1)[None, :] - 2 * u @ other.T).clamp_min(0)
        pair = (0.5 * s * d + 0.5 * (1 - s) * (self.margin - d).clamp_min(0))[mask].mean()
        quant = (u.abs() - 1).abs().mean()
        total = pair + self.hparams["alpha"] * quant
        return LossResult(total, {"pair": pair.detach(), "quant": quant.detach()})
