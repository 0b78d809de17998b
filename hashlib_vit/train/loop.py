"""The one training loop shared by every method (model + loss from the registries), nanoGPT style.

:func:`train` reads top to bottom: build the optimiser and the schedule (:mod:`.optim`), resume
from a checkpoint if asked (:mod:`.checkpoint`), then for every epoch and batch: set the lr, one
optimisation step (:class:`_Stepper`: autocast forward, loss, backward, clipping, optimiser step), a
row for the step log (:mod:`.steplog`: device values, brought to the host only at a flush), a
checkpoint when one is due; after each epoch the loss's ``end_epoch``, an evaluation and an epoch
checkpoint when due. Several processes: :mod:`.distributed`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from ..config import TrainConfig, field_role
from ..errors import ConfigError
from ..losses.base import HashLoss, LossResult
from ..utils import progress_bar
from . import distributed as D
from .checkpoint import Checkpointer
from .divergence import DivergenceGuard
from .optim import amp_dtype, apply_lr, lr_factor, make_optimizer, param_groups
from .steplog import StepBuffer, StepLog


class OutOfMemory(ConfigError):
    """CUDA ran out of memory; the message names the batch size tried and a smaller one."""


def train(model: nn.Module, loss: HashLoss, batches, cfg: TrainConfig, *, device: torch.device | str = "cpu",
          eval_fn: Callable[[int], dict] | None = None, eval_every: int = 0, log_path: str | Path | None = None,
          progress: bool = True, checkpoint_path: str | Path | None = None, resume: bool = False,
          fingerprint: dict | None = None, dist_info: D.DistInfo | None = None,
          max_steps: int | None = None) -> dict:
    """Train `model` with `loss` on `batches` (a TensorBatches-like source with ``epoch(e, start=b)``
    yielding ``(images, labels (n, C) float, indices (n,) long)``, ``len`` and ``batch_size``).

    ``eval_fn(epoch) -> dict`` is called every ``eval_every`` epochs (0: never) and after the last
    epoch. ``log_path``: the per-step CSV (flushed every ``cfg.log_every_steps`` steps). Returns
    ``{"steps": [row per step], "evals": [...], "config": asdict(cfg), "resumed_from": None | dict}``.
    ``checkpoint_path``: where checkpoints go (every ``cfg.checkpoint_every_steps`` steps and/or
    ``cfg.checkpoint_every_epochs`` epochs, and at the end). ``resume``: continue from that
    checkpoint when it exists (ConfigError unless its ``fingerprint`` — split checksums and config —
    equals the one given here). ``dist_info``: this process's place under torchrun (DDP).
    ``max_steps``: stop after this global step (for tests and benchmarks; no final eval).
    Raises :class:`~hashlib_vit.errors.DivergenceError` (a FloatingPointError) on a non-finite loss or
    grad norm or a loss far above its early value (``cfg.divergence_factor``, :mod:`.divergence`), and
    :class:`OutOfMemory` when the device runs out.
    """
    cfg.validate()
    info, device = dist_info or D.SINGLE, torch.device(device)
    if cfg.checkpointing and checkpoint_path is None:
        raise ConfigError("checkpoint_every_steps/checkpoint_every_epochs need a checkpoint path (a run_dir)")
    steps_per_epoch = len(batches)
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size={cfg.batch_size} leaves no training batch for {batches.num_samples} items")
    raw_model = model.to(device).train()
    loss.to(device).train()
    opt = make_optimizer(param_groups(raw_model, loss, cfg), cfg, device)
    base_lrs, total, dtype = [g["lr"] for g in opt.param_groups], cfg.epochs * steps_per_epoch, amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")
    batches, model = _distribute(batches, raw_model, info, device)
    stepper = _Stepper(torch.compile(model) if cfg.compile else model, loss, opt, scaler, cfg, info, device, dtype,
                       [p for p in list(raw_model.parameters()) + list(loss.parameters()) if p.requires_grad],
                       batches.batch_size)
    history: dict = {"steps": [], "evals": [], "config": asdict(cfg), "resumed_from": None}
    ckpt = Checkpointer(checkpoint_path, _fingerprint(fingerprint, cfg, steps_per_epoch, batches.num_samples),
                        {"model": raw_model, "loss": loss, "optimizer": opt, "scaler": scaler},
                        writer=info.is_main, info=info)
    log = StepLog(log_path if info.is_main else None)
    start = _start(ckpt, resume, log, history, info)
    step = start["step"]
    bar = progress_bar(enabled=progress and info.is_main, total=total, initial=step, desc="train", unit="step",
                       dynamic_ncols=True)
    guard = DivergenceGuard(cfg.divergence_factor, history["steps"], info, overflow_ok=scaler.is_enabled())
    buf = StepBuffer(log, history["steps"], bar, info, every=cfg.log_every_steps, batch_size=batches.batch_size,
                     start_step=step, elapsed0=start["elapsed_s"], guard=guard)
    try:
        for epoch in range(start["epoch"], cfg.epochs):
            first = start["batch"] if epoch == start["epoch"] else 0
            for b, (x, y, idx) in enumerate(batches.epoch(epoch, start=first), start=first):
                if max_steps is not None and step >= max_steps:
                    return history
                lr = apply_lr(opt, base_lrs, lr_factor(step, total, steps_per_epoch, cfg))
                loss.set_progress(step, epoch)
                n_global = min(batches.batch_size, batches.num_samples - b * batches.batch_size)
                res, grad_norm, weight = stepper.step(x, y, idx, n_global, step)
                step += 1
                buf.append(step=step, epoch=epoch, batch=b, total=res.total, parts=res.parts, grad_norm=grad_norm,
                           lr=lr, weight=weight)
                ckpt_now = bool(cfg.checkpoint_every_steps) and step % max(cfg.checkpoint_every_steps, 1) == 0
                if ckpt_now or buf.due(step) or step == max_steps:
                    buf.flush(ckpt.describe_last)  # before a checkpoint: never one after a diverged step
                if ckpt_now and b + 1 < steps_per_epoch:  # on the epoch's last batch: after end_epoch/eval
                    ckpt.save(step=step, epoch=epoch, batch=b + 1, elapsed_s=buf.elapsed(), evals=history["evals"])
            buf.flush(ckpt.describe_last)
            loss.end_epoch(epoch)
            last = epoch == cfg.epochs - 1
            if eval_fn is not None and (last or (eval_every and (epoch + 1) % eval_every == 0)):
                if info.is_main:
                    history["evals"].append({"epoch": epoch + 1, "step": step, **eval_fn(epoch + 1)})
                D.barrier(info)
                model.train()
            if ckpt.path is not None and _epoch_checkpoint_due(cfg, epoch, step, last):
                ckpt.save(step=step, epoch=epoch + 1, batch=0, elapsed_s=buf.elapsed(), evals=history["evals"])
    finally:
        bar.close()
        log.close()
    return history


def _distribute(batches, raw_model: nn.Module, info: D.DistInfo, device: torch.device):
    """Under torchrun: this rank's shards of the batches and the model wrapped in DDP (ConfigError
    when a global batch cannot give every process an image); otherwise both unchanged."""
    if not info.enabled:
        return batches, raw_model
    last = batches.num_samples - (len(batches) - 1) * batches.batch_size
    if min(last, batches.batch_size) < info.world_size:
        raise ConfigError(f"a global batch of {min(last, batches.batch_size)} images cannot be shared by "
                          f"{info.world_size} processes; use a batch_size (and a split size) that gives every "
                          "process at least one image per step")
    ddp_kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
    return D.ShardedBatches(batches, info), nn.parallel.DistributedDataParallel(raw_model, **ddp_kw)


def _fingerprint(given: dict | None, cfg: TrainConfig, steps_per_epoch: int, num_samples: int) -> dict:
    """What a checkpoint must match to be resumed: the caller's fingerprint (split checksums, run
    configuration), the training fields of role ``result``, the steps per epoch and the split size."""
    return {**(given or {}), "train": {k: v for k, v in asdict(cfg).items() if field_role(k) == "result"},
            "steps_per_epoch": steps_per_epoch, "num_samples": num_samples}


def _start(ckpt: Checkpointer, resume: bool, log: StepLog, history: dict, info: D.DistInfo) -> dict:
    """Where training starts: ``{"step", "epoch", "batch", "elapsed_s"}`` of the checkpoint when
    resuming from one (the model, loss, optimiser, scaler and RNGs restored; the history's evals and
    step rows (rank 0) those of the checkpoint), else zeros (and an earlier log is removed)."""
    if resume and ckpt.exists():
        pos = ckpt.restore()
        history["evals"] = pos.pop("evals")
        history["steps"] = log.rows_until(pos["step"]) if info.is_main else []
        history["resumed_from"] = {"path": str(ckpt.path), "step": pos["step"], "epoch": pos["epoch"],
                                   "batch": pos["batch"]}
        return pos
    if info.is_main and log.path is not None and log.path.exists():
        log.path.unlink()  # a fresh start: no lines of an earlier attempt
    return {"step": 0, "epoch": 0, "batch": 0, "elapsed_s": 0.0}


def _epoch_checkpoint_due(cfg: TrainConfig, epoch: int, step: int, last: bool) -> bool:
    """A checkpoint after `epoch`: at the end of training, when a step checkpoint fell on the epoch's
    last batch, or every ``checkpoint_every_epochs`` epochs (only when checkpointing is on)."""
    steps_hit = bool(cfg.checkpoint_every_steps) and step % max(cfg.checkpoint_every_steps, 1) == 0
    epochs_hit = bool(cfg.checkpoint_every_epochs) and (epoch + 1) % cfg.checkpoint_every_epochs == 0
    return cfg.checkpointing and (last or steps_hit or epochs_hit)


@dataclass
class _Stepper:
    """One optimisation step: autocast forward, the loss (on the gathered global batch, or on this
    rank's shard re-weighted so that DDP's gradient average is the global-batch gradient), backward
    through the grad scaler, clipping of the global grad norm, optimiser step. No host sync."""

    forward: nn.Module
    loss: HashLoss
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    cfg: TrainConfig
    info: D.DistInfo
    device: torch.device
    dtype: torch.dtype | None
    trainable: list
    batch_size: int  # the global batch (for the out-of-memory message)

    def step(self, x, y, idx, n_global: int, step: int) -> tuple[LossResult, torch.Tensor | None, float]:
        """Returns the loss result, the pre-clip grad norm (0-d tensor, None without clipping) and the
        weight of this rank's loss values in the logged global value (1 in a single process)."""
        info, global_loss = self.info, bool(getattr(self.loss, "needs_global_batch", True))
        try:
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                out = self.forward(x)
            weight, log_weight = 1.0, 1.0
            if info.enabled and global_loss:
                out, y, idx = D.gather_batch(out, y, idx, n_global, info)
                log_weight = 1.0 / info.world_size
            elif info.enabled:  # DDP averages gradients over processes: weight each shard by its share
                weight, log_weight = len(x) * info.world_size / n_global, len(x) / n_global
            res = self.loss(out, y, idx)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(res.total * weight if weight != 1.0 else res.total).backward()
            D.average_gradients(list(self.loss.parameters()), info)
            grad_norm = None
            if self.cfg.grad_clip:
                self.scaler.unscale_(self.opt)
                grad_norm = nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
            return res, grad_norm, log_weight
        except torch.OutOfMemoryError:
            self.opt.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            bs = self.batch_size
            per = f" ({bs // info.world_size} per process)" if info.enabled else ""
            raise OutOfMemory(
                f"{self.device} ran out of memory at step {step + 1} with batch_size={bs}{per}, amp={self.cfg.amp}; "
                f"try batch_size={max(bs // 2, 2)}{' or amp=bf16' if self.dtype is None else ''}") from None


__all__ = ["train", "OutOfMemory"]
