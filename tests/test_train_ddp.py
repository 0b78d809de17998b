"""torchrun on CPU (gloo, 2 processes): `python -m hashlib_vit train` trains with DDP, only rank 0
writes the run directory (same files, same metrics format), and the loss trajectory matches a
single-process run with the same global batch."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from hashlib_vit.experiment import run_experiment

RUN = dict(protocol="digits", backbone="vit32_test", bits=16, epochs=1, batch_size=64, lr=2e-3, warmup_steps=2,
           grad_clip=1.0, device="cpu", progress=False, save_codes=True)  # 8 steps; the last batch has 52 items


def run_torchrun(run_dir, root, loss):
    args = [f"--{k.replace('_', '-')}={str(v).lower() if isinstance(v, bool) else v}" for k, v in RUN.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hashlib_vit", "train", *args, f"--loss={loss}", f"--run-dir={run_dir}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.parametrize("loss", ["dpsh", pytest.param("csq", marks=pytest.mark.slow)])
def test_torchrun_two_processes_matches_single_process(tmp_path, root, loss):
    run_torchrun(tmp_path / "ddp", root, loss)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run_experiment(**RUN, loss=loss, run_dir=str(tmp_path / "single"))
    finally:
        torch.set_num_threads(n)

    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    assert sorted(p.name for p in ddp_dir.iterdir()) == sorted(p.name for p in single_dir.iterdir())
    m_ddp = json.loads((ddp_dir / "metrics.json").read_text())
    assert set(m_ddp) == set(single.metrics) and m_ddp["world_size"] == 2 and single.metrics["world_size"] == 1
    assert json.loads((ddp_dir / "config.json").read_text())["world_size"] == 2
    with open(ddp_dir / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))  # written once (rank 0), not once per process
    ddp_losses = [float(r["loss"]) for r in rows]
    single_losses = [r["loss"] for r in single.history["steps"]]
    assert ddp_losses == pytest.approx(single_losses, rel=1e-4, abs=1e-5)
    assert abs(m_ddp["map"] - single.metrics["map"]) < 0.02


@pytest.mark.slow
def test_global_and_per_shard_losses_match_single_process_on_uneven_shards(tmp_path, root):
    """DPSH (gathered global batch) and a per-shard loss (CSQ with needs_global_batch=False, weighted
    by shard size) on shards of 8 and 7 items: the 2-process trajectory equals the 1-process one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    worker = str(root / "tests" / "ddp_worker.py")
    for nproc, out in ((2, tmp_path / "ddp.json"), (1, tmp_path / "single.json")):
        cmd = [sys.executable, worker, str(out)] if nproc == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker, str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
    ddp, single = (json.loads((tmp_path / f).read_text()) for f in ("ddp.json", "single.json"))
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    for name in ("dpsh", "csq_shard"):
        assert len(ddp[name]) == 6
        assert ddp[name] == pytest.approx(single[name], rel=1e-4, abs=1e-6), name
