"""A real training process killed with SIGKILL at a random step, then resumed in the same run
directory, ends with exactly the codes, mAP and loss trajectory of an uninterrupted run (CPU, seed 0)."""
import csv
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from hashlib_vit.errors import ConfigError
from hashlib_vit.experiment import run_experiment

RUN = dict(protocol="digits", backbone="vit32_test", loss="dpsh", bits=16, epochs=4, batch_size=64, lr=2e-3,
           warmup_steps=3, grad_clip=1.0, device="cpu", progress=False, eval_every=2)  # 8 steps per epoch, 32 steps


def cli_args(params: dict) -> list[str]:
    args = []
    for k, v in params.items():
        args += ["--" + k.replace("_", "-"), str(v).lower() if isinstance(v, bool) else str(v)]
    return args


def logged_steps(path) -> int:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return 0
    return max(len(lines) - 2, 0)  # header and a possibly incomplete last line


def test_sigkill_at_random_step_then_resume_is_exact(tmp_path, one_thread, root):
    reference = run_experiment(**RUN, run_dir=str(tmp_path / "ref"))

    run_dir = tmp_path / "killed"
    kill_at = random.Random().randint(6, 22)  # some step after the first checkpoint (every 4 steps)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-m", "hashlib_vit", "train", *cli_args(RUN),
                              "--run-dir", str(run_dir), "--checkpoint-every-steps", "4"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while logged_steps(run_dir / "train_log.csv") < kill_at and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, f"child ended on its own before step {kill_at}: {child.stderr.read()}"
    child.stderr.close()
    assert not (run_dir / "metrics.json").exists()
    assert (run_dir / "checkpoint.pt").exists()

    # a changed training parameter is refused, naming it, and leaves the run directory as it was
    with pytest.raises(ConfigError, match=r"config\.lr: checkpoint 0\.002 vs now 0\.001"):
        run_experiment(**{**RUN, "lr": 1e-3}, run_dir=str(run_dir), resume=True, checkpoint_every_steps=4)

    resumed = run_experiment(**RUN, run_dir=str(run_dir), resume=True, checkpoint_every_steps=4)
    start = resumed.history["resumed_from"]["step"]
    assert 4 <= start and start % 4 == 0, f"killed near step {kill_at}, resumed from {start}"
    assert resumed.metrics["resumed_from_step"] == start
    assert np.array_equal(resumed.query_codes, reference.query_codes)
    assert np.array_equal(resumed.db_codes, reference.db_codes)
    assert resumed.metrics["map"] == reference.metrics["map"]
    with open(run_dir / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 33)), f"kill at {kill_at}: the log has gaps or duplicates"
    assert [float(r["loss"]) for r in rows] == [r["loss"] for r in reference.history["steps"]]
    assert [e["map"] for e in resumed.history["evals"]] == [e["map"] for e in reference.history["evals"]]
