"""Method diagrams drawn with matplotlib (for the notebooks; no image files needed)."""
from __future__ import annotations


def mgvt_diagram(bits: int = 32, groups: int = 2, depth: int = 24, n_patches: int = 49, local_stream: bool = True):
    """TransHash / MGVT: shared trunk, global stream, local stream over G token groups, per-feature hash
    heads and the concatenated code. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    g = groups if local_stream else 0
    top = 1.2 + 0.9 * (max(g, 1) - 1) if g else 0.6
    height = top + 1.1
    fig, ax = plt.subplots(figsize=(12, 1.2 * height))
    ax.set_xlim(0, 12.4)
    ax.set_ylim(0, height)
    ax.axis("off")

    def box(x, y, w, h, text, color, fs=9):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04", fc=color, ec="0.3", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fs)

    def arrow(x0, y0, x1, y1):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, color="0.3", lw=1))

    box(0.1, top, 1.4, 0.8, "image\n→ N patches\n+ CLS + pos", "#eeeeee")
    box(1.9, top, 1.9, 0.8, f"shared trunk\nblocks 1..{depth - 1}\n(siamese: shared weights)", "#d9e8fb")
    arrow(1.5, top + 0.4, 1.9, top + 0.4)
    # global stream
    box(4.4, top, 2.0, 0.8, "global block F_g\n+ LN_g (copy of\nlast block / norm)", "#fde2c8")
    arrow(3.8, top + 0.4, 4.4, top + 0.4)
    gb = bits // 2 if local_stream else bits
    box(6.9, top, 1.5, 0.8, f"CLS → f_g\naffine → {gb} bits", "#fff3b0")
    arrow(6.4, top + 0.4, 6.9, top + 0.4)
    lb = bits // (2 * g) if g else 0
    ys = [top - 1.0 - 0.9 * i for i in range(g)]
    if g:
        import numpy as np

        sizes = [len(a) for a in np.array_split(np.arange(n_patches), g)]
        box(1.9, ys[-1], 1.9, ys[0] - ys[-1] + 0.7,
            f"split patch tokens\ninto G={g} contiguous\ngroups ({'+'.join(map(str, sizes))})\neach prefixed by CLS",
            "#e6f4e6", fs=8.5)
        arrow(2.85, top, 2.85, ys[0] + 0.7)
        for i, y in enumerate(ys):
            box(4.4, y, 2.0, 0.7, f"local block F_l + LN_l\n(one shared copy) · group {i + 1}", "#d8f0d8", fs=8.5)
            arrow(3.8, y + 0.35, 4.4, y + 0.35)
            box(6.9, y, 1.5, 0.7, f"CLS → f_l^{i + 1}\naffine → {lb} bits", "#fff3b0", fs=8.5)
            arrow(6.4, y + 0.35, 6.9, y + 0.35)
    yc = (top + (ys[-1] if g else top)) / 2
    parts = "; ".join(["h_g"] + [f"h_l^{i + 1}" for i in range(g)])
    box(9.0, yc, 3.2, 0.8, f"u = [{parts}]  ({bits} bits)\ncode b = sign(u)", "#f3d9fa")
    arrow(8.4, top + 0.4, 9.0, yc + 0.5)
    for y in ys:
        arrow(8.4, y + 0.35, 9.0, yc + 0.3)
    ax.text(9.0, yc - 0.5, "loss per head (same group across a pair):\nweighted Cauchy pair NLL + λ·Cauchy prior",
            fontsize=8.5, va="top")
    title = "MGVT (TransHash)" + ("" if local_stream else " — w/o P (global stream only)")
    ax.set_title(f"{title}: K={bits} bits, G={g} groups, {depth} blocks, {n_patches} patch tokens", fontsize=11)
    fig.tight_layout()
    return fig


__all__ = ["mgvt_diagram"]
