"""AE-ViT + HSC-Loss at the experiment level: the thesis' backbone study.

:func:`run_backbone_study` — AE-ViT vs the plain ViT vs CNN backbones (ResNet-50 from timm, AlexNet from
torchvision) under a list of losses, every cell one :func:`~hashlib_vit.experiment.run_experiment` (the one
training loop) with its own run directory. The AEM figure is :func:`hashlib_vit.results.figures.plot_aem_maps`.

The model and loss themselves live in :mod:`hashlib_vit.models.aem` and :mod:`hashlib_vit.losses.hsc`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import ConfigError
from .losses import LOSSES


@dataclass(frozen=True)
class StudyBackbone:
    """One column of the backbone study: a backbone name (``None``: the study's ViT), AEM on/off, and for CNNs
    the smallest input size they work at (they run at the protocol's image size, or this if larger)."""

    label: str
    backbone: str | None
    aem: str = "off"
    min_img_size: int | None = None
    description: str = ""


# The thesis compares AE-ViT with AlexNet and ResNet (§4.1); the plain ViT is the ablation without AEM.
STUDY_BACKBONES: dict[str, StudyBackbone] = {
    "aevit": StudyBackbone("aevit", None, "all", description="the study's ViT with AEM (AE-ViT)"),
    "vit": StudyBackbone("vit", None, "off", description="the same ViT without AEM"),
    "resnet50": StudyBackbone("resnet50", "resnet50", min_img_size=32,
                              description="ResNet-50 (timm), pooled 2048-d feature"),
    "alexnet": StudyBackbone("alexnet", "alexnet", min_img_size=64,
                             description="AlexNet (torchvision) fc7 4096-d feature; needs >= 63 px input"),
}

# The four classic losses of the study (the thesis does not name its four: this choice is ours [I]).
CLASSIC_LOSSES = ("dsh", "dpsh", "hashnet", "csq")


def split_available(losses: Sequence[str]) -> tuple[list[str], list[str]]:
    """(registered, not registered in this build) — e.g. DSH/HashNet arrive with the loss zoo."""
    have = [name for name in losses if name in LOSSES]
    return have, [name for name in losses if name not in LOSSES]


def study_runs(base: dict, backbones: Sequence[str], losses: Sequence[str], root: str | Path, *,
               vit_backbone: str = "vit32_tiny", loss_params: dict | None = None,
               img_sizes: dict | None = None) -> list[dict]:
    """The parameter dict of every cell (backbone x loss) of the study.

    ``base``: shared RunConfig parameters (protocol, bits, epochs, lr, seed, ...). ``loss_params``:
    per-loss hyper-parameters ``{loss: {...}}``. ``img_sizes``: per-backbone-label input size overrides;
    by default a ViT uses its own size and a CNN the protocol's image size (at least its ``min_img_size``),
    not its ImageNet default of 224 px.
    """
    from .data import PROTOCOLS

    unknown = [b for b in backbones if b not in STUDY_BACKBONES]
    if unknown:
        raise ConfigError(f"study backbone(s) {unknown} unknown; choose from {sorted(STUDY_BACKBONES)}")
    missing = [name for name in losses if name not in LOSSES]
    if missing:
        raise ConfigError(f"study loss(es) {missing} are not registered; available: {LOSSES.names()}")
    loss_params = loss_params or {}
    img_sizes = img_sizes or {}
    proto_size = PROTOCOLS.get(base.get("protocol", "digits")).img_size
    runs = []
    for label in backbones:
        sb = STUDY_BACKBONES[label]
        size = img_sizes.get(label, base.get("img_size"))  # a base img_size (e.g. a 224-px recipe) applies to all
        if size is None and sb.backbone is not None:
            size = max(proto_size, sb.min_img_size or 0)
        for loss in losses:
            model_params = dict(base.get("model_params", {}))
            if sb.backbone is None:
                model_params["aem"] = sb.aem
            runs.append({**base, "backbone": sb.backbone or vit_backbone, "loss": loss,
                         "img_size": size, "model_params": model_params,
                         "loss_params": dict(loss_params.get(loss, {})), "method": f"{label}+{loss}",
                         "run_dir": str(Path(root) / f"{label}__{loss}")})
    return runs


def run_backbone_study(base: dict, backbones: Sequence[str], losses: Sequence[str], root: str | Path, *,
                       data=None, vit_backbone: str = "vit32_tiny", loss_params: dict | None = None,
                       img_sizes: dict | None = None):
    """Run every (backbone, loss) cell through ``run_experiment``; returns a long DataFrame
    (``backbone``, ``network``, ``loss``, ``map``, ``map_random``, ``train_time_s``, ``run_dir``, ``note``).
    A cell whose loss diverges (non-finite) gets ``map = NaN`` and the error in ``note``; the study goes on."""
    import pandas as pd

    from .experiment import run_experiment

    rows = []
    for params in study_runs(base, backbones, losses, root, vit_backbone=vit_backbone, loss_params=loss_params,
                             img_sizes=img_sizes):
        label = params["method"].split("+")[0]
        row = {"backbone": label, "network": params["backbone"], "loss": params["loss"]}
        try:
            res = run_experiment(params, data=data)
        except FloatingPointError as err:  # a diverged cell is a result of the study, not a crash of it
            rows.append({**row, "map": float("nan"), "map_random": float("nan"), "train_time_s": float("nan"),
                         "run_dir": params["run_dir"], "note": f"diverged: {err}"})
            continue
        rows.append({**row, "map": res.metrics["map"], "map_random": res.metrics["map_random"],
                     "train_time_s": res.metrics["train_time_s"], "run_dir": str(res.run_dir), "note": ""})
    return pd.DataFrame(rows)


__all__ = ["StudyBackbone", "STUDY_BACKBONES", "CLASSIC_LOSSES", "split_available", "study_runs",
           "run_backbone_study"]
