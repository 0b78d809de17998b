"""Multi-process training with PyTorch's own engine (torchrun + DistributedDataParallel), used by :mod:`.loop`.

``torchrun --nproc_per_node N -m hashlib_vit train --config ... --run-dir ...`` starts N processes;
each one calls :func:`init_distributed`, which reads torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``) and joins the process group (NCCL on CUDA, gloo on CPU).

Conventions:

* ``batch_size`` is the **global** batch: every step, each rank takes a disjoint, contiguous shard of
  the global batch the single-process run would see (:class:`ShardedBatches`), so augmentation and
  shuffling are identical to a single-process run with the same seed.
* A loss that needs the whole global batch (pairwise losses: the pairs span ranks) sets the class
  attribute ``needs_global_batch = True``; the loop then gathers the model outputs, labels and
  indices of every rank with :func:`gather_with_grad` (gradients flow back to each rank's own rows)
  and every rank computes the same global loss. Other losses are computed on the local shard and
  re-weighted so that DDP's gradient average equals the gradient of the global-batch mean.
* Only rank 0 writes the run directory, the CSV log and checkpoints.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_distributed(device_type: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment; a no-op in a single process."""
    world = env_world_size()
    if world <= 1:
        return SINGLE
    local = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_type in ("auto", "cuda")
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)


def current() -> DistInfo:
    """The DistInfo of an already initialised process group (SINGLE otherwise)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return SINGLE


def shard_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """Contiguous shard [lo, hi) of n rows for `rank` (sizes differ by at most one, as tensor_split)."""
    q, r = divmod(n, world)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


class ShardedBatches:
    """Each rank's disjoint shard of every global batch of a TensorBatches-like source.

    The global batch (with its augmentation, seeded by (seed, epoch, batch)) is the single-process
    one; this rank keeps rows ``shard_bounds(n, world, rank)``. ``len`` and ``batch_size`` are the
    global ones (steps and throughput count global images).
    """

    def __init__(self, batches, info: DistInfo):
        self.batches, self.info = batches, info
        self.batch_size = batches.batch_size

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def num_samples(self) -> int:
        return self.batches.num_samples

    def epoch(self, epoch: int = 0, start: int = 0):
        for x, y, idx in self.batches.epoch(epoch, start=start):
            lo, hi = shard_bounds(len(x), self.info.world_size, self.info.rank)
            yield x[lo:hi], y[lo:hi], idx[lo:hi]


class _GatherRows(torch.autograd.Function):
    """All-gather rows of a tensor from every rank (uneven row counts allowed); backward sums the
    gradient of the gathered tensor over ranks and returns this rank's rows (works on gloo, which
    has no reduce-scatter)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, sizes: tuple[int, ...], rank: int):
        ctx.sizes, ctx.rank = sizes, rank
        m = max(sizes)
        pad = t.new_zeros((m - t.shape[0], *t.shape[1:]))
        buf = torch.cat([t, pad]).contiguous()
        out = [torch.empty_like(buf) for _ in sizes]
        dist.all_gather(out, buf)
        return torch.cat([o[:s] for o, s in zip(out, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g = grad.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        lo = sum(ctx.sizes[: ctx.rank])
        return g[lo : lo + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(t: torch.Tensor, sizes: tuple[int, ...], rank: int) -> torch.Tensor:
    """Concatenate the rows of `t` of every rank in rank order; differentiable (see _GatherRows)."""
    if t.requires_grad:
        return _GatherRows.apply(t, tuple(sizes), rank)
    with torch.no_grad():
        return _GatherRows.apply(t, tuple(sizes), rank)


def gather_batch(out, y: torch.Tensor, idx: torch.Tensor, n_global: int, info: DistInfo):
    """The global batch seen by a loss with ``needs_global_batch``: every tensor field of the model
    output whose first dimension is the local batch (and each piece of ``heads``) is gathered with
    gradients; labels and indices without."""
    sizes = tuple(b - a for a, b in (shard_bounds(n_global, info.world_size, r) for r in range(info.world_size)))
    n_local = sizes[info.rank]

    def g(v):
        if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n_local:
            return gather_with_grad(v, sizes, info.rank)
        if isinstance(v, tuple):
            return tuple(g(p) for p in v)
        return v

    if dataclasses.is_dataclass(out):
        changes = {f.name: g(getattr(out, f.name)) for f in dataclasses.fields(out)}
        out = dataclasses.replace(out, **changes)
    else:
        out = g(out)
    dev = y.device
    y_all = gather_with_grad(y, sizes, info.rank)
    idx_all = gather_with_grad(idx.to(dev), sizes, info.rank).to(idx.device)
    return out, y_all, idx_all


def all_reduce_mean(value: float, info: DistInfo, device) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def average_gradients(params, info: DistInfo) -> None:
    """Average the gradients of parameters DDP does not manage (e.g. a loss's own classifier)."""
    if not info.enabled:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


__all__ = ["DistInfo", "SINGLE", "init_distributed", "current", "shard_bounds", "ShardedBatches",
           "gather_with_grad", "gather_batch", "all_reduce_mean", "average_gradients", "barrier",
           "broadcast_object", "env_world_size"]
