"""Figures used by the notebooks (matplotlib / seaborn); each returns the Figure it drew."""
from __future__ import annotations

import numpy as np
import torch


def _img(x: torch.Tensor) -> np.ndarray:
    """uint8 (3,H,W) or float [0,1] -> HWC float for imshow."""
    x = x.detach().cpu()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x.permute(1, 2, 0).clamp(0, 1).numpy()


def class_samples_grid(split, class_names: list[str], per_class: int = 8, seed: int = 0):
    """A grid with `per_class` sample images of every class (rows = classes)."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    labels = split.labels.numpy() > 0  # items carrying label c (multi-label items can appear in several rows)
    n_cls = len(class_names)
    fig, axes = plt.subplots(n_cls, per_class, figsize=(per_class * 0.9, n_cls * 0.9), squeeze=False)
    for c in range(n_cls):
        pos = np.flatnonzero(labels[:, c])
        pick = rng.choice(pos, size=min(per_class, len(pos)), replace=False) if len(pos) else []
        # in-memory splits hold .images; file-backed ones (list-file data sets) decode on demand
        ims = split.images[pick] if hasattr(split, "images") else (split.load_images(pick, 96) if len(pick) else [])
        for j, ax in enumerate(axes[c]):
            ax.axis("off")
            if j < len(pick):
                ax.imshow(_img(ims[j]))
        axes[c, 0].set_title(class_names[c], fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def training_curve(steps, evals=None, title: str = "training"):
    """Loss per step (smoothed) and, when given, mAP at the evaluation epochs."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(steps)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(df["step"], df["loss"], alpha=0.3, color="C0", label="loss (per step)")
    ax.plot(df["step"], df["loss"].rolling(max(len(df) // 30, 1), min_periods=1).mean(), color="C0",
            label="loss (smoothed)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if evals:
        ev = pd.DataFrame(evals)
        ax2 = ax.twinx()
        ax2.plot(ev["step"], ev["map"], "o-", color="C1", label="mAP")
        ax2.set_ylabel("mAP")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left" if evals else "best")
    fig.tight_layout()
    return fig


def hamming_rank(query_code: np.ndarray, db_codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k database positions for one ±1 query code, ties broken by index (stable sort)."""
    bits = db_codes.shape[1]
    dist = (bits - db_codes.astype(np.int32) @ query_code.astype(np.int32)) // 2
    order = np.argsort(dist, kind="stable")[:k]
    return order, dist[order]


def retrieval_grid(data, query_codes: np.ndarray, db_codes: np.ndarray, n_queries: int = 5, k: int = 10,
                   seed: int = 0):
    """Rows: a query image then its top-k database images; green frame = relevant, red = not."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    qs = rng.choice(len(query_codes), size=min(n_queries, len(query_codes)), replace=False)
    ql, dl = data.query.labels.numpy(), data.database.labels.numpy()
    fig, axes = plt.subplots(len(qs), k + 1, figsize=((k + 1) * 0.95, len(qs) * 1.1), squeeze=False)
    for r, q in enumerate(qs):
        order, dist = hamming_rank(query_codes[q], db_codes, k)
        ax = axes[r, 0]
        ax.imshow(_img(data.query.images[q]))
        ax.set_title("query", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        for s in ax.spines.values():
            s.set_edgecolor("black"), s.set_linewidth(2)
        for j, (i, d) in enumerate(zip(order, dist)):
            ax = axes[r, j + 1]
            ax.imshow(_img(data.database.images[i]))
            ok = bool((ql[q] * dl[i]).sum() > 0)
            ax.set_title(f"d={d}", fontsize=7, color="green" if ok else "red")
            ax.set_xticks([]), ax.set_yticks([])
            for s in ax.spines.values():
                s.set_edgecolor("green" if ok else "red"), s.set_linewidth(2)
    fig.suptitle("Top-k by Hamming distance (green = shares a label with the query)", fontsize=9)
    fig.tight_layout()
    return fig


def search_result_grid(query_images, db_images, ids: np.ndarray, distances: np.ndarray, relevant: np.ndarray,
                       title: str = "Top-k from the index (green = shares a label with the query)"):
    """Rows: a query image, then the images of its search results with their Hamming distance;
    ``relevant`` (Q, k) bool marks correct results (green frame) and wrong ones (red)."""
    import matplotlib.pyplot as plt

    nq, k = ids.shape
    fig, axes = plt.subplots(nq, k + 1, figsize=((k + 1) * 0.95, nq * 1.1), squeeze=False)
    for r in range(nq):
        ax = axes[r, 0]
        ax.imshow(_img(query_images[r]))
        ax.set_title("query", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        for j in range(k):
            ax = axes[r, j + 1]
            ax.set_xticks([]), ax.set_yticks([])
            if ids[r, j] < 0:
                ax.axis("off")
                continue
            ax.imshow(_img(db_images[int(ids[r, j])]))
            ok = bool(relevant[r, j])
            ax.set_title(f"d={distances[r, j]}", fontsize=7, color="green" if ok else "red")
            for s in ax.spines.values():
                s.set_edgecolor("green" if ok else "red"), s.set_linewidth(2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
