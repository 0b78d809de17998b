"""Necks: the backbone's output -> the features the hash layers see (one hash layer per feature).

A model is ``backbone -> neck -> hash layers`` (:class:`~hashlib_vit.models.HashModel`). The backbone
returns tokens ``(n, T, D)`` after its final norm (ViT; token 0 is CLS) or a pooled feature ``(n, D)``
(CNN); the neck returns a tuple of features ``(n, d_i)`` (or ``(n, T, D)``, which the hash layer
flattens). Registry :data:`NECKS` (name -> class); each class has an ``Options`` dataclass (a
:class:`NeckOptions`: the ``model_params`` keys it accepts, checked by
:func:`~hashlib_vit.models.options.make_options`) and is built as ``cls(backbone, options)``.

=========  ==================================================================  =========================
neck       features                                                             source
=========  ==================================================================  =========================
``cls``    ``LN(z_L)_CLS`` (ViT) or the pooled feature (CNN)                    METHODS §1.3
``tokens`` all ``T`` output tokens (flattened by the hash layer)                VTS, METHODS §1.3
``hcl``    extra transformer block, then ``[CLS; mean(patches)]`` or CLS        SL-ViT, METHODS §3.3
``mgvt``   global branch CLS + ``G`` local-group CLS (copies of the last block)  TransHash, METHODS §2.2
=========  ==================================================================  =========================

Parameters: a neck module copied from the backbone's own weights (MGVT's branches) carries the marker
``from_backbone = True`` and trains with the backbone's learning rate; every other neck module is new.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..registry import Registry
from .backbones import Backbone

NECKS: Registry = Registry("neck")


@dataclass(frozen=True)
class NeckOptions:
    """Base of every neck's options dataclass (no options)."""

    def split_bits(self, bits: int) -> tuple[int, ...]:
        """The bits of each hash layer (one per feature), summing to ``bits``; ConfigError when not allowed."""
        return (int(bits),)

    def needs_tokens(self) -> bool:
        """True when this configuration needs a ViT's tokens (not only a CNN's pooled feature)."""
        return True


class Neck(nn.Module):
    """Base class: ``forward(feats) -> tuple of features``; ``out_dims``: the flattened size of each."""

    Options = NeckOptions
    out_dims: tuple[int, ...] = ()

    def __init__(self, backbone: Backbone, options: NeckOptions):
        super().__init__()
        self.options = options
        if options.needs_tokens() and not backbone.is_vit:
            raise ConfigError(f"neck {self.neck_name()!r} with {options} needs a ViT backbone (output tokens); "
                              f"backbone {backbone.name!r} is a {backbone.kind} (pooled features only)")

    @classmethod
    def neck_name(cls) -> str:
        return next((n for n, c in NECKS.items() if c is cls), cls.__name__)

    def analysis_feature(self, outs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The pooled feature reported in ``HashOutput.features`` (default: the first feature)."""
        return outs[0]

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError


@dataclass(frozen=True)
class ClsOptions(NeckOptions):
    def needs_tokens(self) -> bool:
        return False


@NECKS.register("cls")
class ClsNeck(Neck):
    """The CLS token after the final norm ``(n, D)`` for a ViT, the pooled feature ``(n, D)`` for a CNN
    (METHODS §1.3 ``cls_linear``)."""

    Options = ClsOptions

    def __init__(self, backbone: Backbone, options: ClsOptions = ClsOptions()):
        super().__init__(backbone, options)
        self.out_dims = (backbone.feature_dim,)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (feats[:, 0] if feats.ndim == 3 else feats,)


@NECKS.register("tokens")
class TokensNeck(Neck):
    """All ``T`` output tokens ``(n, T, D)`` (VTS, METHODS §1.3 ``vts_mlp``: the hash layer flattens them);
    ``HashOutput.features`` is the CLS token."""

    def __init__(self, backbone: Backbone, options: NeckOptions = NeckOptions()):
        super().__init__(backbone, options)
        num_tokens = backbone.model.patch_embed.num_patches + backbone.num_prefix_tokens
        self.out_dims = (num_tokens * backbone.feature_dim,)

    def analysis_feature(self, outs):
        return outs[0][:, 0]

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (feats,)


__all__ = ["NECKS", "Neck", "NeckOptions", "ClsNeck", "ClsOptions", "TokensNeck"]
