"""Training throughput of partial fine-tuning with and without the feature cache.

Three ways to train the same model (same initial weights, same loss, same batches of the same images),
in one process:

* **(a) full**: full fine-tuning (every parameter trains), :func:`hashlib_vit.train.train` on a
  :class:`~hashlib_vit.data.TensorBatches` (resize 256 -> random crop 224 + flip per batch);
* **(b) frozen**: the embeddings and the first N blocks frozen (``freeze_prefix``), no cache: every
  step still runs the frozen prefix forward (without autograd) and the last blocks forward + backward;
* **(c) cached**: the same frozen model trained on the block-N tokens of the feature cache
  (:class:`~hashlib_vit.data.feature_cache.CachedBatches` + ``PartialModel``): only the last blocks and
  the head run. The cache build time is measured too; it amortises over epochs: the build costs
  ``build_s``, each epoch of the cached run saves ``N/ips_b - N/ips_c`` seconds, so the cache pays for
  itself after ``build_s / (N/ips_b - N/ips_c)`` epochs (``cache_views=k`` multiplies ``build_s`` by k).

Throughput = images per second of training steps after ``--warmup`` steps (from the step log's clock).
Default workload: ViT-S/16 (``vit_small_patch16_224``, random weights: no pretrained weights here) at
224 px, 11 of 12 blocks frozen, ``cls_linear`` head, 64 bits, DPSH, batch 32.

    python benchmarks/bench_cache.py                 # writes results/benchmarks/cache.md (+ cache.json)
    python benchmarks/bench_cache.py --quick         # smoke test: ViT-Ti/16 at 64 px, prints only
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hashlib_vit.data import Split, TensorBatches, TensorTransform  # noqa: E402
from hashlib_vit.data.feature_cache import CachedBatches, build_feature_cache  # noqa: E402
from hashlib_vit.losses import build_loss  # noqa: E402
from hashlib_vit.models import build_model  # noqa: E402
from hashlib_vit.models.partial import PartialModel, freeze_prefix  # noqa: E402
from hashlib_vit.train import TrainConfig, train  # noqa: E402
from hashlib_vit.utils import atomic_write_json, atomic_write_text, seed_everything  # noqa: E402


def synthetic_split(n: int, classes: int = 10, size: int = 32, seed: int = 0) -> Split:
    """CIFAR-like uint8 32-px images (up-sampled by the transform, as CIFAR runs at 224 px are)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return Split(images, torch.nn.functional.one_hot(y, classes).float(), [str(i) for i in range(n)])


def images_per_s(history: dict, warmup: int, batch: int) -> tuple[float, int]:
    steps = history["steps"]
    timed = len(steps) - warmup
    dt = steps[-1]["time_s"] - steps[warmup - 1]["time_s"] if warmup else steps[-1]["time_s"]
    return timed * batch / dt, timed


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    load_start = [round(v, 2) for v in os.getloadavg()]
    seed_everything(0)
    model0 = build_model(args.backbone, args.bits, "cls_linear", img_size=args.img_size)
    depth = len(model0.backbone.model.blocks)
    n_frozen = depth - 1 if args.freeze is None else args.freeze
    size = model0.img_size
    resize = round(size * 256 / 224)
    train_tf, eval_tf = TensorTransform(size, resize=resize, hflip=True), TensorTransform(size, resize=resize)
    split = synthetic_split(args.images)
    cfg = TrainConfig(epochs=1000, batch_size=args.batch, lr=1e-4, optimizer="adamw", seed=0)
    steps = args.warmup + args.steps
    if steps * args.batch > args.images:
        cfg.epochs = 1000  # several epochs of the small split: fine, the order is reshuffled
    loss_of = lambda: build_loss("dpsh", args.bits, 10, False)  # noqa: E731
    out: dict = {}

    def timed(name, model, batches):
        torch.manual_seed(1)
        h = train(model, loss_of(), batches, cfg, progress=False, max_steps=steps)
        ips, n = images_per_s(h, args.warmup, args.batch)
        out[name] = {"images_per_s": ips, "timed_steps": n, "s_per_step": args.batch / ips}
        print(f"{name:>7}: {ips:8.3f} img/s ({args.batch / ips:.3f} s/step over {n} steps)", flush=True)

    tb = TensorBatches(split, args.batch, train_tf, train=True, seed=0)
    timed("full", copy.deepcopy(model0), tb)
    frozen = copy.deepcopy(model0)
    freeze_prefix(frozen, n_frozen)
    timed("frozen", frozen, tb)
    cached = copy.deepcopy(model0)
    freeze_prefix(cached, n_frozen)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache = build_feature_cache(cached, n_frozen, split, split_checksum="bench", train_tf=train_tf,
                                    eval_tf=eval_tf, views=1, cache_dir=tmp, chunk=args.batch)
        build_s = time.perf_counter() - t0
        out["cache_build"] = {"seconds": build_s, "images": args.images, "views": 1, "bytes": cache.manifest["bytes"],
                              "images_per_s": args.images / build_s}
        print(f"  build: {build_s:.2f} s for {args.images} images ({args.images / build_s:.3f} img/s, "
              f"{cache.manifest['bytes'] / 2**20:.1f} MiB)", flush=True)
        timed("cached", PartialModel(cached, n_frozen), CachedBatches(cache, split, args.batch, seed=0))
        del cache
    a, b, c = (out[k]["images_per_s"] for k in ("full", "frozen", "cached"))
    saved_per_image = 1 / b - 1 / c  # seconds one epoch image costs less with the cache
    out["ratios"] = {"cached_over_frozen": c / b, "cached_over_full": c / a, "frozen_over_full": b / a}
    out["break_even_epochs"] = (build_s / args.images) / saved_per_image if saved_per_image > 0 else None
    out["workload"] = {"backbone": args.backbone, "img_size": size, "depth": depth, "frozen_blocks": n_frozen,
                       "head": "cls_linear", "bits": args.bits, "loss": "dpsh", "batch": args.batch,
                       "warmup_steps": args.warmup, "images": args.images, "threads": torch.get_num_threads()}
    out["machine"] = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                      "load_average_start": load_start,
                      "load_average_end": [round(v, 2) for v in os.getloadavg()], "processor": platform.processor()}
    print(f"cached/frozen = {c / b:.2f}x, cached/full = {c / a:.2f}x, break-even after "
          f"{out['break_even_epochs']:.2f} epochs" if out["break_even_epochs"] else "no break-even", flush=True)
    return out


def markdown(r: dict, command: str) -> str:
    w, m, rt = r["workload"], r["machine"], r["ratios"]
    rows = [("(a) full fine-tuning", r["full"]), (f"(b) {w['frozen_blocks']} blocks frozen, no cache", r["frozen"]),
            (f"(c) {w['frozen_blocks']} blocks frozen, feature cache", r["cached"])]
    lines = [
        "# Partial fine-tuning: training throughput with and without the feature cache", "",
        f"Produced by `{command}` (benchmarks/bench_cache.py); raw numbers in `cache.json`.", "",
        f"* workload: {w['backbone']} (random weights) at {w['img_size']} px, depth {w['depth']}, "
        f"{w['frozen_blocks']} blocks frozen, head {w['head']} ({w['bits']} bits), loss {w['loss']}, batch {w['batch']}, "
        f"AdamW, fp32; {w['images']} synthetic 32-px images up-sampled by the 224-px train transform (resize 256, "
        "random crop 224, flip) for (a) and (b)",
        f"* machine: CPU ({m['cpus']} cores, shared), {w['threads']} torch threads, torch {m['torch']}, "
        f"python {m['python']}, load average (1, 5, 15 min) at the start {tuple(m.get('load_average_start', ()))}, "
        f"at the end {tuple(m['load_average_end'])}",
        f"* {w['warmup_steps']} warm-up step(s), then the timed steps; images/s from the training loop's step clock", "",
        "| run | timed steps | s / step | train img/s |", "|---|---|---|---|",
    ]
    lines += [f"| {name} | {v['timed_steps']} | {v['s_per_step']:.3f} | {v['images_per_s']:.3f} |" for name, v in rows]
    cb = r["cache_build"]
    be = r["break_even_epochs"]
    lines += [
        "",
        f"* **cached / frozen-uncached = {rt['cached_over_frozen']:.2f}x** (target >= 3x); "
        f"**cached / full = {rt['cached_over_full']:.2f}x** (target >= 8x); frozen / full = {rt['frozen_over_full']:.2f}x",
        f"* cache build: {cb['seconds']:.2f} s for {cb['images']} images x {cb['views']} view "
        f"({cb['images_per_s']:.3f} img/s, {cb['bytes'] / 2**20:.1f} MiB of fp16 tokens, "
        f"{cb['bytes'] / cb['images'] / 1024:.0f} KiB per image and view)",
        f"* break-even: the build costs {cb['seconds'] / cb['images']:.3f} s per image and view, each epoch of the "
        f"cached run saves {1 / r['frozen']['images_per_s'] - 1 / r['cached']['images_per_s']:.3f} s per image "
        f"against the uncached frozen run, so the cache pays for itself after "
        f"**{be:.2f} epochs** with one view (k views: k times as many)." if be else "* no break-even",
        "",
        "CPU run on a machine shared with other jobs: absolute numbers depend on its load; the three runs are "
        "measured in the same process, one after the other, so the ratios are the result.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: vit_tiny_patch16_224 at 64 px, batch 8, "
                                                        "1 + 2 steps; prints only unless --out is given")
    p.add_argument("--backbone", default="vit_small_patch16_224")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--freeze", type=int, default=None, help="blocks to freeze (default: depth - 1)")
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--images", type=int, default=64, help="training images (cache size)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    p.add_argument("--out", default=None, help="Markdown output (default results/benchmarks/cache.md; none with --quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.backbone, args.img_size, args.batch, args.steps, args.images = "vit_tiny_patch16_224", 64, 8, 2, 16
    r = run(args)
    out = args.out or (None if args.quick else str(ROOT / "results" / "benchmarks" / "cache.md"))
    if out:
        command = "python benchmarks/bench_cache.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        atomic_write_text(out, markdown(r, command.strip()))
        atomic_write_json(Path(out).with_suffix(".json"), r)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
