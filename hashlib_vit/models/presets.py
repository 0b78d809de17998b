"""The small timm ViT presets (trainable from scratch on a CPU): one table, read by the backbone builder
and by the weights loader (which names the preset a checkpoint looks like)."""
from __future__ import annotations

from dataclasses import dataclass, field


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
