"""AEM — the attention-enhanced module of AE-ViT (METHODS.md §4.2; every design point here is [I]).

Only the abstract of the thesis (C. Huang, 2024) is available: "an attention module before the
encoder acting on the input feature map". Our documented reading places AEM on the patch-embedding
**feature map** ``X`` (``n x D x H/P x W/P``, the output of the stride-P patch convolution), before
CLS concatenation, position embedding and the encoder:

1. local detail   ``X1 = X + PW(GELU(BN(DW3x3(X))))``           (PW zero-initialised -> X1 = X)
2. channel attn.  ``a_c = sigmoid(MLP(GAP(X1)) + MLP(GMP(X1)))``  shared MLP D -> D/r -> D, r = 16
                  ``X2 = X1 * a_c``
3. spatial attn.  ``a_s = sigmoid(Conv7x7([mean_c(X2); max_c(X2)]))``,  ``X3 = X2 * a_s``
4. gated residual ``X' = X + gamma * (X3 - X)``, ``gamma in R^D`` initialised to 0

With ``gamma = 0`` (and the zero point-wise conv) AE-ViT computes exactly the plain ViT at step 0,
so every pretrained weight is reused unchanged. Any subset of the three branches can be switched
off (ablations): a disabled branch is the identity.

:func:`attach_aem` puts AEM into a timm ``VisionTransformer`` by replacing its ``patch_embed`` with
an :class:`AEPatchEmbed` that shares the original ``proj`` / ``norm`` modules, so the state-dict keys
of the plain ViT are unchanged (a plain checkpoint loads; only ``patch_embed.aem.*`` is new).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError

AEM_BRANCHES = ("local", "channel", "spatial")


def parse_aem(aem: str | Sequence[str] | bool | None) -> tuple[str, ...]:
    """Normalise the ``aem`` parameter to the tuple of enabled branches (``()`` = no AEM).

    Accepts ``"all"`` / ``True`` (all three branches), ``"off"`` / ``"none"`` / ``None`` / ``False`` / ``""``
    (plain ViT), a comma-separated string such as ``"local,spatial"``, or a list of branch names.
    """
    if aem is None or aem is False:
        return ()
    if aem is True:
        return AEM_BRANCHES
    if isinstance(aem, str):
        s = aem.strip().lower()
        if s in ("", "off", "none", "false", "0"):
            return ()
        if s in ("all", "on", "true", "1"):
            return AEM_BRANCHES
        names = [p.strip() for p in s.split(",") if p.strip()]
    elif isinstance(aem, (list, tuple)):
        names = [str(p).strip().lower() for p in aem]
    else:
        raise ConfigError(f"aem={aem!r} must be 'all', 'off' or a comma list of {', '.join(AEM_BRANCHES)}")
    bad = [n for n in names if n not in AEM_BRANCHES]
    if bad or not names:
        raise ConfigError(f"aem={aem!r}: unknown branch(es) {bad or names}; expected 'all', 'off' or a comma list of "
                          f"{', '.join(AEM_BRANCHES)}")
    return tuple(b for b in AEM_BRANCHES if b in names)  # canonical order, duplicates removed


class AEM(nn.Module):
    """Attention-enhanced module on a ``(n, D, H, W)`` feature map; identity at initialisation.

    ``keep_maps = True`` makes the module keep the attention maps of its last forward pass
    (detached): ``last_channel`` ``(n, D)``, ``last_spatial`` ``(n, H, W)`` and ``last_change``
    ``(n, H, W)`` = ``||X' - X||`` per position (how much AEM changed each token).
    """

    # Marker read by Backbone.added_parameters(): these parameters start from random/zero init, are not
    # part of a pretrained ViT checkpoint, and get the new-module learning rate.
    added_module = True

    def __init__(self, dim: int, branches: Sequence[str] = AEM_BRANCHES, reduction: int = 16,
                 spatial_kernel: int = 7):
        super().__init__()
        branches = parse_aem(list(branches))
        if not branches:
            raise ConfigError("AEM needs at least one branch; use aem='off' for the plain ViT")
        if not isinstance(reduction, int) or reduction < 1:
            raise ConfigError(f"aem_reduction={reduction!r} must be an integer >= 1")
        if not isinstance(spatial_kernel, int) or spatial_kernel < 1 or spatial_kernel % 2 == 0:
            raise ConfigError(f"aem_spatial_kernel={spatial_kernel!r} must be an odd integer >= 1")
        self.dim = int(dim)
        self.branches = branches
        self.reduction = reduction
        if "local" in branches:
            self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
            self.bn = nn.BatchNorm2d(dim)
            self.pw = nn.Conv2d(dim, dim, 1, bias=False)
            nn.init.zeros_(self.pw.weight)  # X1 = X at initialisation
        if "channel" in branches:
            hidden = max(1, dim // reduction)
            self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                     nn.Conv2d(hidden, dim, 1, bias=False))
        if "spatial" in branches:
            self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)
        self.gamma = nn.Parameter(torch.zeros(dim))  # gated residual: X' = X at initialisation
        self.keep_maps = False
        self.last_channel: torch.Tensor | None = None
        self.last_spatial: torch.Tensor | None = None
        self.last_change: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"dim={self.dim}, branches={','.join(self.branches)}, reduction={self.reduction}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ValueError(f"AEM expects a (n, {self.dim}, H, W) feature map, got {tuple(x.shape)}")
        y = x
        a_c = a_s = None
        if "local" in self.branches:
            y = y + self.pw(F.gelu(self.bn(self.dw(y))))
        if "channel" in self.branches:
            a_c = torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(y, 1)) + self.mlp(F.adaptive_max_pool2d(y, 1)))
            y = y * a_c
        if "spatial" in self.branches:
            desc = torch.cat([y.mean(dim=1, keepdim=True), y.amax(dim=1, keepdim=True)], dim=1)
            a_s = torch.sigmoid(self.spatial(desc))
            y = y * a_s
        out = x + self.gamma.view(1, -1, 1, 1).to(x.dtype) * (y - x)
        if self.keep_maps:
            self.last_channel = None if a_c is None else a_c.detach().flatten(1).float()
            self.last_spatial = None if a_s is None else a_s.detach()[:, 0].float()
            self.last_change = (out - x).detach().float().norm(dim=1)
        return out

    def extra_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _patch_embed_cls():
    from timm.layers import PatchEmbed

    return PatchEmbed


class AEPatchEmbed(nn.Module):
    """timm ``PatchEmbed`` with AEM between the patch convolution and the flattening to tokens.

    Built from an existing ``PatchEmbed``: it shares ``proj`` and ``norm`` (same parameter names,
    so plain-ViT checkpoints load) and keeps its geometry attributes (``grid_size``, ``num_patches``,
    ``patch_size``...), which timm's ``VisionTransformer`` reads.
    """

    def __init__(self, patch_embed: nn.Module, aem: AEM):
        super().__init__()
        if not isinstance(patch_embed, _patch_embed_cls()):
            raise ConfigError(f"aem needs a timm PatchEmbed (a standard ViT); got {type(patch_embed).__name__}")
        self.proj = patch_embed.proj
        self.norm = patch_embed.norm
        for name in ("patch_size", "img_size", "grid_size", "num_patches", "flatten", "output_fmt",
                     "strict_img_size", "dynamic_img_pad"):
            setattr(self, name, getattr(patch_embed, name))
        self.aem = aem

    def feat_ratio(self, as_scalar=True):
        return max(self.patch_size) if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size):
        return _patch_embed_cls().dynamic_feat_size(self, img_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from timm.layers.format import Format, nchw_to

        _, _, h, w = x.shape
        if self.img_size is not None and self.strict_img_size and (h, w) != tuple(self.img_size):
            raise ValueError(f"input size {(h, w)} does not match the model's {tuple(self.img_size)}")
        if self.dynamic_img_pad:
            ph, pw = self.patch_size
            x = F.pad(x, (0, (pw - w % pw) % pw, 0, (ph - h % ph) % ph))
        x = self.aem(self.proj(x))  # (n, D, H/P, W/P): the feature map AEM acts on
        if self.flatten:
            x = x.flatten(2).transpose(1, 2)  # NCHW -> NLC tokens
        elif self.output_fmt != Format.NCHW:
            x = nchw_to(x, self.output_fmt)
        return self.norm(x)


def attach_aem(vit: nn.Module, aem: str | Sequence[str] | bool = "all", reduction: int = 16,
               spatial_kernel: int = 7) -> AEM | None:
    """Insert AEM into a timm VisionTransformer in place; returns the AEM (``None`` when ``aem`` is off)."""
    branches = parse_aem(aem)
    if not branches:
        return None
    pe = getattr(vit, "patch_embed", None)
    if pe is None or not hasattr(vit, "blocks"):
        raise ConfigError(f"aem={aem!r} needs a ViT backbone with a patch embedding; got {type(vit).__name__}")
    if isinstance(pe, AEPatchEmbed):
        raise ConfigError("this ViT already has an AEM")
    # AEM's random init draws from a forked RNG: the global random stream (and so the init of the head
    # and loss modules built next) is the same as for the plain ViT, so with one seed AE-ViT and ViT
    # start from exactly the same function.
    with torch.random.fork_rng(devices=[]):
        module = AEM(pe.proj.out_channels, branches, reduction=reduction, spatial_kernel=spatial_kernel)
    module.to(device=pe.proj.weight.device, dtype=pe.proj.weight.dtype)
    vit.patch_embed = AEPatchEmbed(pe, module)
    return module


def find_aem(model: nn.Module) -> AEM | None:
    """The (first) AEM inside ``model``, or ``None`` for a plain model."""
    return next((m for m in model.modules() if isinstance(m, AEM)), None)


@contextmanager
def record_aem_maps(model: nn.Module) -> Iterator[AEM]:
    """``with record_aem_maps(model) as aem: model(x)`` -> ``aem.last_spatial`` etc. hold the maps."""
    aem = find_aem(model)
    if aem is None:
        raise ConfigError("the model has no AEM (built with aem='off'?)")
    old = aem.keep_maps
    aem.keep_maps = True
    try:
        yield aem
    finally:
        aem.keep_maps = old


@torch.no_grad()
def aem_maps(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """AEM's maps for float images in [0, 1] (eval mode, restored afterwards): a dict of CPU tensors
    ``spatial`` (n, H, W) or None, ``channel`` (n, D) or None, ``change`` (n, H, W), ``gamma`` (D,)."""
    was_training = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        with record_aem_maps(model) as aem:
            model(images.to(dev))
        out = {"spatial": aem.last_spatial, "channel": aem.last_channel, "change": aem.last_change,
               "gamma": aem.gamma.detach().float()}
        return {k: None if v is None else v.cpu() for k, v in out.items()}
    finally:
        model.train(was_training)


__all__ = ["AEM", "AEPatchEmbed", "AEM_BRANCHES", "attach_aem", "parse_aem", "find_aem", "record_aem_maps",
           "aem_maps"]
