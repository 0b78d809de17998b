"""In-memory splits and the batch iterators the training loop and the encoder consume."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from ..errors import DataError
from ..utils import batch_generator
from .transforms import TensorTransform

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images float [0,1], labels (n,C) float, indices long


@dataclass
class Split:
    """One split of a protocol held in memory.

    ``images``: uint8 ``(N, 3, H, W)``; ``labels``: float32 multi-hot ``(N, C)``; ``ids``: the
    item identifiers written in the split list (relative paths or pool indices).
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.dtype != torch.uint8:
            raise DataError(f"images must be uint8 (N, 3, H, W), got {tuple(self.images.shape)} {self.images.dtype}")
        if self.labels.ndim != 2 or self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"labels must be multi-hot (N, C) with N={self.images.shape[0]}, got {tuple(self.labels.shape)}"
            )
        if len(self.images) == 0:
            raise DataError("split is empty")
        self.labels = self.labels.float()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def classes(self) -> np.ndarray:
        """Class index per item (single-label data); argmax of the multi-hot vector."""
        return self.labels.argmax(1).numpy()


class TensorBatches:
    """Mini-batches of an in-memory split, optionally kept on the GPU.

    Shuffling and augmentation for (epoch e, batch b) use a generator seeded from (seed, e, b), so an
    epoch can be restarted at any batch and produce exactly the batches an uninterrupted run saw.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        transform: TensorTransform,
        *,
        train: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
        drop_last: bool | None = None,
    ):
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.split = split
        self.batch_size = int(batch_size)
        self.transform = transform
        self.train = train
        self.seed = int(seed)
        self.device = torch.device(device)
        # pair losses need >= 2 items in a batch: drop a trailing singleton in training
        self.drop_last = (train and len(split) % batch_size == 1) if drop_last is None else drop_last
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.split)

    def order(self, epoch: int) -> torch.Tensor:
        n = len(self.split)
        if not self.train:
            return torch.arange(n)
        return torch.randperm(n, generator=batch_generator(self.seed, 0, epoch))

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Yield the batches of `epoch`, beginning with batch number `start`."""
        order = self.order(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            idx_dev = idx.to(self.device)
            gen = batch_generator(self.seed, 1, epoch, b) if self.train else None
            x = self.transform(self.images[idx_dev], train=self.train, generator=gen)
            yield x, self.labels[idx_dev], idx

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)
