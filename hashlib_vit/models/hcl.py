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

The retrieval code is ``sign(v)``. In the model's composition steps 1-2 are the ``hcl`` neck
(:class:`HCLNeck`) and step 3 the ``bn_linear`` hash layer
(:class:`~hashlib_vit.models.hash_layers.BNLinearHash`); ``head="hcl"`` names the pair. The extra block,
the projection and the BN are *new* modules (they get the new-module learning rate); the backbone keeps
its own. ``hcl_attention=False, pooling="cls"`` is the ``cls`` neck + ``bn_linear`` (OrthoHash's own
head), the only form possible on a CNN backbone (pooled features).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ConfigError, bad_choice
from .backbones import Backbone
from .necks import NECKS, Neck, NeckOptions

POOLINGS = ("auto", "cls_mean", "cls")


@dataclass(frozen=True)
class HCLOptions(NeckOptions):
    """``hcl_attention``: the extra block on/off; ``pooling``: ``auto`` / ``cls_mean`` / ``cls`` (``auto``:
    CLS + mean with the block, CLS without); ``num_heads`` (default: the backbone's last block's) and
    ``mlp_ratio`` of the extra block. ConfigError for an unknown pooling."""

    hcl_attention: bool = True
    pooling: str = "auto"
    num_heads: int | None = None
    mlp_ratio: float = 4.0

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise bad_choice("pooling", self.pooling, POOLINGS)
        if self.num_heads is not None and self.num_heads < 1:
            raise ConfigError(f"num_heads={self.num_heads!r} must be an integer >= 1")

    @property
    def resolved_pooling(self) -> str:
        if self.pooling == "auto":
            return "cls_mean" if self.hcl_attention else "cls"
        return self.pooling

    def is_plain_cls(self) -> bool:
        """No extra block and CLS pooling: the ``cls`` neck (the model is built with that one)."""
        return not self.hcl_attention and self.resolved_pooling == "cls"

    def needs_tokens(self) -> bool:
        return not self.is_plain_cls()


@NECKS.register("hcl")
class HCLNeck(Neck):
    """Optional extra attention block over all tokens -> pooling ``g`` ``(n, D)`` or ``(n, 2D)`` (METHODS §3.3)."""

    Options = HCLOptions

    def __init__(self, backbone: Backbone, options: HCLOptions = HCLOptions()):
        if not backbone.is_vit and options.needs_tokens():
            raise ConfigError(f"head='hcl' on the CNN backbone {backbone.name!r} (pooled features, no tokens) needs "
                              f"hcl_attention=False and pooling='cls'; got hcl_attention={options.hcl_attention}, "
                              f"pooling={options.resolved_pooling!r}")
        super().__init__(backbone, options)
        self.hcl_attention = options.hcl_attention
        self.pooling = options.resolved_pooling
        self.num_prefix_tokens = max(int(backbone.num_prefix_tokens), 1) if backbone.is_vit else 0
        dim = backbone.feature_dim
        self.block: nn.Module | None = None
        if self.hcl_attention:
            from timm.models.vision_transformer import Block, init_weights_vit_timm

            num_heads = options.num_heads or _backbone_heads(backbone)
            if dim % num_heads:
                raise ConfigError(f"num_heads={num_heads} must divide the token width {dim}")
            self.block = Block(dim, num_heads, mlp_ratio=options.mlp_ratio, qkv_bias=True)
            for name, module in self.block.named_modules():
                init_weights_vit_timm(module, name)  # trunc-normal(0.02) linear weights, zero biases
        self.out_dims = (2 * dim if self.pooling == "cls_mean" else dim,)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if feats.ndim == 2:  # CNN: already pooled
            return (feats,)
        if self.block is not None:
            feats = self.block(feats)
        cls = feats[:, 0]
        if self.pooling == "cls":
            return (cls,)
        return (torch.cat([cls, feats[:, self.num_prefix_tokens:].mean(1)], dim=1),)


def _backbone_heads(backbone: Backbone) -> int:
    blocks = getattr(backbone.model, "blocks", None)
    try:
        return int(blocks[-1].attn.num_heads)
    except (TypeError, AttributeError, IndexError):
        raise ConfigError(f"cannot read the number of attention heads of backbone {backbone.name!r}; "
                          "pass model_params={'num_heads': N}") from None


__all__ = ["HCLNeck", "HCLOptions", "POOLINGS"]
