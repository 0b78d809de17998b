"""Real data sources: CIFAR-10 (python batches, JPEG zips, image folders), image folders, list files.

Every source returns a *pool*: ``images`` uint8 ``(N, 3, H, W)`` (in memory) or file paths, a label
matrix, stable string ids and the class names. Decoded pools are cached once as ``.npy`` files in a
git-ignored cache folder (``$HASHLIB_VIT_CACHE`` or ``<project root>/data/cache``), keyed by the
sha256 of the source files, so later loads take a second or two.

CIFAR-10 ids are the image-folder paths ``train/<class>/<k:04d>.jpg`` / ``test/<class>/<k:04d>.jpg``
(the k-th image of that class in ``data_batch_1..5`` resp. ``test_batch``): they are the same whether
the pixels come from the official python batches or from the JPEG copy, so split list files written
from one source can be read with the other.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..utils import atomic_write, atomic_write_json, project_root, sha256_file

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

CIFAR10_HOWTO = (
    "CIFAR-10 can be obtained (a) through torchvision: "
    "`torchvision.datasets.CIFAR10(root, download=True)` writes `root/cifar-10-batches-py/` "
    "(or call hashlib_vit.data.sources.download_cifar10(root)), then pass data_root=root; "
    "(b) as an image folder `root/{train,test}/<class>/*.jpg|png`; "
    "(c) as the per-class zips `cifar10_jpg_<class>.zip` of ../shared/data/cifar10 "
    "(data_root: ../shared/data/cifar10, relative to the project root)."
)


# ----------------------------------------------------------------------------- cache
def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The folder for decoded pools and split files: `override`, else ``$HASHLIB_VIT_CACHE``, else
    ``<project root>/data/cache`` (git-ignored), else ``~/.cache/hashlib_vit``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("HASHLIB_VIT_CACHE")
    if env:
        return Path(env).expanduser()
    root = project_root()
    return root / "data" / "cache" if root else Path.home() / ".cache" / "hashlib_vit"


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False))


@dataclass
class Pool:
    """All images of a single-label source, in a fixed canonical order."""

    images: torch.Tensor  # uint8 (N, 3, H, W)
    classes: np.ndarray  # int64 (N,)
    ids: list[str]
    class_names: list[str]
    source: str  # what was read ("cifar10 jpeg zips", ...)
    checksums: dict[str, str] = field(default_factory=dict)  # source file -> sha256
    exact: np.ndarray | None = None  # optional: bool (N,) pixels known to be the original ones

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def split_names(self) -> np.ndarray:
        """'train' / 'test' (the first path component of each id)."""
        return np.array([i.split("/", 1)[0] for i in self.ids])


def read_pool_cache(folder: str | os.PathLike, checksums: dict[str, str]) -> Pool:
    """The one reader of a cached pool folder (``meta.json``, ``images.npy``, ``classes.npy``), checked.

    Raises DataError naming the file and the field when meta.json is not a JSON object
    (:func:`hashlib_vit.utils.read_json`) or lacks ``ids`` / ``class_names`` (lists of strings) or ``source``
    (a string); when an array is not a readable .npy file (truncated or corrupt), ``images`` is not uint8
    (N, 3, H, W), ``classes`` not integer (N,) in ``0..len(class_names)-1``, or the three disagree in N."""
    from ..utils import read_json

    folder = Path(folder)
    meta_path = folder / "meta.json"
    meta = read_json(meta_path, "cached pool metadata")
    for key in ("ids", "class_names"):
        v = meta.get(key)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise DataError(f"cached pool metadata {meta_path}: field {key!r} is {type(v).__name__}; expected a list "
                            "of strings")
    if not isinstance(meta.get("source"), str):
        raise DataError(f"cached pool metadata {meta_path}: field 'source' is {meta.get('source')!r}; expected a string")
    arrays = {}
    for name in ("images", "classes"):
        try:
            arrays[name] = np.load(folder / f"{name}.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"cached pool {folder / (name + '.npy')} is not a readable .npy array ({e}); truncated or "
                            "corrupt") from None
    images, classes = arrays["images"], arrays["classes"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise DataError(f"cached pool {folder / 'images.npy'} is {images.dtype} {images.shape}; expected uint8 "
                        "(N, 3, H, W)")
    if classes.ndim != 1 or not np.issubdtype(classes.dtype, np.integer) or (
            len(classes) and (classes.min() < 0 or classes.max() >= len(meta["class_names"]))):
        raise DataError(f"cached pool {folder / 'classes.npy'} is {classes.dtype} {classes.shape}; expected integer "
                        f"(N,) class indices in 0..{len(meta['class_names']) - 1} (field 'class_names' of {meta_path})")
    if not len(images) == len(classes) == len(meta["ids"]):
        raise DataError(f"cached pool {folder}: images.npy has {len(images)} rows, classes.npy {len(classes)}, field "
                        f"'ids' of {meta_path} {len(meta['ids'])}; expected the same number")
    return Pool(torch.from_numpy(images), classes, meta["ids"], meta["class_names"], meta["source"], checksums)


def _cached_pool(kind: str, checksums: dict[str, str], build, cache: str | os.PathLike | None) -> Pool:
    """Load the pool cached under the hash of (kind, source checksums) (:func:`read_pool_cache`), or build
    and cache it. A damaged cache is named in a UserWarning and built again."""
    key = hashlib.sha256(json.dumps([kind, sorted(checksums.items())]).encode()).hexdigest()[:20]
    folder = cache_dir(cache) / "pools" / f"{kind}-{key}"
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        try:
            return read_pool_cache(folder, checksums)
        except DataError as e:
            warnings.warn(f"{e}; building the cached pool {folder} again", UserWarning, stacklevel=3)
    pool: Pool = build()
    # arrays first, meta.json last: a folder without meta.json is never read as a complete cache
    _atomic_save_npy(folder / "images.npy", pool.images.numpy())
    _atomic_save_npy(folder / "classes.npy", np.asarray(pool.classes, dtype=np.int64))
    atomic_write_json(meta_path, {"ids": pool.ids, "class_names": pool.class_names, "source": pool.source,
                                  "checksums": checksums, "kind": kind})
    pool.checksums = checksums
    return pool


# ----------------------------------------------------------------------------- decoding
def decode_image(data: bytes, name: str, size: int | None = None) -> np.ndarray:
    """Decode image bytes into uint8 (H, W, 3) RGB; a corrupt/truncated file raises DataError naming it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as e:  # PIL raises several types (UnidentifiedImageError, OSError, SyntaxError)
        why = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e))  # PIL names the in-memory buffer
        raise DataError(f"cannot decode image {name}: {type(e).__name__}: {why} (corrupt or truncated file?)") from e


def _decode_many(items, read, size: int | None, threads: int | None = None, where=None) -> np.ndarray:
    """Decode many images (name list + reader) into uint8 (N, H, W, 3) using a few threads; ``where``: the
    folder or archive the names are relative to, for the messages."""
    threads = threads or min(4, os.cpu_count() or 1)

    def one(name):
        return decode_image(read(name), f"{where}/{name}" if where is not None else name, size)

    if threads == 1:
        arrays = [one(n) for n in items]
    else:
        with ThreadPoolExecutor(threads) as ex:
            arrays = list(ex.map(one, items))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DataError(f"images have different sizes {sorted(shapes)[:4]}; pass an image size to resize them")
    return np.stack(arrays)


# ----------------------------------------------------------------------------- CIFAR-10
def _cifar_zips(root: Path) -> dict[str, Path]:
    return {c: root / f"cifar10_jpg_{c}.zip" for c in CIFAR10_CLASSES if (root / f"cifar10_jpg_{c}.zip").is_file()}


def _python_batches_dir(root: Path) -> Path | None:
    for d in (root / "cifar-10-batches-py", root):
        if (d / "data_batch_1").is_file() or (d / "test_batch").is_file():
            return d
    return None


def detect_cifar10(root: Path) -> str:
    """Which CIFAR-10 layout `root` holds: 'zips', 'folder' or 'python'; DataError with a how-to if none."""
    if not root.exists():
        raise DataError(f"data_root {root} does not exist. {CIFAR10_HOWTO}")
    if _cifar_zips(root):
        return "zips"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "folder"
    if _python_batches_dir(root) is not None:
        return "python"
    raise DataError(f"data_root {root} holds no CIFAR-10 data (no cifar10_jpg_<class>.zip, no train/ and test/ "
                    f"image folders, no cifar-10-batches-py/). {CIFAR10_HOWTO}")


def _canonical_ids(split: str, classes: np.ndarray) -> list[str]:
    """``split/<class>/<k:04d>.jpg``: k counts the images of each class in their original order."""
    counts = np.zeros(len(CIFAR10_CLASSES), dtype=np.int64)
    ids = []
    for c in classes:
        ids.append(f"{split}/{CIFAR10_CLASSES[c]}/{counts[c]:04d}.jpg")
        counts[c] += 1
    return ids


def _sort_canonical(images: np.ndarray, classes: np.ndarray, ids: list[str]):
    """Canonical pool order: train before test, then class index, then k (what a sorted folder gives)."""
    order = sorted(range(len(ids)), key=lambda i: (0 if ids[i].startswith("train/") else 1, int(classes[i]), ids[i]))
    order = np.asarray(order, dtype=np.int64)
    return images[order], classes[order], [ids[i] for i in order]


def load_cifar10_pool(root: str | os.PathLike, *, cache: str | os.PathLike | None = None,
                      verify: bool = True) -> Pool:
    """All 60,000 CIFAR-10 images (train then test, per class in original order) from `root`.

    `root` may hold the per-class JPEG zips (``../shared/data/cifar10``), an image folder
    ``train|test/<class>/*.jpg``, or the official python batches (``cifar-10-batches-py``, whose md5
    is checked before anything is unpickled unless ``verify=False``, which warns).
    """
    root = Path(root)
    kind = detect_cifar10(root)
    if kind == "zips":
        zips = _cifar_zips(root)
        missing = [c for c in CIFAR10_CLASSES if c not in zips]
        if missing:
            raise DataError(f"{root}: missing cifar10_jpg_<class>.zip for {missing}. {CIFAR10_HOWTO}")
        sums = {p.name: sha256_file(p) for p in zips.values()}
        return _cached_pool("cifar10-zips", sums, lambda: _read_cifar_zips(zips), cache)
    if kind == "folder":
        pool = load_image_folder(root, splits=("train", "test"), cache=cache, kind="cifar10-folder")
        if pool.class_names != CIFAR10_CLASSES:
            raise DataError(f"{root}: class folders {pool.class_names} are not the 10 CIFAR-10 classes "
                            f"{CIFAR10_CLASSES}")
        return pool
    return load_cifar10_python(_python_batches_dir(root), cache=cache, verify=verify)


def _read_cifar_zips(zips: dict[str, Path]) -> Pool:
    images, classes, ids = [], [], []
    for ci, c in enumerate(CIFAR10_CLASSES):
        try:
            with zipfile.ZipFile(zips[c]) as z:
                names = sorted(n for n in z.namelist() if n.lower().endswith(IMAGE_EXTENSIONS))
                names = [n for n in names if n.split("/")[0] in ("train", "test")]
                if not names:
                    raise DataError(f"{zips[c]} holds no train/<class>/*.jpg or test/<class>/*.jpg images")
                bad = [n for n in names if n.split("/")[1] != c]
                if bad:
                    raise DataError(f"{zips[c]}: entry {bad[0]} is not in a '{c}' folder")
                arr = _decode_many(names, z.read, None, threads=1, where=zips[c])
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error) as e:
            raise DataError(f"CIFAR-10 archive {zips[c]} is damaged or truncated ({type(e).__name__}: {e}); "
                            f"download it again. {CIFAR10_HOWTO}") from e
        images.append(arr)
        classes.append(np.full(len(names), ci, dtype=np.int64))
        ids.extend(names)
    x = np.concatenate(images).transpose(0, 3, 1, 2)
    x, y, ids = _sort_canonical(x, np.concatenate(classes), ids)
    return Pool(torch.from_numpy(np.ascontiguousarray(x)), y, ids, list(CIFAR10_CLASSES), "cifar10 jpeg zips")


# official python batches: (file name, md5) as published with the data set (and in torchvision)
CIFAR10_BATCHES = [
    ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
    ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
    ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
    ("data_batch_4", "634d18415352ddfa80567beed471001a"),
    ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    ("test_batch", "40351d587109b95175f43aff81a1287e"),
]
CIFAR10_META_MD5 = ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_cifar10_python(folder: Path) -> dict[str, str]:
    """Check every python batch against its published md5 *before* it is unpickled.

    Returns {file: md5}; raises DataError naming the file, the expected and the actual md5.
    """
    out = {}
    for name, md5 in CIFAR10_BATCHES:
        p = folder / name
        if not p.is_file():
            raise DataError(f"{p} is missing. {CIFAR10_HOWTO}")
        got = _md5(p)
        if got != md5:
            raise DataError(f"{p}: md5 {got} does not match the official CIFAR-10 file ({md5}); refusing to "
                            f"unpickle it (pickles can run code). Re-download it, or pass verify=False for a "
                            f"re-encoded copy you trust")
        out[name] = got
    return out


def load_cifar10_python(folder: str | os.PathLike, *, cache: str | os.PathLike | None = None,
                        verify: bool = True) -> Pool:
    """The official ``cifar-10-batches-py`` folder (md5-checked before unpickling unless verify=False)."""
    folder = Path(folder)
    if verify:
        sums = verify_cifar10_python(folder)
    else:
        warnings.warn(f"CIFAR-10 batches in {folder} are NOT checksum-verified (verify=False): they are unpickled "
                      f"as they are; only do this for a copy you made yourself", UserWarning, stacklevel=2)
        sums = {}
        for name, _ in CIFAR10_BATCHES:
            if not (folder / name).is_file():
                raise DataError(f"{folder / name} is missing. {CIFAR10_HOWTO}")
            sums[name] = _md5(folder / name)

    def build() -> Pool:
        xs, ys, ids = [], [], []
        for split, files in (("train", CIFAR10_BATCHES[:5]), ("test", CIFAR10_BATCHES[5:])):
            sx, sy = [], []
            for name, _ in files:
                try:
                    with open(folder / name, "rb") as f:
                        d = pickle.load(f, encoding="latin1")
                    sx.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                    sy.append(np.asarray(d.get("labels", d.get("fine_labels")), dtype=np.int64))
                except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as e:
                    raise DataError(f"CIFAR-10 batch {folder / name} is damaged or not a CIFAR-10 python batch "
                                    f"({type(e).__name__}: {e}); download it again. {CIFAR10_HOWTO}") from e
            y = np.concatenate(sy)
            xs.append(np.concatenate(sx))
            ys.append(y)
            ids.extend(_canonical_ids(split, y))
        x, y, ids = _sort_canonical(np.concatenate(xs), np.concatenate(ys), ids)
        return Pool(torch.from_numpy(np.ascontiguousarray(x)), y, ids, list(CIFAR10_CLASSES), "cifar10 python batches")

    return _cached_pool("cifar10-python", sums, build, cache)


def download_cifar10(root: str | os.PathLike) -> Path:
    """Download the official python batches with torchvision (needs network); returns the batches folder."""
    import torchvision

    torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    return Path(root) / "cifar-10-batches-py"


def cifar10_class_names(root: str | os.PathLike) -> list[str]:
    """Class names from ``batches.meta`` when present (checked against its md5 first), else the standard ones."""
    root = Path(root)
    for p in (root / "batches.meta", root / "cifar-10-batches-py" / "batches.meta"):
        if p.is_file() and _md5(p) == CIFAR10_META_MD5[1]:
            with open(p, "rb") as f:
                return [str(n) for n in pickle.load(f, encoding="latin1")["label_names"]]
    return list(CIFAR10_CLASSES)


# ----------------------------------------------------------------------------- image folders
def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def is_image_file(p: Path) -> bool:
    """Whether an image folder counts ``p``: a file with an image extension (:data:`IMAGE_EXTENSIONS`) that is
    not hidden (``.x.png``, macOS's ``._x.jpg`` resource forks)."""
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def scan_image_folder(root: str | os.PathLike, splits: tuple[str, ...] | None = None):
    """Files of an image folder ``root/<split>/<class>/*.{jpg,png}`` (or ``root/<class>/*`` when
    `splits` is None), sorted (class folders by name, files in natural order); hidden folders (e.g. Jupyter's
    ``.ipynb_checkpoints``) are not classes and hidden files not images (:func:`is_image_file`).
    Returns (relative paths, class index per file, class names)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist (expected root/<split>/<class>/*.jpg|png)")
    bases = [root / s for s in splits] if splits else [root]
    for b in bases:
        if not b.is_dir():
            raise DataError(f"image folder {root}: split folder {b.name!r} is missing "
                            f"(expected root/<split>/<class>/*.jpg|png for splits {list(splits)})")
    names = sorted({d.name for b in bases for d in b.iterdir() if d.is_dir() and not d.name.startswith(".")})
    if not names:
        raise DataError(f"image folder {root} has no class folders")
    rel, cls = [], []
    for b in bases:
        for ci, c in enumerate(names):
            d = b / c
            if not d.is_dir():
                continue
            files = sorted((f for f in d.iterdir() if is_image_file(f)), key=lambda f: _natural_key(f.name))
            rel.extend(str(f.relative_to(root).as_posix()) for f in files)
            cls.extend([ci] * len(files))
    if not rel:
        raise DataError(f"image folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return rel, np.asarray(cls, dtype=np.int64), names


def load_image_folder(root: str | os.PathLike, splits: tuple[str, ...] | None = ("train", "test"), *,
                      size: int | None = None, cache: str | os.PathLike | None = None,
                      kind: str = "folder") -> Pool:
    """Decode an image folder into an in-memory pool (cached; key: sha256 of the file list and bytes)."""
    root = Path(root)
    rel, cls, names = scan_image_folder(root, splits)
    h = hashlib.sha256()
    for r in rel:
        h.update(r.encode() + b"\0")
        with open(root / r, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    sums = {"files": h.hexdigest(), "count": str(len(rel)), "size": str(size)}

    def build() -> Pool:
        arr = _decode_many(rel, lambda r: (root / r).read_bytes(), size, where=root)
        return Pool(torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2))), cls, rel, names,
                    f"image folder {root}")

    return _cached_pool(kind, sums, build, cache)
