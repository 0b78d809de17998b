"""The loss interface every method implements, and shared pair helpers.

A loss is an ``nn.Module`` built by :func:`hashlib_vit.losses.build_loss`:

* ``__init__(bits, num_classes, multi_label, **hparams)``; class attribute ``defaults`` lists every
  hyper-parameter with its default (used for validation and written to ``config.json``);
* ``forward(out: HashOutput, labels: (n, C) float multi-hot, index: (n,) long | None) -> LossResult``;
* the training loop calls ``set_progress(step, epoch)`` before each step (for schedules such as
  HashNet's continuation) and ``end_epoch(epoch)`` after each epoch;
* a loss may own parameters (classifiers): they are optimised with the new modules' learning rate;
  its state that must survive a checkpoint (memory banks, counters) lives in buffers (or
  ``get_extra_state``), since checkpoints hold the loss's ``state_dict``;
* ``needs_global_batch`` (default True): under torchrun, the loop gathers the outputs (with
  gradients), labels and indices of every process, so the loss sees the whole global batch, as in a
  single process (pairs span processes; batch statistics are global). A loss that is a mean of
  per-item terms may set it to False: each process then computes it on its own shard only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from ..models.hashmodel import HashOutput


@dataclass
class LossResult:
    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


class HashLoss(nn.Module):
    name: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}
    needs_global_batch: ClassVar[bool] = True  # False only for means of per-item terms (see the module doc)

    def __init__(self, bits: int, num_classes: int, multi_label: bool = False, **hparams):
        super().__init__()
        self.bits = int(bits)
        self.num_classes = int(num_classes)
        self.multi_label = bool(multi_label)
        self.hparams = {**self.defaults, **hparams}
        self.step = 0
        self.epoch = 0

    def set_progress(self, step: int, epoch: int) -> None:
        self.step, self.epoch = int(step), int(epoch)

    def end_epoch(self, epoch: int) -> None:  # pragma: no cover - default: nothing to do
        pass

    def forward(self, out: HashOutput, labels: torch.Tensor, index: torch.Tensor | None = None) -> LossResult:
        raise NotImplementedError


def pair_similarity(labels_a: torch.Tensor, labels_b: torch.Tensor | None = None) -> torch.Tensor:
    """``s_ij = 1[y_i . y_j > 0]`` (shares at least one label), as float."""
    labels_b = labels_a if labels_b is None else labels_b
    return (labels_a.float() @ labels_b.float().T > 0).float()


def off_diagonal_mask(n: int, device=None) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


def balanced_pair_weights(s: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pair weights ``w_ij = |S|/|S1|`` for similar and ``|S|/|S0|`` for dissimilar pairs (HashNet, DCH,
    TransHash), over the pairs selected by ``mask``; all ones when either kind is absent.

    With these weights the positive and the negative pairs carry equal total mass (|S| each), whatever
    the class balance of the batch.
    """
    if mask is None:
        mask = torch.ones_like(s, dtype=torch.bool)
    pos = (s > 0) & mask
    neg = (s <= 0) & mask
    n_all, n_pos, n_neg = mask.sum(), pos.sum(), neg.sum()
    w = torch.ones_like(s, dtype=torch.float32)
    if n_pos > 0 and n_neg > 0:
        w = torch.where(pos, n_all / n_pos, n_all / n_neg).float()
    return w * mask
