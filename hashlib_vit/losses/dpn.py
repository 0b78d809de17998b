"""DPN — Deep Polarized Network (Fan et al., IJCAI 2020), METHODS.md §5.6.

Every class c owns a fixed random target vector ``t_c`` in {±1}^b with exactly ``round(p b)``
entries equal to -1 (p = 0.5: exactly b/2). A multi-label item's target is
``sign(sum of its classes' targets)``, zero entries filled from one fixed random ±1 vector (as CSQ).
Polarization (hinge) loss on the raw outputs: ``mean(max(m - u_ik t_ik, 0))``, m = 1.

Option ``adaptive=True`` ("DPN-A", off by default): after each epoch every class target becomes
``sign(sum over the epoch's items of class c of u_hat)``, ``u_hat = sign(u)`` where ``|u| > m`` and
0 elsewhere (the ternarised outputs); entries whose sum is 0 keep their previous value.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import ConfigError
from .base import HashLoss, LossResult
from .centers import CenterDistanceWarning, count_shared, distinct_codes
from .csq import fill_vector, label_targets


def polarization_targets(num_classes: int, bits: int, p: float = 0.5, seed: int = 0) -> torch.Tensor:
    """(C, K) float32 ±1 random targets, each row with exactly ``round(p * K)`` entries equal to -1.

    Row c is drawn with ``rng.choice`` of a PCG64 generator seeded with ``seed`` (one call per class, in
    class order; O(C K) time and memory). Raises ConfigError for p outside [0, 1] or more classes than
    distinct targets (C(K, round(pK))); warns (CenterDistanceWarning) when a draw gives two classes the
    same target (likely once C approaches sqrt of that number), with the numbers.
    """
    if not 0 <= p <= 1:
        raise ConfigError(f"p={p!r} must be in [0, 1] (fraction of -1 entries per target)")
    n_neg = int(round(p * bits))
    n_codes = distinct_codes(bits, n_neg)
    if num_classes > n_codes:
        raise ConfigError(f"DPN targets: {num_classes} classes cannot have distinct targets of {bits} bits with "
                          f"exactly {n_neg} entries -1 (p={p}): there are only {n_codes} such codes; use more bits "
                          "or p closer to 0.5")
    rng = np.random.default_rng(seed)
    t = np.ones((num_classes, bits), dtype=np.float32)
    choice = rng.choice
    t[np.repeat(np.arange(num_classes), n_neg),
      np.concatenate([choice(bits, n_neg, replace=False) for _ in range(num_classes)] or [np.empty(0, np.int64)])] = -1.0
    shared = count_shared(t) if num_classes > 1 else 0
    if shared:
        warnings.warn(f"DPN targets: {shared} of {num_classes} classes share their random target with another class "
                      f"({bits} bits, {n_neg} entries -1, {n_codes} distinct targets); those classes cannot be told "
                      f"apart by the loss: use more bits or another target_seed", CenterDistanceWarning, stacklevel=2)
    return torch.from_numpy(t)


class DPNLoss(HashLoss):
    name = "dpn"
    defaults = {"m": 1.0, "p": 0.5, "target_seed": 0, "adaptive": False}

    def __init__(self, bits, num_classes, multi_label=False, **hp):
        super().__init__(bits, num_classes, multi_label, **hp)
        if not self.hparams["m"] >= 0:
            raise ConfigError(f"m={self.hparams['m']!r} must be >= 0 (the polarization margin)")
        seed = self.hparams["target_seed"]
        self.register_buffer("targets_c", polarization_targets(num_classes, bits, self.hparams["p"], seed))
        self.register_buffer("fill", fill_vector(bits, seed + 1))
        self.register_buffer("acc", torch.zeros(num_classes, bits), persistent=False)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        return label_targets(labels, self.targets_c, self.fill)

    def forward(self, out, labels, index=None):
        u = out.u.float()
        m = float(self.hparams["m"])
        t = self.targets(labels)
        loss = (m - u * t).clamp_min(0).mean()
        if self.hparams["adaptive"] and self.training:
            with torch.no_grad():
                tern = torch.where(u.abs() > m, torch.sign(u), torch.zeros_like(u))
                self.acc += labels.float().T @ tern
        return LossResult(loss, {"polarization": loss.detach()})

    def end_epoch(self, epoch: int) -> None:
        if self.hparams["adaptive"]:
            s = torch.sign(self.acc)
            self.targets_c.copy_(torch.where(s == 0, self.targets_c, s))
            self.acc.zero_()
