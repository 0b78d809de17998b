"""Data-pipeline throughput: our tensor path (TensorBatches) against torchvision ImageFolder + DataLoader.

Both pipelines produce the same thing in the same run: shuffled training batches of augmented
float images at the model's input size (32-pixel native: pad-4 random crop + flip; 224-pixel:
resize 256, random crop 224, flip). The tensor path keeps the decoded uint8 images in memory (on
the GPU when there is one) and augments whole batches at once; the reference decodes JPEG files
with PIL per image in DataLoader worker processes (the usual DeepHash-pytorch recipe).

    python benchmarks/bench_data.py --n 5000 --sizes 32 224 --workers 2 --out results/benchmarks

The images are the real CIFAR-10 JPEGs of ../shared/data/cifar10 (the first --n of the cached pool;
the reference reads the same images extracted as files); without that folder, the embedded digits.
Writes data.json and data.md under --out. Ratios are the claim; absolute times only mean something on
the machine named in the file.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hashlib_vit.data import Split, TensorBatches, TensorTransform  # noqa: E402
from hashlib_vit.utils import atomic_write_json, atomic_write_text, env_info, resolve_device  # noqa: E402


def _pool(n: int, shared: Path):
    if (shared / "cifar10").is_dir():
        from hashlib_vit.data.sources import load_cifar10_pool

        p = load_cifar10_pool(shared / "cifar10")
        order = np.random.default_rng(0).permutation(len(p))[:n]
        return p.images[order], p.classes[order], "CIFAR-10 (real JPEG copy, 32x32)"
    from hashlib_vit.data.digits import load_digits_images

    x, y = load_digits_images(32)
    reps = -(-n // len(y))
    return x.repeat(reps, 1, 1, 1)[:n], np.tile(y, reps)[:n], "embedded digits (32x32)"


def _write_folder(images: torch.Tensor, classes: np.ndarray, root: Path) -> None:
    from PIL import Image

    for i, (im, c) in enumerate(zip(images, classes)):
        d = root / f"c{int(c)}"
        d.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=75)
        (d / f"{i:05d}.jpg").write_bytes(buf.getvalue())


def _time_epoch(batches, sync) -> tuple[float, int]:
    n = 0
    t0 = time.perf_counter()
    for x, *_ in batches:
        n += len(x)
        x.sum().item() if sync else None  # touch the batch so lazy work is really done
    return time.perf_counter() - t0, n


def bench_ours(images, classes, size: int, batch: int, device) -> float:
    split = Split(images, torch.nn.functional.one_hot(torch.as_tensor(classes), 10).float())
    tf = TensorTransform(32, pad_crop=4, hflip=True) if size == 32 else TensorTransform(size, resize=int(size * 256 / 224), hflip=True)
    tb = TensorBatches(split, batch, tf, train=True, seed=0, device=device)
    list(tb.epoch(0, start=len(tb) - 1))  # warm-up (allocations / kernels)
    dt, n = _time_epoch(tb.epoch(1), True)
    return n / dt


def bench_reference(folder: Path, size: int, batch: int, workers: int) -> float:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    if size == 32:
        tf = T.Compose([T.RandomCrop(32, padding=4, padding_mode="reflect"), T.RandomHorizontalFlip(), T.ToTensor()])
    else:
        tf = T.Compose([T.Resize(int(size * 256 / 224)), T.RandomCrop(size), T.RandomHorizontalFlip(), T.ToTensor()])
    ds = ImageFolder(str(folder), transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                     persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    if workers:
        next(iter(dl))  # start the workers before timing
    dt, n = _time_epoch(dl, True)
    return n / dt


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="images per timed epoch (32-pixel)")
    ap.add_argument("--n224", type=int, default=1000, help="images per timed epoch (224-pixel)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the reference")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of our path (default 1: on a shared CPU more threads oversubscribe; "
                         "the reference still gets --workers processes)")
    ap.add_argument("--repeat", type=int, default=3, help="timed epochs per pipeline, interleaved; best is kept")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="results/benchmarks")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    images, classes, what = _pool(max(a.n, a.n224), Path(a.shared))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in a.sizes:
            n = a.n if size == 32 else a.n224
            folder = Path(tmp) / f"n{n}"
            if not folder.exists():
                _write_folder(images[:n], classes[:n], folder)
            ours = ref = 0.0
            for _ in range(a.repeat):  # interleaved, best of --repeat: robust against other load on the machine
                ours = max(ours, bench_ours(images[:n], classes[:n], size, a.batch, device))
                ref = max(ref, bench_reference(folder, size, a.batch, a.workers))
            rows.append({"input": size, "images": n, "ours_img_per_s": round(ours, 1),
                         "reference_img_per_s": round(ref, 1), "ratio": round(ours / ref, 2)})
            print(rows[-1], flush=True)
    env = env_info(device)
    result = {"benchmark": "data pipeline: TensorBatches vs torchvision ImageFolder + DataLoader",
              "data": what, "device": str(device), "device_name": env["device_name"], "batch": a.batch,
              "reference_workers": a.workers, "repeat": a.repeat, "torch_threads": torch.get_num_threads(), "rows": rows,
              "command": "python benchmarks/bench_data.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "env": env, "load_average": [round(v, 1) for v in os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    out = Path(a.out)
    tag = "" if device.type == "cpu" else f"_{device.type}"
    atomic_write_json(out / f"data{tag}.json", result)
    lines = [f"# Data pipeline throughput ({device.type.upper()})", "",
             f"Written by `{result['command']}` on {result['date']} (commit {env['git_commit']}).", "",
             f"* data: {what}; batch {a.batch}; one shuffled training epoch with augmentation, best of {a.repeat} "
             f"interleaved runs per pipeline",
             f"* ours: `TensorBatches` (decoded uint8 tensor on {device}, batched seeded crop/flip/resize; "
             f"{result['torch_threads']} torch thread(s))",
             f"* reference: torchvision `ImageFolder` of the same images as JPEG files + `DataLoader` "
             f"({a.workers} workers, PIL transforms)",
             f"* machine: {env['device_name']}, {env['cpu_count']} CPUs, torch {env['torch']}; load average at the end {result['load_average']}", "",
             "| input px | images | ours img/s | reference img/s | ratio (ours / reference) |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['input']} | {r['images']} | {r['ours_img_per_s']} | {r['reference_img_per_s']} | "
              f"{r['ratio']} |" for r in rows]
    if device.type == "cpu":
        lines += ["", "CPU only: the machine is shared, so absolute rates are indicative; the ratio is the claim. "
                  "GPU figures (the path meant for it: images kept on the device) are still open."]
    atomic_write_text(out / f"data{tag}.md", "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
