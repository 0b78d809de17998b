"""Models: backbones, hash heads and the model registry (``head`` name -> builder).

``build_model(backbone=..., bits=..., head=...)`` is the one entry point. A method that needs a
different model shape (TransHash's MGVT, SL-ViT's hash coding layer) registers a builder under its
head name: ``MODELS.register("mgvt", build_mgvt)``; a builder takes ``(backbone, bits, **params)``.
"""
from __future__ import annotations

import inspect

from ..errors import ConfigError
from ..registry import Registry
from .aem import AEM, attach_aem, parse_aem
from .backbones import VIT_PRESETS, Backbone, backbone_choices, check_backbone_name, create_backbone
from .hashmodel import HashModel, HashOutput, sign_codes
from .hcl import build_hcl
from .heads import ClsLinearHead, VtsMlpHead
from .mgvt import MGVT, build_mgvt

MODELS: Registry = Registry("head")
MODELS.register("mgvt", build_mgvt)


@MODELS.register("cls_linear")
def _build_cls_linear(backbone: Backbone, bits: int) -> HashModel:
    return HashModel(backbone, ClsLinearHead(backbone, bits), bits)


@MODELS.register("vts_mlp")
def _build_vts_mlp(backbone: Backbone, bits: int, hidden: int = 1024) -> HashModel:
    return HashModel(backbone, VtsMlpHead(backbone, bits, hidden), bits)


MODELS.register("hcl", build_hcl)  # SL-ViT hash coding layer (METHODS §3.3)


def build_model(backbone: str = "vit32_tiny", bits: int = 32, head: str = "cls_linear", *, img_size: int | None = None,
                weights=None, drop_path_rate: float = 0.0, aem="off", aem_reduction: int = 16,
                aem_spatial_kernel: int = 7, **params) -> HashModel:
    """Build backbone + head. ``params`` go to the head builder (checked against its signature).

    ``aem``: ``"off"`` (plain backbone), ``"all"`` or a comma list of ``local,channel,spatial``: put the
    attention-enhanced module of AE-ViT (:mod:`hashlib_vit.models.aem`) on the ViT's patch-embedding map,
    identity at initialisation; its parameters count as new (larger learning rate).
    """
    branches = parse_aem(aem)
    if not isinstance(bits, int) or bits <= 0:
        raise ConfigError(f"bits={bits!r} must be a positive integer")
    builder = MODELS.get(head)
    sig = inspect.signature(builder)
    allowed = [n for n in list(sig.parameters)[2:]]
    unknown = sorted(set(params) - set(allowed))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        raise ConfigError(f"model parameter(s) {unknown} are not known for head={head!r}; allowed: {allowed or 'none'}")
    bb = create_backbone(backbone, img_size=img_size, weights=weights, drop_path_rate=drop_path_rate)
    if branches:
        if not bb.is_vit:
            raise ConfigError(f"aem={aem!r} needs a ViT backbone; backbone={backbone!r} is a CNN (use aem='off')")
        attach_aem(bb.model, branches, reduction=aem_reduction, spatial_kernel=aem_spatial_kernel)
    return builder(bb, bits, **params)


__all__ = ["MODELS", "build_model", "create_backbone", "check_backbone_name", "Backbone", "HashModel", "HashOutput", "sign_codes",
           "VIT_PRESETS", "backbone_choices", "ClsLinearHead", "VtsMlpHead", "MGVT", "AEM", "attach_aem"]
