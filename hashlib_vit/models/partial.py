"""Partial fine-tuning: freeze the embeddings and the first N transformer blocks of a ViT.

A timm ``VisionTransformer`` computes ``forward_features(x)`` as
``patch_embed -> _pos_embed (CLS/register tokens + position embedding) -> patch_drop -> norm_pre ->
blocks[0..L-1] -> norm``. This module splits that computation after block ``N``:

* :func:`prefix_tokens` ``(backbone, x, n)``: normalised images -> the tokens after block ``n``
  (the *frozen prefix*);
* :func:`finish_tokens` ``(backbone, z, start)``: tokens after block ``start`` -> the remaining
  blocks and the final norm (``forward_features``' output).

``HashModel.frozen_prefix`` / ``HashModel.forward_from_tokens`` (every neck, MGVT and HCL included) are built
on these two, so ``model.forward_from_tokens(model.frozen_prefix(x, n), n) == model(x)`` for every ``n``
(test: ``tests/test_feature_cache.py``). For MGVT the backbone's ``blocks`` are the trunk (the first
``L-1`` blocks; the last block lives on as the global and local branch copies), so ``n <= L-1`` there.

:func:`freeze_prefix` sets ``requires_grad=False`` on the patch embedding, the CLS / register tokens,
the position embedding, ``norm_pre`` and blocks ``0..N-1`` (so :func:`hashlib_vit.train.param_groups`,
which skips parameters that do not require gradients, puts them in no optimiser group) and marks the
model so that ``model.train()`` keeps those modules in eval mode (no dropout, drop-path or patch
dropout in the frozen part). Modules *added* to the backbone (AE-ViT's AEM, ``added_module = True``)
stay trainable: a frozen AE-ViT trains AEM, the last ``L-N`` blocks and the head, with gradients
flowing back through the frozen blocks into AEM. Such a model cannot use the feature cache (the tokens
after block N change while AEM trains); :func:`check_cacheable` says so.

:class:`PartialModel` wraps a frozen model for the training loop: it accepts tokens ``(n, T, D)``
(from the feature cache, :mod:`hashlib_vit.data.feature_cache`) or images ``(n, 3, H, W)`` (the
prefix is then computed on the fly, optionally rounded to the cache's dtype: the uncached reference
of a cached run).

Freezing a pretrained prefix is standard practice for cheap transfer (e.g. Yosinski et al., "How
transferable are features in deep neural networks?", NeurIPS 2014, §4; He et al., MAE, CVPR 2022,
§4.3 partial fine-tuning).
"""
from __future__ import annotations

import hashlib
from typing import Iterator

import torch
import torch.nn as nn

from ..errors import ConfigError

FREEZE_ALL = ("all", -1)  # freeze_blocks values meaning "every block this head allows"


def vit_of(backbone) -> nn.Module:
    """The timm ``VisionTransformer`` inside a :class:`~hashlib_vit.models.Backbone`.

    Raises ConfigError for a CNN backbone or a ViT without the standard pieces (``patch_embed``,
    ``_pos_embed``, ``blocks``, ``norm``)."""
    vit = getattr(backbone, "model", None)
    if getattr(backbone, "kind", None) != "vit" or not all(
            hasattr(vit, a) for a in ("patch_embed", "_pos_embed", "patch_drop", "norm_pre", "blocks", "norm")):
        raise ConfigError(f"freeze_blocks / feature_cache need a ViT backbone with transformer blocks; backbone "
                          f"{getattr(backbone, 'name', backbone)!r} is a {getattr(backbone, 'kind', '?')} "
                          "(use freeze_blocks=0)")
    return vit


def embed_tokens(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Normalised images ``(n, 3, H, W)`` float -> tokens ``(n, T, D)`` before block 0
    (patch embedding, CLS/register tokens + position embedding, patch dropout, ``norm_pre``)."""
    z = vit.patch_embed(x)
    z = vit._pos_embed(z)
    z = vit.patch_drop(z)
    return vit.norm_pre(z)


def prefix_tokens(backbone, x: torch.Tensor, n: int) -> torch.Tensor:
    """Normalised images -> the tokens after blocks ``0..n-1`` (``n = 0``: the embedded tokens), ``(n, T, D)``."""
    vit = vit_of(backbone)
    z = embed_tokens(vit, x)
    for blk in vit.blocks[:n]:
        z = blk(z)
    return z


def finish_tokens(backbone, z: torch.Tensor, start: int) -> torch.Tensor:
    """Tokens after block ``start`` -> blocks ``start..`` and the final norm: ``forward_features``' output."""
    vit = vit_of(backbone)
    for blk in vit.blocks[start:]:
        z = blk(z)
    return vit.norm(z)


def max_freeze_blocks(model) -> int:
    """The largest N that ``freeze_prefix`` accepts: the backbone's block count (ViT depth L for the plain
    and hcl heads; L-1 for MGVT, whose last block is the branches: its neck took it out of the backbone)."""
    return len(vit_of(model.backbone).blocks)


def backbone_depth(name: str, img_size: int | None = None) -> int:
    """Number of transformer blocks of backbone ``name`` without building its weights (a preset's depth,
    or the timm model built on the ``meta`` device). ConfigError for a CNN or a model without blocks."""
    from .backbones import CNN_NAMES, VIT_FAMILIES, VIT_PRESETS

    if name in VIT_PRESETS:
        return VIT_PRESETS[name].depth
    if name in CNN_NAMES or not name.startswith(VIT_FAMILIES):
        raise ConfigError(f"freeze_blocks / feature_cache need a ViT backbone with transformer blocks; backbone "
                          f"{name!r} is a CNN (use freeze_blocks=0)")
    from .backbones import meta_network

    blocks = getattr(meta_network(name, img_size), "blocks", None)
    if blocks is None:
        raise ConfigError(f"freeze_blocks / feature_cache need a ViT with transformer blocks; {name!r} has none")
    return len(blocks)


def check_freeze_config(backbone: str, head: str, freeze_blocks, img_size: int | None = None) -> int:
    """Early check of ``RunConfig.freeze_blocks`` (before any data or weights are loaded): returns N as an
    int; ConfigError naming N, the backbone and its depth when N is too large, or for a CNN backbone."""
    if freeze_blocks in (0, None) or freeze_blocks is False:
        return 0
    depth = backbone_depth(backbone, img_size)
    limit = depth - 1 if head == "mgvt" else depth
    what = (f"backbone {backbone!r} of depth {depth}" +
            (" with head='mgvt' (its last block becomes the global/local branches: at most depth - 1)"
             if head == "mgvt" else ""))
    return resolve_freeze_blocks(freeze_blocks, limit, what)


def resolve_freeze_blocks(value, limit: int, where: str) -> int:
    """``freeze_blocks`` as an int in ``0..limit`` (``"all"`` / ``-1``: ``limit``); ConfigError otherwise.

    ``where`` names the backbone (and head) in the message."""
    if value in FREEZE_ALL and not isinstance(value, bool):
        return limit
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"freeze_blocks={value!r} must be an integer >= 0 (0: nothing frozen), 'all' or -1")
    if value > limit:
        raise ConfigError(f"freeze_blocks={value} exceeds {where}: at most {limit} blocks can be frozen")
    return value


def _frozen_modules(model, n: int) -> list[nn.Module]:
    vit = vit_of(model.backbone)
    return [vit.patch_embed, vit.patch_drop, vit.norm_pre, *vit.blocks[:n]]


def _added_modules(model) -> list[nn.Module]:
    return [m for m in model.backbone.modules() if getattr(m, "added_module", False)]


def frozen_parameters(model, n: int | None = None) -> Iterator[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of the frozen prefix (embeddings, tokens, ``norm_pre``, blocks ``0..n-1``),
    names as in ``model.backbone.model``; parameters of added modules (AEM) excluded."""
    n = model.frozen_blocks if n is None else n
    vit = vit_of(model.backbone)
    added = {id(p) for m in _added_modules(model) for p in m.parameters()}
    seen = set()
    prefixes = ("patch_embed.", "norm_pre.", *(f"blocks.{i}." for i in range(n)))
    for name, p in vit.named_parameters():
        if name in ("cls_token", "reg_token", "pos_embed") or name.startswith(prefixes):
            if id(p) not in added and id(p) not in seen:
                seen.add(id(p))
                yield name, p


def freeze_prefix(model, n) -> int:
    """Freeze the embeddings and the first ``n`` blocks of ``model`` (a HashModel, any neck) in place.

    ``n``: int in ``0..max_freeze_blocks(model)``, or ``"all"`` / ``-1`` (the maximum). Frozen
    parameters get ``requires_grad=False`` and their modules stay in eval mode under ``model.train()``.
    Returns ``n`` as an int. Raises ConfigError for a CNN backbone or ``n`` out of range (naming the
    backbone and its depth). ``n = 0`` changes nothing.
    """
    limit = max_freeze_blocks(model)
    head = type(model).__name__
    n = resolve_freeze_blocks(n, limit, f"the {limit} blocks of backbone {model.backbone.name!r} "
                                        f"available to {head}" + (" (depth - 1: its last block is the branches)"
                                                                   if _is_mgvt(model) else ""))
    if n == 0:
        return 0
    for _, p in frozen_parameters(model, n):
        p.requires_grad_(False)
    model.frozen_blocks = n
    model.train(model.training)  # apply the eval mode of the frozen modules now
    return n


def _is_mgvt(model) -> bool:
    from .mgvt import MGVTNeck

    return isinstance(getattr(model, "neck", None), MGVTNeck)


def apply_frozen_modes(model, mode: bool) -> None:
    """After ``model.train(mode)``: the frozen prefix back to eval (added modules such as AEM keep ``mode``).
    Called by ``HashModel.train``."""
    n = getattr(model, "frozen_blocks", 0)
    if not (mode and n):
        return
    for m in _frozen_modules(model, n):
        m.eval()
    for m in _added_modules(model):
        m.train(mode)


def check_cacheable(model) -> None:
    """ConfigError unless the tokens after the frozen prefix are a fixed function of the image (no AEM
    or other trainable added module before block N)."""
    if _added_modules(model):
        names = sorted({type(m).__name__ for m in _added_modules(model)})
        raise ConfigError(f"feature_cache=True is not possible with {', '.join(names)} in the backbone "
                          f"(model_params aem != 'off'): it changes the tokens before the frozen blocks and trains, so "
                          "they cannot be computed once; use feature_cache=False (freeze_blocks still works)")


def prefix_fingerprint(model, n: int) -> str:
    """sha256 (hex) of everything the frozen prefix computes with: the input normalisation (mean, std)
    and the names, shapes, dtypes and values of the frozen parameters and of the frozen modules' buffers.

    Two models with the same fingerprint produce the same tokens after block ``n`` for the same images;
    used as the feature cache's weight key (robust for random or in-memory weights)."""
    h = hashlib.sha256()
    h.update(repr((tuple(model.backbone.mean), tuple(model.backbone.std), n)).encode())
    tensors = [(f"param:{k}", p) for k, p in frozen_parameters(model, n)]
    for i, m in enumerate(_frozen_modules(model, n)):
        tensors += [(f"buffer:{i}.{k}", b) for k, b in m.named_buffers()]
    for name, t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class PartialModel(nn.Module):
    """The training-loop face of a frozen model: ``forward(tokens or images) -> HashOutput``.

    * tokens ``(n, T, D)`` (any float dtype, e.g. fp16 from the cache): cast to float32 and run through
      ``model.forward_from_tokens(tokens, n_frozen)`` (remaining blocks, final norm, head);
    * images ``(n, 3, H, W)`` in ``[0, 1]``: the frozen prefix is computed first (no autograd graph when
      nothing in it trains), rounded to ``token_dtype`` when given (``torch.float16``: exactly what the
      cache stores) and continued as above.

    ``model`` is the wrapped HashModel (its state dict keys carry the prefix ``model.``); its
    ``backbone_parameters`` are forwarded so the optimiser keeps the two learning rates.
    """

    def __init__(self, model: nn.Module, n_frozen: int, token_dtype: torch.dtype | None = None):
        super().__init__()
        if n_frozen < 1 or getattr(model, "frozen_blocks", 0) != n_frozen:
            raise ConfigError(f"PartialModel needs a model frozen with freeze_prefix(model, {n_frozen}) "
                              f"(its frozen_blocks is {getattr(model, 'frozen_blocks', 0)})")
        self.model = model
        self.n_frozen = int(n_frozen)
        self.token_dtype = token_dtype

    @property
    def bits(self) -> int:
        return self.model.bits

    def backbone_parameters(self):
        return self.model.backbone_parameters()

    def forward(self, x: torch.Tensor):
        if x.ndim == 4:
            prefix_trains = any(p.requires_grad for m in _added_modules(self.model) for p in m.parameters())
            with torch.set_grad_enabled(torch.is_grad_enabled() and prefix_trains):
                x = self.model.frozen_prefix(x, self.n_frozen)
            if self.token_dtype is not None:
                x = x.to(self.token_dtype)
        return self.model.forward_from_tokens(x.float(), self.n_frozen)


__all__ = ["backbone_depth", "check_freeze_config", "vit_of", "embed_tokens", "prefix_tokens", "finish_tokens", "max_freeze_blocks", "resolve_freeze_blocks",
           "freeze_prefix", "frozen_parameters", "apply_frozen_modes", "check_cacheable", "prefix_fingerprint",
           "PartialModel", "FREEZE_ALL"]
