"""The one training loop shared by every method (backbone + head + loss from the registries).

Readable on purpose (nanoGPT style): build optimiser and schedule, loop over epochs and batches,
log every step to a CSV that is flushed line by line, evaluate every ``eval_every`` epochs.

* Speed (CUDA): bf16 autocast (fp16 with a grad scaler on request), fused optimisers, parameter
  groups (backbone vs new modules x decay vs no decay), optional ``torch.compile``; the data come
  from a GPU-resident :class:`~hashlib_vit.data.TensorBatches`. The same code is deterministic on CPU.
* Checkpoint and resume: ``checkpoint_every_steps`` / ``checkpoint_every_epochs`` write (atomically)
  model, loss (its buffers: memory banks, step-driven schedules), optimiser, grad scaler, RNG states,
  the position (epoch, batch, step), the evaluations so far and a fingerprint (split checksums and
  config). ``resume=True`` continues exactly where the checkpoint left off: a killed CPU run resumed
  from a checkpoint ends with bit-identical weights. Checkpoints load with ``weights_only=True``.
* Several processes (``torchrun``): DistributedDataParallel, see :mod:`hashlib_vit.distributed`.
* Robustness: a non-finite loss stops with the step and the last good checkpoint; a CUDA
  out-of-memory error names the batch size that was tried.

``python -m hashlib_vit train [--config file.yaml] --param value ...`` is ``hashlib-vit train`` (so
``torchrun --nproc_per_node N -m hashlib_vit train ...`` trains on N processes); the settings are the
``train`` section of :class:`hashlib_vit.config.RunConfig` (:class:`~hashlib_vit.config.TrainConfig`).
"""
from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import distributed as D
from .config import TrainConfig, field_role  # TrainConfig: the run configuration's train section
from .errors import ConfigError, DataError
from .losses.base import HashLoss
from .utils import atomic_write

CHECKPOINT_VERSION = 1


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
    """Multiplier of the base learning rate at `step` (linear warm-up, then the schedule).

    A pure function of the step: the schedule needs no state of its own in a checkpoint."""
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


# ----------------------------------------------------------------------------- the step log
def _parse_cell(key: str, text: str):
    if text == "":
        return None
    if key in ("step", "epoch"):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


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
            self._fields = self._existing_header() if not new else list(row)
            self._writer = csv.DictWriter(self._file, fieldnames=self._fields, extrasaction="ignore")
            if new:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def _existing_header(self) -> list[str]:
        with open(self.path, newline="") as f:
            return next(csv.reader(f))

    def rows_until(self, step: int) -> list[dict]:
        """Rewrite the log (atomically) to hold exactly the complete rows with ``step <= step`` and
        return them (parsed). Used on resume: rows written after the checkpoint are dropped and the
        replayed steps write them again, so the log has every step exactly once."""
        from .utils import atomic_write_text

        if self.path is None:
            return []
        if not self.path.exists():
            if step > 0:
                raise DataError(f"{self.path} is missing but the checkpoint is at step {step}: cannot resume the log")
            return []
        lines = self.path.read_text().splitlines(keepends=True)
        if not lines:
            return []
        header = next(csv.reader([lines[0]]))
        kept, rows = [lines[0]], []
        for line in lines[1:]:
            if not line.endswith("\n"):
                break  # a line cut by the kill
            cells = next(csv.reader([line]), [])
            if len(cells) != len(header):
                break
            row = {k: _parse_cell(k, v) for k, v in zip(header, cells)}
            if row["step"] > step:
                break
            kept.append(line)
            rows.append(row)
        if (rows[-1]["step"] if rows else 0) != step or [r["step"] for r in rows] != list(range(1, step + 1)):
            raise DataError(f"{self.path} holds steps {rows[0]['step'] if rows else None}..{rows[-1]['step'] if rows else None}"
                            f" but the checkpoint is at step {step}: the log does not belong to this checkpoint")
        atomic_write_text(self.path, "".join(kept))
        return rows

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
            self._writer = None


# ----------------------------------------------------------------------------- checkpoints
def rng_state() -> dict:
    """Every RNG a training step can touch, as tensors / plain values (``weights_only`` loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """``torch.save`` through a temporary file in the same folder, fsync, then ``os.replace``:
    a kill at any moment leaves either the previous checkpoint or the new one, never half of one."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no pickled code)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"checkpoint {path} does not exist") from None
    except Exception as e:  # noqa: BLE001 - torch raises several kinds for a damaged file
        raise DataError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        raise DataError(f"checkpoint {path} is not a hashlib_vit checkpoint of version {CHECKPOINT_VERSION}")
    return ckpt


def _flatten(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def fingerprint_differences(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for every leaf that differs (both JSON-normalised)."""
    a = _flatten(json.loads(json.dumps(saved, default=str)))
    b = _flatten(json.loads(json.dumps(current, default=str)))
    return [f"{k}: checkpoint {a.get(k, '<absent>')!r} vs now {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


def check_checkpoint(path: str | Path, fingerprint: dict, *, only_given: bool = False) -> dict:
    """Load `path` and refuse it (ConfigError naming every difference) unless it was written for the
    same split checksums and configuration as ``fingerprint`` (``only_given``: compare only the
    top-level keys present in ``fingerprint``)."""
    ckpt = load_checkpoint(path)
    saved = json.loads(ckpt["fingerprint"])
    if only_given:
        saved = {k: v for k, v in saved.items() if k in fingerprint}
    diffs = fingerprint_differences(saved, fingerprint)
    if diffs:
        raise ConfigError(f"checkpoint {path} was written for a different run and cannot be resumed; "
                          f"differences: {'; '.join(diffs)}. Use another run_dir, or resume=False to start over.")
    return ckpt


# ----------------------------------------------------------------------------- the loop
class OutOfMemory(ConfigError):
    """CUDA ran out of memory; the message names the batch size tried and a smaller one."""


def train(model: nn.Module, loss: HashLoss, batches, cfg: TrainConfig, *, device: torch.device | str = "cpu",
          eval_fn: Callable[[int], dict] | None = None, eval_every: int = 0, log_path: str | Path | None = None,
          progress: bool = True, checkpoint_path: str | Path | None = None, resume: bool = False,
          fingerprint: dict | None = None, dist_info: D.DistInfo | None = None,
          max_steps: int | None = None) -> dict:
    """Train `model` with `loss` on `batches` (a TensorBatches-like source with ``epoch(e, start=b)``,
    ``len`` and ``batch_size``).

    ``eval_fn(epoch) -> dict`` is called every ``eval_every`` epochs (0: never) and after the last
    epoch; its results are returned in ``history["evals"]``. Returns ``{"steps": [...], "evals": [...]}``.

    ``checkpoint_path``: where checkpoints go (every ``cfg.checkpoint_every_steps`` steps and/or
    ``cfg.checkpoint_every_epochs`` epochs, and at the end). ``resume``: continue from that
    checkpoint when it exists (refused unless its ``fingerprint`` — split checksums and config —
    equals the one given here). ``dist_info``: this process's place under torchrun (DDP).
    ``max_steps``: stop after this global step (for tests and benchmarks; no final eval).
    """
    cfg.validate()
    info = dist_info or D.SINGLE
    device = torch.device(device)
    if cfg.checkpointing and checkpoint_path is None:
        raise ConfigError("checkpoint_every_steps/checkpoint_every_epochs need a checkpoint path (a run_dir)")
    raw_model = model.to(device).train()
    loss.to(device).train()
    opt = make_optimizer(param_groups(raw_model, loss, cfg), cfg, device)
    base_lrs = [g["lr"] for g in opt.param_groups]
    steps_per_epoch = len(batches)
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size={cfg.batch_size} leaves no training batch for {batches.num_samples} items")
    total = cfg.epochs * steps_per_epoch
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")
    global_loss = bool(getattr(loss, "needs_global_batch", True))
    if info.enabled:
        last = batches.num_samples - (steps_per_epoch - 1) * batches.batch_size
        if min(last, batches.batch_size) < info.world_size:
            raise ConfigError(f"a global batch of {min(last, batches.batch_size)} images cannot be shared by "
                              f"{info.world_size} processes; use a batch_size (and a split size) that gives every "
                              "process at least one image per step")
        batches = D.ShardedBatches(batches, info)
        ddp_kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
        model = nn.parallel.DistributedDataParallel(raw_model, **ddp_kw)
    forward = torch.compile(model) if cfg.compile else model
    trainable = [p for p in list(raw_model.parameters()) + list(loss.parameters()) if p.requires_grad]
    fingerprint = {**(fingerprint or {}), "train": {k: v for k, v in asdict(cfg).items() if field_role(k) == "result"},
                   "steps_per_epoch": steps_per_epoch, "num_samples": batches.num_samples}
    writer = info.is_main
    log = StepLog(log_path if writer else None)
    history: dict = {"steps": [], "evals": [], "config": asdict(cfg), "resumed_from": None}

    # ---- where to start
    step, epoch0, batch0, elapsed0 = 0, 0, 0, 0.0
    last_ckpt: tuple[Path, int] | None = None
    ckpt_path = Path(checkpoint_path) if checkpoint_path else None
    # rank 0 decides (every rank must agree on where training starts)
    if D.broadcast_object(bool(resume and ckpt_path is not None and ckpt_path.exists()), info):
        ckpt = check_checkpoint(ckpt_path, fingerprint)
        raw_model.load_state_dict(ckpt["model"])
        loss.load_state_dict(ckpt["loss"])
        opt.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        step, epoch0, batch0 = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch"])
        elapsed0 = float(ckpt["elapsed_s"])
        history["evals"] = json.loads(ckpt["evals"])
        history["steps"] = log.rows_until(step) if writer else []
        history["resumed_from"] = {"path": str(ckpt_path), "step": step, "epoch": epoch0, "batch": batch0}
        set_rng_state(ckpt["rng"])
        last_ckpt = (ckpt_path, step)
        del ckpt
    elif writer and log.path is not None and log.path.exists():
        log.path.unlink()  # a fresh start: no lines of an earlier attempt

    def checkpoint(epoch: int, batch: int) -> None:
        nonlocal last_ckpt
        if writer and ckpt_path is not None:
            save_checkpoint(ckpt_path, {
                "version": CHECKPOINT_VERSION, "step": step, "epoch": epoch, "batch": batch,
                "elapsed_s": elapsed0 + time.perf_counter() - t0,
                "model": raw_model.state_dict(), "loss": loss.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "rng": rng_state(), "evals": json.dumps(history["evals"]),
                "fingerprint": json.dumps(fingerprint, default=str),
            })
        last_ckpt = (ckpt_path, step)
        D.barrier(info)

    def describe_last_ckpt() -> str:
        if last_ckpt is None:
            return "no checkpoint has been written (set checkpoint_every_steps to keep one)"
        return f"the last good checkpoint is {last_ckpt[0]} (step {last_ckpt[1]}; resume=True continues from it)"

    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not (progress and writer),
               dynamic_ncols=True)
    start_step, t0 = step, time.perf_counter()
    try:
        for epoch in range(epoch0, cfg.epochs):
            first = batch0 if epoch == epoch0 else 0
            for b, (x, y, idx) in enumerate(batches.epoch(epoch, start=first), start=first):
                if max_steps is not None and step >= max_steps:
                    return history
                f = lr_factor(step, total, steps_per_epoch, cfg)
                for g, base in zip(opt.param_groups, base_lrs):
                    g["lr"] = base * f
                loss.set_progress(step, epoch)
                try:
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        out = forward(x)
                    n_local = len(x)
                    n_global = min(batches.batch_size, batches.num_samples - b * batches.batch_size)
                    if info.enabled and global_loss:
                        out, y_l, idx_l = D.gather_batch(out, y, idx, n_global, info)
                        res = loss(out, y_l, idx_l)
                        objective, weight = res.total, 1.0
                    else:
                        res = loss(out, y, idx)
                        # DDP averages gradients over processes: weight each shard by its share
                        weight = n_local * info.world_size / n_global if info.enabled else 1.0
                        objective = res.total * weight if weight != 1.0 else res.total
                    if info.enabled:
                        vals = torch.tensor([res.total.item(), *res.parts.values()], dtype=torch.float64)
                        vals = vals * (1.0 if global_loss else n_local / n_global) / (info.world_size if global_loss else 1)
                        vals = vals.to(device)
                        torch.distributed.all_reduce(vals)
                        value, parts = float(vals[0]), dict(zip(res.parts, vals[1:].tolist()))
                    else:
                        value, parts = res.total.item(), res.parts
                    if not math.isfinite(value):
                        raise FloatingPointError(
                            f"loss became {value} at step {step + 1} (epoch {epoch}, batch {b}); {describe_last_ckpt()}."
                            " Lower the learning rate, set grad_clip, or check the inputs.")
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(objective).backward()
                    D.average_gradients(list(loss.parameters()), info)
                    gnorm = None
                    if cfg.grad_clip:
                        scaler.unscale_(opt)
                        gnorm = float(nn.utils.clip_grad_norm_(trainable, cfg.grad_clip))
                    scaler.step(opt)
                    scaler.update()
                except torch.OutOfMemoryError:
                    opt.zero_grad(set_to_none=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    per = f" ({batches.batch_size // info.world_size} per process)" if info.enabled else ""
                    raise OutOfMemory(
                        f"{device} ran out of memory at step {step + 1} with batch_size={batches.batch_size}{per}, "
                        f"amp={cfg.amp}; try batch_size={max(batches.batch_size // 2, 2)}"
                        f"{' or amp=bf16' if dtype is None else ''}") from None
                step += 1
                elapsed = time.perf_counter() - t0
                ips = (step - start_step) * batches.batch_size / max(elapsed, 1e-9)
                row = {"step": step, "epoch": epoch, "loss": value, **{f"loss_{k}": v for k, v in parts.items()},
                       "lr": opt.param_groups[0]["lr"], "grad_norm": gnorm, "time_s": round(elapsed0 + elapsed, 4),
                       "images_per_s": round(ips, 2)}
                history["steps"].append(row)
                log.write(row)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", img_s=f"{ips:.0f}", epoch=epoch, refresh=False)
                if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 and b + 1 < steps_per_epoch:
                    checkpoint(epoch, b + 1)
            loss.end_epoch(epoch)
            last = epoch == cfg.epochs - 1
            if eval_fn is not None and (last or (eval_every and (epoch + 1) % eval_every == 0)):
                if writer:
                    ev = {"epoch": epoch + 1, "step": step, **eval_fn(epoch + 1)}
                    history["evals"].append(ev)
                D.barrier(info)
                model.train()
            # a step checkpoint that fell on the epoch's last batch is written here, after end_epoch/eval
            steps_hit = bool(cfg.checkpoint_every_steps) and step % max(cfg.checkpoint_every_steps, 1) == 0
            if ckpt_path is not None and cfg.checkpointing and (
                    last or steps_hit or (cfg.checkpoint_every_epochs and (epoch + 1) % cfg.checkpoint_every_epochs == 0)):
                checkpoint(epoch + 1, 0)
    finally:
        bar.close()
        log.close()
    return history
