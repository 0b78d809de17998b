"""Encoding a split into binary codes with a trained model."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.hashmodel import sign_codes


@torch.no_grad()
def encode(model: torch.nn.Module, batches, *, device=None, progress: bool = False, desc: str = "encode",
           amp_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Codes (int8 ±1, (N, K)) and labels ((N, C) multi-hot) of every item, in split order.

    ``batches`` is an evaluation iterator (e.g. ``TensorBatches(..., train=False)``) yielding
    ``(images, labels, index)``. The model is put in eval mode and restored afterwards.
    """
    was_training = model.training
    model.eval()
    dev = device or next(model.parameters()).device
    codes, labels, order = [], [], []
    try:
        for x, y, idx in tqdm(batches, total=len(batches), desc=desc, disable=not progress, leave=False):
            x = x.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                u = model(x).u
            codes.append(sign_codes(u.float()).cpu())
            labels.append(y.cpu())
            order.append(idx.cpu())
    finally:
        model.train(was_training)
    order = torch.cat(order)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(len(order))
    return torch.cat(codes)[inv].numpy(), torch.cat(labels)[inv].numpy()
