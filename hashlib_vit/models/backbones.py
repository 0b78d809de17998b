"""Backbones behind one interface: timm ViTs (incl. small presets for 32-px inputs) and CNNs.

A :class:`Backbone` maps images (already normalised) to either a token sequence ``(n, T, D)`` after
the final norm (``kind == "vit"``; token 0 is CLS) or a pooled feature ``(n, D)`` (``kind == "cnn"``).
Weights: ``weights=None`` (random init: every run on these machines, which have no pretrained
checkpoints), a local file (``.pth/.bin/.safetensors``), or ``"hub"`` (timm / torchvision download,
needs network).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VitPreset:
    """A small timm VisionTransformer configuration (trainable from scratch on a CPU)."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    description: str = ""
    kwargs: dict = field(default_factory=dict)


VIT_PRESETS: dict[str, VitPreset] = {
    "vit32_test": VitPreset(32, 8, 32, 2, 2, 2.0, "unit-test size: 16 patches of 8 px, width 32, 2 blocks"),
    "vit32_tiny": VitPreset(32, 4, 96, 4, 3, 4.0, "CPU smoke size: 64 patches of 4 px, width 96, 4 blocks"),
    "vit32_small": VitPreset(32, 4, 192, 6, 3, 4.0, "from-scratch CIFAR size: 64 patches of 4 px, width 192, 6 blocks"),
}
CNN_NAMES = ("resnet18", "resnet50", "alexnet")


def backbone_choices() -> list[str]:
    return sorted(VIT_PRESETS) + list(CNN_NAMES) + ["<any timm model name>"]


class Backbone(nn.Module):
    """Uniform wrapper: ``forward(x) -> tokens (n,T,D)`` for ViTs or ``pooled (n,D)`` for CNNs."""

    def __init__(self, model: nn.Module, *, name: str, kind: str, feature_dim: int, img_size: int,
                 mean, std, pretrained: bool, num_prefix_tokens: int = 0):
        super().__init__()
        self.model = model
        self.name = name
        self.kind = kind
        self.feature_dim = int(feature_dim)
        self.img_size = int(img_size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.pretrained = bool(pretrained)
        self.num_prefix_tokens = int(num_prefix_tokens)

    @property
    def is_vit(self) -> bool:
        return self.kind == "vit"

    def added_parameters(self):
        """Parameters of modules added to the network after it was built (e.g. AE-ViT's AEM, marked
        ``added_module = True``): not in any pretrained checkpoint, so they train as new modules."""
        seen = set()
        for m in self.modules():
            if getattr(m, "added_module", False):
                for p in m.parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        yield p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "vit":
            return self.model.forward_features(x)
        return self.model(x)


def _check_weights(weights) -> str | None:
    if weights in (None, "", "none", "None", False):
        return None
    if weights == "hub":
        return "hub"
    p = Path(os.path.expanduser(str(weights)))
    if not p.is_file():
        raise ConfigError(
            f"weights={weights!r}: no such file. Give a local checkpoint (.pth/.bin/.safetensors), "
            "'hub' to download through timm/torchvision (needs network), or None to train from scratch."
        )
    return str(p)


def _load_state_file(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def _hub_error(name: str, err: Exception | str) -> ConfigError:
    why = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    how = (f"torchvision.models.{name}(weights='DEFAULT')" if name == "alexnet"
           else f"timm.create_model({name!r}, pretrained=True)")
    return ConfigError(
        f"could not fetch pretrained weights for backbone {name!r} ({why}). "
        f"Offline? Download the checkpoint on a machine with network (e.g. {how} "
        "and save its state_dict) and pass weights='/path/to/file.pth', or use weights=None to train from scratch."
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def create_backbone(name: str, *, img_size: int | None = None, weights=None, drop_path_rate: float = 0.0) -> Backbone:
    """Build a backbone by name (a preset, a CNN name, or any timm model name)."""
    import timm

    weights = _check_weights(weights)
    if name in VIT_PRESETS:
        p = VIT_PRESETS[name]
        size = img_size or p.img_size
        model = timm.models.vision_transformer.VisionTransformer(
            img_size=size, patch_size=p.patch_size, embed_dim=p.embed_dim, depth=p.depth, num_heads=p.num_heads,
            mlp_ratio=p.mlp_ratio, num_classes=0, drop_path_rate=drop_path_rate, **p.kwargs)
        if weights == "hub":
            raise ConfigError(f"backbone {name!r} is a local preset with no hub weights; use a file or None")
        if weights:
            _load_into(model, _load_state_file(weights), name, weights)
        return Backbone(model, name=name, kind="vit", feature_dim=p.embed_dim, img_size=size,
                        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), pretrained=bool(weights), num_prefix_tokens=1)
    if name == "alexnet":
        return _alexnet(weights, img_size or 224)
    if name not in timm.list_models() and name not in timm.list_pretrained():
        raise ConfigError(f"backbone={name!r} is not a preset, a CNN name or a timm model; allowed: "
                          + ", ".join(backbone_choices()))
    kwargs = dict(num_classes=0, drop_path_rate=drop_path_rate)
    is_vit = name.startswith(("vit_", "deit", "eva", "beit"))
    if img_size and is_vit:
        kwargs["img_size"] = img_size
    try:
        if weights == "hub":
            model = timm.create_model(name, pretrained=True, **kwargs)
        elif weights:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=weights), **kwargs)
        else:
            model = timm.create_model(name, pretrained=False, **kwargs)
    except ConfigError:
        raise
    except Exception as err:  # network / hub errors surface as many types
        if weights == "hub":
            raise _hub_error(name, err) from err
        raise
    cfg = timm.data.resolve_data_config({}, model=model)
    size = img_size or int(cfg["input_size"][-1])
    if is_vit and hasattr(model, "blocks"):
        return Backbone(model, name=name, kind="vit", feature_dim=model.num_features, img_size=size,
                        mean=cfg["mean"], std=cfg["std"], pretrained=bool(weights),
                        num_prefix_tokens=getattr(model, "num_prefix_tokens", 1))
    return Backbone(model, name=name, kind="cnn", feature_dim=model.num_features, img_size=size,
                    mean=cfg["mean"], std=cfg["std"], pretrained=bool(weights))


def _load_into(model: nn.Module, sd: dict, name: str, path: str, drop=("head.",)) -> None:
    """Load a state dict, discarding the classifier keys in `drop`; any other mismatch is an error."""
    sd = {k: v for k, v in sd.items() if not k.startswith(tuple(drop))}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or missing:
        raise ConfigError(f"weights file {path!r} does not match backbone {name!r}: "
                          f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")


class _AlexNetFeatures(nn.Module):
    """torchvision AlexNet without its last classifier layer: a 4096-d feature (as in deep hashing)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.features = net.features
        self.avgpool = net.avgpool
        self.classifier = nn.Sequential(*list(net.classifier.children())[:-1])

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _alexnet(weights, img_size: int) -> Backbone:
    import torchvision

    if weights == "hub":
        url = torchvision.models.AlexNet_Weights.DEFAULT.url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        if _offline() and not cached.is_file():  # torchvision ignores HF_HUB_OFFLINE: never download then
            raise _hub_error("alexnet", f"HF_HUB_OFFLINE is set and {cached} is not in the torch hub cache")
        try:
            net = torchvision.models.alexnet(weights="DEFAULT")
        except Exception as err:
            raise _hub_error("alexnet", err) from err
    else:
        net = torchvision.models.alexnet(weights=None)
        if weights:
            _load_into(net, _load_state_file(weights), "alexnet", weights, drop=())
    return Backbone(_AlexNetFeatures(net), name="alexnet", kind="cnn", feature_dim=4096, img_size=img_size,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, pretrained=bool(weights))
