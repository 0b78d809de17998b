"""train/steplog.py: the per-step CSV log and the buffer that brings step values to the host once per
flush — the values, the flush points, one host transfer per flush, and the non-finite-loss check."""
import csv
import sys

import pytest
import torch

from hashlib_vit.data import Split, TensorBatches, TensorTransform
from hashlib_vit.errors import ConfigError, DataError
from hashlib_vit.losses import build_loss
from hashlib_vit.models import build_model
from hashlib_vit.train import StepBuffer, StepLog, TrainConfig, train
from hashlib_vit.train import distributed as D
from hashlib_vit.utils import seed_everything


class Bar:
    def __init__(self):
        self.n, self.postfix = 0, None

    def update(self, n):
        self.n += n

    def set_postfix(self, **kw):
        self.postfix = kw


def test_steplog_rows_until_trims_to_the_checkpoint(tmp_path):
    log = StepLog(tmp_path / "log.csv")
    for s in range(1, 6):
        log.write({"step": s, "epoch": 0, "loss": s / 4, "grad_norm": None})
    log.close()
    with open(tmp_path / "log.csv", "a") as f:
        f.write("6,0,1.5")  # a line cut by a kill
    rows = StepLog(tmp_path / "log.csv").rows_until(3)
    assert rows == [{"step": s, "epoch": 0, "loss": s / 4, "grad_norm": None} for s in (1, 2, 3)]
    assert (tmp_path / "log.csv").read_text().splitlines() == ["step,epoch,loss,grad_norm", "1,0,0.25,",
                                                               "2,0,0.5,", "3,0,0.75,"]
    again = StepLog(tmp_path / "log.csv")  # appending after a resume keeps the header
    again.write({"step": 4, "epoch": 1, "loss": 9.0, "grad_norm": 2.0, "extra": 1})
    again.close()
    assert (tmp_path / "log.csv").read_text().splitlines()[-1] == "4,1,9.0,2.0"
    with pytest.raises(DataError, match=r"holds steps 1\.\.4 but the checkpoint is at step 6"):
        StepLog(tmp_path / "log.csv").rows_until(6)
    with pytest.raises(DataError, match="missing but the checkpoint is at step 2"):
        StepLog(tmp_path / "none.csv").rows_until(2)
    assert StepLog(None).rows_until(5) == []


def test_buffer_flush_writes_the_values_of_every_step(tmp_path):
    history, bar = [], Bar()
    buf = StepBuffer(StepLog(tmp_path / "log.csv"), history, bar, D.SINGLE, every=3, batch_size=8,
                     start_step=4, elapsed0=10.0)
    for s in (5, 6, 7):
        t = torch.tensor(0.5 * s)
        buf.append(step=s, epoch=1, batch=s - 5, total=t, parts={"pair": t / 2, "beta": torch.tensor(2.0, dtype=torch.float64)},
                   grad_norm=torch.tensor(float(s)) if s != 6 else None, lr=1e-3 * s)
    assert len(history) == 0 and len(buf) == 3 and bar.n == 0 and not (tmp_path / "log.csv").exists()
    assert [buf.due(s) for s in (5, 6, 7, 9)] == [False, True, False, True]
    buf.flush(lambda: "unused")
    buf.log.close()
    assert len(buf) == 0 and bar.n == 3 and bar.postfix["loss"] == "3.5000"
    assert [(r["step"], r["loss"], r["loss_pair"], r["loss_beta"], r["grad_norm"], r["lr"]) for r in history] == [
        (5, 2.5, 1.25, 2.0, 5.0, 0.005), (6, 3.0, 1.5, 2.0, None, 0.006), (7, 3.5, 1.75, 2.0, 7.0, 0.007)]
    assert list(history[0]) == ["step", "epoch", "loss", "loss_pair", "loss_beta", "lr", "grad_norm", "time_s",
                                "images_per_s"]
    times = [r["time_s"] for r in history]
    assert times == sorted(times) and times[0] >= 10.0 and history[-1]["images_per_s"] > 0
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), float(r["loss"]), r["grad_norm"]) for r in rows] == [(5, 2.5, "5.0"), (6, 3.0, ""),
                                                                                 (7, 3.5, "7.0")]
    buf.flush(lambda: "unused")  # nothing buffered: nothing happens
    assert bar.n == 3


def test_buffer_names_the_first_non_finite_step(tmp_path):
    history = []
    buf = StepBuffer(StepLog(tmp_path / "log.csv"), history, Bar(), D.SINGLE, every=10, batch_size=8)
    for s, v in ((1, 1.0), (2, 0.5), (3, float("inf")), (4, float("nan"))):
        buf.append(step=s, epoch=0, batch=s - 1, total=torch.tensor(v), parts={}, grad_norm=None, lr=0.1)
    with pytest.raises(FloatingPointError, match=r"loss became inf at step 3 \(epoch 0, batch 2\); LAST\. Lower"):
        buf.flush(lambda: "LAST")
    buf.log.close()
    assert [r["step"] for r in history] == [1, 2]  # the good rows are kept, in the log too
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3


def test_one_host_transfer_per_flush(monkeypatch):
    """A 10-step run with log_every_steps=5: the loop and the loss (hashlib_vit.train / losses / models)
    synchronise with the device twice — two ``tolist`` calls — and never per step."""
    calls = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, **k):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith(("hashlib_vit.train", "hashlib_vit.losses", "hashlib_vit.models")):
                calls.append((name, caller))
            return original(self, *a, **k)
        return wrapper

    batches = _batches(40, generator_seed=0)  # 5 steps per epoch
    model, loss = build_model("vit32_test", 8, "cls_linear"), build_loss("dpsh", 8, 4)
    cfg = TrainConfig(epochs=2, batch_size=8, warmup_steps=1, grad_clip=1.0, log_every_steps=5)
    for name in ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    hist = train(model, loss, batches, cfg, progress=False)
    monkeypatch.undo()
    assert [c[0] for c in calls] == ["tolist", "tolist"], calls
    assert [r["step"] for r in hist["steps"]] == list(range(1, 11))
    assert all(isinstance(r["loss"], float) and isinstance(r["loss_quant"], float) and r["grad_norm"] > 0
               for r in hist["steps"])


def test_flush_points_write_the_log_before_checkpoints_and_at_max_steps(tmp_path):
    batches = _batches(48, generator_seed=1)  # 6 steps per epoch
    seen = []

    class Spy(StepLog):
        def write(self, row):
            seen.append(row["step"])
            super().write(row)

    import hashlib_vit.train.loop as loop
    saves = []
    original_save = loop.Checkpointer.save

    def spy_save(self, **kw):
        saves.append((kw["step"], list(seen)))
        original_save(self, **kw)

    model, loss = build_model("vit32_test", 8, "cls_linear"), build_loss("dpsh", 8, 4)
    cfg = TrainConfig(epochs=2, batch_size=8, warmup_steps=1, log_every_steps=4, checkpoint_every_steps=3)
    orig_steplog = loop.StepLog
    loop.StepLog, loop.Checkpointer.save = Spy, spy_save
    try:
        hist = train(model, loss, batches, cfg, progress=False, log_path=tmp_path / "log.csv",
                     checkpoint_path=tmp_path / "ck.pt", max_steps=11)
    finally:
        loop.StepLog, loop.Checkpointer.save = orig_steplog, original_save
    # checkpoints at steps 3, 6 (epoch end), 9; each one after the log holds every step up to it
    assert [s for s, _ in saves] == [3, 6, 9]
    assert all(logged == list(range(1, s + 1)) for s, logged in saves)
    assert seen == list(range(1, 12)) and [r["step"] for r in hist["steps"]] == list(range(1, 12))  # max_steps


def test_log_every_steps_is_validated():
    with pytest.raises(ConfigError, match=r"log_every_steps=0 must be an integer >= 1"):
        TrainConfig(log_every_steps=0).validate()
    with pytest.raises(ConfigError, match="log_every_steps=2.5"):
        TrainConfig(log_every_steps=2.5).validate()


def _batches(n: int, generator_seed: int) -> TensorBatches:
    """Seeds everything, then n random 32-px images of 4 classes in batches of 8."""
    seed_everything(0)
    g = torch.Generator().manual_seed(generator_seed)
    split = Split(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                  torch.nn.functional.one_hot(torch.arange(n) % 4, 4).float())
    return TensorBatches(split, 8, TensorTransform(32), train=True, seed=0)
