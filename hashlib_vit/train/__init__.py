"""Training: the one loop every method trains through, split by concern.

* :mod:`.loop` — :func:`train`, the loop itself (reads top to bottom), and :class:`OutOfMemory`;
* :mod:`.optim` — parameter groups (backbone vs new x decay vs no decay), the optimiser, the
  learning-rate schedule, the autocast dtype;
* :mod:`.checkpoint` — checkpoint contents, atomic writes, refusal of a foreign checkpoint, exact
  resume (RNG states), :class:`~.checkpoint.Checkpointer`;
* :mod:`.steplog` — the per-step CSV log and the buffer that brings the step values (device tensors)
  to the host once per flush (every ``log_every_steps`` steps, before checkpoints, at the end of each
  epoch), where each step is checked by :mod:`.divergence` (a non-finite loss or grad norm, a loss far
  above its early value: :class:`~hashlib_vit.errors.DivergenceError`);
* :mod:`.distributed` — several processes under torchrun (DistributedDataParallel).

Speed (CUDA): bf16 autocast (fp16 with a grad scaler on request), fused optimisers, optional
``torch.compile``, data from a GPU-resident :class:`~hashlib_vit.data.TensorBatches`, and no host
synchronisation between log flushes. The same code is deterministic on CPU: a killed CPU run resumed
from a checkpoint ends with bit-identical weights.

``python -m hashlib_vit train [--config file.yaml] --param value ...`` is ``hashlib-vit train`` (so
``torchrun --nproc_per_node N -m hashlib_vit train ...`` trains on N processes); the settings are the
``train`` section of :class:`hashlib_vit.config.RunConfig` (:class:`~hashlib_vit.config.TrainConfig`).
"""
from ..config import TrainConfig  # the run configuration's train section
from .checkpoint import (CHECKPOINT_VERSION, Checkpointer, check_checkpoint, fingerprint_differences,
                         load_checkpoint, rng_state, save_checkpoint, set_rng_state)
from .loop import OutOfMemory, train
from .optim import amp_dtype, apply_lr, lr_factor, make_optimizer, param_groups
from .steplog import StepBuffer, StepLog

__all__ = ["TrainConfig", "train", "OutOfMemory", "param_groups", "make_optimizer", "lr_factor", "apply_lr",
           "amp_dtype", "StepLog", "StepBuffer", "CHECKPOINT_VERSION", "Checkpointer", "save_checkpoint",
           "load_checkpoint", "check_checkpoint", "fingerprint_differences", "rng_state", "set_rng_state"]
