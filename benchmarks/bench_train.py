"""Training and encoding throughput of hashlib_vit's engine against a plain fp32 reference loop.

Both paths train the same model (ViT + hash head) with the same loss (DPSH) on the same images, in
one run:

* **ours**: :func:`hashlib_vit.train.train` on a :class:`~hashlib_vit.data.TensorBatches` kept on
  the device (batched on-device resize / crop / flip), bf16 autocast and fused AdamW on CUDA,
  optionally ``torch.compile``; encoding with :func:`hashlib_vit.retrieval.encode` (bf16 on CUDA).
* **plain**: what the reference implementations do: a torchvision ``DataLoader`` whose dataset
  decodes each image to PIL and applies ``Resize / RandomCrop / RandomHorizontalFlip / ToTensor``,
  fp32 forward/backward, ``torch.optim.Adam``, ``loss.item()`` every step; encoding through the same
  kind of loader in fp32.

Workloads: ViT-B/16 at 224 px (images up-sampled from 32 px, as CIFAR runs do) and the small 32-px
ViT (``vit32_small``). On CUDA the script also reports model FLOPs utilisation (MFU): the FLOPs of
one training step (counted by ``torch.utils.flop_counter``) times steps/s, over the device's
*measured* dense bf16 matmul rate (on CPU: over the measured fp32 matmul rate, for information).

    python benchmarks/bench_train.py                       # CPU: small batches, few steps
    python benchmarks/bench_train.py --device cuda --compile --out results/benchmarks/train_gpu.md

Writes a Markdown table (with device, versions, command) to ``--out`` and the raw numbers next to it
as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hashlib_vit.data import Split, TensorBatches, TensorTransform  # noqa: E402
from hashlib_vit.losses import build_loss  # noqa: E402
from hashlib_vit.models import build_model  # noqa: E402
from hashlib_vit.retrieval import encode  # noqa: E402
from hashlib_vit.train import TrainConfig, amp_dtype, train  # noqa: E402
from hashlib_vit.utils import atomic_write_json, atomic_write_text, env_info, seed_everything  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_split(n: int, classes: int = 10, size: int = 32, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return Split(images, torch.nn.functional.one_hot(y, classes).float(), [str(i) for i in range(n)])


# ----------------------------------------------------------------------------- the plain reference
class PilDataset(torch.utils.data.Dataset):
    """uint8 arrays decoded to PIL images per item, torchvision transforms per item (reference style)."""

    def __init__(self, split: Split, transform):
        self.images = split.images.permute(0, 2, 3, 1).numpy()  # HWC uint8, as decoded files would be
        self.labels = split.labels
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i], i


def pil_transform(img_size: int, train: bool):
    from torchvision import transforms as T

    if img_size == 32:
        ops = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    else:
        resize = int(round(img_size * 256 / 224))
        ops = [T.Resize(resize), T.RandomCrop(img_size) if train else T.CenterCrop(img_size)]
        ops += [T.RandomHorizontalFlip()] if train else []
    return T.Compose(ops + [T.ToTensor()])


def plain_train(model, loss, split, img_size, batch, steps, warmup, device, workers):
    loader = torch.utils.data.DataLoader(PilDataset(split, pil_transform(img_size, True)), batch_size=batch,
                                         shuffle=True, num_workers=workers, drop_last=True,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    model.to(device).train()
    loss.to(device)
    opt = torch.optim.Adam(list(model.parameters()) + list(loss.parameters()), lr=1e-4)
    done, t_start = 0, None
    while done < warmup + steps:
        for x, y, idx in loader:
            if done == warmup:
                sync(device)
                t_start = time.perf_counter()
            x, y = x.to(device), y.to(device)
            res = loss(model(x), y, idx)
            opt.zero_grad()
            res.total.backward()
            opt.step()
            res.total.item()
            done += 1
            if done == warmup + steps:
                break
    sync(device)
    return steps * batch / (time.perf_counter() - t_start)


def plain_encode(model, split, img_size, batch, device, workers):
    loader = torch.utils.data.DataLoader(PilDataset(split, pil_transform(img_size, False)), batch_size=batch,
                                         shuffle=False, num_workers=workers, pin_memory=device.type == "cuda")
    model.to(device).eval()
    out = []
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for x, _, _ in loader:
            out.append(torch.sign(model(x.to(device)).u).cpu())
    sync(device)
    return len(split) / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- our engine
def transforms(img_size):
    if img_size == 32:
        return TensorTransform(32, pad_crop=4, hflip=True), TensorTransform(32)
    resize = int(round(img_size * 256 / 224))
    return TensorTransform(img_size, resize=resize, hflip=True), TensorTransform(img_size, resize=resize)


def ours_train(model, loss, split, img_size, batch, steps, warmup, device, compile_):
    tr, _ = transforms(img_size)
    batches = TensorBatches(split, batch, tr, train=True, seed=0, device=device)
    cfg = TrainConfig(epochs=max(1, -(-(warmup + steps) // len(batches))), batch_size=batch, lr=1e-4,
                      optimizer="adamw", schedule="constant", compile=compile_)
    hist = train(model, loss, batches, cfg, device=device, progress=False, max_steps=warmup + steps)
    t = [r["time_s"] for r in hist["steps"]]
    return steps * batch / (t[warmup + steps - 1] - t[warmup - 1])


def ours_encode(model, split, img_size, batch, device, compile_):
    _, ev = transforms(img_size)
    dt = amp_dtype(TrainConfig(), device)
    fwd = torch.compile(model) if compile_ else model
    b = TensorBatches(split, batch, ev, train=False, device=device)
    # warm-up (compile, kernels) on a full batch and on the last, partial one: torch.compile specialises
    # on the batch shape, so an un-warmed tail would time a recompilation instead of the encoding
    n_warm = batch + len(split) % batch
    encode(fwd, TensorBatches(Split(split.images[:n_warm], split.labels[:n_warm]), batch, ev, train=False,
                              device=device), device=device, amp_dtype=dt)
    sync(device)
    t0 = time.perf_counter()
    encode(fwd, b, device=device, amp_dtype=dt)
    sync(device)
    return len(split) / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- FLOPs and MFU
def step_flops(model, loss, img_size, batch, device) -> float:
    """FLOPs of one forward + backward at `batch` (counted by torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, 3, img_size, img_size, device=device)
    y = torch.nn.functional.one_hot(torch.arange(batch) % 10, 10).float().to(device)
    model.to(device).train()
    with FlopCounterMode(display=False) as fc:
        loss(model(x), y, torch.arange(batch)).total.backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def matmul_rate(device, dtype, n: int, iters: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile our path (CUDA)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers of the plain loop")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--vitb-batch", type=int, default=None)
    p.add_argument("--small-batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed training steps per measurement")
    p.add_argument("--only", choices=["vitb", "small"], default=None)
    p.add_argument("--out", default="results/benchmarks/train.md")
    p.add_argument("--render", default=None, metavar="RAW.json", help="only rewrite the Markdown of an earlier run")
    a = p.parse_args(argv)
    if a.render:
        raw_path = Path(a.render)
        atomic_write_text(raw_path.with_suffix(".md"), render(json.loads(raw_path.read_text()), raw_path.name))
        return
    from hashlib_vit.utils import resolve_device

    device = resolve_device(a.device)
    cuda = device.type == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    workers = a.workers if a.workers is not None else (8 if cuda else 0)
    steps = a.steps or (30 if cuda else 3)
    warmup = 5 if cuda else 1
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        peak = matmul_rate(device, torch.bfloat16, 8192, 50)
        peak_label = "measured bf16 matmul (8192^3)"
    else:
        peak = matmul_rate(device, torch.float32, 1024, 10)
        peak_label = "measured fp32 matmul (1024^3)"
    workloads = {
        "vitb": dict(backbone="vit_base_patch16_224", img_size=224, batch=a.vitb_batch or (256 if cuda else 4),
                     n_train=None, n_encode=8192 if cuda else 16),
        "small": dict(backbone="vit32_small", img_size=32, batch=a.small_batch or (256 if cuda else 64),
                      n_train=None, n_encode=50000 if cuda else 512),
    }
    results = []
    for name, w in workloads.items():
        if a.only and a.only != name:
            continue
        n_train = w["batch"] * (warmup + steps)
        split = synthetic_split(max(n_train, w["batch"] * 2))
        enc_split = synthetic_split(w["n_encode"], seed=1)
        row = {"workload": name, "backbone": w["backbone"], "img_size": w["img_size"], "batch": w["batch"],
               "timed_steps": steps}
        for path in ("plain", "ours"):
            seed_everything(0)
            model = build_model(w["backbone"], 64, "cls_linear", img_size=w["img_size"])
            loss = build_loss("dpsh", 64, 10, False)
            if path == "plain":
                row["train_plain"] = plain_train(model, loss, split, w["img_size"], w["batch"], steps, warmup, device,
                                                 workers)
                row["encode_plain"] = plain_encode(model, enc_split, w["img_size"], w["batch"], device, workers)
            else:
                row["train_ours"] = ours_train(model, loss, split, w["img_size"], w["batch"], steps, warmup, device,
                                               a.compile)
                row["encode_ours"] = ours_encode(model, enc_split, w["img_size"], w["batch"], device, a.compile)
                seed_everything(0)
                fl_model = build_model(w["backbone"], 64, "cls_linear", img_size=w["img_size"])
                flops = step_flops(fl_model, loss, w["img_size"], min(w["batch"], 8), device) / min(w["batch"], 8)
                row["train_flops_per_image"] = flops
                row["mfu_ours"] = row["train_ours"] * flops / peak
                row["mfu_plain"] = row["train_plain"] * flops / peak
            del model, loss
            if cuda:
                torch.cuda.empty_cache()
        row["train_speedup"] = row["train_ours"] / row["train_plain"]
        row["encode_speedup"] = row["encode_ours"] / row["encode_plain"]
        results.append(row)
        print(json.dumps(row), flush=True)

    env = env_info(device)
    env["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    env["threads"] = torch.get_num_threads()
    env["plain_loader_workers"] = workers
    command = "python benchmarks/bench_train.py " + " ".join(sys.argv[1:] if argv is None else argv)
    raw = {"command": command.strip(), "env": env, "peak_flops": peak, "peak": peak_label, "compile": a.compile,
           "results": results}
    out = ROOT / a.out if not Path(a.out).is_absolute() else Path(a.out)
    atomic_write_json(out.with_suffix(".json"), raw)
    atomic_write_text(out, render(raw, out.with_suffix(".json").name))
    print(out.read_text())


def render(raw: dict, json_name: str) -> str:
    """The Markdown report of one benchmark run (from its raw JSON)."""
    env, results = raw["env"], raw["results"]
    cuda = env["device"].startswith("cuda")
    load = tuple(round(x, 1) for x in env.get("load_average") or ())
    g = lambda v: f"{v:.3g}"  # noqa: E731
    lines = [
        "# Training engine throughput: hashlib_vit vs a plain fp32 loop",
        "",
        f"Produced by `{raw['command']}` (benchmarks/bench_train.py); raw numbers in `{json_name}`.",
        "",
        f"* device: {env['device']} ({env['device_name']}), torch {env['torch']}, timm {env['timm']}, "
        f"torchvision {env.get('torchvision')}, python {env['python']}, {env['cpu_count']} CPUs, "
        f"{env['threads']} torch threads, load average at the end {load}",
        f"* ours: TensorBatches on the device, amp={'bf16' if cuda else 'off (fp32 on CPU)'}, "
        f"{'fused ' if cuda else ''}AdamW, compile={raw.get('compile')}; plain: DataLoader of PIL images "
        f"({env['plain_loader_workers']} workers), fp32, Adam; same model (ViT + 64-bit hash layer) and loss (DPSH)",
        f"* peak for MFU: {raw['peak']} = {raw['peak_flops'] / 1e12:.3g} TFLOP/s; training FLOPs per image counted "
        "by torch's FlopCounterMode (forward + backward)",
        "",
        "| workload | batch | timed steps | train img/s ours | train img/s plain | train ratio | MFU ours | MFU plain "
        "| encode img/s ours | encode img/s plain | encode ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['backbone']} @ {r['img_size']} px | {r['batch']} | {r['timed_steps']} | "
                     f"{g(r['train_ours'])} | {g(r['train_plain'])} | {r['train_speedup']:.2f}x | "
                     f"{100 * r['mfu_ours']:.1f}% | {100 * r['mfu_plain']:.1f}% | {g(r['encode_ours'])} | "
                     f"{g(r['encode_plain'])} | {r['encode_speedup']:.2f}x |")
    if not cuda:
        lines += [
            "",
            "CPU run on a shared machine: absolute numbers depend on its load; the ratios (both paths measured in "
            "the same run) are the result. On CPU both paths compute in fp32, so the ratio measures the data path "
            "and loop overheads only. MFU on CPU is against the measured fp32 matmul rate (information only).",
            "",
            "GPU figures (the targets: ViT-B/16 training step at >= 40 % MFU against the measured bf16 matmul "
            "rate, encoding >= 8,000 images/s, >= 3x the plain fp32 loop) come from a CUDA run: "
            "`python benchmarks/bench_train.py --device cuda --compile --out results/benchmarks/train_gpu.md` "
            "(see train_gpu.md when it exists).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
