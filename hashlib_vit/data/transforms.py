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
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        n = x.shape[0]
        if self.resize is not None and x.shape[-1] != self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False, antialias=True)
        size = x.shape[-1]
        if self.resize is None and size != self.out_size:
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False, antialias=True)
            size = self.out_size
        if train:
            pad = self.pad_crop if self.resize is None else 0
            if pad:
                x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
            span = x.shape[-1] - self.out_size
            if span > 0:
                x = _random_crop(x, self.out_size, span, generator)
            if self.hflip:
                flip = torch.rand(n, generator=generator, device=generator.device if generator else "cpu") < 0.5
                flip = flip.to(x.device)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        elif size > self.out_size:
            o = (size - self.out_size) // 2
            x = x[..., o : o + self.out_size, o : o + self.out_size]
        return x.contiguous()


def _random_crop(x: torch.Tensor, out: int, span: int, generator: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    dev = generator.device if generator is not None else "cpu"
    oy = torch.randint(0, span + 1, (n,), generator=generator, device=dev).to(x.device)
    ox = torch.randint(0, span + 1, (n,), generator=generator, device=dev).to(x.device)
    ar = torch.arange(out, device=x.device)
    rows = (oy[:, None] + ar)[:, None, :, None]  # n,1,out,1
    cols = (ox[:, None] + ar)[:, None, None, :]  # n,1,1,out
    bidx = torch.arange(n, device=x.device)[:, None, None, None]
    cidx = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return x[bidx, cidx, rows, cols]


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
