"""Models: ``backbone -> neck -> hash layers``, one composition for every method.

* **backbone** (:func:`create_backbone`): a timm ViT (preset or any timm name) or a CNN, weights from any
  source (:mod:`.weights`); optional patch-embedding modifier AEM (AE-ViT, :class:`.aem.AEMOptions`)
  given to timm's ``VisionTransformer(embed_layer=...)``.
* **neck** (:data:`NECKS` in :mod:`.necks`: ``cls``, ``tokens``, ``hcl``, ``mgvt``): backbone output ->
  a tuple of features.
* **hash layers** (:data:`HASH_LAYERS` in :mod:`.hash_layers`: ``linear``, ``bn_linear``, ``mlp``): one
  per feature, their widths summing to ``bits``.

A run names its model by ``head`` (``RunConfig.head``: the names used across presets, grids and result
tables); :data:`MODELS` is the one table head -> (neck, hash layer). ``model_params`` (one flat mapping)
is split by name into the backbone's AEM options, the neck's ``Options`` and the hash layer's
``Options`` (dataclasses); :func:`resolve_model` does it and checks everything (names, types, values,
bits) before any network is built — ``RunConfig.validate()`` calls it. :func:`build_model` is the one
entry point that builds a model.

To add a neck: subclass :class:`.necks.Neck` (``Options`` dataclass, ``out_dims``, ``forward(feats) ->
tuple``), register it with ``@NECKS.register("name")``, and name it in :data:`MODELS` under a head name
(``MODELS.register("my_head", HeadSpec("name", "linear"))``). See docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError
from ..registry import Registry
from .aem import AEM, AEMOptions, parse_aem
from .backbones import (VIT_PRESETS, Backbone, backbone_choices, check_aem_backbone, check_backbone_name, create_backbone,
                        is_vit_name)
from .hash_layers import HASH_LAYERS
from .hashmodel import HashModel, HashOutput, sign_codes, upgrade_state_dict
from .hcl import HCLNeck
from .mgvt import MGVTNeck
from .necks import NECKS, Neck
from .options import make_options, option_names


@dataclass(frozen=True)
class HeadSpec:
    """What a ``head`` name means: the neck and the hash layer (registry names)."""

    neck: str
    hash_layer: str


MODELS: Registry = Registry("head")
MODELS.register("cls_linear", HeadSpec("cls", "linear"))  # METHODS §1.3
MODELS.register("cls_bn", HeadSpec("cls", "bn_linear"))  # CLS token -> BN hash layer (AE-ViT + HSC, METHODS §4.3)
MODELS.register("vts_mlp", HeadSpec("tokens", "mlp"))  # VTS, METHODS §1.3
MODELS.register("hcl", HeadSpec("hcl", "bn_linear"))  # SL-ViT hash coding layer, METHODS §3.3
MODELS.register("mgvt", HeadSpec("mgvt", "linear"))  # TransHash, METHODS §2.2


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: the AEM options, the neck and hash layer with their options, and the bits of each
    hash layer (``bits_split``, one per neck feature, summing to ``bits``)."""

    head: str
    aem: AEMOptions
    neck: str
    neck_options: Any
    hash_layer: str
    hash_layer_options: Any
    bits_split: tuple[int, ...]


def resolve_model(head: str, bits: int, model_params: Mapping[str, Any] | None = None,
                  backbone: str | None = None) -> ModelSpec:
    """Check ``head`` + ``model_params`` + ``bits`` (and, when given, that the backbone name suits them)
    without building anything; returns the :class:`ModelSpec`.

    ``model_params`` keys go to the AEM options (``aem``, ``aem_reduction``, ``aem_spatial_kernel``), the
    neck's ``Options`` or the hash layer's ``Options`` by name. ``head="hcl"`` with ``hcl_attention=False``
    and CLS pooling is the ``cls`` neck + ``bn_linear``. Raises :class:`ConfigError` for an unknown head
    (allowed listed), an unknown option (the allowed ones listed), a value of the wrong type or range,
    bits the neck cannot split (MGVT: bits and groups named), AEM or a token neck on a CNN backbone.
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or bits <= 0:
        raise ConfigError(f"bits={bits!r} must be a positive integer")
    spec = MODELS.get(head)
    neck_cls, layer_cls = NECKS.get(spec.neck), HASH_LAYERS.get(spec.hash_layer)
    params = dict(model_params or {})
    groups = {"aem": option_names(AEMOptions), "neck": option_names(neck_cls.Options),
              "hash_layer": option_names(layer_cls.Options)}
    unknown = sorted(set(params) - {n for names in groups.values() for n in names})
    if unknown:
        allowed = [n for names in groups.values() for n in names]
        raise ConfigError(f"model parameter(s) {unknown} are not known for head={head!r} (neck {spec.neck!r}, hash "
                          f"layer {spec.hash_layer!r}); allowed: {allowed}")
    aem = make_options(AEMOptions, {k: params[k] for k in groups["aem"] if k in params}, "the backbone (AEM)")
    neck_opts = make_options(neck_cls.Options, {k: params[k] for k in groups["neck"] if k in params},
                             f"neck {spec.neck!r} (head={head!r})")
    layer_opts = make_options(layer_cls.Options, {k: params[k] for k in groups["hash_layer"] if k in params},
                              f"hash layer {spec.hash_layer!r} (head={head!r})")
    neck = spec.neck
    if getattr(neck_opts, "is_plain_cls", lambda: False)():
        neck, neck_opts = "cls", NECKS.get("cls").Options()
    bits_split = neck_opts.split_bits(bits)
    if backbone is not None:
        check_aem_backbone(aem, check_backbone_name(backbone))
    if backbone is not None and not is_vit_name(backbone):
        if neck_opts.needs_tokens():
            what = f"head={head!r}" + (" (hcl_attention=False, pooling='cls' works on a CNN)" if head == "hcl" else "")
            raise ConfigError(f"{what} needs a ViT backbone (output tokens); backbone={backbone!r} is a CNN "
                              "(pooled features only)")
    return ModelSpec(head, aem, neck, neck_opts, spec.hash_layer, layer_opts, bits_split)


def build_model(backbone: str = "vit32_tiny", bits: int = 32, head: str = "cls_linear", *, img_size: int | None = None,
                weights=None, drop_path_rate: float = 0.0, **model_params) -> HashModel:
    """Build ``backbone -> neck -> hash layers`` for ``head`` (see :data:`MODELS`) with ``bits`` hash units.

    ``model_params``: the run's ``model_params`` (AEM options such as ``aem="all"``, neck options such as
    MGVT's ``groups``, hash-layer options such as ``hidden``), checked by :func:`resolve_model`.
    ``img_size`` (px), ``weights`` and ``drop_path_rate`` go to :func:`create_backbone`. AEM (``aem`` not
    ``"off"``) is built into the ViT's patch embedding, identity at initialisation, its parameters new.
    Returns a :class:`HashModel` (random init drawn in this order: backbone, neck, hash layers). Raises
    :class:`ConfigError` (see :func:`resolve_model` and :func:`create_backbone`).
    """
    spec = resolve_model(head, bits, model_params)
    bb = create_backbone(backbone, img_size=img_size, weights=weights, drop_path_rate=drop_path_rate,
                         aem=spec.aem if spec.aem.branches else None)
    neck = NECKS.get(spec.neck)(bb, spec.neck_options)
    layer_cls = HASH_LAYERS.get(spec.hash_layer)
    layers = [layer_cls(d, b, spec.hash_layer_options) for d, b in zip(neck.out_dims, spec.bits_split)]
    return HashModel(bb, neck, layers, bits)


__all__ = ["MODELS", "NECKS", "HASH_LAYERS", "HeadSpec", "ModelSpec", "resolve_model", "build_model", "create_backbone",
           "check_backbone_name", "Backbone", "HashModel", "HashOutput", "sign_codes", "VIT_PRESETS",
           "backbone_choices", "AEM", "AEMOptions", "parse_aem", "Neck", "HCLNeck", "MGVTNeck", "make_options",
           "upgrade_state_dict"]
