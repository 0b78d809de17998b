"""Batched, seeded image transforms on uint8/float tensors (CPU or GPU, no PIL).

Images enter as uint8 ``(n, 3, H, W)`` and leave as float in ``[0, 1]`` at the model's input size;
normalisation (mean/std of the backbone) is done inside the model, so codes of any image source
are computed the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TensorTransform:
    """Train/eval transform of one protocol for one model input size.

    * ``resize``: first resize to ``resize x resize`` (e.g. 256 for 224-pixel models), then crop
      ``out_size`` (random in training, centre in evaluation). ``None``: keep the native size.
    * ``pad_crop``: at native size, pad by this many pixels and take a random crop (training only).
    * ``hflip``: random horizontal flip (training only).
    """

    out_size: int
    resize: int | None = None
    pad_crop: int = 0
    hflip: bool = False

    def __call__(self, x: torch.Tensor, *, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        if self.resize is not None and x.shape[-1] != self.resize:
            x = _resize(x, self.resize)
        if self.resize is None and x.shape[-1] != self.out_size:
            x = _resize(x, self.out_size)
        h, w = x.shape[-2:]
        if train:
            # pad (reflect) + random crop + flip as ONE gather with reflected / reversed indices, on the
            # uint8 images where possible: the same result as F.pad(mode="reflect"), crop and flip
            pad = self.pad_crop if self.resize is None else 0
            out = self.out_size
            span_y, span_x = h + 2 * pad - out, w + 2 * pad - out
            dev = generator.device if generator is not None else "cpu"
            oy = ox = None
            if max(span_y, span_x) > 0:
                oy = torch.randint(0, span_y + 1, (n,), generator=generator, device=dev).to(x.device)
                ox = torch.randint(0, span_x + 1, (n,), generator=generator, device=dev).to(x.device)
            flip = None
            if self.hflip:
                flip = (torch.rand(n, generator=generator, device=dev) < 0.5).to(x.device)
            if oy is not None or flip is not None:
                ar = torch.arange(out, device=x.device)
                zero = torch.zeros(n, dtype=torch.long, device=x.device)
                rows = _reflect((oy if oy is not None else zero)[:, None] + ar - pad, h)
                cols = _reflect((ox if ox is not None else zero)[:, None] + ar - pad, w)
                if flip is not None:
                    cols = torch.where(flip[:, None], cols.flip(1), cols)
                c = x.shape[1]
                x = x.gather(2, rows[:, None, :, None].expand(n, c, out, w))
                x = x.gather(3, cols[:, None, None, :].expand(n, c, out, out))
        elif h > self.out_size or w > self.out_size:
            oy, ox = (h - self.out_size) // 2, (w - self.out_size) // 2
            x = x[..., oy : oy + self.out_size, ox : ox + self.out_size]
        return _as_float(x).contiguous()


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize to ``size x size``.

    uint8 images on the CPU are resized as uint8 (channels-last kernel, several times faster; the
    result is rounded to 8 bits, as a PIL resize is); elsewhere in float.
    """
    if x.dtype == torch.uint8 and x.device.type == "cpu":
        y = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)
        return y.contiguous()
    return F.interpolate(_as_float(x), size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside [0, size) mirrored as by F.pad(mode="reflect") (edge not repeated)."""
    i = torch.where(i < 0, -i, i)
    return torch.where(i > size - 1, 2 * (size - 1) - i, i)


def protocol_transforms(protocol, img_size: int) -> tuple[TensorTransform, TensorTransform]:
    """(train, eval) transforms of `protocol` for a model with input size `img_size`.

    * model at the protocol's native size (32-pixel models on CIFAR-10 / digits): the native
      images; training adds the protocol's pad-and-crop and (where allowed) horizontal flip;
    * other sizes (224-pixel models): resize to ``round(img_size * 256 / 224)`` (256 for 224), then
      random crop + horizontal flip in training, centre crop in evaluation (the DeepHash-pytorch /
      HashNet recipe). List-file images are first resized (shorter side) and centre-squared to that
      size when decoded.

    Normalisation (the backbone's mean/std from its timm data config) is applied inside the model.
    """
    out = int(img_size)
    if out == protocol.img_size:
        return TensorTransform(out, pad_crop=protocol.pad_crop, hflip=protocol.hflip), TensorTransform(out)
    resize = int(round(out * 256 / 224))
    return TensorTransform(out, resize=resize, hflip=protocol.hflip), TensorTransform(out, resize=resize)
