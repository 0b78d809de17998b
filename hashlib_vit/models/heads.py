"""Hash heads: map backbone features to K continuous outputs ``u`` (the code is ``sign(u)``)."""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from .backbones import Backbone


def _pooled(backbone: Backbone, feats: torch.Tensor) -> torch.Tensor:
    """CLS token (after the final norm) for ViTs, the pooled feature for CNNs."""
    return feats[:, 0] if feats.ndim == 3 else feats


class ClsLinearHead(nn.Module):
    """``u = W LN(z_L)_CLS + c`` (METHODS §1.3 ``cls_linear``); for CNNs a linear layer on the pooled feature."""

    def __init__(self, backbone: Backbone, bits: int):
        super().__init__()
        self.fc = nn.Linear(backbone.feature_dim, bits)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats[:, 0] if feats.ndim == 3 else feats)


class VtsMlpHead(nn.Module):
    """VTS head (METHODS §1.3 ``vts_mlp``): all N+1 tokens flattened -> Dropout(0.5) -> 1024 -> ReLU -> K."""

    def __init__(self, backbone: Backbone, bits: int, hidden: int = 1024, num_tokens: int | None = None):
        super().__init__()
        if not backbone.is_vit:
            raise ValueError("head='vts_mlp' needs a ViT backbone (it flattens all output tokens)")
        if num_tokens is None:
            num_tokens = backbone.model.patch_embed.num_patches + backbone.num_prefix_tokens
        in_dim = num_tokens * backbone.feature_dim
        n_params = in_dim * hidden + hidden * bits
        if n_params > 20_000_000:
            warnings.warn(f"head='vts_mlp' has {n_params / 1e6:.0f} M parameters ({num_tokens} tokens x "
                          f"{backbone.feature_dim} -> {hidden}); 'cls_linear' is the cheap default", stacklevel=2)
        self.net = nn.Sequential(nn.Flatten(1), nn.Dropout(0.5), nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, bits))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats)
