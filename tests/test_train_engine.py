"""The training loop (train/loop.py) in-process: checkpoint contents, exact resume, refusal of foreign
checkpoints, non-finite loss and out-of-memory messages, clipping (synthetic data, the unit-test ViT).
Each concern's own unit tests: test_train_optim.py, test_train_checkpoint.py, test_train_steplog.py."""
import csv
import json

import pytest
import torch

from hashlib_vit.data import Split, TensorBatches, TensorTransform
from hashlib_vit.errors import ConfigError
from hashlib_vit.losses.base import HashLoss, LossResult, pair_similarity
from hashlib_vit.models import build_model
from hashlib_vit.train import OutOfMemory, TrainConfig, check_checkpoint, load_checkpoint, train
from hashlib_vit.utils import seed_everything


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # every test here (tests/conftest.py)
    yield


class BankLoss(HashLoss):
    """A pair loss with state: a memory bank (buffer) updated every step, and noise from the global
    torch RNG, so an inexact resume (bank or RNG not restored) shows in the weights."""

    name = "bank_test"
    defaults = {"noise": 0.01}

    def __init__(self, bits, num_classes, multi_label=False, n_items=48, **hp):
        super().__init__(bits, num_classes, multi_label, **hp)
        self.register_buffer("bank", torch.zeros(n_items, bits))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, out, labels, index=None):
        u = torch.tanh(out.u.float())
        noise = self.hparams["noise"] * torch.randn_like(u)
        s = pair_similarity(labels)
        ip = (u + noise) @ (u + self.bank[index]).T / self.bits
        total = ((ip - (2 * s - 1)) ** 2).mean()
        with torch.no_grad():
            self.bank[index] = 0.5 * self.bank[index] + 0.5 * u.detach()
            self.calls += 1
        return LossResult(total, {"pair": total.detach()})


def synthetic(n=48, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    images[:, y % 3] = (images[:, y % 3] // 2 + 100).clamp(max=255)  # a weak class signal
    return Split(images, torch.nn.functional.one_hot(y, classes).float(), [str(i) for i in range(n)])


def setup(seed=0):
    seed_everything(seed)
    model = build_model("vit32_test", 8, "cls_linear")
    loss = BankLoss(8, 4)
    batches = TensorBatches(synthetic(), 16, TensorTransform(32, pad_crop=2, hflip=True), train=True, seed=seed)
    return model, loss, batches


CFG = dict(epochs=3, batch_size=16, lr=2e-3, warmup_steps=2, grad_clip=1.0, weight_decay=1e-4)


def test_resume_mid_epoch_is_exact(tmp_path):
    cfg = TrainConfig(**CFG)  # 3 steps per epoch, 9 steps
    ref_model, ref_loss, b = setup()
    ref = train(ref_model, ref_loss, b, cfg, progress=False)

    # interrupted after step 5, the last checkpoint at step 4 (mid-epoch 1, batch 1)
    ck = tmp_path / "ck.pt"
    log = tmp_path / "log.csv"
    cfg_ck = TrainConfig(**CFG, checkpoint_every_steps=2)
    m, lo, b = setup()
    train(m, lo, b, cfg_ck, progress=False, checkpoint_path=ck, log_path=log, max_steps=5)
    saved = torch.load(ck, weights_only=True)  # loadable without pickled code
    assert (saved["step"], saved["epoch"], saved["batch"]) == (4, 1, 1)
    assert {"model", "loss", "optimizer", "rng", "fingerprint", "evals"} <= set(saved)
    assert int(saved["loss"]["calls"]) == 4 and "bank" in saved["loss"]
    with open(log) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5]

    # a fresh process state (other RNG state, other init) resumes and ends bit-identical
    torch.manual_seed(123)
    m2, lo2, b2 = setup(seed=0)
    for p in m2.parameters():  # perturb every weight: the checkpoint must restore all of them
        torch.nn.init.normal_(p)
    torch.manual_seed(999)
    hist = train(m2, lo2, b2, cfg_ck, progress=False, checkpoint_path=ck, log_path=log, resume=True)
    assert hist["resumed_from"]["step"] == 4
    for (k, a), (_, c) in zip(ref_model.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, c), k
    assert torch.equal(ref_loss.bank, lo2.bank) and int(lo2.calls) == 9
    assert [r["loss"] for r in hist["steps"]] == [r["loss"] for r in ref["steps"]]
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 10))  # no duplicate, no gap
    assert [float(r["loss"]) for r in rows] == [r["loss"] for r in ref["steps"]]


def test_foreign_checkpoint_is_refused(tmp_path):
    ck = tmp_path / "ck.pt"
    m, lo, b = setup()
    fp = {"split_checksums": {"train": "abc"}, "config": {"lr": 0.002}}
    train(m, lo, b, TrainConfig(**CFG, checkpoint_every_epochs=1), progress=False, checkpoint_path=ck,
          fingerprint=fp, max_steps=4)
    with pytest.raises(ConfigError, match=r"split_checksums\.train: checkpoint 'abc' vs now 'xyz'"):
        check_checkpoint(ck, {**fp, "split_checksums": {"train": "xyz"}}, only_given=True)
    m, lo, b = setup()
    with pytest.raises(ConfigError, match=r"config\.lr: checkpoint 0\.002 vs now 0\.1"):
        train(m, lo, b, TrainConfig(**CFG, checkpoint_every_epochs=1), progress=False, checkpoint_path=ck,
              fingerprint={**fp, "config": {"lr": 0.1}}, resume=True)
    m, lo, b = setup()  # a different training configuration is named too
    with pytest.raises(ConfigError, match=r"train\.epochs: checkpoint 3 vs now 4"):
        train(m, lo, b, TrainConfig(**{**CFG, "epochs": 4}, checkpoint_every_epochs=1), progress=False,
              checkpoint_path=ck, fingerprint=fp, resume=True)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="junk.pt cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")


class NanAt(BankLoss):
    def forward(self, out, labels, index=None):
        res = super().forward(out, labels, index)
        if self.step == 4:  # the 5th step
            res.total = res.total * float("nan")
        return res


def test_nan_loss_names_step_and_last_checkpoint(tmp_path):
    seed_everything(0)
    m = build_model("vit32_test", 8, "cls_linear")
    b = TensorBatches(synthetic(), 16, TensorTransform(32), train=True)
    ck = tmp_path / "ck.pt"
    with pytest.raises(FloatingPointError, match=r"nan at step 5 .*ck\.pt \(step 4"):
        train(m, NanAt(8, 4), b, TrainConfig(**CFG, checkpoint_every_steps=2), progress=False, checkpoint_path=ck)
    assert load_checkpoint(ck)["step"] == 4  # the check runs at the flush before the step-6 checkpoint: none written
    with pytest.raises(FloatingPointError, match="no checkpoint has been written"):
        train(m, NanAt(8, 4), b, TrainConfig(**CFG), progress=False)


class Exploding(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_names_batch_size():
    seed_everything(0)
    b = TensorBatches(synthetic(), 16, TensorTransform(32), train=True)
    with pytest.raises(OutOfMemory, match=r"batch_size=16.*try batch_size=8"):
        train(Exploding(build_model("vit32_test", 8, "cls_linear")), BankLoss(8, 4), b, TrainConfig(**CFG),
              progress=False)


def test_checkpoint_settings_are_validated():
    with pytest.raises(ConfigError, match="checkpoint_every_steps=-1"):
        TrainConfig(checkpoint_every_steps=-1).validate()
    m, lo, b = setup()
    with pytest.raises(ConfigError, match="need a checkpoint path"):
        train(m, lo, b, TrainConfig(**CFG, checkpoint_every_epochs=1), progress=False)
    from hashlib_vit.experiment import RunConfig

    with pytest.raises(ConfigError, match="need a run_dir"):
        RunConfig(resume=True, run_dir=None).validate()
    assert json.loads(json.dumps(RunConfig().fingerprint()))["lr"] == 1e-3


def test_clipping_logs_the_pre_clip_norm_and_bounds_the_update():
    """(The schedule and the parameter groups are tested in tests/test_train_optim.py.)"""
    m, lo, b = setup()
    # clipping: the logged pre-clip norm exceeds the limit, the applied (plain SGD) update has norm lr * limit
    before = [p.detach().clone() for p in m.parameters()]
    hist = train(m, lo, b, TrainConfig(epochs=1, batch_size=16, lr=1.0, optimizer="sgd", momentum=0.0,
                                       schedule="constant", grad_clip=1e-3, warmup_steps=0, weight_decay=0.0),
                 progress=False, max_steps=1)
    assert hist["steps"][0]["grad_norm"] > 1e-3
    moved = torch.sqrt(sum(((p.detach() - q) ** 2).sum() for p, q in zip(m.parameters(), before)))
    assert moved.item() == pytest.approx(1e-3, rel=1e-3)
