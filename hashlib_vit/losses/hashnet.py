"""HashNet (Cao et al., ICCV 2017), METHODS.md §5.3.

``z = tanh(beta u)`` with a continuation schedule ``beta`` increasing during training, and the
weighted pairwise likelihood on ``alpha z_i.z_j``:

    L = 1/|S| sum_ij w_ij [softplus(alpha z_i.z_j) - alpha s_ij z_i.z_j],
    w_ij = |S|/|S1| (similar pairs), |S|/|S0| (dissimilar pairs)

(:func:`balanced_pair_weights`; the softplus form replaces the official dot-product threshold of 15).

Schedules (``schedule``):

* ``"official"`` (default, thuml/HashNet): ``beta = init_beta * (1 + gamma t)^power`` with ``t`` the
  iteration, updated every ``step_size`` iterations (gamma 0.005, power 0.5, step 200): at iteration
  t the value uses ``t_0 = step_size * floor(t / step_size)``.
* ``"epoch"`` (DeepHash-pytorch): ``beta = init_beta * (floor(epoch / epoch_step) + 1)^power``, epoch_step 20.
* ``"constant"``: ``beta = init_beta``.

``alpha``: ``"10/K"`` (official, the default) or a number (0.1 in the reference implementation).
Retrieval codes are ``sign(u)``, which does not depend on beta. Memory bank: stores ``z``.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from ..errors import ConfigError, bad_choice
from .base import LossResult, PairwiseLoss, balanced_pair_weights

SCHEDULES = ("official", "epoch", "constant")


def continuation_beta(step: int, epoch: int, schedule: str = "official", *, init_beta: float = 1.0,
                      gamma: float = 0.005, power: float = 0.5, step_size: int = 200, epoch_step: int = 20) -> float:
    """HashNet's scale beta at iteration ``step`` (0-based) in ``epoch`` (0-based)."""
    if schedule == "official":
        t0 = step_size * (step // step_size)
        return init_beta * (1.0 + gamma * t0) ** power
    if schedule == "epoch":
        return init_beta * float(epoch // epoch_step + 1) ** power
    if schedule == "constant":
        return float(init_beta)
    raise bad_choice("schedule", schedule, SCHEDULES)


class HashNetLoss(PairwiseLoss):
    name = "hashnet"
    defaults = {"alpha": "10/K", "schedule": "official", "init_beta": 1.0, "gamma": 0.005, "power": 0.5,
                "step_size": 200, "epoch_step": 20, **PairwiseLoss.pair_defaults}

    def __init__(self, bits, num_classes, multi_label=False, **hp):
        super().__init__(bits, num_classes, multi_label, **hp)
        a = self.hparams["alpha"]
        if a == "10/K":
            self.alpha = 10.0 / self.bits
        elif isinstance(a, (int, float)) and not isinstance(a, bool) and a > 0:
            self.alpha = float(a)
        else:
            raise ConfigError(f"alpha={a!r} must be '10/K' (official HashNet) or a positive number (0.1: ref. impl.)")
        if self.hparams["schedule"] not in SCHEDULES:
            raise bad_choice("schedule", self.hparams["schedule"], SCHEDULES)
        for k in ("step_size", "epoch_step"):
            if not isinstance(self.hparams[k], int) or self.hparams[k] < 1:
                raise ConfigError(f"{k}={self.hparams[k]!r} must be an integer >= 1")

    @property
    def beta(self) -> float:
        h = self.hparams
        return continuation_beta(self.step, self.epoch, h["schedule"], init_beta=h["init_beta"], gamma=h["gamma"],
                                 power=h["power"], step_size=h["step_size"], epoch_step=h["epoch_step"])

    def forward(self, out, labels, index=None):
        beta = self.beta
        z = torch.tanh(beta * out.u.float())
        other, s, mask = self.partners(z, labels, index)
        ip = self.alpha * (z @ other.T)
        w = balanced_pair_weights(s, mask)
        pair = (w * (F.softplus(ip) - s * ip))[mask].sum() / mask.sum().clamp_min(1)
        return LossResult(pair, {"pair": pair.detach(), "beta": beta})  # LossResult fills beta on the device
