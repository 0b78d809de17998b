"""The loss interface every method implements, and shared pair helpers.

A loss is an ``nn.Module`` built by :func:`hashlib_vit.losses.build_loss`:

* ``__init__(bits, num_classes, multi_label, **hparams)``; class attribute ``defaults`` lists every
  hyper-parameter with its default (used for validation and written to ``config.json``);
* ``forward(out: HashOutput, labels: (n, C) float multi-hot, index: (n,) long | None) -> LossResult``:
  the objective ``total`` (0-d, with gradient) and its ``parts`` for the log, detached 0-d tensors on
  the same device (never ``.item()``: the training loop brings them to the host once per log flush;
  ``LossResult.host_parts()`` gives them as floats, in one transfer, for notebooks and tests);
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

from ..errors import ConfigError
from ..models.hashmodel import HashOutput


@dataclass
class LossResult:
    """What a loss returns: ``total`` (0-d tensor, the objective, with gradient) and ``parts``
    (name -> detached 0-d tensor, for the log). A part given as a tensor is detached and reshaped to
    0-d (ValueError naming it when it has more than one element); a Python number becomes a 0-d
    float64 tensor on ``total``'s device (a fill, no host-to-device copy). Nothing here synchronises
    with the device."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        parts = {}
        for name, v in self.parts.items():
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    raise ValueError(f"loss part {name!r} has shape {tuple(v.shape)}; "
                                     "expected one value (a 0-d tensor)")
                parts[name] = v.detach().reshape(())
            else:
                parts[name] = torch.full((), float(v), dtype=torch.float64, device=self.total.device)
        self.parts = parts

    def host_parts(self) -> dict[str, float]:
        """The parts as Python floats, in one device-to-host transfer (for notebooks and tests that
        print or tabulate a single evaluation; the training loop never calls it: see train/steplog.py)."""
        if not self.parts:
            return {}
        values = torch.stack([v.to(device=self.total.device, dtype=torch.float64) for v in self.parts.values()])
        return dict(zip(self.parts, values.tolist()))


class HashLoss(nn.Module):
    name: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}
    needs_global_batch: ClassVar[bool] = True  # False only for means of per-item terms (see the module doc)
    #: heads (``RunConfig.head``) the loss is known to fail with -> why; run_experiment warns on them
    unsuited_heads: ClassVar[dict[str, str]] = {}

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


class PairwiseLoss(HashLoss):
    """Base of the losses on pairs of codes (DPSH, DSH, HashNet): who is paired with whom.

    * Default: all ordered in-batch pairs ``(i, j)``, ``i != j``.
    * ``memory_bank=True`` (the DeepHash-pytorch / VTS behaviour, METHODS §5 common rules): the loss
      keeps ``U`` (the pair-side outputs) and ``Y`` (labels) for the whole training set, overwrites
      the rows of the current batch with the **detached** outputs, and pairs each batch item with
      every training item seen so far (its own row excluded). Rows are addressed by ``index``, the
      items' positions in the training split, which the training loop passes. The bank grows
      lazily to the largest index seen (``memory_bank_size=0``), or is allocated once with
      ``memory_bank_size`` rows (an index beyond it is an error). Items not yet seen in the first
      epoch take no part in pairs (the reference code pairs with their zero rows instead).
      The bank is used in ``train()`` mode only; in ``eval()`` mode pairs are in-batch. It is not
      part of ``state_dict`` (after a resume it refills within one epoch).
    """

    pair_defaults: ClassVar[dict] = {"memory_bank": False, "memory_bank_size": 0}

    def __init__(self, bits: int, num_classes: int, multi_label: bool = False, **hparams):
        super().__init__(bits, num_classes, multi_label, **hparams)
        size = self.hparams["memory_bank_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ConfigError(f"memory_bank_size={size!r} must be an integer >= 0 (0: grow with the indices seen)")
        self.bank_u: torch.Tensor | None = None
        self.bank_y: torch.Tensor | None = None
        self.bank_seen: torch.Tensor | None = None

    @property
    def uses_bank(self) -> bool:
        return bool(self.hparams["memory_bank"]) and self.training

    def _grow_bank(self, rows: int, like_v: torch.Tensor, like_y: torch.Tensor) -> None:
        dev = like_v.device
        old = 0 if self.bank_u is None else self.bank_u.shape[0]
        if self.bank_u is not None and self.bank_u.device != dev:
            self.bank_u, self.bank_y, self.bank_seen = (t.to(dev) for t in (self.bank_u, self.bank_y, self.bank_seen))
        if rows <= old:
            return
        u = torch.zeros(rows, like_v.shape[1], device=dev)
        y = torch.zeros(rows, like_y.shape[1], device=dev)
        seen = torch.zeros(rows, dtype=torch.bool, device=dev)
        if old:
            u[:old], y[:old], seen[:old] = self.bank_u, self.bank_y, self.bank_seen
        self.bank_u, self.bank_y, self.bank_seen = u, y, seen

    def partners(self, v: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None):
        """``(v_other, s, mask)``: the partner outputs (m, K), the similarity ``s`` (n, m) of every
        batch item to every partner, and the boolean mask of the pairs that count."""
        labels = labels.float()
        if not self.uses_bank:
            return v, pair_similarity(labels), off_diagonal_mask(v.shape[0], v.device)
        if index is None:
            raise ConfigError(f"loss={self.name!r} with memory_bank=True needs index= (the batch items' positions "
                              "in the training split); the training loop passes them")
        index = torch.as_tensor(index, device=v.device).long()
        size = self.hparams["memory_bank_size"]
        if size and int(index.max()) >= size:
            raise ConfigError(f"index {int(index.max())} is beyond memory_bank_size={size} (the training split size)")
        self._grow_bank(size or int(index.max()) + 1, v, labels)
        self.bank_u[index] = v.detach().float()
        self.bank_y[index] = labels
        self.bank_seen[index] = True
        rows = self.bank_seen.nonzero().squeeze(1)
        v_other = self.bank_u if len(rows) == len(self.bank_seen) else self.bank_u[rows]
        y_other = self.bank_y if len(rows) == len(self.bank_seen) else self.bank_y[rows]
        mask = rows[None, :] != index[:, None]
        return v_other, pair_similarity(labels, y_other), mask

    def reset_bank(self) -> None:
        self.bank_u = self.bank_y = self.bank_seen = None
