"""Optimiser, parameter groups, learning-rate schedule and mixed precision of the training loop.

* :func:`param_groups`: backbone vs new modules (two learning rates) x decay vs no decay. Which
  parameters are the backbone's is decided by the model's ``backbone_parameters()`` (every model in
  :mod:`hashlib_vit.models` has it); everything else trainable (heads, necks, AEM, the loss's own
  classifiers) is new and gets ``lr``.
* :func:`lr_factor`: linear warm-up then cosine / step / constant, a pure function of the step (a
  checkpoint needs no scheduler state); :func:`apply_lr` writes it into the optimiser's groups.
* :func:`amp_dtype`: the autocast dtype (bf16 on CUDA by default, fp32 on CPU).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import TrainConfig


def param_groups(model: nn.Module, loss: nn.Module, cfg: TrainConfig) -> list[dict]:
    """The optimiser's parameter groups: backbone vs new modules x decay vs no decay.

    A trainable parameter is *backbone* when ``model.backbone_parameters()`` yields it (a model
    without that method has no backbone parameters), otherwise *new* (the model's heads and the
    loss's own parameters, named ``loss.*``). It is *no decay* when it is a norm weight, a bias or a
    token (``ndim <= 1``, a name ending in ``.bias``, ``pos_embed``, ``cls_token``). Every trainable
    parameter is in exactly one group, each parameter once even if shared.

    Returns a list of dicts ``{"params", "lr", "weight_decay", "name"}``, sorted (backbone groups
    first); ``name`` is ``backbone``, ``backbone_nodecay``, ``new`` or ``new_nodecay``; ``lr`` is
    ``cfg.backbone_lr`` (``cfg.lr`` when None) for the backbone and ``cfg.lr`` for new modules.
    The no-decay rule is the one of timm's ``param_groups_weight_decay`` (1-d parameters and
    biases), plus the position embedding and class token.
    """
    backbone_ids = {id(p) for p in model.backbone_parameters()} if hasattr(model, "backbone_parameters") else set()
    blr = cfg.lr if cfg.backbone_lr is None else cfg.backbone_lr
    groups: dict[tuple[bool, bool], list] = {}
    named = list(model.named_parameters()) + [(f"loss.{n}", p) for n, p in loss.named_parameters()]
    seen = set()
    for name, p in named:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        no_decay = p.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "cls_token" in name
        groups.setdefault((id(p) in backbone_ids, no_decay), []).append(p)
    out = []
    for (is_backbone, no_decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": blr if is_backbone else cfg.lr,
                    "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                    "name": f"{'backbone' if is_backbone else 'new'}{'_nodecay' if no_decay else ''}"})
    return out


def make_optimizer(groups: list[dict], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (adam | adamw | sgd with ``cfg.momentum`` | rmsprop) over `groups` (from
    :func:`param_groups`; each group keeps its own lr and weight decay). Fused kernels on CUDA."""
    fused = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **fused)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **fused)
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=0.0)


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at `step` (0-based global step).

    Linear warm-up over ``cfg.warmup_steps`` (``(step + 1) / warmup_steps``), then ``cfg.schedule``:
    ``constant`` (1), ``step`` (``step_gamma ** (epoch // step_epochs)``) or ``cosine``
    (``0.5 (1 + cos(pi t))``, ``t`` going from 0 after the warm-up to 1 at ``total_steps``;
    Loshchilov and Hutter, SGDR, 2017, eq. 5 without restarts). A pure function of the step: the
    schedule needs no state of its own in a checkpoint.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.step_gamma ** ((step // max(steps_per_epoch, 1)) // cfg.step_epochs)
    t = (step - cfg.warmup_steps) / max(total_steps - cfg.warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def apply_lr(opt: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> float:
    """Set every group's lr to its base lr (``base_lrs``, in group order) times ``factor``; returns
    the first group's new lr (the one the step log records)."""
    for group, base in zip(opt.param_groups, base_lrs):
        group["lr"] = base * factor
    return opt.param_groups[0]["lr"]


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``cfg.amp`` on `device`: None (fp32) for ``off`` and for ``auto`` off
    CUDA, ``torch.float16`` for ``fp16``, ``torch.bfloat16`` otherwise."""
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if cfg.amp == "fp16" else torch.bfloat16


__all__ = ["param_groups", "make_optimizer", "lr_factor", "apply_lr", "amp_dtype"]
