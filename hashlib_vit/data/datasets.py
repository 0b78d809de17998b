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

    def load_images(self, idx, size: int | None = None) -> torch.Tensor:
        """uint8 ``(n, 3, size, size)`` images at positions `idx` (same call as :meth:`FileSplit.load_images`)."""
        x = self.images[torch.as_tensor(np.asarray(idx, dtype=np.int64))]
        if size is not None and x.shape[-1] != size:
            x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True,
                                                align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return x


class _BatchSource:
    """What every batch source shares: sizes, the seeded epoch order, and ``len`` in batches.

    Shuffling and augmentation for (epoch e, batch b) use a generator seeded from (seed, e, b), so an
    epoch can be restarted at any batch and produce exactly the batches an uninterrupted run saw.
    """

    def __init__(self, split, batch_size: int, transform: TensorTransform, *, train: bool, seed: int = 0,
                 device: torch.device | str = "cpu", drop_last: bool | None = None):
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

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)


class TensorBatches(_BatchSource):
    """Mini-batches of an in-memory split, optionally kept on the GPU (see :class:`_BatchSource`)."""

    def __init__(self, split: Split, batch_size: int, transform: TensorTransform, *, train: bool, seed: int = 0,
                 device: torch.device | str = "cpu", drop_last: bool | None = None):
        super().__init__(split, batch_size, transform, train=train, seed=seed, device=device, drop_last=drop_last)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Yield the batches of `epoch`, beginning with batch number `start`."""
        order = self.order(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            idx_dev = idx.to(self.device)
            gen = batch_generator(self.seed, 1, epoch, b) if self.train else None
            x = self.transform(self.images[idx_dev], train=self.train, generator=gen)
            yield x, self.labels[idx_dev], idx


# ----------------------------------------------------------------------------- file-backed splits
class FileSplit:
    """A split whose images stay on disk (list-file data sets: NUS-WIDE, COCO, ImageNet-100, custom).

    ``root``: the image root; ``ids``: paths relative to it (as in the list file); ``labels``: float
    multi-hot ``(N, C)``. ``missing``: what to do with listed images that do not exist — ``"error"``
    (default: stop, naming the first missing path and how many are missing) or ``"skip"`` (drop them;
    their number is kept in ``skipped`` and reported with a warning).
    """

    def __init__(self, root, ids: list[str], labels, *, missing: str = "error", check_files: bool = True,
                 name: str = "split"):
        import warnings
        from pathlib import Path

        if missing not in ("error", "skip"):
            raise DataError(f"missing={missing!r}: use 'error' (stop at a missing image) or 'skip'")
        self.root = Path(root)
        labels = torch.as_tensor(np.asarray(labels)).float()
        if labels.ndim != 2 or labels.shape[0] != len(ids):
            raise DataError(f"labels must be (N, C) with N={len(ids)}, got {tuple(labels.shape)}")
        self.skipped, self.skipped_examples = 0, []
        if check_files:
            state = file_states(self.root, ids)
            if (state == "missing").all():
                raise DataError(f"{name}: none of the {len(ids)} listed images exists under data_root={str(self.root)!r}: "
                                f"the list paths and data_root do not match. {_prefix_hint(self.root, ids[0])}")
            bad = {k: [ids[i] for i in np.flatnonzero(state == k)] for k in _BROKEN}
            for kind, paths in bad.items():  # always an error: a broken file is not a missing one
                if paths:
                    raise DataError(f"{name}: {len(paths)} listed image file(s) are {kind} ({_BROKEN[kind]}), "
                                    f"e.g. {self.root / paths[0]}; replace them or remove them from the list "
                                    "(missing='skip' leaves out only images that do not exist)")
            missing_ids = [ids[i] for i in np.flatnonzero(state == "missing")]
            if missing_ids:
                if missing == "error":
                    raise DataError(
                        f"{name}: {len(missing_ids)} of {len(ids)} listed images do not exist under {self.root}, "
                        f"e.g. {self.root / missing_ids[0]}; pass missing='skip' to leave them out (their number "
                        "is recorded in the run's env.json and metrics.json)")
                self.skipped, self.skipped_examples = len(missing_ids), missing_ids[:5]
                warnings.warn(f"{name}: skipped {len(missing_ids)} of {len(ids)} listed images that do not exist "
                              f"under {self.root} (e.g. {missing_ids[0]})", UserWarning, stacklevel=2)
                keep = np.flatnonzero(state != "missing")
                ids = [ids[i] for i in keep]
                labels = labels[torch.as_tensor(keep)]
        if len(ids) == 0:
            raise DataError(f"{name} is empty: no images (root {self.root})")
        self.ids = list(ids)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def classes(self) -> np.ndarray:
        return self.labels.argmax(1).numpy()

    def load_images(self, idx, size: int) -> torch.Tensor:
        """Decode the images at positions `idx` as uint8 ``(n, 3, size, size)`` (see :class:`ImageFiles`)."""
        ds = ImageFiles(self.root, self.ids, size)
        return torch.stack([ds[int(i)] for i in idx])


# the broken-file states of :func:`file_states` and what each means
_BROKEN = {"empty": "0 bytes", "not an image": "no JPEG/PNG/GIF/BMP/WebP/TIFF header",
           "truncated": "the file ends before the image does: cut short by a copy or a download"}

# the first bytes of the image formats PIL reads here (JPEG, PNG, GIF, BMP, WebP, TIFF)
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


# the last bytes of a complete file: JPEG's end-of-image marker, PNG's IEND chunk (searched in the last 64 bytes)
_IMAGE_END = {b"\xff\xd8\xff": b"\xff\xd9", b"\x89PNG\r\n\x1a\n": b"IEND\xaeB`\x82"}


def _file_state(path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if not head:
                return "empty"
            if not (head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")):
                return "not an image"
            end = next((e for m, e in _IMAGE_END.items() if head.startswith(m)), None)
            if end is None:
                return "ok"
            f.seek(max(0, f.seek(0, 2) - 64))
            tail = f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return "missing"
    if end in tail:
        return "ok"
    return "ok" if _decodes(path) else "truncated"  # no end marker: decode it (some files carry trailing bytes)


def _decodes(path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 - PIL raises several kinds for a truncated or damaged file
        return False


def file_states(root, ids: list[str], threads: int = 8) -> np.ndarray:
    """For each listed image ``root/id``: ``"ok"``, ``"missing"``, ``"empty"`` (0 bytes), ``"not an image"``
    (no JPEG/PNG/GIF/BMP/WebP/TIFF header) or ``"truncated"`` (a JPEG without its end-of-image marker or a
    PNG without its IEND chunk that does not decode): a 12-byte read of the head and a 64-byte read of the
    tail per file, in ``threads`` threads; only a file without its end marker is decoded in full. Damage
    inside a complete file is found when it is decoded (``load_square`` names it)."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    root = Path(root)
    with ThreadPoolExecutor(max_workers=threads) as ex:
        return np.array(list(ex.map(lambda i: _file_state(root / i), ids, chunksize=256)), dtype=object)


def _prefix_hint(root, first_id: str) -> str:
    """Where the first listed image was looked for, and the prefix that would make it match when one does."""
    from pathlib import Path, PurePosixPath

    root = Path(root)
    parts = PurePosixPath(first_id.replace("\\", "/")).parts
    for k in range(1, len(parts)):  # the list carries a prefix that data_root already holds ('./data/nuswide/...')
        if (root / Path(*parts[k:])).is_file():
            prefix = "/".join(parts[:k])
            return (f"The first listed path {first_id!r} was looked for at {root / first_id}; {root / Path(*parts[k:])} "
                    f"exists, so the lists carry the prefix {prefix!r}: strip it from the list files (or set data_root "
                    f"to a folder where {prefix}/ is a sub-folder).")
    return (f"The first listed path {first_id!r} was looked for at {root / first_id}, which does not exist: data_root "
            "must be the folder the list paths are relative to.")


def square_crop(im, size: int):
    """A PIL image's shorter side resized (bilinear) to ``size``, then its centre ``size x size`` square: the
    geometry of every file-backed protocol's images (:func:`load_square`) and of query images prepared like
    them (:mod:`hashlib_vit.data.query_images`)."""
    from PIL import Image

    w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def load_square(path, size: int) -> torch.Tensor:
    """One image file as uint8 ``(3, size, size)``: shorter side resized to `size`, centre square.

    A missing file or a corrupt/truncated one raises DataError naming the path.
    """
    from PIL import Image

    from .sources import decode_image

    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e}") from e
    arr = decode_image(data, str(path))
    im = square_crop(Image.fromarray(arr), size)
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class ImageFiles(torch.utils.data.Dataset):
    """Lazily decoded image files (PIL), each as uint8 ``(3, size, size)``."""

    def __init__(self, root, ids: list[str], size: int):
        from pathlib import Path

        self.root, self.ids, self.size = Path(root), ids, int(size)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_square(self.root / self.ids[i], self.size)


class FileBatches(_BatchSource):
    """Mini-batches of a :class:`FileSplit`, with the interface of :class:`TensorBatches`.

    Images are decoded lazily by a torch DataLoader (``num_workers`` processes) at the transform's
    load size (``resize`` for 224-pixel models, else the output size), then cropped / flipped as one
    batch by the same seeded :class:`TensorTransform`. The order of epoch e and the augmentation of
    batch b depend only on (seed, e, b), so ``epoch(e, start=b)`` resumes exactly.
    """

    def __init__(self, split: FileSplit, batch_size: int, transform: TensorTransform, *, train: bool,
                 seed: int = 0, device: torch.device | str = "cpu", drop_last: bool | None = None,
                 num_workers: int = 0):
        super().__init__(split, batch_size, transform, train=train, seed=seed, device=device, drop_last=drop_last)
        self.num_workers = int(num_workers)
        self.load_size = transform.resize or transform.out_size
        self.dataset = ImageFiles(split.root, split.ids, self.load_size)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        order = self.order(epoch)
        batches = [order[b * self.batch_size : (b + 1) * self.batch_size].tolist() for b in range(start, len(self))]
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,
                                             pin_memory=self.device.type == "cuda")
        for b, x in enumerate(loader, start):
            idx = torch.as_tensor(batches[b - start])
            gen = batch_generator(self.seed, 1, epoch, b) if self.train else None
            x = self.transform(x.to(self.device, non_blocking=True), train=self.train, generator=gen)
            yield x, self.split.labels[idx].to(self.device), idx


def make_batches(split, batch_size: int, transform: TensorTransform, *, train: bool, seed: int = 0,
                 device: torch.device | str = "cpu", num_workers: int | None = None, **kw):
    """The batch source for a split: :class:`TensorBatches` (in memory / on the device) for a
    :class:`Split`, :class:`FileBatches` (lazy PIL decoding) for a :class:`FileSplit`.

    ``num_workers`` (file-backed splits): decoding processes; default 0 on a CPU device, up to 8 with CUDA.
    """
    if isinstance(split, FileSplit):
        if num_workers is None:
            import os

            num_workers = min(8, os.cpu_count() or 1) if torch.device(device).type == "cuda" else 0
        return FileBatches(split, batch_size, transform, train=train, seed=seed, device=device,
                           num_workers=num_workers, **kw)
    return TensorBatches(split, batch_size, transform, train=train, seed=seed, device=device, **kw)
