"""MGVT — the Multi-Granular Vision Transformer of TransHash (Chen et al., ICMR 2022), METHODS.md §2.2.

Built on a timm ``VisionTransformer`` (any timm ViT name or a small preset), reusing its patch
embedding, position embedding, ``patch_drop``, ``norm_pre`` and blocks:

* **trunk** = the first L-1 blocks (shared, "siamese": one forward pass over the batch);
* **global branch** = a copy of the last block + a copy of the final norm, run on the whole sequence;
  its CLS output is the global feature ``f_g``;
* **local branch** = another copy of the last block + final norm (one block shared by all groups):
  the patch tokens, kept in raster order, are split into ``G`` contiguous groups with
  ``torch.tensor_split`` semantics (N=49, G=2 -> 25 + 24 tokens) [I], each group is prefixed with the
  CLS state (and any other prefix tokens) and run through the local block; the group's CLS output is
  the local feature ``f_l^g``. Groups of equal length are stacked along the batch axis (one call);
  unequal ones are processed in a loop;
* **hash layers** (affine, no activation; the ``linear`` hash layer, one per feature): ``b/2`` bits from
  ``f_g`` and ``b/(2G)`` bits from every ``f_l^g``; ``u = [h_g; h_l^1; ..; h_l^G]`` and
  ``HashOutput.heads = (h_g, h_l^1, .., h_l^G)``.

In the model's composition the trunk is the backbone itself (:class:`MGVTNeck` takes the last block and
the final norm out of the timm model, so the backbone's own ``forward_features`` computes the trunk
tokens ``Z``), the branches are the ``mgvt`` neck, and ``head="mgvt"`` is that neck + ``linear`` hash layers.

Both branches start as copies of the last block and final norm **after** the backbone weights are
loaded (so pretrained weights carry over to both) [I, TransReID practice];
:func:`load_vit_state_dict` does the same mapping for a ViT state dict loaded later. The trunk and
both branch copies count as backbone parameters (``from_backbone = True``: backbone learning rate); the
hash layers are new.

Options: ``groups`` (G, paper default 2), ``local_stream=False`` or ``groups=0`` (ablation ``w/o P``:
the global head emits all b bits), ``local_rearrange=True`` (TransReID shift by ``shift`` tokens + patch shuffle over
``shuffle_groups`` before grouping; default off, the ICMR text describes a plain split) [I],
``min_local_bits`` (4: the paper attributes its non-converging settings to local heads under 4 bits).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from dataclasses import dataclass

from ..errors import ConfigError
from .backbones import Backbone
from .necks import NECKS, Neck, NeckOptions


def check_bits_groups(bits: int, groups: int, min_local_bits: int = 4) -> int:
    """Bits per local head ``b/(2G)``; a :class:`ConfigError` naming bits and groups when not allowed."""
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ConfigError(f"groups={groups!r} must be an integer >= 1 (number of local token groups G)")
    if bits % (2 * groups):
        raise ConfigError(f"bits={bits} with groups={groups}: MGVT needs bits divisible by 2*groups={2 * groups} "
                          f"(b/2 global bits + b/(2G) bits per local head); e.g. bits="
                          f"{2 * groups * max(min_local_bits, -(-bits // (2 * groups)))}")
    per_local = bits // (2 * groups)
    if per_local < min_local_bits:
        raise ConfigError(f"bits={bits} with groups={groups} gives {per_local} bits per local head; MGVT needs "
                          f">= {min_local_bits} (the paper's runs with fewer did not converge). Use bits >= "
                          f"{2 * groups * min_local_bits} or fewer groups")
    return per_local


def rearrange_permutation(n_tokens: int, shift: int, shuffle_groups: int) -> torch.Tensor:
    """TransReID-style token order: roll by ``shift`` then interleave ``shuffle_groups`` contiguous chunks
    (chunk sizes as ``tensor_split``). Returns the index tensor ``perm`` with ``new = old[:, perm]``."""
    rolled = torch.roll(torch.arange(n_tokens), -shift)
    chunks = torch.tensor_split(rolled, shuffle_groups)
    order = [int(c[i]) for i in range(max(len(c) for c in chunks)) for c in chunks if i < len(c)]
    return torch.tensor(order, dtype=torch.long)


@dataclass(frozen=True)
class MGVTOptions(NeckOptions):
    """``groups`` (G; 0 = the ``w/o P`` ablation), ``local_stream`` (False = ``w/o P``), ``local_rearrange``
    with ``shift`` and ``shuffle_groups`` (TransReID token shuffle), ``min_local_bits`` (fewest bits a local
    head may have). ConfigError for a negative G; the bits are checked by :meth:`split_bits`."""

    groups: int = 2
    local_stream: bool = True
    local_rearrange: bool = False
    shift: int = 5
    shuffle_groups: int = 2
    min_local_bits: int = 4

    def __post_init__(self):
        if self.groups < 0:
            raise ConfigError(f"groups={self.groups!r} must be an integer >= 1 (number of local token groups G)")
        if self.shuffle_groups < 1:
            raise ConfigError(f"shuffle_groups={self.shuffle_groups!r} must be an integer >= 1")

    @property
    def has_local(self) -> bool:
        return bool(self.local_stream) and self.groups != 0

    def split_bits(self, bits: int) -> tuple[int, ...]:
        """``(b/2, b/(2G), .., b/(2G))`` with the local stream, ``(b,)`` without (ConfigError naming bits and groups)."""
        if not self.has_local:
            return (int(bits),)
        per_local = check_bits_groups(bits, self.groups, self.min_local_bits)
        return (bits // 2,) + (per_local,) * self.groups


@NECKS.register("mgvt")
class MGVTNeck(Neck):
    """TransHash's global and local branches on the trunk tokens ``Z`` ``(n, 1+N, D)`` (module docstring):
    ``forward(Z) -> (f_g, f_l^1, .., f_l^G)``, each ``(n, D)``. Building it takes the last block and the
    final norm out of the backbone's timm ViT (the trunk keeps blocks ``0..L-2`` and an identity norm)."""

    Options = MGVTOptions

    def __init__(self, backbone: Backbone, options: MGVTOptions = MGVTOptions()):
        if not backbone.is_vit or not hasattr(backbone.model, "blocks"):
            raise ConfigError(f"head='mgvt' needs a ViT backbone with transformer blocks, got {backbone.name!r} "
                              f"({backbone.kind})")
        vit = backbone.model
        if getattr(vit, "cls_token", None) is None:
            raise ConfigError(f"head='mgvt' needs a ViT with a CLS token (its features are CLS outputs); "
                              f"backbone {backbone.name!r} has none")
        depth = len(vit.blocks)
        if depth < 1:
            raise ConfigError(f"backbone {backbone.name!r} has no transformer block to duplicate")
        n_patches = vit.patch_embed.num_patches
        if options.has_local and options.groups > n_patches:
            raise ConfigError(f"groups={options.groups} exceeds the {n_patches} patch tokens of backbone "
                              f"{backbone.name!r}")
        super().__init__(backbone, options)
        last, final_norm = vit.blocks[-1], vit.norm
        # The trunk keeps blocks[:-1]; the unused last block and final norm leave the timm model so that
        # every parameter of the model is trained (and none is counted twice).
        vit.blocks = vit.blocks[:-1]
        vit.norm = nn.Identity()
        self.depth = depth
        self.num_prefix_tokens = backbone.num_prefix_tokens
        self.local_stream = options.has_local
        self.groups = int(options.groups) if self.local_stream else 0
        self.local_rearrange = bool(options.local_rearrange)
        self.global_block = _from_backbone(copy.deepcopy(last))
        self.global_norm = _from_backbone(copy.deepcopy(final_norm))
        if self.local_stream:
            self.local_block = _from_backbone(copy.deepcopy(last))
            self.local_norm = _from_backbone(copy.deepcopy(final_norm))
            perm = (rearrange_permutation(n_patches, options.shift, options.shuffle_groups) if self.local_rearrange
                    else torch.arange(0))
            self.register_buffer("token_perm", perm, persistent=False)
        self.out_dims = (backbone.feature_dim,) * (1 + self.groups)

    def local_features(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Trunk tokens ``(n, 1+N, D)`` -> the ``G`` local CLS features ``(n, D)``."""
        p = self.num_prefix_tokens
        prefix, patches = z[:, :p], z[:, p:]
        if self.local_rearrange:
            patches = patches[:, self.token_perm]
        parts = torch.tensor_split(patches, self.groups, dim=1)
        n = z.shape[0]
        if len({t.shape[1] for t in parts}) == 1:  # equal lengths: one call, groups stacked on the batch axis
            seq = torch.cat([torch.cat([prefix, t], dim=1) for t in parts], dim=0)
            cls = self.local_norm(self.local_block(seq))[:, 0]
            return list(cls.split(n, dim=0))
        return [self.local_norm(self.local_block(torch.cat([prefix, t], dim=1)))[:, 0] for t in parts]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f_g = self.global_norm(self.global_block(z))[:, 0]
        return (f_g, *self.local_features(z)) if self.local_stream else (f_g,)


def _from_backbone(module: nn.Module) -> nn.Module:
    module.from_backbone = True  # HashModel.backbone_parameters(): starts from the ViT's weights
    return module


def load_vit_state_dict(model: nn.Module, state_dict: dict, drop=("head.", "fc_norm.")) -> None:
    """Load a timm ViT state dict into an MGVT model (``head="mgvt"``): blocks 0..L-2 and embeddings into
    the trunk (the backbone), the last block into **both** branch blocks and the final norm into **both**
    branch norms. Any mismatch is a ConfigError naming the backbone and its depth."""
    neck = model.neck
    if not isinstance(neck, MGVTNeck):
        raise ConfigError(f"load_vit_state_dict needs an MGVT model (head='mgvt'); its neck is {type(neck).__name__}")
    last = f"blocks.{neck.depth - 1}."
    sd = {k: v for k, v in state_dict.items() if not k.startswith(tuple(drop))}
    trunk = {k: v for k, v in sd.items() if not k.startswith((last, "norm."))}
    blk = {k[len(last):]: v for k, v in sd.items() if k.startswith(last)}
    norm = {k[len("norm."):]: v for k, v in sd.items() if k.startswith("norm.")}
    problems = []
    missing, unexpected = model.backbone.model.load_state_dict(trunk, strict=False)
    from .weights import added_state_keys

    missing = [k for k in missing if k not in added_state_keys(model.backbone.model)]
    problems += [f"missing {list(missing)[:5]}"] if missing else []
    problems += [f"unexpected {list(unexpected)[:5]}"] if unexpected else []
    targets = [(neck.global_block, blk, last), (neck.global_norm, norm, "norm.")]
    if neck.local_stream:
        targets += [(neck.local_block, blk, last), (neck.local_norm, norm, "norm.")]
    for target, part, label in targets:
        try:
            target.load_state_dict(part, strict=True)
        except RuntimeError as err:
            problems.append(f"{label}*: {str(err).splitlines()[0]}")
    if problems:
        raise ConfigError(f"ViT state dict does not match MGVT on backbone {model.backbone.name!r} "
                          f"(depth {neck.depth}): " + "; ".join(problems))


__all__ = ["MGVTNeck", "MGVTOptions", "check_bits_groups", "load_vit_state_dict", "rearrange_permutation"]
