"""Losses: one module per family, one registry. Adding a loss = one file + one line below."""
from __future__ import annotations

from ..errors import ConfigError
from ..registry import Registry
from .base import HashLoss, LossResult, PairwiseLoss, balanced_pair_weights, off_diagonal_mask, pair_similarity
from .cauchy import DCHLoss, TransHashLoss
from .csq import CSQLoss
from .dpn import DPNLoss
from .dpsh import DPSHLoss
from .dsh import DSHLoss
from .greedyhash import GreedyHashLoss
from .hashnet import HashNetLoss
from .hsc import HSCLoss
from .orthohash import OrthoHashLoss
from .training_free import TRAINING_FREE, build_training_free  # LSH / PCA / ITQ: fitted on features, no training

LOSSES: Registry[type[HashLoss]] = Registry("loss")
LOSSES.register("dpsh", DPSHLoss)
LOSSES.register("csq", CSQLoss)
LOSSES.register("dsh", DSHLoss)
LOSSES.register("hashnet", HashNetLoss)
LOSSES.register("orthohash", OrthoHashLoss)  # SL-ViT single loss (METHODS §3.4)
LOSSES.register("dch", DCHLoss)
LOSSES.register("dpn", DPNLoss)
LOSSES.register("greedyhash", GreedyHashLoss)
LOSSES.register("transhash", TransHashLoss)
LOSSES.register("hsc", HSCLoss)


def build_loss(name: str, bits: int, num_classes: int, multi_label: bool = False, **hparams) -> HashLoss:
    """Instantiate a registered loss; unknown hyper-parameter names are an error listing the allowed ones."""
    cls = LOSSES.get(name)
    unknown = sorted(set(hparams) - set(cls.defaults))
    if unknown:
        raise ConfigError(f"loss_params {unknown} are not hyper-parameters of loss={name!r}; "
                          f"allowed: {sorted(cls.defaults) or 'none'}")
    return cls(bits, num_classes, multi_label, **hparams)


__all__ = ["LOSSES", "TRAINING_FREE", "build_loss", "build_training_free", "HashLoss", "PairwiseLoss", "LossResult",
           "pair_similarity", "off_diagonal_mask", "balanced_pair_weights"]
