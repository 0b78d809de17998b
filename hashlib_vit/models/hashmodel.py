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

    * ``u``: ``(n, b)`` continuous outputs; the binary code is ``sign(u)`` with ``sign(0) = +1``.
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

    frozen_blocks: int = 0  # blocks frozen by models.partial.freeze_prefix (0: none)

    def forward(self, x: torch.Tensor) -> HashOutput:
        return self.output_from_features(self.backbone(self.normalize(x)))

    def output_from_features(self, feats: torch.Tensor) -> HashOutput:
        """Backbone output (tokens ``(n, T, D)`` after the final norm, or pooled ``(n, D)``) -> head output."""
        u = self.head(feats)
        return HashOutput(u=u, features=feats[:, 0] if feats.ndim == 3 else feats)

    def frozen_prefix(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """Images ``(b, 3, H, W)`` float in [0, 1] -> tokens ``(b, T, D)`` after the first ``n`` blocks
        (normalisation, embeddings, blocks 0..n-1). ConfigError for a CNN backbone. See models.partial."""
        from .partial import prefix_tokens

        return prefix_tokens(self.backbone, self.normalize(x), n)

    def forward_from_tokens(self, z: torch.Tensor, start: int) -> HashOutput:
        """Tokens after block ``start`` -> the remaining blocks, final norm and head:
        ``forward_from_tokens(frozen_prefix(x, n), n) == forward(x)``."""
        from .partial import finish_tokens

        return self.output_from_features(finish_tokens(self.backbone, z, start))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_blocks:  # the frozen prefix never trains: no dropout / drop-path there
            from .partial import apply_frozen_modes

            apply_frozen_modes(self, mode)
        return self

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
