"""The model every method shares: normalise -> backbone -> hash head -> :class:`HashOutput`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

from .backbones import Backbone


@dataclass
class HashOutput:
    """What a model returns.

    * ``u``: ``(n, K)`` continuous outputs; the binary code is ``sign(u)`` with ``sign(0) = +1``.
    * ``heads``: the per-head pieces whose concatenation is ``u`` (one piece for ordinary models;
      global + local heads for TransHash).
    * ``features``: the pooled feature the head saw (for analysis), when available.
    """

    u: torch.Tensor
    heads: tuple[torch.Tensor, ...] = ()
    features: torch.Tensor | None = None

    def __post_init__(self):
        if not self.heads:
            self.heads = (self.u,)


def sign_codes(u: torch.Tensor) -> torch.Tensor:
    """Binarise with sign(0) = +1, as int8 in {-1, +1}."""
    return torch.where(u >= 0, 1, -1).to(torch.int8)


class HashModel(nn.Module):
    """A backbone plus a hash head. Inputs are float images in [0, 1] at ``img_size``.

    ``new_modules`` names the sub-modules that start from random init (heads, extra blocks): the
    optimiser gives them the larger learning rate; everything else counts as backbone.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, bits: int):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.bits = int(bits)
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)

    @property
    def img_size(self) -> int:
        return self.backbone.img_size

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> HashOutput:
        feats = self.backbone(self.normalize(x))
        u = self.head(feats)
        return HashOutput(u=u, features=feats[:, 0] if feats.ndim == 3 else feats)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Binary codes (int8 ±1) of a batch, in eval mode semantics (caller sets eval())."""
        return sign_codes(self(x).u.float())

    def new_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters that do not come from the (possibly pretrained) backbone."""
        backbone_ids = {id(p) for p in self.backbone_parameters()}
        return (p for p in self.parameters() if id(p) not in backbone_ids)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """The backbone's own parameters (modules added to it, such as AEM, count as new)."""
        added = {id(p) for p in self.backbone.added_parameters()}
        return (p for p in self.backbone.parameters() if id(p) not in added)
