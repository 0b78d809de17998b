"""The model every method shares: normalise -> backbone -> neck -> hash layers -> :class:`HashOutput`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from .backbones import Backbone


@dataclass
class HashOutput:
    """What a model returns.

    * ``u``: ``(n, b)`` continuous outputs; the binary code is ``sign(u)`` with ``sign(0) = +1``.
    * ``heads``: the per-head pieces whose concatenation is ``u`` (one piece for ordinary models;
      global + local heads for TransHash).
    * ``features``: the pooled feature the first hash layer saw (for analysis), when available.
    """

    u: torch.Tensor
    heads: tuple[torch.Tensor, ...] = ()
    features: torch.Tensor | None = None

    def __post_init__(self):
        if not self.heads:
            self.heads = (self.u,)


def sign_codes(u: torch.Tensor) -> torch.Tensor:
    """Binarise with sign(0) = +1, as int8 in {-1, +1}."""
    return torch.where(u >= 0, 1, -1).to(torch.int8)


# Old state-dict layout (one class per head, before backbone -> neck -> hash layers): prefix -> new prefix.
# Checkpoints written before the composition still load (HashModel's load_state_dict pre-hook).
OLD_KEY_PREFIXES = (
    ("head.fc.", "hash_layers.0.fc."),  # cls_linear
    ("head.net.", "hash_layers.0.net."),  # vts_mlp
    ("head.block.", "neck.block."),  # hcl: extra block, projection, BN
    ("head.proj.", "hash_layers.0.proj."),
    ("head.bn.", "hash_layers.0.bn."),
    ("head.global_fc.", "hash_layers.0.fc."),  # mgvt: hash layers and branches
    ("global_block.", "neck.global_block."),
    ("global_norm.", "neck.global_norm."),
    ("local_block.", "neck.local_block."),
    ("local_norm.", "neck.local_norm."),
)


def upgrade_state_dict(state_dict: dict, prefix: str = "") -> dict:
    """Rename, in place, the keys of a state dict written before the composition (heads ``cls_linear``,
    ``vts_mlp``, ``hcl``, ``mgvt`` as single classes) to ``backbone / neck / hash_layers`` keys; keys under
    ``prefix`` only. ``head.local_fc.i.`` becomes ``hash_layers.{i+1}.fc.``. Returns ``state_dict``."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        new = None
        if rest.startswith("head.local_fc."):
            i, tail = rest[len("head.local_fc."):].split(".", 1)
            new = f"hash_layers.{int(i) + 1}.fc.{tail}"
        else:
            new = next((n + rest[len(o):] for o, n in OLD_KEY_PREFIXES if rest.startswith(o)), None)
        if new is not None and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(key)
    return state_dict


class HashModel(nn.Module):
    """``backbone -> neck -> hash layers``: images float in [0, 1] ``(n, 3, img_size, img_size)`` ->
    :class:`HashOutput` with ``u`` ``(n, bits)`` float.

    One forward path for every method: normalise -> ``backbone(x)`` (tokens ``(n, T, D)`` after the final
    norm, or pooled ``(n, D)`` for a CNN) -> ``neck(feats)`` (a tuple of features) -> ``hash_layers[i]``
    on feature ``i`` -> ``u = cat(heads)``. ``backbone``: :class:`~hashlib_vit.models.backbones.Backbone`;
    ``neck``: a :class:`~hashlib_vit.models.necks.Neck`; ``hash_layers``: one module per neck feature,
    their output widths summing to ``bits``.

    One rule for which parameters are new: a parameter is *backbone* iff it comes from the backbone
    network's weights, i.e. the backbone's parameters minus modules added to it (AEM, ``added_module``)
    plus neck modules copied from it (MGVT's branches, ``from_backbone``); everything else (neck extra
    blocks, hash layers, AEM) is new and gets the head learning rate.
    """

    frozen_blocks: int = 0  # blocks frozen by models.partial.freeze_prefix (0: none)

    def __init__(self, backbone: Backbone, neck: nn.Module, hash_layers: Sequence[nn.Module], bits: int):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.hash_layers = nn.ModuleList(hash_layers)
        self.bits = int(bits)
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)
        self._register_load_state_dict_pre_hook(_upgrade_hook)

    @property
    def img_size(self) -> int:
        return self.backbone.img_size

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> HashOutput:
        return self.output_from_features(self.backbone(self.normalize(x)))

    def output_from_features(self, feats: torch.Tensor) -> HashOutput:
        """Backbone output (tokens ``(n, T, D)`` after the final norm, or pooled ``(n, D)``) -> neck ->
        hash layers -> :class:`HashOutput` (``heads``: one ``(n, bits_i)`` per hash layer)."""
        outs = self.neck(feats)
        heads = tuple(layer(f) for layer, f in zip(self.hash_layers, outs))
        u = torch.cat(heads, dim=1) if len(heads) > 1 else heads[0]
        return HashOutput(u=u, heads=heads, features=self.neck.analysis_feature(outs))

    def frozen_prefix(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """Images ``(b, 3, H, W)`` float in [0, 1] -> tokens ``(b, T, D)`` after the first ``n`` blocks
        (normalisation, embeddings, blocks 0..n-1). ConfigError for a CNN backbone. See models.partial."""
        from .partial import prefix_tokens

        return prefix_tokens(self.backbone, self.normalize(x), n)

    def forward_from_tokens(self, z: torch.Tensor, start: int) -> HashOutput:
        """Tokens after block ``start`` -> the remaining blocks, final norm, neck and hash layers:
        ``forward_from_tokens(frozen_prefix(x, n), n) == forward(x)``."""
        from .partial import finish_tokens

        return self.output_from_features(finish_tokens(self.backbone, z, start))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_blocks:  # the frozen prefix never trains: no dropout / drop-path there
            from .partial import apply_frozen_modes

            apply_frozen_modes(self, mode)
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Binary codes (int8 ±1) of a batch, in eval mode semantics (caller sets eval())."""
        return sign_codes(self(x).u.float())

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters from the backbone network's weights (the class docstring's rule), in module order."""
        added = {id(p) for p in self.backbone.added_parameters()}
        copied = {id(p) for m in self.neck.modules() if getattr(m, "from_backbone", False) for p in m.parameters()}
        bb = {id(p) for p in self.backbone.parameters() if id(p) not in added} | copied
        return (p for p in self.parameters() if id(p) in bb)

    def new_parameters(self) -> Iterator[nn.Parameter]:
        """Every other parameter: neck extra blocks, hash layers, modules added to the backbone (AEM)."""
        backbone_ids = {id(p) for p in self.backbone_parameters()}
        return (p for p in self.parameters() if id(p) not in backbone_ids)


def _upgrade_hook(state_dict, prefix, *args) -> None:
    upgrade_state_dict(state_dict, prefix)
