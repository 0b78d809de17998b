"""AEM — the attention-enhanced module of AE-ViT (METHODS.md §4.2; every design point here is [I]).

Only the abstract of the thesis (C. Huang, 2024) is available: "an attention module before the
encoder acting on the input feature map". Our documented reading places AEM on the patch-embedding
**feature map** ``X`` (``n x D x H/P x W/P``, the output of the stride-P patch convolution), before
CLS concatenation, position embedding and the encoder:

1. local detail   ``X1 = X + PW(GELU(BN(DW3x3(X))))``           (PW: the convolution's default init)
2. channel attn.  ``a_c = sigmoid(MLP(GAP(X1)) + MLP(GMP(X1)))``  shared MLP D -> D/r -> D, r = 16
                  ``X2 = X1 * a_c``
3. spatial attn.  ``a_s = sigmoid(Conv7x7([mean_c(X2); max_c(X2)]))``,  ``X3 = X2 * a_s``
4. gated residual ``X' = X + gamma * (X3 - X)``, ``gamma in R^D`` initialised to 0

With ``gamma = 0`` AE-ViT computes exactly the plain ViT at step 0, so every pretrained weight is reused
unchanged. Only the gate starts at zero: METHODS.md §4.2 also zero-initialises the point-wise conv PW, but
then ``aem="local"`` alone is a saddle that never leaves — ``X3 - X = PW(...) = 0`` gives gamma no gradient
and gamma = 0 gives PW none — so that ablation trained exactly the plain ViT (found by lesson 03's
Exercise 3.1). With PW at its default init every variant's gate gets a gradient on the first step. Any subset of the three branches can be switched
off (ablations): a disabled branch is the identity.

:class:`AEPatchEmbed` puts AEM into a timm ``VisionTransformer`` through timm's own extension point,
the ``embed_layer`` argument (``create_backbone(..., aem=AEMOptions(aem="all"))`` passes it): a
``PatchEmbed`` subclass that reuses the parent's forward for the patch map, so the state-dict keys of the
plain ViT are unchanged (a plain checkpoint loads; only ``patch_embed.aem.*`` is new).
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass
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


class _KeepInit(nn.Conv2d):
    """A convolution of AEM that keeps its own initialisation: timm's ViT ``init_weights`` calls
    ``init_weights()`` on modules that have one instead of ``reset_parameters()``, which would redraw the
    weights from the global random stream (AEM draws its init from a forked stream, so one seed gives the
    plain ViT's head and loss the same init with and without AEM)."""

    def init_weights(self) -> None:
        pass


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
            self.dw = _KeepInit(dim, dim, 3, padding=1, groups=dim, bias=False)
            self.bn = nn.BatchNorm2d(dim)
            self.pw = _KeepInit(dim, dim, 1, bias=False)  # default init: the gate alone makes X' = X at step 0
        if "channel" in branches:
            hidden = max(1, dim // reduction)
            self.mlp = nn.Sequential(_KeepInit(dim, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                     _KeepInit(hidden, dim, 1, bias=False))
        if "spatial" in branches:
            self.spatial = _KeepInit(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)
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


@dataclass(frozen=True)
class AEMOptions:
    """The backbone's patch-embedding modifier (``model_params`` keys ``aem``, ``aem_reduction``,
    ``aem_spatial_kernel``). ``aem``: ``"off"`` (plain ViT), ``"all"`` or a comma list / list of
    ``local, channel, spatial`` (see :func:`parse_aem`); ``aem_reduction``: the channel MLP's reduction r;
    ``aem_spatial_kernel``: the odd kernel size of the spatial attention. ConfigError for bad values."""

    aem: str | bool | list | tuple | None = "off"
    aem_reduction: int = 16
    aem_spatial_kernel: int = 7

    def __post_init__(self):
        parse_aem(self.aem)
        if self.aem_reduction < 1:
            raise ConfigError(f"aem_reduction={self.aem_reduction!r} must be an integer >= 1")
        if self.aem_spatial_kernel < 1 or self.aem_spatial_kernel % 2 == 0:
            raise ConfigError(f"aem_spatial_kernel={self.aem_spatial_kernel!r} must be an odd integer >= 1")

    @property
    def branches(self) -> tuple[str, ...]:
        """The enabled branches (``()``: no AEM)."""
        return parse_aem(self.aem)

    def embed_layer(self):
        """The ``embed_layer`` to give timm's ``VisionTransformer`` (``None`` when AEM is off)."""
        if not self.branches:
            return None
        return functools.partial(AEPatchEmbed, aem_options=self)


def _patch_embed_cls():
    from timm.layers import PatchEmbed

    return PatchEmbed


class AEPatchEmbed(_patch_embed_cls()):
    """timm ``PatchEmbed`` with AEM between the patch convolution and the tokens; timm's extension point:
    ``VisionTransformer(embed_layer=functools.partial(AEPatchEmbed, aem_options=...))`` (or the same
    keyword to ``timm.create_model``).

    The parent is built with ``output_fmt="NCHW"``, so its own ``forward`` returns the ``(n, D, H/P, W/P)``
    map; AEM acts on it, and the result is put in the layout the ViT asked for (NLC tokens, or NHWC with
    ``dynamic_img_size``). The parameter names of the plain ``PatchEmbed`` (``proj``, ``norm``) are
    unchanged, so plain-ViT checkpoints load; only ``aem.*`` is new (``added_module``). AEM is drawn from a
    forked random stream: the ViT's own initialisation is the same as without AEM at the same seed.
    ConfigError for a patch-embedding norm (``embed_norm_layer``), which would see the NCHW map.
    """

    def __init__(self, *args, aem_options: AEMOptions, output_fmt: str | None = None, flatten: bool = True,
                 norm_layer=None, **kwargs):
        if norm_layer is not None:
            raise ConfigError("aem needs a ViT without a patch-embedding norm (embed_norm_layer); use aem='off'")
        super().__init__(*args, output_fmt="NCHW", **kwargs)
        from timm.layers.format import Format

        self.token_fmt = Format(output_fmt) if output_fmt is not None else None
        self.flatten_tokens = output_fmt is None and flatten
        device, dtype = self.proj.weight.device, self.proj.weight.dtype
        with torch.random.fork_rng(devices=[]):
            aem = AEM(self.proj.out_channels, aem_options.branches, reduction=aem_options.aem_reduction,
                      spatial_kernel=aem_options.aem_spatial_kernel)
        self.aem = aem.to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from timm.layers.format import nchw_to

        x = self.aem(super().forward(x))  # (n, D, H/P, W/P): the feature map AEM acts on
        if self.flatten_tokens:
            return x.flatten(2).transpose(1, 2)  # NCHW -> NLC tokens
        return x if self.token_fmt is None else nchw_to(x, self.token_fmt)


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


__all__ = ["AEM", "AEMOptions", "AEPatchEmbed", "AEM_BRANCHES", "parse_aem", "find_aem", "record_aem_maps",
           "aem_maps"]
