"""Feature cache for partial fine-tuning: the tokens after the frozen block N of every training image,
computed once, stored on disk in half precision and memory-mapped.

With ``freeze_blocks=N`` (see :mod:`hashlib_vit.models.partial`) the embeddings and blocks ``0..N-1``
never change during training, so their output for a given input image never changes either.
``feature_cache=True`` computes it once per (image, view) and trains the remaining blocks and the head
on the stored tokens (:class:`CachedBatches` + :class:`~hashlib_vit.models.partial.PartialModel`): a
training step then costs ``L-N`` blocks forward and backward instead of ``L`` blocks forward plus
``L-N`` backward.

**Views (augmentation).** ``views=1`` (default): the single view is the *evaluation* transform of the
image (resize + centre crop for 224-px models, the native image for 32-px ones): no augmentation.
``views=k >= 2``: ``k`` views per image drawn with the protocol's *training* transform (random crop +
horizontal flip, the paper recipes' augmentation), seeded: view ``v`` of the images ``c*chunk ..
(c+1)*chunk-1`` uses the generator of ``(seed, 2, v, c)``. Every epoch each image uses one of its ``k``
views, picked with the generator of ``(seed, 3, epoch)``; the batch order is that of
:class:`~hashlib_vit.data.TensorBatches` with the same seed (generator ``(seed, 0, epoch)``), so
``epoch(e, start=b)`` resumes exactly.

**Precision.** The frozen prefix is computed in float32 (no autocast) in eval mode and stored as
float16 (IEEE half: 11-bit significand, relative rounding error <= 2^-11 ~ 4.9e-4; ViT token values are
far inside its range); training converts the tokens back to float32. Query and database images are
encoded by the full model on the fly (float32 prefix, as in an uncached run), so the codes of a cached run
equal those of an uncached frozen run whose block-N tokens are rounded to float16 in training
(``PartialModel(..., token_dtype=torch.float16)`` on :class:`ViewBatches`: test
``tests/test_feature_cache.py``).

**Key.** A cache folder ``<cache_dir>/<backbone>-n<N>-v<views>-<sha256(key)[:16]>/`` holds ``tokens.npy``
(float16, shape ``(views, images, tokens, dim)``, C order) and ``manifest.json`` (the full key, shape,
dtype, byte size, sha256 of the token bytes, build time; written last, inside a temporary folder that is
renamed into place only when complete). The key is: cache format, backbone name, image size, N, the
frozen prefix's fingerprint (sha256 of the normalisation constants and every frozen parameter and buffer:
valid for random, in-memory or file weights), the weights file's sha256 when the backbone records one
(``backbone.weights_info["sha256"]``), the training split's checksum, the transform, the number of
views (and their seed and chunk size when ``views > 1``), the dtype, the token shape and the torch
version. A folder whose manifest is missing, unreadable or for another key, or whose data file has the
wrong size, is deleted and rebuilt (with a warning), never reused.

**Disk.** The size ``views * images * tokens * dim * 2`` bytes is computed before anything is written;
when ``shutil.disk_usage`` shows less free space (plus 64 MiB), an error says how much is needed and
where (:class:`~hashlib_vit.errors.DiskFullError`). A write that fails with ENOSPC / EDQUOT midway
removes the temporary folder and raises :class:`~hashlib_vit.errors.DiskFullError` naming the folder,
the free and the needed bytes; a hard kill can leave only a hidden ``.<key>.<host>-<pid>-<random>.tmp`` folder, which no reader trusts and the next build in the same
``cache_dir`` removes (its writer is gone: :func:`~hashlib_vit.utils.clean_stale_temps`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import ConfigError, DataError, DiskFullError
from ..utils import (DISK_FULL_ERRNOS, atomic_write_json, batch_generator, make_dirs, make_temp_dir, project_root,
                     raise_write_error, release_temp)
from .datasets import Split
from .transforms import TensorTransform

CACHE_FORMAT = 1
DEFAULT_CHUNK = 128  # images per prefix forward while building (and the augmentation seeding unit)
TOKENS_FILE, MANIFEST_FILE = "tokens.npy", "manifest.json"
DISK_MARGIN = 64 << 20
_VIEW_STREAM, _PICK_STREAM = 2, 3  # batch_generator streams (0: shuffle, 1: batch augmentation)


def default_cache_dir() -> Path:
    """``<project>/.cache/features`` inside a checkout (ignored by git), else ``~/.cache/hashlib_vit/features``."""
    root = project_root()
    return root / ".cache" / "features" if root else Path.home() / ".cache" / "hashlib_vit" / "features"


def view_transform(views: int, train_tf: TensorTransform, eval_tf: TensorTransform) -> tuple[TensorTransform, bool]:
    """(transform, train flag) of the cached views: the eval transform for one view, the train one for more."""
    if not isinstance(views, int) or isinstance(views, bool) or views < 1:
        raise ConfigError(f"cache_views={views!r} must be an integer >= 1 (1: the un-augmented eval view)")
    return (eval_tf, False) if views == 1 else (train_tf, True)


def iter_view_chunks(split, train_tf: TensorTransform, eval_tf: TensorTransform, views: int, seed: int = 0,
                     chunk: int = DEFAULT_CHUNK, device: torch.device | str = "cpu"
                     ) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """``(view, start, stop, images)`` for every view (outer) and chunk of consecutive images (inner):
    ``images`` float ``(stop-start, 3, S, S)`` in [0, 1] on ``device``, the views described in the module
    docstring (seeded by ``(seed, 2, view, chunk number)`` when ``views > 1``)."""
    tf, train = view_transform(views, train_tf, eval_tf)
    n = len(split)
    size = None if isinstance(split, Split) else (tf.resize or tf.out_size)
    for v in range(views):
        for c, start in enumerate(range(0, n, chunk)):
            stop = min(n, start + chunk)
            raw = split.images[start:stop] if isinstance(split, Split) else split.load_images(range(start, stop), size)
            gen = batch_generator(seed, _VIEW_STREAM, v, c) if train else None
            yield v, start, stop, tf(raw.to(device), train=train, generator=gen)


def _weights_sha256(backbone) -> str | None:
    info = getattr(backbone, "weights_info", None)
    sha = info.get("sha256") if isinstance(info, dict) else getattr(info, "sha256", None)
    return str(sha) if sha else None


def token_shape(model) -> tuple[int, int]:
    """(tokens T, width D) after any block of the model's ViT: prefix tokens + patches, embed dim."""
    from ..models.partial import vit_of

    vit = vit_of(model.backbone)
    return int(vit.patch_embed.num_patches) + int(getattr(vit, "num_prefix_tokens", 1)), int(vit.embed_dim)


def cache_key(model, n: int, *, split_checksum: str, train_tf: TensorTransform, eval_tf: TensorTransform,
              views: int = 1, seed: int = 0, chunk: int = DEFAULT_CHUNK) -> dict:
    """The full key of a cache (a JSON-able dict; see the module docstring). Raises ConfigError for
    ``views < 1``, a CNN backbone or a model with a trainable module before block N (AEM)."""
    from ..models.partial import check_cacheable, prefix_fingerprint

    check_cacheable(model)
    tf, train = view_transform(views, train_tf, eval_tf)
    t, d = token_shape(model)
    return {"format": CACHE_FORMAT, "backbone": model.backbone.name, "img_size": int(model.img_size),
            "freeze_blocks": int(n), "prefix_sha256": prefix_fingerprint(model, n),
            "weights_sha256": _weights_sha256(model.backbone), "split_checksum": str(split_checksum),
            "transform": {**asdict(tf), "train": train}, "views": int(views),
            "view_seed": int(seed) if views > 1 else None, "chunk": int(chunk) if views > 1 else None,
            "dtype": "float16", "tokens": t, "dim": d, "torch": torch.__version__}


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cache_folder(cache_dir: str | os.PathLike, key: dict) -> Path:
    """Where the cache of ``key`` lives under ``cache_dir``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(key["backbone"]))
    return Path(cache_dir) / f"{name}-n{key['freeze_blocks']}-v{key['views']}-{key_digest(key)[:16]}"


def cache_bytes(n_images: int, views: int, tokens: int, dim: int) -> int:
    """Bytes of the float16 token array: ``n_images * views * tokens * dim * 2`` (the .npy header aside)."""
    return int(n_images) * int(views) * int(tokens) * int(dim) * 2


@dataclass
class FeatureCache:
    """An opened, validated cache. ``tokens``: read-only float16 memmap ``(views, images, T, D)``."""

    path: Path
    manifest: dict
    tokens: np.ndarray
    built: bool = False  # True when this process built it (False: reused)
    build_seconds: float | None = None

    @property
    def views(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_images(self) -> int:
        return int(self.tokens.shape[1])

    def gather(self, idx: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """float16 tokens ``(len(idx), T, D)`` of images ``idx`` in views ``view`` (both int tensors)."""
        return torch.from_numpy(np.ascontiguousarray(self.tokens[view.numpy(), idx.numpy()]))

    def info(self) -> dict:
        """Summary for the run directory (path, whether built now, build time, size, key)."""
        m = self.manifest
        return {"path": str(self.path), "built": self.built, "build_seconds": self.build_seconds,
                "bytes": m["bytes"], "shape": m["shape"], "dtype": m["dtype"], "key": m["key"]}


def read_feature_cache(path: str | os.PathLike, key: dict | None = None) -> FeatureCache:
    """The one validating reader of a cache folder: manifest present, complete and (when ``key`` is
    given) for exactly this key; ``tokens.npy`` float16 of the manifest's shape and byte size.
    Raises DataError naming the folder and what is wrong."""
    from ..utils import read_json

    path = Path(path)
    mpath = path / MANIFEST_FILE
    if not mpath.exists():
        raise DataError(f"feature cache {path}: no {MANIFEST_FILE} (incomplete build)")
    manifest = read_json(mpath, f"feature cache {path}: manifest")
    if manifest.get("complete") is not True or manifest.get("format") != CACHE_FORMAT:
        raise DataError(f"feature cache {path}: manifest {mpath} fields 'complete'={manifest.get('complete')!r}, "
                        f"'format'={manifest.get('format')!r}; expected a complete format-{CACHE_FORMAT} cache manifest")
    for name, ok, expected in (
            ("key", isinstance(manifest.get("key"), dict), "a JSON object"),
            ("shape", isinstance(manifest.get("shape"), list) and len(manifest["shape"]) == 4
             and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in manifest["shape"]),
             "4 integers >= 0 (views, images, tokens, dim)"),
            ("dtype", manifest.get("dtype") == "float16", "'float16'"),
            ("bytes", isinstance(manifest.get("bytes"), int) and not isinstance(manifest.get("bytes"), bool),
             "an integer"),
            ("file_bytes", isinstance(manifest.get("file_bytes"), int)
             and not isinstance(manifest.get("file_bytes"), bool), "an integer")):
        if not ok:
            raise DataError(f"feature cache {path}: manifest {mpath} field {name!r} is "
                            f"{manifest.get(name, '(missing)')!r}; expected {expected}")
    if key is not None and manifest.get("key") != json.loads(json.dumps(key)):
        saved = manifest.get("key") if isinstance(manifest.get("key"), dict) else {}
        diff = sorted(k for k in set(saved) | set(key) if saved.get(k) != key.get(k))
        raise DataError(f"feature cache {path} was built for another key (differs in {diff})")
    try:
        tokens = np.load(path / TOKENS_FILE, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"feature cache {path}: {TOKENS_FILE} cannot be read ({e})") from None
    if tokens.dtype != np.float16 or list(tokens.shape) != list(manifest.get("shape", [])) or tokens.ndim != 4:
        raise DataError(f"feature cache {path}: {TOKENS_FILE} is {tokens.dtype} {list(tokens.shape)}, the manifest "
                        f"says float16 {manifest.get('shape')}")
    if (path / TOKENS_FILE).stat().st_size != manifest.get("file_bytes"):
        raise DataError(f"feature cache {path}: {TOKENS_FILE} has {(path / TOKENS_FILE).stat().st_size} bytes, "
                        f"the manifest says {manifest.get('file_bytes')}")
    return FeatureCache(path, manifest, tokens)


def _write_block(f, block: np.ndarray) -> None:
    """Append one float16 block to the open data file (a hook the tests replace to simulate a full disk)."""
    f.write(block.tobytes())


def _npy_header(shape: tuple[int, ...]) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f2")),
                                                "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    return buf.getvalue()


def clean_stale_tmp(cache_dir: str | os.PathLike) -> list[Path]:
    """Remove every temporary build folder in ``cache_dir`` (``.<key>.<host>-<pid>-<random>.tmp``, and
    ``.*.tmp-*`` of earlier versions), live or not; returns them. Only call this when no other process is
    building a cache there: each build already removes the stale ones of killed builds by itself
    (:func:`~hashlib_vit.utils.clean_stale_temps`)."""
    removed = []
    for p in sorted({*Path(cache_dir).glob(".*.tmp-*"), *Path(cache_dir).glob(".*.tmp")}):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def build_feature_cache(model, n: int, split, *, split_checksum: str, train_tf: TensorTransform,
                        eval_tf: TensorTransform, views: int = 1, seed: int = 0,
                        cache_dir: str | os.PathLike | None = None, device: torch.device | str | None = None,
                        chunk: int = DEFAULT_CHUNK, progress: bool = False) -> FeatureCache:
    """Open the cache of ``(model, n, split, views, ...)`` or build it (see the module docstring).

    ``model``: a HashModel (any neck: cls, tokens, hcl, mgvt); ``n``: its number of frozen blocks (>= 1); ``split``:
    the training :class:`~hashlib_vit.data.Split` or ``FileSplit``; ``split_checksum``: its checksum
    (``ProtocolData.checksums["train"]``). ``device``: where the images go for the prefix forward
    (default: the device of the model's parameters). Returns a :class:`FeatureCache` (tokens float16
    ``(views, len(split), T, D)``). Raises ConfigError (views, CNN, AEM) before anything is written,
    DataError when the disk lacks space (checked first) or fills up during the build.
    """
    from ..models.partial import max_freeze_blocks

    if not isinstance(n, int) or not 1 <= n <= max_freeze_blocks(model):
        raise ConfigError(f"the feature cache needs 1 <= freeze_blocks <= {max_freeze_blocks(model)}, got {n!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    key = cache_key(model, n, split_checksum=split_checksum, train_tf=train_tf, eval_tf=eval_tf, views=views,
                    seed=seed, chunk=chunk)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = cache_folder(cache_dir, key)
    if folder.exists():
        try:
            return read_feature_cache(folder, key)
        except DataError as e:
            warnings.warn(f"{e}; rebuilding it", UserWarning, stacklevel=2)
            shutil.rmtree(folder)
    t, d = key["tokens"], key["dim"]
    shape = (views, len(split), t, d)
    header = _npy_header(shape)
    needed = cache_bytes(len(split), views, t, d) + len(header)
    make_dirs(cache_dir, "feature cache folder")
    free = shutil.disk_usage(cache_dir).free
    if free < needed + DISK_MARGIN:
        raise DiskFullError(f"not enough disk space for the feature cache in {cache_dir}: it needs {needed} bytes "
                            f"({needed / 2**30:.2f} GiB = {views} views x {len(split)} images x {t} tokens x {d} x 2 "
                            f"bytes) plus a {DISK_MARGIN >> 20} MiB margin, and {free} bytes are free. Free some space, "
                            "set cache_dir to another disk, or use fewer cache_views / feature_cache=False")
    tmp = make_temp_dir(cache_dir, folder.name)  # stale ones of killed builds are removed here
    was_training = model.training
    t0 = time.perf_counter()
    sha = hashlib.sha256()
    try:
        with open(tmp / TOKENS_FILE, "wb") as f:
            f.write(header)
            if hasattr(os, "posix_fallocate"):  # reserve the space now: a full disk fails here, not midway
                try:
                    os.posix_fallocate(f.fileno(), 0, needed)
                except OSError as e:
                    if e.errno in DISK_FULL_ERRNOS:
                        raise
            model.eval()
            from ..utils import progress_bar

            total = views * -(-len(split) // chunk)
            with torch.no_grad():
                for v, start, stop, x in progress_bar(iter_view_chunks(split, train_tf, eval_tf, views, seed, chunk, device),
                                                      enabled=progress, total=total, desc="feature cache", leave=False):
                    z = model.frozen_prefix(x, n).to(torch.float16).cpu().numpy()
                    if z.shape != (stop - start, t, d):
                        raise DataError(f"frozen prefix gave tokens {z.shape}, expected {(stop - start, t, d)}")
                    block = np.ascontiguousarray(z, dtype="<f2")
                    _write_block(f, block)
                    sha.update(block.tobytes())
            f.truncate(needed)  # a posix_fallocate on some file systems may round up
            f.flush()
            os.fsync(f.fileno())
        build_s = time.perf_counter() - t0
        manifest = {"format": CACHE_FORMAT, "complete": True, "key": key, "shape": list(shape), "dtype": "float16",
                    "layout": "(views, images, tokens, dim), C order", "bytes": needed - len(header),
                    "file_bytes": needed, "sha256": sha.hexdigest(), "build_seconds": round(build_s, 3),
                    "device": str(device), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write_json(tmp / MANIFEST_FILE, manifest)  # the completeness marker, written last
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same cache first
            cache = read_feature_cache(folder, key)
            cache.build_seconds = build_s
            return cache
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_write_error(e, folder, what="feature cache", needed=needed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        release_temp(tmp)
        model.train(was_training)
    cache = read_feature_cache(folder, key)
    cache.built, cache.build_seconds = True, build_s
    return cache


# ----------------------------------------------------------------------------- batch sources
class _PickedViews:
    """Seeded order and per-epoch view choice shared by :class:`CachedBatches` and :class:`ViewBatches`.

    ``batch_size`` is the number of *images* the model sees per step (``images_per_batch * n_views``),
    as for :class:`~hashlib_vit.data.views.MultiViewBatches`; ``len`` counts batches."""

    def __init__(self, split, views: int, batch_size: int, *, seed: int = 0, n_views: int = 1,
                 device: torch.device | str = "cpu", drop_last: bool | None = None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if not isinstance(n_views, int) or isinstance(n_views, bool) or not 1 <= n_views <= views:
            raise ConfigError(f"n_views={n_views!r} views per image in a batch need at least as many cached views; "
                              f"cache_views={views} (use cache_views >= {n_views})")
        self.split, self.views, self.n_views = split, int(views), int(n_views)
        self.images_per_batch = int(batch_size)
        self.seed, self.train = int(seed), True
        self.device = torch.device(device)
        self.labels = split.labels
        n = len(split)
        self.drop_last = (n % batch_size == 1) if drop_last is None else drop_last

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.images_per_batch if self.drop_last else -(-n // self.images_per_batch)

    @property
    def batch_size(self) -> int:
        return self.images_per_batch * self.n_views

    @property
    def num_samples(self) -> int:
        return len(self.split)

    def order(self, epoch: int) -> torch.Tensor:
        """The image order of ``epoch``: that of ``TensorBatches(..., train=True, seed=seed)``."""
        return torch.randperm(len(self.split), generator=batch_generator(self.seed, 0, epoch))

    def picks(self, epoch: int) -> torch.Tensor:
        """``(N, n_views)`` view numbers of every image in ``epoch`` (distinct views per image)."""
        n = len(self.split)
        if self.views == 1:
            return torch.zeros(n, 1, dtype=torch.long)
        g = batch_generator(self.seed, _PICK_STREAM, epoch)
        if self.n_views == 1:
            return torch.randint(0, self.views, (n, 1), generator=g)
        return torch.rand(n, self.views, generator=g).argsort(1)[:, : self.n_views]

    def _gather(self, idx: torch.Tensor, view: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def epoch(self, epoch: int = 0, start: int = 0):
        """Yield ``(x, labels, idx)`` for the batches of ``epoch`` from batch ``start`` on; with ``n_views``
        > 1, ``x`` is ``[view 1 of all; view 2 of all; ...]`` and labels / indices are repeated."""
        order, picks = self.order(epoch), self.picks(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.images_per_batch: (b + 1) * self.images_per_batch]
            x = torch.cat([self._gather(idx, picks[idx, j]) for j in range(self.n_views)])
            y = self.labels[idx].repeat(self.n_views, 1) if self.n_views > 1 else self.labels[idx]
            yield (x.to(self.device).float(), y.to(self.device),
                   idx.repeat(self.n_views) if self.n_views > 1 else idx)

    def __iter__(self):
        return self.epoch(0)


class CachedBatches(_PickedViews):
    """Training batches of cached tokens: ``(tokens float32 (b, T, D), labels (b, C), idx (b,))``.

    Same seeded order as :class:`~hashlib_vit.data.TensorBatches` (``epoch(e, start=b)``, ``len``,
    ``batch_size``, ``num_samples``), so :func:`hashlib_vit.train.train` runs unchanged on a
    :class:`~hashlib_vit.models.partial.PartialModel`. ``n_views``: views of each image per batch (two-view losses)."""

    def __init__(self, cache: FeatureCache, split, batch_size: int, *, seed: int = 0, n_views: int = 1,
                 device: torch.device | str = "cpu", drop_last: bool | None = None):
        if cache.num_images != len(split):
            raise DataError(f"feature cache {cache.path} holds {cache.num_images} images, the split {len(split)}")
        super().__init__(split, cache.views, batch_size, seed=seed, n_views=n_views, device=device,
                         drop_last=drop_last)
        self.cache = cache

    def _gather(self, idx, view):
        return self.cache.gather(idx, view)


class ViewBatches(_PickedViews):
    """The *uncached* twin of :class:`CachedBatches`: the same batches as images (float ``(b, 3, S, S)``)
    of the same views, which a frozen model (or ``PartialModel(..., token_dtype=torch.float16)``) runs
    through its prefix on the fly. All views are held in memory (float32): a reference for tests and
    small splits, not for training at scale."""

    def __init__(self, split, train_tf: TensorTransform, eval_tf: TensorTransform, views: int, batch_size: int, *,
                 seed: int = 0, n_views: int = 1, chunk: int = DEFAULT_CHUNK, device: torch.device | str = "cpu",
                 drop_last: bool | None = None):
        super().__init__(split, views, batch_size, seed=seed, n_views=n_views, device=device, drop_last=drop_last)
        per_view: list[list[torch.Tensor]] = [[] for _ in range(views)]
        for v, _, _, x in iter_view_chunks(split, train_tf, eval_tf, views, seed, chunk):
            per_view[v].append(x)
        self.images = torch.stack([torch.cat(p) for p in per_view])  # (views, N, 3, S, S)

    def _gather(self, idx, view):
        return self.images[view, idx]


def cached_training(model, n: int, split, *, split_checksum: str, train_tf: TensorTransform,
                    eval_tf: TensorTransform, batch_size: int, views: int = 1, seed: int = 0, n_views: int = 1,
                    cache_dir=None, device: torch.device | str = "cpu", progress: bool = False):
    """What ``run_experiment`` needs for ``feature_cache=True``: ``(batches, token_model, cache)`` —
    :class:`CachedBatches` over the opened or built cache and a
    :class:`~hashlib_vit.models.partial.PartialModel` that trains on them (``model`` must already be
    frozen with ``freeze_prefix(model, n)``)."""
    from ..models.partial import PartialModel

    model.to(device)  # the prefix runs where training will run (the GPU when there is one)
    cache = build_feature_cache(model, n, split, split_checksum=split_checksum, train_tf=train_tf, eval_tf=eval_tf,
                                views=views, seed=seed, cache_dir=cache_dir, device=device, progress=progress)
    batches = CachedBatches(cache, split, batch_size, seed=seed, n_views=n_views, device=device)
    return batches, PartialModel(model, n), cache


__all__ = ["FeatureCache", "CachedBatches", "ViewBatches", "build_feature_cache", "read_feature_cache",
           "cache_key", "cache_folder", "cache_bytes", "default_cache_dir", "iter_view_chunks", "view_transform",
           "token_shape", "cached_training", "clean_stale_tmp", "CACHE_FORMAT"]
