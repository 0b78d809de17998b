"""Numbers reported in the TransHash paper (Chen et al., ICMR 2022, DOI 10.1145/3512527.3531405), as
transcribed in METHODS.md §2.6 from the paper's Table 1 (main results), Table 2 (ablations) and Table 3
(number of groups). mAP: CIFAR-10 @54,000 (``cifar10`` protocol), NUS-WIDE @5,000, ImageNet-100 @1,000.

These are the paper's figures (ViT-L/32 pretrained on ImageNet, 224-px input, SGD recipe; baselines on
CNN backbones re-run or quoted by the authors) — never results of this package. ``None`` = not reported.
"""
from __future__ import annotations

SOURCE = ("Chen, Zhang, Liu et al., TransHash: Transformer-based Hamming Hashing for Efficient Image Retrieval, "
          "ICMR 2022 (DOI 10.1145/3512527.3531405), Tables 1-3; transcribed in METHODS.md §2.6")
DATASETS = ("cifar10", "nuswide", "imagenet100")
BITS = (16, 32, 48, 64)

_ = None
# method -> 12 values: CIFAR-10 16/32/48/64, NUS-WIDE 16/32/48/64, ImageNet-100 16/32/48/64 (Table 1)
TABLE1: dict[str, tuple] = {
    "SH": (_, _, _, _, 0.4058, 0.4209, 0.4211, 0.4104, 0.2066, 0.3280, 0.3951, 0.4191),
    "ITQ": (_, _, _, _, 0.5086, 0.5425, 0.5580, 0.5611, 0.3255, 0.4620, 0.5170, 0.5520),
    "KSH": (_, _, _, _, 0.3561, 0.3327, 0.3124, 0.3368, 0.1599, 0.2976, 0.3422, 0.3943),
    "BRE": (_, _, _, _, 0.5027, 0.5290, 0.5475, 0.5546, 0.0628, 0.2525, 0.3300, 0.3578),
    "DSH": (0.6145, 0.6815, 0.6828, 0.6910, 0.6338, 0.6507, 0.6664, 0.6856, 0.4025, 0.4914, 0.5254, 0.5845),
    "DHN": (0.6544, 0.6711, 0.6921, 0.6737, 0.6471, 0.6725, 0.6981, 0.7027, 0.4139, 0.4365, 0.4680, 0.5018),
    "HashNet": (0.5105, 0.6278, 0.6631, 0.6826, 0.6821, 0.6953, 0.7193, 0.7341, 0.3287, 0.5789, 0.6365, 0.6656),
    "DCH": (0.6680, 0.6936, 0.6807, 0.6775, 0.7036, 0.7178, 0.7106, 0.7056, 0.5868, 0.5862, 0.5639, 0.5540),
    "IDHN": (0.5419, 0.5695, 0.5895, 0.5972, 0.6999, 0.7149, 0.7225, 0.7256, 0.2583, 0.3339, 0.3708, 0.4037),
    "DPN": (0.825, 0.838, 0.830, 0.829, _, _, _, _, 0.684, 0.740, 0.756, 0.756),
    "TransHash": (0.9075, 0.9108, 0.9141, 0.9166, 0.7263, 0.7393, 0.7532, 0.7488, 0.7852, 0.8733, 0.8932, 0.8921),
}
# Table 2 (ablations), same column layout
TABLE2: dict[str, tuple] = {
    "TransHash": TABLE1["TransHash"],
    "w/o C": (0.8406, 0.8384, 0.8958, 0.9062, 0.7004, 0.7265, 0.7336, 0.7310, 0.7172, 0.7808, 0.8064, 0.8244),
    "w/o P": (0.9029, 0.9053, 0.9028, 0.9014, 0.7190, 0.7147, 0.7339, 0.7167, 0.7549, 0.8485, 0.8635, 0.8635),
    "w/o Q": (0.8927, 0.9023, 0.9048, 0.9078, 0.6540, 0.6821, 0.6689, 0.6915, 0.7451, 0.8588, 0.8689, 0.8758),
}
# Table 3: CIFAR-10 mAP by bits (rows) and groups G = 2..6 (columns); None = "did not converge"
TABLE3: dict[int, tuple] = {
    16: (0.9075, _, _, _, _),
    32: (0.9108, 0.9013, _, _, _),
    48: (0.9141, 0.9017, 0.9187, 0.9107, 0.9143),
    64: (0.9166, 0.9103, 0.9057, 0.9062, 0.8994),
}
IMAGENET_AVERAGE_TRANSHASH = 0.8610  # stated in the paper's text


def reported(table: int = 1):
    """Long-format DataFrame (method/variant, dataset, bits, map, source) of Table 1 or 2; Table 3 has
    columns (bits, groups, map)."""
    import pandas as pd

    if table == 3:
        rows = [{"dataset": "cifar10", "bits": b, "groups": g, "map": v, "source": SOURCE}
                for b, vals in TABLE3.items() for g, v in zip(range(2, 7), vals)]
        return pd.DataFrame(rows)
    data = {1: TABLE1, 2: TABLE2}[table]
    rows = [{"method": m, "dataset": DATASETS[i // 4], "bits": BITS[i % 4], "map": v, "source": SOURCE}
            for m, vals in data.items() for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


__all__ = ["SOURCE", "TABLE1", "TABLE2", "TABLE3", "IMAGENET_AVERAGE_TRANSHASH", "reported"]
