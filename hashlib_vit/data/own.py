"""Your own images: a checked, seeded protocol from a folder of class sub-folders or a DeepHash list file,
and a small demo folder built from the data on this machine (lesson ``notebooks/09_own_images.ipynb``).

Two input forms (single-label):

* an **image folder** in the ImageFolder layout ``image_dir/<class>/*.{jpg,jpeg,png,bmp,webp}`` — one
  sub-folder per class, the folder name is the class name (hidden folders such as ``.ipynb_checkpoints``
  are ignored);
* a **list file** in the DeepHash format, one ``relative/path l1 .. lK`` line per image (exactly one
  label 1 per line), paths relative to ``image_root`` (default: the list file's folder); class names
  from a ``classes.txt`` next to it (``index name`` per line) when there is one.

:func:`own_images_protocol` scans and checks the input **before anything is read in full or written**:
the layout (empty folder, loose images next to class folders, nested folders, a class folder without
images), the images per class against the requested split, every file's header (unreadable files and
16/32-bit modes that do not convert to 8-bit RGB faithfully are named). Its loader then decodes every
image to ``img_size`` x ``img_size`` RGB (a file that fails to decode is named), draws query / train /
database per class with the seed (:func:`hashlib_vit.data.splits.class_balanced_split`) and is checked
by :func:`hashlib_vit.data.check.check_protocol` at load like every other protocol.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .sources import IMAGE_EXTENSIONS, _decode_many, _natural_key, is_image_file, scan_image_folder

# CIFAR-10 classes of the demo folder: four that differ in colour and layout, so a small model from scratch
# separates them within a laptop-CPU budget
DEMO_CIFAR_CLASSES = ("airplane", "automobile", "frog", "ship", "horse", "truck", "bird", "cat", "deer", "dog")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEMO_MARKER = "demo.json"
# modes PIL "converts" to 8-bit RGB by clipping (16-bit and 32-bit integer / float images): refused, named
WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N", "I;32", "I;32B", "I;32L")


# ----------------------------------------------------------------------------- the demo folder
@dataclass(frozen=True)
class DemoFolder:
    """A demo image folder written by :func:`build_demo_folder`."""

    path: Path
    source: str  # "cifar10" (JPEG bytes unchanged from ../shared/data/cifar10) or "digits" (PNGs written here)
    class_names: list[str]
    per_class: int

    def __len__(self) -> int:
        return len(self.class_names) * self.per_class


def _cifar_zip_paths(root: Path, names) -> dict[str, Path] | None:
    paths = {c: root / f"cifar10_jpg_{c}.zip" for c in names}
    return paths if all(p.is_file() for p in paths.values()) else None


def build_demo_folder(out: str | os.PathLike, *, classes: int = 4, per_class: int = 40, source: str = "auto",
                      cifar_root: str | os.PathLike = "../shared/data/cifar10") -> DemoFolder:
    """Write a small ImageFolder ``out/<class>/*`` to try the own-images lesson on; returns a DemoFolder.

    * ``source="cifar10"``: the first ``per_class`` training images (``train/<class>/0000.jpg`` ..) of the
      first ``classes`` classes of :data:`DEMO_CIFAR_CLASSES`, copied byte for byte (32x32 JPEG) from the
      per-class zips ``cifar10_jpg_<class>.zip`` in ``cifar_root`` (relative: from the project root);
    * ``source="digits"``: the first ``per_class`` images of the digits 0.. ``classes - 1`` of the embedded
      scikit-learn digits (:func:`hashlib_vit.data.digits.load_digits_images`), written as 32x32 8-bit
      greyscale PNGs into folders ``zero``, ``one``, ..;
    * ``source="auto"``: cifar10 when its zips are there, else digits (CI without ../shared still runs).

    The folder is written into a temporary sibling and renamed into place, with ``out/demo.json`` saying
    what it holds; a folder holding the same demo is reused as it is, an earlier demo is replaced, and any
    other existing non-empty ``out`` is refused (DataError) — a user's own folder is never overwritten.
    Raises DataError for ``classes`` not in 2..10, ``per_class`` < 2 or above what the source holds
    (cifar10: 5,000, digits: 174), an unknown ``source``, or ``source="cifar10"`` without the zips.
    """
    from ..utils import resolve_path

    if isinstance(classes, bool) or not isinstance(classes, int) or not 2 <= classes <= 10:
        raise DataError(f"classes={classes!r}: the demo folder has 2..10 classes")
    if source not in ("auto", "cifar10", "digits"):
        raise DataError(f"source={source!r}: expected 'auto', 'cifar10' or 'digits'")
    zips = _cifar_zip_paths(resolve_path(cifar_root), DEMO_CIFAR_CLASSES[:classes])
    if source == "cifar10" and zips is None:
        raise DataError(f"source='cifar10': {resolve_path(cifar_root)} lacks cifar10_jpg_<class>.zip for "
                        f"{list(DEMO_CIFAR_CLASSES[:classes])}; use source='digits' or 'auto'")
    kind = "cifar10" if source == "cifar10" or (source == "auto" and zips is not None) else "digits"
    limit = 5000 if kind == "cifar10" else 174  # the rarest digit has 174 images
    if isinstance(per_class, bool) or not isinstance(per_class, int) or not 2 <= per_class <= limit:
        raise DataError(f"per_class={per_class!r}: the {kind} demo folder takes 2..{limit} images per class")
    names = list(DEMO_CIFAR_CLASSES[:classes]) if kind == "cifar10" else list(DIGIT_NAMES[:classes])
    meta = {"source": kind, "class_names": names, "per_class": per_class}
    out = resolve_path(out)
    marker = out / DEMO_MARKER
    if out.exists():
        if not out.is_dir():
            raise DataError(f"demo folder {out} exists and is not a folder; choose another path")
        old = None
        if marker.is_file():
            try:
                old = json.loads(marker.read_text())
            except (OSError, ValueError):
                old = None
        if old == meta:
            return DemoFolder(out, kind, names, per_class)
        if old is None and any(out.iterdir()):
            raise DataError(f"{out} exists, is not empty and is not a demo folder (no valid {DEMO_MARKER}); the demo "
                            "is never written over other files: choose another path or empty it")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if kind == "cifar10":
            for c in names:
                with zipfile.ZipFile(zips[c]) as z:
                    entries = sorted((n for n in z.namelist() if n.startswith(f"train/{c}/")
                                      and n.lower().endswith(IMAGE_EXTENSIONS)), key=_natural_key)[:per_class]
                    if len(entries) < per_class:
                        raise DataError(f"{zips[c]} holds {len(entries)} train/{c}/ images, fewer than per_class="
                                        f"{per_class}")
                    (tmp / c).mkdir(parents=True)
                    for e in entries:
                        (tmp / c / Path(e).name).write_bytes(z.read(e))
        else:
            from PIL import Image

            from .digits import load_digits_images

            images, labels = load_digits_images(32)
            for d, c in enumerate(names):
                (tmp / c).mkdir(parents=True)
                for k, i in enumerate(np.flatnonzero(labels == d)[:per_class]):
                    Image.fromarray(images[i, 0].numpy(), mode="L").save(tmp / c / f"{k:04d}.png")
        (tmp / DEMO_MARKER).write_text(json.dumps(meta, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoFolder(out, kind, names, per_class)


# ----------------------------------------------------------------------------- scanning and checks
@dataclass
class ImageSet:
    """What :func:`scan_class_folder` / :func:`scan_list_file` found: files, classes, and where."""

    base: Path  # the folder the paths are relative to
    paths: list[str]  # relative paths, in a fixed order (class by class, natural file order)
    classes: np.ndarray  # int64 (N,) class index of each path
    class_names: list[str]
    origin: str  # "image folder <path>" or "list file <path>"
    modes: dict[str, int] = field(default_factory=dict)  # PIL mode -> images (filled by check_images)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Images per class name."""
        n = np.bincount(self.classes, minlength=len(self.class_names))
        return {c: int(k) for c, k in zip(self.class_names, n)}

    def where(self, c: int) -> str:
        """The folder (image folders) or the class (list files) of class index ``c``, for messages."""
        name = self.class_names[c]
        return f"{self.base / name}/" if self.origin.startswith("image folder") else f"class {c} ({name!r})"


def scan_class_folder(image_dir: str | os.PathLike) -> ImageSet:
    """The images of an ImageFolder ``image_dir/<class>/*``, checked for layout; nothing is decoded.

    Class names are the sub-folder names (sorted; hidden ones skipped), files in natural order
    (``2.jpg`` before ``10.jpg``). Raises DataError naming the folder and what is wrong: it does not exist
    or is not a folder; it is empty; it holds images but no class sub-folders; it mixes class folders with
    loose images; a class folder holds sub-folders (a nested ``<split>/<class>`` layout: pass one split
    folder, or flatten it) or no images; fewer than two classes.
    """
    from ..utils import resolve_path

    root = resolve_path(image_dir)
    if not root.exists():
        raise DataError(f"image_dir {root} does not exist (expected a folder with one sub-folder per class: "
                        f"{root}/<class>/*.jpg|png)")
    if not root.is_dir():
        raise DataError(f"image_dir {root} is a file, not a folder (a list file? pass it as list_file)")
    entries = sorted(e for e in root.iterdir() if not e.name.startswith("."))
    dirs = [e for e in entries if e.is_dir()]
    loose = [e.name for e in entries if is_image_file(e)]
    if not dirs and not loose:
        raise DataError(f"image_dir {root} is empty: put the images in one sub-folder per class "
                        f"({root}/<class>/*.jpg|png)")
    if not dirs:
        raise DataError(f"image_dir {root} holds {len(loose)} images (e.g. {loose[0]}) but no class sub-folders: "
                        f"put each image in the sub-folder of its class ({root}/<class>/{loose[0]})")
    if loose:
        raise DataError(f"image_dir {root} mixes class sub-folders with {len(loose)} loose image(s) (e.g. "
                        f"{loose[0]}), whose class is unknown: move them into their class folder or out of {root}")
    for d in dirs:
        inside = list(d.iterdir())
        sub = sorted(e.name for e in inside if e.is_dir() and not e.name.startswith("."))
        if sub:
            raise DataError(f"class folder {d} holds sub-folder(s) {sub[:3]}: image_dir must be "
                            "<image_dir>/<class>/<image> with no deeper folders (for a <split>/<class> layout "
                            "pass one split folder as image_dir, or flatten it)")
        if not any(is_image_file(e) for e in inside):
            raise DataError(f"class folder {d} holds no images ({', '.join(IMAGE_EXTENSIONS)}); remove it or add "
                            "its images")
    if len(dirs) < 2:
        raise DataError(f"image_dir {root} has one class folder ({dirs[0].name}); retrieval by class needs at "
                        "least two classes")
    paths, classes, names = scan_image_folder(root)  # the one listing of an image folder: order, hidden files
    return ImageSet(root, paths, classes, names, f"image folder {root}")


def scan_list_file(list_file: str | os.PathLike, image_root: str | os.PathLike | None = None) -> ImageSet:
    """The images of a DeepHash list file (``relative/path l1 .. lK`` per line), single-label, checked.

    ``image_root``: the folder the paths are relative to (default: the list file's folder). Class names from
    ``classes.txt`` next to the list (``index name`` per line), else ``'0'..'K-1'``. Raises DataError naming
    the file and line: a malformed line (:func:`hashlib_vit.data.splits.parse_list_text`), a line with no or
    several labels 1 (this lesson's protocols are single-label), a path listed twice, a listed image that
    is not a file under ``image_root``; fewer than two classes present.
    """
    from ..utils import resolve_path
    from .protocols import read_class_names
    from .splits import read_list_file

    path = resolve_path(list_file)
    if path.is_dir():
        raise DataError(f"list_file {path} is a folder (an image folder? pass it as image_dir)")
    lf = read_list_file(path)
    base = resolve_path(image_root) if image_root is not None else path.parent
    if not base.is_dir():
        raise DataError(f"image_root {base} (the folder the paths of {path} are relative to) does not exist")
    per_row = lf.labels.sum(1)
    bad = np.flatnonzero(per_row != 1)
    if len(bad):
        j = bad[0]
        raise DataError(f"{path}, line {lf.line_numbers[j]}: {lf.ids[j]!r} has {int(per_row[j])} labels 1; a list file "
                        f"for this protocol is single-label (exactly one 1 per line); {len(bad)} such line(s). "
                        "Multi-label lists: use a list-file protocol (docs/data.md)")
    seen = {}
    for j, i in enumerate(lf.ids):
        if i in seen:
            raise DataError(f"{path}, line {lf.line_numbers[j]}: {i!r} is listed again (first on line {seen[i]})")
        seen[i] = lf.line_numbers[j]
    missing = [j for j, i in enumerate(lf.ids) if not (base / i).is_file()]
    if missing:
        j = missing[0]
        raise DataError(f"{path}, line {lf.line_numbers[j]}: image {base / lf.ids[j]} is not a file ({len(missing)} of "
                        f"{len(lf)} listed images missing; paths are relative to image_root={str(base)!r})")
    classes = lf.labels.argmax(1).astype(np.int64)
    k = lf.labels.shape[1]
    if len(np.unique(classes)) < 2:
        raise DataError(f"{path}: every line has the same class; retrieval by class needs at least two classes")
    return ImageSet(base, list(lf.ids), classes, read_class_names(path.parent, k), f"list file {path}")


def check_split_counts(images: ImageSet, query_per_class: int, train_per_class: int, *,
                       train_in_database: bool = True) -> None:
    """Every class must hold enough images for the requested split; DataError naming each short class.

    Each class gives ``query_per_class`` queries and ``train_per_class`` training images, and keeps at least
    one database image (train inside the database: query + train images; outside: one more)."""
    for name, v in (("query_per_class", query_per_class), ("train_per_class", train_per_class)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DataError(f"{name}={v!r}: expected an integer >= 1")
    need = query_per_class + train_per_class + (0 if train_in_database else 1)
    n = np.bincount(images.classes, minlength=len(images.class_names))
    short = [c for c in range(len(n)) if n[c] < need]
    if short:
        listed = ", ".join(f"{images.where(c)} has {int(n[c])}" for c in short[:8])
        raise DataError(f"{images.origin}: each class needs at least {need} images (query_per_class={query_per_class} "
                        f"+ train_per_class={train_per_class}{'' if train_in_database else ' + 1 database'}); "
                        f"{listed}{f' and {len(short) - 8} more' if len(short) > 8 else ''}. Add images or lower "
                        "query_per_class / train_per_class")


def check_images(images: ImageSet, threads: int | None = None) -> dict[str, int]:
    """Open every image's header (fast: no pixels decoded); returns {PIL mode: count} and stores it.

    Mixed 8-bit modes (RGB, greyscale L, palette P, RGBA, CMYK, ..) are fine: every image is converted to
    RGB when decoded. Raises DataError naming the file: not an image PIL can identify (corrupt, truncated
    header, wrong extension), or a 16/32-bit integer or float image (modes I;16, I, F), which conversion to
    8-bit RGB would clip."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    def mode(rel: str) -> str:
        p = images.base / rel
        try:
            with Image.open(p) as im:
                return im.mode
        except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError ...
            raise DataError(f"cannot read image {p} ({images.origin}): {type(e).__name__}: {e} (corrupt, truncated "
                            "or not an image? remove or replace it)") from None

    with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as ex:
        modes = list(ex.map(mode, images.paths))
    wide = [i for i, m in enumerate(modes) if m in WIDE_MODES]
    if wide:
        p = images.base / images.paths[wide[0]]
        raise DataError(f"image {p} has mode {modes[wide[0]]} (16/32-bit integer or float pixels; {len(wide)} such "
                        "image(s)): converting it to 8-bit RGB would clip it; save your images as 8-bit (e.g. "
                        "PIL: Image.fromarray((x / x.max() * 255).astype('uint8')))")
    out = {}
    for m in modes:
        out[m] = out.get(m, 0) + 1
    images.modes = dict(sorted(out.items()))
    return images.modes


def decode_images(images: ImageSet, img_size: int) -> torch.Tensor:
    """Every image decoded to uint8 (N, 3, img_size, img_size) RGB (bilinear resize of the whole image, no
    crop); a file that fails to decode raises DataError naming it (:func:`hashlib_vit.data.sources.decode_image`)."""
    arr = _decode_many(images.paths, lambda r: (images.base / r).read_bytes(), img_size, where=images.base)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


# ----------------------------------------------------------------------------- the protocol
def own_images_protocol(name: str = "own_images", *, image_dir: str | os.PathLike | None = None,
                        list_file: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None,
                        query_per_class: int = 5, train_per_class: int = 20, train_in_database: bool = True,
                        img_size: int = 32, topk: int | None = None, register: bool = True):
    """A checked protocol for your own single-label images: an ImageFolder (``image_dir``) or a DeepHash list
    file (``list_file``, paths relative to ``image_root``; exactly one of the two).

    Checks now, before anything is decoded or written (DataError naming the folder / file / line): the layout
    (:func:`scan_class_folder` / :func:`scan_list_file`), the images per class against the split
    (:func:`check_split_counts`), every file's header (:func:`check_images`). ``protocol.load(seed=s)`` then
    decodes the images to ``img_size`` px RGB, draws ``query_per_class`` queries and ``train_per_class``
    training images per class with seed ``s`` (queries never in the database; train inside it when
    ``train_in_database``, else removed from it) and checks the split (sizes, every class in every split,
    disjointness, labels) with :func:`hashlib_vit.data.check.check_protocol`. The split is not cached
    (``cache_splits=False``): export it with ``data.export(folder)``.

    ``register``: register the protocol under ``name`` in :data:`hashlib_vit.data.PROTOCOLS` (replacing an
    earlier one of that name), which :func:`hashlib_vit.experiment.run_experiment` needs. The scan is kept
    as ``protocol_images(protocol)``. mAP over the whole database (``topk=None``) unless ``topk`` is given.
    """
    from .protocols import PROTOCOLS, Protocol, make_splits

    if (image_dir is None) == (list_file is None):
        raise DataError("pass exactly one of image_dir (a folder with one sub-folder per class) and list_file (a "
                        f"DeepHash list file); got image_dir={image_dir!r}, list_file={list_file!r}")
    if image_root is not None and list_file is None:
        raise DataError("image_root is the folder a list file's paths are relative to; it needs list_file")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or not 8 <= img_size <= 1024:
        raise DataError(f"img_size={img_size!r}: expected an integer in 8..1024 (pixels)")
    images = scan_class_folder(image_dir) if image_dir is not None else scan_list_file(list_file, image_root)
    check_split_counts(images, query_per_class, train_per_class, train_in_database=train_in_database)
    check_images(images)
    k = len(images.class_names)

    def load(protocol, data_root=None, seed: int = 0, cache=None, cache_splits: bool = False, split_dir=None):
        x = decode_images(images, protocol.img_size)
        return make_splits(protocol, x, images.classes, list(images.paths), seed,
                           n_query_per_class=query_per_class, n_train_per_class=train_per_class,
                           class_names=list(images.class_names), split_dir=split_dir, cache=cache,
                           cache_splits=cache_splits)

    counts = images.counts()
    p = Protocol(
        name=name, num_classes=k, multi_label=False, topk=topk, n_query=query_per_class * k,
        n_train=train_per_class * k, n_database=len(images) - query_per_class * k
        - (0 if train_in_database else train_per_class * k), train_in_database=train_in_database,
        img_size=img_size, source=f"{images.origin}: {len(images)} images, {k} classes "
        f"({min(counts.values())}..{max(counts.values())} per class)",
        description=f"{query_per_class} query + {train_per_class} train per class drawn with the seed; database = "
        f"the rest ({'train included' if train_in_database else 'train excluded'}); "
        f"mAP@{'all' if topk is None else topk}.",
        loader=load, needs_data_root=False, default_root=str(images.base), seeded=True,
        howto="Lay your images out as <image_dir>/<class>/*.jpg, or list them as 'path l1 .. lK' lines.")
    _SCANS[name] = images
    if register:
        PROTOCOLS.register(name, p, replace=True)
    return p


_SCANS: dict[str, ImageSet] = {}


def protocol_images(protocol) -> ImageSet:
    """The :class:`ImageSet` scanned by :func:`own_images_protocol` for this protocol (its latest call)."""
    name = getattr(protocol, "name", protocol)
    if name not in _SCANS:
        raise DataError(f"protocol {name!r} was not made by own_images_protocol")
    return _SCANS[name]
