"""The one training loop shared by every method (backbone + head + loss from the registries).

Readable on purpose (nanoGPT style): build optimiser and schedule, loop over epochs and batches,
log every step to a CSV that is flushed line by line, evaluate every ``eval_every`` epochs.
On CUDA it uses bf16 autocast and fused optimisers; on CPU it is deterministic for a fixed seed.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .errors import ConfigError, bad_choice
from .losses.base import HashLoss

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("cosine", "constant", "step")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3  # learning rate of the new modules (heads, extra blocks, loss classifiers)
    backbone_lr: float | None = None  # None: same as lr (from scratch); e.g. lr/10 when fine-tuning
    optimizer: str = "adamw"
    weight_decay: float = 0.0  # never applied to norms and biases
    momentum: float = 0.9  # sgd / rmsprop
    schedule: str = "cosine"
    warmup_steps: int = 0
    step_epochs: int = 30  # schedule="step": multiply lr by step_gamma every step_epochs
    step_gamma: float = 0.1
    grad_clip: float | None = None  # clip the global grad norm at this value
    amp: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU; "bf16", "fp16", "off"
    compile: bool = False
    seed: int = 0

    def validate(self) -> "TrainConfig":
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs={self.epochs!r} must be an integer >= 1")
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size!r} must be an integer >= 2 (pair losses need pairs)")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"lr={self.lr!r} must be a positive number")
        if self.optimizer not in OPTIMIZERS:
            raise bad_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise bad_choice("schedule", self.schedule, SCHEDULES)
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise bad_choice("amp", self.amp, ("auto", "bf16", "fp16", "off"))
        return self


def param_groups(model: nn.Module, loss: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Backbone vs new modules (two learning rates) x decay vs no decay (norms, biases, tokens)."""
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
    fused = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **fused)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **fused)
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=0.0)


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at `step` (linear warm-up, then the schedule)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.step_gamma ** ((step // max(steps_per_epoch, 1)) // cfg.step_epochs)
    t = (step - cfg.warmup_steps) / max(total_steps - cfg.warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if cfg.amp == "fp16" else torch.bfloat16


class StepLog:
    """Per-step CSV log, one flushed line per step (survives an interruption)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._file = None
        self._writer = None
        self._fields: list[str] | None = None

    def write(self, row: dict) -> None:
        if self.path is None:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._file = open(self.path, "a", newline="")
            self._fields = list(row)
            self._writer = csv.DictWriter(self._file, fieldnames=self._fields, extrasaction="ignore")
            if new:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
            self._writer = None


def train(model: nn.Module, loss: HashLoss, batches, cfg: TrainConfig, *, device: torch.device | str = "cpu",
          eval_fn: Callable[[int], dict] | None = None, eval_every: int = 0, log_path: str | Path | None = None,
          progress: bool = True) -> dict:
    """Train `model` with `loss` on `batches` (a TensorBatches-like source with ``epoch(e)`` and len).

    ``eval_fn(epoch) -> dict`` is called every ``eval_every`` epochs (0: never) and after the last
    epoch; its results are returned in ``history["evals"]``. Returns ``{"steps": [...], "evals": [...]}``.
    """
    cfg.validate()
    device = torch.device(device)
    model.to(device).train()
    loss.to(device).train()
    opt = make_optimizer(param_groups(model, loss, cfg), cfg, device)
    base_lrs = [g["lr"] for g in opt.param_groups]
    steps_per_epoch = len(batches)
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size={cfg.batch_size} leaves no training batch for {batches.num_samples} items")
    total = cfg.epochs * steps_per_epoch
    dtype = amp_dtype(cfg, device)
    forward = torch.compile(model) if cfg.compile else model
    log = StepLog(log_path)
    history: dict = {"steps": [], "evals": [], "config": asdict(cfg)}
    bar = tqdm(total=total, desc="train", disable=not progress, dynamic_ncols=True)
    step, t0 = 0, time.perf_counter()
    try:
        for epoch in range(cfg.epochs):
            for x, y, idx in batches.epoch(epoch):
                f = lr_factor(step, total, steps_per_epoch, cfg)
                for g, base in zip(opt.param_groups, base_lrs):
                    g["lr"] = base * f
                loss.set_progress(step, epoch)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    out = forward(x)
                res = loss(out, y, idx)
                value = res.total.item()
                if not math.isfinite(value):
                    raise FloatingPointError(f"loss became {value} at step {step} (epoch {epoch}); "
                                             "lower the learning rate or check the inputs")
                opt.zero_grad(set_to_none=True)
                res.total.backward()
                gnorm = None
                if cfg.grad_clip:
                    gnorm = float(nn.utils.clip_grad_norm_(list(model.parameters()) + list(loss.parameters()),
                                                           cfg.grad_clip))
                opt.step()
                step += 1
                elapsed = time.perf_counter() - t0
                row = {"step": step, "epoch": epoch, "loss": value, **{f"loss_{k}": v for k, v in res.parts.items()},
                       "lr": opt.param_groups[0]["lr"], "grad_norm": gnorm, "time_s": round(elapsed, 4),
                       "images_per_s": round(step * batches.batch_size / max(elapsed, 1e-9), 2)}
                history["steps"].append(row)
                log.write(row)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", epoch=epoch)
            loss.end_epoch(epoch)
            last = epoch == cfg.epochs - 1
            if eval_fn is not None and (last or (eval_every and (epoch + 1) % eval_every == 0)):
                ev = {"epoch": epoch + 1, "step": step, **eval_fn(epoch + 1)}
                history["evals"].append(ev)
                model.train()
    finally:
        bar.close()
        log.close()
    return history


__all__ = ["TrainConfig", "train", "param_groups", "make_optimizer", "lr_factor", "StepLog", "OPTIMIZERS",
           "SCHEDULES"]
