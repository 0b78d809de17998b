"""The embedded default data set: scikit-learn's bundled handwritten digits (no download).

1,797 real 8x8 grey images of the digits 0-9 (values 0..16), upsampled here to 32x32 RGB uint8.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def load_digits_images(size: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    """Return (images uint8 (1797, 3, size, size), classes int64 (1797,))."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return upsample_digits(d.images, size), d.target.astype(np.int64)


def upsample_digits(levels: np.ndarray, size: int = 32) -> torch.Tensor:
    """8x8 grey digits (values 0..16, float or int ``(N, 8, 8)``) to uint8 ``(N, 3, size, size)``: the
    bilinear upsampling and grey-to-RGB copy that makes the protocol's images (one code path for the
    data set and for a query image prepared by :func:`hashlib_vit.data.query_images.prepare_query_images`)."""
    x = torch.from_numpy(np.asarray(levels, dtype=np.float32) / 16.0)[:, None]  # (N,1,8,8) in [0,1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
