"""Backbones behind one interface: timm ViTs (incl. small presets for 32-px inputs) and CNNs.

A :class:`Backbone` maps images (already normalised) to either a token sequence ``(n, T, D)`` after
the final norm (``kind == "vit"``; token 0 is CLS) or a pooled feature ``(n, D)`` (``kind == "cnn"``).
Weights (loaded by :mod:`hashlib_vit.models.weights`): ``weights=None`` (random init: every run on
these machines, which have no pretrained checkpoints), a local file (timm ``.pth/.bin/.safetensors``,
Google JAX ``.npz``, torchvision or DINOv2 state dicts), or ``"hub"`` (the timm pretrained tag of the
name, from the Hugging Face cache, or downloaded when online).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError
from .presets import VIT_PRESETS, VitPreset  # noqa: F401 (re-exported: the preset table lives in presets.py)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


CNN_NAMES = ("resnet18", "resnet50", "alexnet")


def backbone_choices() -> list[str]:
    return sorted(VIT_PRESETS) + list(CNN_NAMES) + ["<any timm model name>"]


class Backbone(nn.Module):
    """Uniform wrapper: ``forward(x) -> tokens (n,T,D)`` for ViTs or ``pooled (n,D)`` for CNNs.

    ``mean``/``std``: the input normalisation (RGB, images in [0, 1]) that goes with the weights, taken
    from ``weights_info`` (see :func:`hashlib_vit.models.weights.load_weights`: the checkpoint's timm
    ``pretrained_cfg``, or the format's convention). ``weights_info``: where the weights came from.
    """

    def __init__(self, model: nn.Module, *, name: str, kind: str, feature_dim: int, img_size: int,
                 mean, std, pretrained: bool, num_prefix_tokens: int = 0, weights_info: dict | None = None):
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
        # where the weights came from (hashlib_vit.models.weights.load_weights): source, name, format, path,
        # sha256, pretrained_tag, mean, std, pos_embed_resampled_from; source "none" for random init
        self.weights_info = dict(weights_info) if weights_info else {
            "source": "none", "name": name, "format": None, "path": None, "sha256": None, "pretrained_tag": None,
            "mean": list(self.mean), "std": list(self.std), "pos_embed_resampled_from": None}

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


def check_backbone_name(name) -> str:
    """The one check of a backbone name (used by ``create_backbone``, ``RunConfig.validate`` and the runner).

    Valid: a preset (:data:`VIT_PRESETS`), a CNN name (:data:`CNN_NAMES`), any timm architecture
    (``timm.list_models()``) or a timm name with a pretrained tag (``timm.list_pretrained()``, e.g.
    ``vit_small_patch14_dinov2.lvd142m``). Returns the name. Raises :class:`ConfigError` with close
    matches for an unknown name and with the existing tags for an unknown tag of a known architecture.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backbone={name!r} must be a non-empty string (a preset, a CNN name or a timm model name)")
    if name in VIT_PRESETS or name in CNN_NAMES:
        return name
    from .weights import check_timm_name

    return check_timm_name(name, extra=tuple(sorted(VIT_PRESETS)) + CNN_NAMES)


def _check_weights(weights) -> str | None:
    if weights in (None, "", "none", "None", False):
        return None
    if weights == "hub":
        return "hub"
    p = Path(os.path.expanduser(str(weights)))
    if not p.is_file():
        raise ConfigError(
            f"weights={weights!r}: {'a folder, not a file' if p.is_dir() else 'no such file'}. Give a local checkpoint (.pth/.bin/.safetensors, a Google JAX .npz, "
            "a torchvision or DINOv2 state dict), 'hub' for the timm pretrained tag (Hugging Face cache, or "
            "download when online), or None to train from scratch."
        )
    return str(p)


VIT_FAMILIES = ("vit_", "deit", "eva", "beit")  # timm names whose img_size can be set (position embeddings)


def _timm_kwargs(name: str, img_size: int | None) -> dict:
    return {"num_classes": 0, **({"img_size": img_size} if img_size and name.startswith(VIT_FAMILIES) else {})}


def preset_network(name: str, img_size: int | None = None, **kwargs) -> nn.Module:
    """The timm ``VisionTransformer`` of preset ``name`` (no head) at ``img_size`` (default: the preset's)."""
    import timm

    p = VIT_PRESETS[name]
    return timm.models.vision_transformer.VisionTransformer(
        img_size=img_size or p.img_size, patch_size=p.patch_size, embed_dim=p.embed_dim, depth=p.depth,
        num_heads=p.num_heads, mlp_ratio=p.mlp_ratio, num_classes=0, **p.kwargs, **kwargs)


@functools.lru_cache(maxsize=64)
def meta_network(name: str, img_size: int | None = None) -> nn.Module:
    """The bare network (no head) of a preset or a timm name (pretrained tag allowed) on the ``meta``
    device: names, shapes and ``pretrained_cfg`` without memory, weights or initialisation cost (cached:
    do not modify it). ``img_size`` applies to presets and timm ViTs. Raises what timm raises for a name it
    cannot build."""
    import timm

    with torch.device("meta"):
        if name in VIT_PRESETS:
            return preset_network(name, img_size)
        return timm.create_model(name, pretrained=False, **_timm_kwargs(name, img_size))


def is_vit_name(name: str) -> bool:
    """Whether backbone ``name`` (already checked) builds a ViT (a preset or a timm ViT-family name)."""
    return name in VIT_PRESETS or (name not in CNN_NAMES and name.startswith(VIT_FAMILIES))


def check_aem_backbone(aem, name: str) -> None:
    """ConfigError when AEM options with branches (:class:`~.aem.AEMOptions`) meet a backbone ``name``
    (already checked) that is not a ViT: AEM acts on a ViT's patch-embedding map."""
    if aem.branches and not is_vit_name(name):
        raise ConfigError(f"aem={aem.aem!r} needs a ViT backbone; backbone={name!r} is a CNN (use aem='off')")


def create_backbone(name: str, *, img_size: int | None = None, weights=None, drop_path_rate: float = 0.0,
                    aem=None) -> Backbone:
    """Build a backbone by name (a preset, a CNN name, or any timm model name with or without tag) and
    load its weights with :func:`hashlib_vit.models.weights.load_weights`.

    ``img_size`` (px): the input size (default: the preset's / timm's); a checkpoint made at another
    size gets its position embedding resampled. ``weights``: None, ``"hub"`` or a local file (any format
    of :mod:`hashlib_vit.models.weights`). The returned Backbone's ``mean``/``std`` and ``weights_info``
    come from the weights (see ``load_weights``); presets without weights use 0.5/0.5, timm models
    without weights the tag's ``pretrained_cfg``. ``aem``: an :class:`~hashlib_vit.models.aem.AEMOptions`
    (or None): AE-ViT's module goes into the ViT's patch embedding through timm's ``embed_layer``
    argument, before the weights are loaded (its keys are the only ones a plain checkpoint lacks). Raises
    :class:`ConfigError` for an unknown name, a missing or unusable weights file, hub weights for a preset,
    unreachable hub weights, or AEM on a CNN / a timm model without ``embed_layer``.
    """
    import timm

    from .weights import load_weights

    name = check_backbone_name(name)
    weights = _check_weights(weights)
    embed = aem.embed_layer() if aem is not None else None
    if embed is not None:
        check_aem_backbone(aem, name)
    extra = {"embed_layer": embed} if embed is not None else {}
    if name in VIT_PRESETS:
        p = VIT_PRESETS[name]
        size = img_size or p.img_size
        if weights == "hub":
            raise ConfigError(f"backbone {name!r} is a local preset with no hub weights; use a file or None")
        model = preset_network(name, size, drop_path_rate=drop_path_rate, **extra)
        _check_patch_multiple(model, name, size)
        model.pretrained_cfg = {}  # a preset has no timm pretrained_cfg: 0.5/0.5 unless the weights say otherwise
        info = load_weights(model, weights, name=name, default_mean=(0.5, 0.5, 0.5), default_std=(0.5, 0.5, 0.5))
        return Backbone(model, name=name, kind="vit", feature_dim=p.embed_dim, img_size=size,
                        mean=info["mean"], std=info["std"], pretrained=bool(weights), num_prefix_tokens=1,
                        weights_info=info)
    if name == "alexnet":
        return _alexnet(weights, img_size or 224)
    is_vit = name.startswith(VIT_FAMILIES)
    try:
        model = timm.create_model(name, pretrained=False, **_timm_kwargs(name, img_size), drop_path_rate=drop_path_rate,
                                  **extra)
    except TypeError as err:
        if not extra:
            raise
        raise ConfigError(f"aem={aem.aem!r}: timm model {name!r} does not take an embed_layer ({err}); AEM needs a "
                          "timm VisionTransformer (use aem='off')") from err
    _check_patch_multiple(model, name, img_size)
    cfg = timm.data.resolve_data_config({}, model=model)
    info = load_weights(model, weights, name=name, default_mean=cfg["mean"], default_std=cfg["std"])
    size = img_size or int(cfg["input_size"][-1])
    if is_vit and hasattr(model, "blocks"):
        return Backbone(model, name=name, kind="vit", feature_dim=model.num_features, img_size=size,
                        mean=info["mean"], std=info["std"], pretrained=bool(weights),
                        num_prefix_tokens=getattr(model, "num_prefix_tokens", 1), weights_info=info)
    return Backbone(model, name=name, kind="cnn", feature_dim=model.num_features, img_size=size,
                    mean=info["mean"], std=info["std"], pretrained=bool(weights), weights_info=info)


def _check_patch_multiple(model: nn.Module, name: str, img_size: int | None) -> None:
    """ConfigError when a ViT's input size is not a whole number of patches (timm would drop the
    remainder pixels silently)."""
    pe = getattr(model, "patch_embed", None)
    patch = getattr(pe, "patch_size", None)
    if not img_size or patch is None:
        return
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    if img_size % ph or img_size % pw:
        raise ConfigError(f"img_size={img_size} is not a multiple of backbone {name!r}'s patch size {ph}: the last "
                          f"{img_size % ph} pixel rows and columns would be dropped; use e.g. img_size="
                          f"{max(ph, img_size // ph * ph)} or {(img_size // ph + 1) * ph}")


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


def alexnet_hub_file() -> tuple[str, Path]:
    """(url, path in the torch hub cache) of torchvision's default AlexNet weights (``weights="hub"``)."""
    import torchvision

    url = torchvision.models.AlexNet_Weights.DEFAULT.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _alexnet(weights, img_size: int) -> Backbone:
    import torchvision

    from .weights import file_sha256, hub_error, none_info, offline, read_state_dict

    info = none_info("alexnet", IMAGENET_MEAN, IMAGENET_STD, "torchvision ImageNet mean/std")
    if weights == "hub":
        url, cached = alexnet_hub_file()
        if offline() and not cached.is_file():  # torchvision ignores HF_HUB_OFFLINE: never download then
            raise hub_error("alexnet", f"HF_HUB_OFFLINE is set and {cached} is not in the torch hub cache")
        source = "hf-cache" if cached.is_file() else "hub"
        try:
            net = torchvision.models.alexnet(weights="DEFAULT")
        except Exception as err:
            raise hub_error("alexnet", f"{type(err).__name__}: {err}") from err
        info.update(source=source, format="torchvision", container="torch-zip", path=str(cached),
                    sha256=file_sha256(cached), hf_repo=url, pretrained_tag="DEFAULT")
    else:
        net = torchvision.models.alexnet(weights=None)
        if weights:
            sd, container = read_state_dict(weights)
            _load_into(net, sd, "alexnet", weights, drop=())
            info.update(source="file", format="torchvision", container=container, path=str(Path(weights).resolve()),
                        sha256=file_sha256(weights))
    return Backbone(_AlexNetFeatures(net), name="alexnet", kind="cnn", feature_dim=4096, img_size=img_size,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, pretrained=bool(weights), weights_info=info)
