"""Several augmented views of every training image in one batch (two-view SupCon, HSC ``n_views=2``).

:class:`MultiViewBatches` wraps a training batch source (:class:`~hashlib_vit.data.TensorBatches` or
:class:`~hashlib_vit.data.FileBatches`, anything that applies ``self.transform(x, train=, generator=)``
to each batch): batch ``b`` of epoch ``e`` holds the same images as the wrapped source (same shuffled
order), each transformed ``n_views`` times, laid out ``[view 1 of all; view 2 of all; ...]``; labels and
indices are repeated alongside, so the loss recognises the views of one image by their index.
View 1 is exactly the batch the single-view source yields; view v > 1 uses a generator seeded from that
batch's generator, so the batches stay deterministic and resumable like the source's.
"""
from __future__ import annotations

import copy
from typing import Iterator

import torch

from ..errors import ConfigError
from .datasets import Batch


class _ViewsTransform:
    """Apply `transform` `n_views` times and concatenate along the batch dimension."""

    def __init__(self, transform, n_views: int):
        self.transform = transform
        self.n_views = n_views

    def __getattr__(self, name):  # resize / out_size etc. of the wrapped transform (FileBatches reads them)
        return getattr(self.__dict__["transform"], name)

    def __call__(self, x: torch.Tensor, *, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        views = [self.transform(x, train=train, generator=generator)]
        if self.n_views > 1:
            # seed for the further views, drawn from this batch's generator after view 1 was made
            base = int(torch.randint(0, 2**62, (1,), generator=generator,
                                     device=generator.device if generator is not None else "cpu"))
            for v in range(1, self.n_views):
                g = torch.Generator(device=generator.device if generator is not None else "cpu")
                g.manual_seed(base + v)
                views.append(self.transform(x, train=train, generator=g))
        return torch.cat(views)


class MultiViewBatches:
    def __init__(self, base, n_views: int = 2):
        if not isinstance(n_views, int) or isinstance(n_views, bool) or n_views < 1:
            raise ConfigError(f"n_views={n_views!r} must be an integer >= 1")
        if not getattr(base, "train", False):
            raise ConfigError("MultiViewBatches wraps training batches (train=True)")
        self.base = base
        self.n_views = n_views
        self._inner = copy.copy(base)  # shares the data; only the transform differs
        self._inner.transform = _ViewsTransform(base.transform, n_views)

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
        for x, y, idx in self._inner.epoch(epoch, start):
            yield x, y.repeat(self.n_views, 1), idx.repeat(self.n_views)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)


__all__ = ["MultiViewBatches"]
