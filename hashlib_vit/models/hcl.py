"""SL-ViT's hash coding layer (HCL), METHODS.md §3.3.

Pei & Wang (2024) add a "hash coding layer" to an ImageNet-pretrained ViT for "more comprehensive
feature extraction"; its design is not published. The layer built here is the inferred one [I]:

1. (``hcl_attention=True``, default) one extra pre-LN transformer block over **all** output tokens
   (timm's ``Block``: the backbone's number of heads, MLP ratio 4, random init) — the TransT-style
   "context augment" unit: ``T' = Block(T)``;
2. pooling ``g = [T'_CLS ; mean(T'_patches)]`` (``pooling="cls_mean"``) or ``g = T_CLS``
   (``pooling="cls"``); ``pooling="auto"`` (default) follows METHODS: CLS + mean with the extra
   block, CLS only without it;
3. projection ``v = BN(W g)``: a bias-free linear layer (weights ~ N(0, 0.01²), as in OrthoHash) and
   ``BatchNorm1d(K)`` with affine parameters (bit balance).

The retrieval code is ``sign(v)``. The extra block, the projection and the BN are *new* modules (they
get the new-module learning rate); the backbone keeps its own. With a CNN backbone (pooled features)
only ``hcl_attention=False, pooling="cls"`` is possible: that is OrthoHash's own head (linear + BN).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError, bad_choice
from .backbones import Backbone
from .hashmodel import HashModel, HashOutput

POOLINGS = ("auto", "cls_mean", "cls")


class HashCodingLayer(nn.Module):
    """Optional extra attention block -> pooling -> bias-free linear -> BatchNorm1d(K)."""

    def __init__(self, backbone: Backbone, bits: int, *, hcl_attention: bool = True, pooling: str = "auto",
                 num_heads: int | None = None, mlp_ratio: float = 4.0, init_std: float = 0.01):
        super().__init__()
        if pooling not in POOLINGS:
            raise bad_choice("pooling", pooling, POOLINGS)
        if not isinstance(hcl_attention, bool):
            raise ConfigError(f"hcl_attention={hcl_attention!r} must be true or false")
        if pooling == "auto":
            pooling = "cls_mean" if hcl_attention else "cls"
        if not backbone.is_vit and (hcl_attention or pooling != "cls"):
            raise ConfigError(f"head='hcl' on the CNN backbone {backbone.name!r} (pooled features, no tokens) needs "
                              f"hcl_attention=False and pooling='cls'; got hcl_attention={hcl_attention}, "
                              f"pooling={pooling!r}")
        self.hcl_attention = hcl_attention
        self.pooling = pooling
        self.num_prefix_tokens = max(int(backbone.num_prefix_tokens), 1) if backbone.is_vit else 0
        dim = backbone.feature_dim
        self.block: nn.Module | None = None
        if hcl_attention:
            from timm.models.vision_transformer import Block, init_weights_vit_timm

            if num_heads is None:
                num_heads = _backbone_heads(backbone)
            if dim % num_heads:
                raise ConfigError(f"num_heads={num_heads} must divide the token width {dim}")
            self.block = Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True)
            for name, module in self.block.named_modules():
                init_weights_vit_timm(module, name)  # trunc-normal(0.02) linear weights, zero biases
        in_dim = 2 * dim if pooling == "cls_mean" else dim
        self.proj = nn.Linear(in_dim, bits, bias=False)
        nn.init.normal_(self.proj.weight, mean=0.0, std=init_std)
        self.bn = nn.BatchNorm1d(bits)
        self.out_dim = in_dim

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """Backbone output -> the pooled feature ``g`` (after the extra block when it is on)."""
        if feats.ndim == 2:  # CNN: already pooled
            return feats
        if self.block is not None:
            feats = self.block(feats)
        cls = feats[:, 0]
        if self.pooling == "cls":
            return cls
        return torch.cat([cls, feats[:, self.num_prefix_tokens:].mean(1)], dim=1)

    def project(self, g: torch.Tensor) -> torch.Tensor:
        return self.bn(self.proj(g))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.project(self.pool(feats))


def _backbone_heads(backbone: Backbone) -> int:
    blocks = getattr(backbone.model, "blocks", None)
    try:
        return int(blocks[-1].attn.num_heads)
    except (TypeError, AttributeError, IndexError):
        raise ConfigError(f"cannot read the number of attention heads of backbone {backbone.name!r}; "
                          "pass model_params={'num_heads': N}") from None


class HCLHashModel(HashModel):
    """``HashModel`` whose ``features`` are the pooled HCL input ``g`` (for analysis)."""

    def output_from_features(self, feats: torch.Tensor) -> HashOutput:
        g = self.head.pool(feats)
        return HashOutput(u=self.head.project(g), features=g)


def build_hcl(backbone: Backbone, bits: int, hcl_attention: bool = True, pooling: str = "auto",
              num_heads: int | None = None, mlp_ratio: float = 4.0, init_std: float = 0.01) -> HCLHashModel:
    """Registry builder for ``head="hcl"`` (``model_params``: hcl_attention, pooling, num_heads, mlp_ratio, init_std)."""
    head = HashCodingLayer(backbone, bits, hcl_attention=hcl_attention, pooling=pooling, num_heads=num_heads,
                           mlp_ratio=mlp_ratio, init_std=init_std)
    return HCLHashModel(backbone, head, bits)


__all__ = ["HashCodingLayer", "HCLHashModel", "build_hcl", "POOLINGS"]
