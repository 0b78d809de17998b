"""Run by tests/test_train_ddp.py under torchrun (and in one process for the reference): train the
unit-test ViT a few steps with a global-batch loss (DPSH) and a per-shard loss (CSQ with
``needs_global_batch = False``) on uneven shards, and write the loss trajectories as JSON.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT.json
"""
import json
import sys

import torch

from hashlib_vit.train import distributed as D
from hashlib_vit.data import Split, TensorBatches, TensorTransform
from hashlib_vit.losses import build_loss
from hashlib_vit.losses.csq import CSQLoss
from hashlib_vit.models import build_model
from hashlib_vit.train import TrainConfig, train
from hashlib_vit.utils import seed_everything


class ShardCSQ(CSQLoss):
    needs_global_batch = False  # a mean of per-item terms: each process computes its own shard


def trajectory(loss_name: str, info) -> list[float]:
    seed_everything(0)
    g = torch.Generator().manual_seed(0)
    n, classes = 45, 4  # batch 15: shards of 8 and 7 items under 2 processes
    y = torch.arange(n) % classes
    split = Split(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                  torch.nn.functional.one_hot(y, classes).float())
    model = build_model("vit32_test", 16, "cls_linear")
    loss = ShardCSQ(16, classes) if loss_name == "csq_shard" else build_loss(loss_name, 16, classes, False)
    batches = TensorBatches(split, 15, TensorTransform(32, pad_crop=2, hflip=True), train=True, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=15, lr=2e-3, warmup_steps=1, grad_clip=1.0, weight_decay=1e-4)
    hist = train(model, loss, batches, cfg, progress=False, dist_info=info)
    return [r["loss"] for r in hist["steps"]]


def main(out: str) -> None:
    torch.set_num_threads(1)
    info = D.init_distributed("cpu")
    result = {name: trajectory(name, info) for name in ("dpsh", "csq_shard")}
    if info.is_main:
        with open(out, "w") as f:
            json.dump({"world_size": info.world_size, **result}, f)
    if info.enabled:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
