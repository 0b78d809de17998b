"""Encoding a split into binary codes with a trained model."""
from __future__ import annotations

import numpy as np
import torch
from ..models.hashmodel import sign_codes
from ..utils import progress_bar


@torch.no_grad()
def map_in_order(model: torch.nn.Module, batches, fn, *, device=None, progress: bool = False, desc: str = "encode",
                 amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(model, images) -> (n, ...)`` over every batch of an evaluation iterator, returned in split order.

    ``batches`` yields ``(images, labels, index)`` (e.g. ``TensorBatches(..., train=False)``), in any
    order; the outputs (as CPU tensors, ``fn``'s dtype) and the labels come back sorted by ``index``. The
    model runs in eval mode under ``torch.no_grad`` and ``amp_dtype`` autocast (None: off); its train/eval
    mode is restored afterwards. The one loop behind :func:`encode` and the training-free feature extraction.
    """
    was_training = model.training
    model.eval()
    dev = device or next(model.parameters()).device
    outs, labels, order = [], [], []
    try:
        for x, y, idx in progress_bar(batches, enabled=progress, total=len(batches), desc=desc, leave=False):
            x = x.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = fn(model, x)
            outs.append(out.cpu())
            labels.append(y.cpu())
            order.append(idx.cpu())
    finally:
        model.train(was_training)
    order = torch.cat(order)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(len(order))
    return torch.cat(outs)[inv], torch.cat(labels)[inv]


def encode(model: torch.nn.Module, batches, *, device=None, progress: bool = False, desc: str = "encode",
           amp_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Codes (int8 ±1, (N, b)) and labels ((N, C) multi-hot) of every item, in split order.

    ``batches`` is an evaluation iterator (e.g. ``TensorBatches(..., train=False)``) yielding
    ``(images, labels, index)``. The model is put in eval mode and restored afterwards.
    """
    codes, labels = map_in_order(model, batches, lambda m, x: sign_codes(m(x).u.float()), device=device,
                                 progress=progress, desc=desc, amp_dtype=amp_dtype)
    return codes.numpy(), labels.numpy()


def encode_prepared(model, images: torch.Tensor, transform, *, batch_size: int = 256, device=None) -> np.ndarray:
    """Codes (int8 ±1, ``(n, bits)``) of uint8 ``(n, 3, S, S)`` images after ``transform(..., train=False)``,
    with the model in eval mode under ``torch.no_grad`` (its mode restored afterwards), in batches of
    ``batch_size``. The one encoder of images from outside a split: query by image
    (:mod:`hashlib_vit.retrieval.query`) and :func:`hashlib_vit.retrieval.index.search_images`."""
    dev = device or next(model.parameters()).device
    was = model.training
    model.eval()
    codes = []
    try:
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                x = transform(torch.as_tensor(images[s:s + batch_size]), train=False).to(dev)
                codes.append(model.encode(x).cpu().numpy())
    finally:
        model.train(was)
    return np.concatenate(codes).astype(np.int8)
