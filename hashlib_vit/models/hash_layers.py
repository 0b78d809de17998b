"""Hash layers: one per neck feature, feature ``(n, in_dim)`` (or ``(n, T, D)``, flattened) -> ``(n, bits_i)``.

The code is ``sign(u)`` with ``u = cat(hash_layer_i(feature_i))`` (:class:`~hashlib_vit.models.HashModel`).
Registry :data:`HASH_LAYERS` (name -> class); every class has an ``Options`` dataclass (the
``model_params`` keys it accepts) and is built as ``cls(in_dim, bits, options)``. All are new modules
(random init, the head learning rate).

* ``linear``: ``u = W f + c`` (METHODS §1.3 ``cls_linear``; TransHash's affine hash layers, §2.2);
* ``bn_linear``: ``u = BN(W f)``, bias-free ``W ~ N(0, init_std^2)`` + ``BatchNorm1d(bits)`` with affine
  parameters (OrthoHash / SL-ViT's hash coding layer projection, METHODS §3.3);
* ``mlp``: VTS's head (METHODS §1.3 ``vts_mlp``): Dropout(0.5) -> Linear(in, hidden) -> ReLU -> Linear(hidden, bits).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..registry import Registry
from .options import NoOptions

HASH_LAYERS: Registry = Registry("hash_layer")


@HASH_LAYERS.register("linear")
class LinearHash(nn.Module):
    """Affine hash layer ``u = W f + c``: ``(n, in_dim)`` float -> ``(n, bits)`` (METHODS §1.3, §2.2)."""

    Options = NoOptions

    def __init__(self, in_dim: int, bits: int, options: NoOptions = NoOptions()):
        super().__init__()
        self.fc = nn.Linear(in_dim, bits)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f.flatten(1))


@dataclass(frozen=True)
class BNLinearOptions:
    """``init_std``: standard deviation of the bias-free projection's normal init (OrthoHash: 0.01)."""

    init_std: float = 0.01

    def __post_init__(self):
        if not self.init_std > 0:
            raise ConfigError(f"init_std={self.init_std!r} must be > 0")


@HASH_LAYERS.register("bn_linear")
class BNLinearHash(nn.Module):
    """``u = BN(W f)``: bias-free linear (``W ~ N(0, init_std^2)``) + ``BatchNorm1d(bits)`` (METHODS §3.3)."""

    Options = BNLinearOptions

    def __init__(self, in_dim: int, bits: int, options: BNLinearOptions = BNLinearOptions()):
        super().__init__()
        self.proj = nn.Linear(in_dim, bits, bias=False)
        nn.init.normal_(self.proj.weight, mean=0.0, std=options.init_std)
        self.bn = nn.BatchNorm1d(bits)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.bn(self.proj(f.flatten(1)))


@dataclass(frozen=True)
class MLPOptions:
    """``hidden``: width of VTS's hidden layer (1024 in the paper)."""

    hidden: int = 1024

    def __post_init__(self):
        if self.hidden < 1:
            raise ConfigError(f"hidden={self.hidden!r} must be an integer >= 1")


@HASH_LAYERS.register("mlp")
class MLPHash(nn.Module):
    """VTS head: flatten -> Dropout(0.5) -> Linear(in_dim, hidden) -> ReLU -> Linear(hidden, bits) (METHODS §1.3).

    Warns when it has more than 20 M parameters (all tokens of a large ViT)."""

    Options = MLPOptions

    def __init__(self, in_dim: int, bits: int, options: MLPOptions = MLPOptions()):
        super().__init__()
        hidden = options.hidden
        n_params = in_dim * hidden + hidden * bits
        if n_params > 20_000_000:
            warnings.warn(f"head='vts_mlp' has {n_params / 1e6:.0f} M parameters ({in_dim} inputs -> {hidden}); "
                          "'cls_linear' is the cheap default", stacklevel=2)
        self.net = nn.Sequential(nn.Flatten(1), nn.Dropout(0.5), nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, bits))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


__all__ = ["HASH_LAYERS", "LinearHash", "BNLinearHash", "MLPHash", "BNLinearOptions", "MLPOptions"]
