"""Several augmented views of every training image in one batch (two-view SupCon, HSC ``n_views=2``).

:class:`MultiViewBatches` wraps a training :class:`~hashlib_vit.data.TensorBatches`: batch ``b`` of
epoch ``e`` holds the same images as the wrapped source (same shuffled order), each transformed
``n_views`` times with independent seeded augmentations, laid out ``[view 1 of all; view 2 of all; ...]``;
labels and indices are repeated alongside, so the loss recognises the views of one image by their index.
View 1 is exactly the batch the single-view source yields (same generator). Deterministic and
resumable like the source.
"""
from __future__ import annotations

from typing import Iterator

import torch

from ..errors import ConfigError
from ..utils import batch_generator
from .datasets import Batch, TensorBatches


class MultiViewBatches:
    def __init__(self, base: TensorBatches, n_views: int = 2):
        if not isinstance(n_views, int) or n_views < 1:
            raise ConfigError(f"n_views={n_views!r} must be an integer >= 1")
        if not base.train:
            raise ConfigError("MultiViewBatches wraps training batches (train=True)")
        self.base = base
        self.n_views = n_views

    def __len__(self) -> int:
        return len(self.base)

    @property
    def batch_size(self) -> int:
        """Images per step as the model sees them (views included)."""
        return self.base.batch_size * self.n_views

    @property
    def num_samples(self) -> int:
        return self.base.num_samples

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        base = self.base
        order = base.order(epoch)
        for b in range(start, len(base)):
            idx = order[b * base.batch_size : (b + 1) * base.batch_size]
            idx_dev = idx.to(base.device)
            images = base.images[idx_dev]
            views = []
            for v in range(self.n_views):
                # view 0 uses the single-view source's generator; further views their own streams
                gen = batch_generator(base.seed, 1, epoch, b) if v == 0 else batch_generator(base.seed, 1, epoch, b, v)
                views.append(base.transform(images, train=True, generator=gen))
            y = base.labels[idx_dev]
            yield torch.cat(views), y.repeat(self.n_views, 1), idx.repeat(self.n_views)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)


__all__ = ["MultiViewBatches"]
