"""Query by image: images from outside the protocol (uploads, files, PIL images) to codes and results.

The preparation (size, channels, grey levels) is :func:`hashlib_vit.data.query_images.prepare_query_images`:
the protocol's stored image, then its evaluation transform, so an uploaded image reaches the model as the
protocol's own query images do.
"""
from __future__ import annotations

import numpy as np

from ..data.query_images import prepare_query_images
from .encode import encode_prepared
from .index import HashIndex, SearchResult


def encode_query_images(model, sources, data, *, names=None, invert: bool | None = None,
                        device=None) -> np.ndarray:
    """Codes (int8 ±1, ``(n, bits)``) of query images of any size and mode, prepared as the protocol's own.

    ``model``: the run's trained hash model (``img_size`` and ``encode``); ``sources``: PIL images, image bytes
    (an upload's content) or paths, or one of them; ``data``: the run's
    :class:`~hashlib_vit.data.protocols.ProtocolData` (``result.data`` or ``RunDir.data()``); ``names``,
    ``invert``: see :func:`~hashlib_vit.data.query_images.prepare_query_images`. Raises DataError naming an
    unreadable image (empty, truncated, not an image, missing file).
    """
    images, tf = prepare_query_images(sources, data, model.img_size, names=names, invert=invert)
    return encode_prepared(model, images, tf, device=device)


def search_query_images(model, sources, data, index: HashIndex, k: int, *, names=None,
                        invert: bool | None = None) -> SearchResult:
    """:func:`encode_query_images`, then ``index.search(codes, k)``: the top-k database items per image."""
    return index.search(encode_query_images(model, sources, data, names=names, invert=invert), k)


__all__ = ["encode_prepared", "encode_query_images", "search_query_images"]
