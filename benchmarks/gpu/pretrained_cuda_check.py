"""The pretrained path on CUDA, end to end (GPU campaign D): stand-in ViT-B/16 weights in Google's JAX
``.npz`` layout loaded at 224 px, then on the same data and seed: the training-free floor (ITQ), partial
fine-tuning with and without the feature cache (11 of 12 blocks frozen), and full fine-tuning; reports
wall times, the cache's build time and size, and how far the cached run's codes agree with the uncached
ones (bf16 autocast on CUDA: exact equality is not expected there; the CPU test asserts it in fp32).

    python benchmarks/gpu/pretrained_cuda_check.py --out $OUT/pretrained_cuda.json [--smoke]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="CPU scale: vit_tiny at 32 px, 1 epoch")
    p.add_argument("--epochs", type=int, default=5)
    a = p.parse_args(argv)
    import numpy as np
    import torch

    from hashlib_vit.data import PROTOCOLS
    from hashlib_vit.experiment import RunConfig, run_experiment
    from hashlib_vit.models.standin import write_standin_checkpoint

    arch, size, device = ("vit_tiny_patch16_224", 32, "cpu") if a.smoke else ("vit_base_patch16_224", 224, "cuda")
    epochs = 1 if a.smoke else a.epochs
    tmp = Path(tempfile.mkdtemp(prefix="cuda_check_"))
    weights = str(write_standin_checkpoint(arch, tmp / "ViT-B_16.npz", "npz", seed=0))
    data = PROTOCOLS.get("digits").load(None)
    common = dict(protocol="digits", backbone=arch, weights=weights, img_size=size, bits=64, epochs=epochs,
                  batch_size=64, lr=1e-3, backbone_lr=1e-4, seed=0, device=device, progress=False,
                  cache_dir=str(tmp / "cache"), save_codes=False)
    out: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "backbone": arch,
                 "img_size": size, "epochs": epochs, "protocol": "digits", "torch": torch.__version__,
                 "weights": "stand-in (random values, Google JAX npz layout)", "runs": {}}
    variants = {
        "itq (training-free)": dict(loss="itq"),
        "csq, 11 blocks frozen, feature cache (2 views)": dict(loss="csq", freeze_blocks=11, feature_cache=True,
                                                             cache_views=2),
        "csq, 11 blocks frozen, no cache": dict(loss="csq", freeze_blocks=11),
        "csq, full fine-tuning": dict(loss="csq"),
    }
    codes = {}
    for name, extra in variants.items():
        t = time.perf_counter()
        try:
            r = run_experiment(RunConfig(**common, **extra, run_dir=str(tmp / f"run{len(out['runs'])}")), data=data)
        except Exception as e:  # noqa: BLE001 - report and go on
            out["runs"][name] = {"error": f"{type(e).__name__}: {e}"}
            print(name, "FAILED", e, flush=True)
            continue
        row = {"wall_s": round(time.perf_counter() - t, 2), "train_time_s": r.metrics["train_time_s"],
               "map": r.metrics["map"], "map_random": r.metrics["map_random"],
               "weights_format": r.model.backbone.weights_info["format"],
               "pos_embed_resampled_from": r.model.backbone.weights_info["pos_embed_resampled_from"]}
        cache_file = r.run_dir / "feature_cache.json"
        if cache_file.is_file():
            c = json.loads(cache_file.read_text())
            row.update(cache_build_s=c["build_seconds"], cache_mib=round(c["bytes"] / 2**20, 1), cache_shape=c["shape"])
        codes[name] = r.query_codes
        out["runs"][name] = row
        print(name, json.dumps(row), flush=True)
    keys = list(codes)
    frozen = [k for k in keys if "frozen" in k]
    if len(frozen) == 2:
        out["cached_vs_uncached_query_bit_agreement"] = float(np.mean(codes[frozen[0]] == codes[frozen[1]]))
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
