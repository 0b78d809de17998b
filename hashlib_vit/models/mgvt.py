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
* **hash layers** (affine, no activation): ``b/2`` bits from ``f_g`` and ``b/(2G)`` bits from every
  ``f_l^g``; ``u = [h_g; h_l^1; ..; h_l^G]`` and ``HashOutput.heads = (h_g, h_l^1, .., h_l^G)``.

Both branches start as copies of the last block and final norm **after** the backbone weights are
loaded (so pretrained weights carry over to both) [I, TransReID practice];
:meth:`MGVT.load_vit_state_dict` does the same mapping for a ViT state dict loaded later. The trunk and
both branch copies count as backbone parameters (backbone learning rate); the hash layers are new.

Options: ``groups`` (G, paper default 2), ``local_stream=False`` or ``groups=0`` (ablation ``w/o P``:
the global head emits all b bits), ``local_rearrange=True`` (TransReID shift by ``shift`` tokens + patch shuffle over
``shuffle_groups`` before grouping; default off, the ICMR text describes a plain split) [I],
``min_local_bits`` (4: the paper attributes its non-converging settings to local heads under 4 bits).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..errors import ConfigError
from .backbones import Backbone
from .hashmodel import HashModel, HashOutput


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


class MGVTHashLayers(nn.Module):
    """The new (randomly initialised) modules of MGVT: one affine hash layer per feature."""

    def __init__(self, dim: int, global_bits: int, local_bits: int, groups: int):
        super().__init__()
        self.global_fc = nn.Linear(dim, global_bits)
        self.local_fc = nn.ModuleList(nn.Linear(dim, local_bits) for _ in range(groups))


class MGVT(HashModel):
    """TransHash's dual-stream model (see the module docstring). ``forward(x) -> HashOutput``."""

    def __init__(self, backbone: Backbone, bits: int, groups: int = 2, *, local_stream: bool = True,
                 local_rearrange: bool = False, shift: int = 5, shuffle_groups: int = 2, min_local_bits: int = 4):
        if not backbone.is_vit or not hasattr(backbone.model, "blocks"):
            raise ConfigError(f"head='mgvt' needs a ViT backbone with transformer blocks, got {backbone.name!r} "
                              f"({backbone.kind})")
        vit = backbone.model
        if getattr(vit, "cls_token", None) is None:
            raise ConfigError(f"head='mgvt' needs a ViT with a CLS token (its features are CLS outputs); "
                              f"backbone {backbone.name!r} has none")
        depth = len(vit.blocks)
        if groups == 0 and not isinstance(groups, bool):  # G = 0: no local groups, i.e. the w/o P ablation
            local_stream = False
        if depth < 1:
            raise ConfigError(f"backbone {backbone.name!r} has no transformer block to duplicate")
        if local_stream:
            local_bits = check_bits_groups(bits, groups, min_local_bits)
            global_bits = bits // 2
        else:
            local_bits, global_bits = 0, bits
        n_patches = vit.patch_embed.num_patches
        if local_stream and groups > n_patches:
            raise ConfigError(f"groups={groups} exceeds the {n_patches} patch tokens of backbone {backbone.name!r}")
        last, final_norm = vit.blocks[-1], vit.norm
        # The trunk keeps blocks[:-1]; the unused last block and final norm leave the timm model so that
        # every parameter of the model is trained (and none is counted twice).
        vit.blocks = vit.blocks[:-1]
        vit.norm = nn.Identity()
        super().__init__(backbone, MGVTHashLayers(backbone.feature_dim, global_bits, local_bits,
                                                  groups if local_stream else 0), bits)
        self.depth = depth
        self.groups = int(groups) if local_stream else 0
        self.local_stream = bool(local_stream)
        self.local_rearrange = bool(local_rearrange)
        self.global_bits, self.local_bits = global_bits, local_bits
        self.global_block = copy.deepcopy(last)
        self.global_norm = copy.deepcopy(final_norm)
        if local_stream:
            self.local_block = copy.deepcopy(last)
            self.local_norm = copy.deepcopy(final_norm)
            perm = rearrange_permutation(n_patches, shift, shuffle_groups) if local_rearrange else torch.arange(0)
            self.register_buffer("token_perm", perm, persistent=False)

    # ------------------------------------------------------------------ forward
    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> trunk tokens ``Z`` (n, 1+N, D) after the first L-1 blocks."""
        vit = self.backbone.model
        z = vit.patch_embed(x)
        z = vit._pos_embed(z)
        z = vit.patch_drop(z)
        z = vit.norm_pre(z)
        return vit.blocks(z)

    def local_features(self, z: torch.Tensor) -> list[torch.Tensor]:
        p = self.backbone.num_prefix_tokens
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

    def forward(self, x: torch.Tensor) -> HashOutput:
        return self.output_from_features(self.trunk(self.normalize(x)))

    def output_from_features(self, z: torch.Tensor) -> HashOutput:
        """Trunk tokens ``Z`` (n, 1+N, D) -> global and local branches and hash layers. With the trunk's
        final norm an identity, ``forward_from_tokens(frozen_prefix(x, n), n)`` (n <= L-1) equals ``forward(x)``."""
        f_g = self.global_norm(self.global_block(z))[:, 0]
        heads = [self.head.global_fc(f_g)]
        if self.local_stream:
            heads += [fc(f) for fc, f in zip(self.head.local_fc, self.local_features(z))]
        return HashOutput(u=torch.cat(heads, dim=1) if len(heads) > 1 else heads[0], heads=tuple(heads),
                          features=f_g)

    # ------------------------------------------------------------------ parameters and weights
    def branch_modules(self) -> list[nn.Module]:
        mods = [self.global_block, self.global_norm]
        if self.local_stream:
            mods += [self.local_block, self.local_norm]
        return mods

    def backbone_parameters(self):
        """Trunk (embeddings + first L-1 blocks) and both branch copies: they start from the ViT's weights.
        Modules added to the backbone (AEM) are new, as in :meth:`HashModel.backbone_parameters`: they get
        the head's learning rate."""
        added = {id(p) for p in self.backbone.added_parameters()}
        yield from (p for p in self.backbone.parameters() if id(p) not in added)
        for m in self.branch_modules():
            yield from m.parameters()

    def load_vit_state_dict(self, state_dict: dict, drop=("head.", "fc_norm.")) -> None:
        """Load a timm ViT state dict: blocks 0..L-2 and embeddings into the trunk, the last block into
        **both** branch blocks and the final norm into **both** branch norms. Any mismatch is an error."""
        last = f"blocks.{self.depth - 1}."
        sd = {k: v for k, v in state_dict.items() if not k.startswith(tuple(drop))}
        trunk = {k: v for k, v in sd.items() if not k.startswith((last, "norm."))}
        blk = {k[len(last):]: v for k, v in sd.items() if k.startswith(last)}
        norm = {k[len("norm."):]: v for k, v in sd.items() if k.startswith("norm.")}
        problems = []
        missing, unexpected = self.backbone.model.load_state_dict(trunk, strict=False)
        problems += [f"missing {list(missing)[:5]}"] if missing else []
        problems += [f"unexpected {list(unexpected)[:5]}"] if unexpected else []
        for target, part, label in ((self.global_block, blk, last), (self.global_norm, norm, "norm.")) + (
                ((self.local_block, blk, last), (self.local_norm, norm, "norm.")) if self.local_stream else ()):
            try:
                target.load_state_dict(part, strict=True)
            except RuntimeError as err:
                problems.append(f"{label}*: {str(err).splitlines()[0]}")
        if problems:
            raise ConfigError(f"ViT state dict does not match MGVT on backbone {self.backbone.name!r} "
                              f"(depth {self.depth}): " + "; ".join(problems))


def build_mgvt(backbone: Backbone, bits: int, groups: int = 2, local_stream: bool = True,
               local_rearrange: bool = False, shift: int = 5, shuffle_groups: int = 2,
               min_local_bits: int = 4) -> MGVT:
    """MODELS builder for ``head="mgvt"`` (model_params: groups, local_stream, local_rearrange, shift,
    shuffle_groups, min_local_bits)."""
    return MGVT(backbone, bits, groups, local_stream=local_stream, local_rearrange=local_rearrange, shift=shift,
                shuffle_groups=shuffle_groups, min_local_bits=min_local_bits)


def _validate_mgvt(bits: int, groups: int = 2, local_stream: bool = True, local_rearrange: bool = False,
                   shift: int = 5, shuffle_groups: int = 2, min_local_bits: int = 4, **_unknown) -> None:
    """Early check of ``model_params`` (called by ``RunConfig.validate`` before any data is loaded)."""
    if local_stream and not (groups == 0 and not isinstance(groups, bool)):
        check_bits_groups(bits, groups, min_local_bits)


build_mgvt.validate = _validate_mgvt

__all__ = ["MGVT", "MGVTHashLayers", "build_mgvt", "check_bits_groups", "rearrange_permutation"]
