"""Images from outside a protocol (an upload, a file, a PIL image) made into the protocol's own images.

A query image of any size and mode must reach the model exactly as the protocol's evaluation images
do, or its code is compared with database codes made from another kind of input. The protocol's images
are built in two steps, and a query image takes the same two:

1. **the stored image** (this module): what the protocol's loader keeps for an item, uint8
   ``(3, S, S)``:

   * ``digits`` (scikit-learn's 8x8 grey digits, white ink on black, upsampled to 32x32 RGB): the image
     in grey (ITU-R 601 luma, PIL's ``L``), its centre square averaged down to 8x8 (PIL's box filter),
     rounded to the data set's 17 grey levels (0..16), light-background images inverted (dark ink on paper
     becomes white on black; ``invert=None`` decides from the border), then upsampled by the same code
     as the data set (:func:`hashlib_vit.data.digits.upsample_digits`);
   * other in-memory protocols (CIFAR-10: 32x32 RGB): RGB, shorter side resized (bilinear) to the
     protocol's ``img_size`` and the centre square kept;
   * file protocols (NUS-WIDE, COCO, ImageNet-100, folders): exactly :func:`~hashlib_vit.data.datasets.
     load_square` at the evaluation transform's load size (``resize``, 256 for a 224-pixel model, else
     the model's input size), as :class:`~hashlib_vit.data.datasets.FileBatches` decodes list files.

2. **the evaluation transform** (:func:`~hashlib_vit.data.transforms.protocol_transforms`, second
   element), applied by :func:`hashlib_vit.retrieval.query.encode_query_images`: resize / centre crop to
   the model's input, float in [0, 1].

So a 32x32 PNG of a CIFAR-10 image, or an 8x8 digit saved at its 17 grey levels, gives exactly the data
set's image (tested).
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .datasets import square_crop
from .transforms import TensorTransform, protocol_transforms


def read_query_image(source, name: str | None = None):
    """One query image as a loaded PIL image.

    ``source``: a PIL image, encoded bytes (``bytes`` / ``bytearray`` / ``memoryview``: the content of an
    uploaded file) or a path. ``name`` names it in messages (default: the path, or "uploaded image").
    Raises DataError naming the image when the file cannot be read or is not a decodable image (empty,
    truncated, not an image), and for any other type of ``source``.
    """
    from PIL import Image

    if isinstance(source, Image.Image):
        source.load()
        return source
    if isinstance(source, (str, os.PathLike)):
        name = name or str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise DataError(f"cannot read query image {name}: {e.strerror or e}") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name, data = name or "uploaded image", bytes(source)
    else:
        raise DataError(f"query image {name or type(source).__name__}: expected a PIL image, image bytes or a path, "
                        f"got {type(source).__name__}")
    if not data:
        raise DataError(f"cannot decode query image {name}: the file is empty (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as e:  # PIL raises several types (UnidentifiedImageError, OSError, SyntaxError)
        why = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e))  # PIL names the in-memory buffer
        raise DataError(f"cannot decode query image {name}: {type(e).__name__}: {why} (not an image, or a corrupt "
                        "or truncated file?)") from None
    return im


def _centre_square(im):
    w, h = im.size
    s = min(w, h)
    return im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))


def digits_levels(im, invert: bool | None = None) -> np.ndarray:
    """A PIL image as an 8x8 digit of the ``digits`` protocol: int64 ``(8, 8)`` grey levels 0..16 (white
    ink = 16 on black = 0). ``invert``: True / False, or None to invert when the image's border is lighter
    than mid-grey (dark ink on light paper)."""
    from PIL import Image

    g = _centre_square(im.convert("L"))
    a = np.asarray(g, dtype=np.float64)
    if invert is None:
        border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
        invert = bool(border.mean() > 127.5)
    small = np.asarray(g.resize((8, 8), Image.BOX) if g.size != (8, 8) else g, dtype=np.float64)
    if invert:
        small = 255.0 - small
    return np.rint(small * 16.0 / 255.0).astype(np.int64)


def load_size(data, img_size: int) -> int:
    """Side of the stored image a query must be made into (step 1 of the module docstring) for protocol
    data ``data`` (a :class:`~hashlib_vit.data.protocols.ProtocolData`) and a model of input ``img_size``."""
    if data.in_memory:
        return int(data.protocol.img_size)
    tf = protocol_transforms(data.protocol, img_size)[1]
    return int(tf.resize or tf.out_size)


def prepare_query_images(sources, data, img_size: int, *, names=None,
                         invert: bool | None = None) -> tuple[torch.Tensor, TensorTransform]:
    """Query images made into the protocol's stored images, and the transform that finishes them.

    ``sources``: a list of PIL images / image bytes / paths (see :func:`read_query_image`; one source
    alone is taken as a list of one); ``data``: the run's :class:`~hashlib_vit.data.protocols.ProtocolData`
    (its protocol and whether its splits are in memory decide the preparation, module docstring);
    ``img_size``: the model's input size; ``names``: one name per source for messages; ``invert``: digits
    only (:func:`digits_levels`).

    Returns ``(images, eval_transform)``: uint8 ``(n, 3, S, S)`` with ``S`` = :func:`load_size`, and the
    protocol's evaluation :class:`TensorTransform` for ``img_size`` (``eval_transform(images, train=False)``
    is the model's float input). Raises DataError naming an unreadable image, or for an empty list.
    """
    if not isinstance(sources, (list, tuple)):
        sources = [sources]
    if not sources:
        raise DataError("no query images given: pass a list of PIL images, image bytes or paths")
    names = list(names) if names is not None else [None] * len(sources)
    if len(names) != len(sources):
        raise DataError(f"names has {len(names)} entries but there are {len(sources)} query images")
    size = load_size(data, img_size)
    out = []
    for src, name in zip(sources, names):
        im = read_query_image(src, name)
        if data.protocol.name == "digits":
            from .digits import upsample_digits

            out.append(upsample_digits(digits_levels(im, invert)[None], size)[0])
        else:
            arr = np.asarray(square_crop(im.convert("RGB"), size), dtype=np.uint8)
            out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous())
    return torch.stack(out), protocol_transforms(data.protocol, img_size)[1]


__all__ = ["digits_levels", "load_size", "prepare_query_images", "read_query_image"]
