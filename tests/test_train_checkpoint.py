"""train/checkpoint.py: RNG states, the atomic checkpoint file, refusal of a foreign or damaged
checkpoint, and the Checkpointer the loop writes and resumes through (small objects, no training)."""
import json
import random
import re

import numpy as np
import pytest
import torch

from hashlib_vit.errors import ConfigError, DataError
from hashlib_vit.train import (CHECKPOINT_VERSION, Checkpointer, check_checkpoint, fingerprint_differences,
                               load_checkpoint, rng_state, save_checkpoint, set_rng_state)


def draws():
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
            float(np.random.randn()))


def test_rng_state_round_trip_is_exact(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # a cached Gaussian in numpy's state
    state = rng_state()
    first = draws()
    save_checkpoint(tmp_path / "rng.pt", {"version": CHECKPOINT_VERSION, "rng": state})
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])  # through weights_only loading
    assert draws() == first


def test_load_refuses_missing_damaged_and_foreign_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"junk\.pt cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"version": CHECKPOINT_VERSION + 1}, tmp_path / "v2.pt")
    with pytest.raises(DataError, match=f"not a hashlib_vit checkpoint of version {CHECKPOINT_VERSION}"):
        load_checkpoint(tmp_path / "v2.pt")


def test_fingerprint_differences_name_every_leaf():
    saved = {"split_checksums": {"train": "abc", "query": "q"}, "config": {"lr": 0.002}, "gone": 1}
    now = {"split_checksums": {"train": "xyz", "query": "q"}, "config": {"lr": 0.002}, "new": [1, 2]}
    assert fingerprint_differences(saved, now) == [
        "gone: checkpoint 1 vs now '<absent>'",
        "new: checkpoint '<absent>' vs now [1, 2]",
        "split_checksums.train: checkpoint 'abc' vs now 'xyz'"]
    assert fingerprint_differences(saved, json.loads(json.dumps(saved))) == []


def parts(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    loss = torch.nn.Module()
    loss.register_buffer("bank", torch.randn(5, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return {"model": model, "loss": loss, "optimizer": opt, "scaler": scaler}


FP = {"split_checksums": {"train": "abc"}, "train": {"lr": 0.1}}


def test_checkpointer_saves_and_restores_everything(tmp_path):
    objs = parts(0)
    ck = Checkpointer(tmp_path / "ck.pt", FP, objs)
    assert "no checkpoint has been written" in ck.describe_last()
    torch.manual_seed(5)
    ck.save(step=7, epoch=2, batch=1, elapsed_s=3.5, evals=[{"epoch": 1, "map": 0.5}])
    after_save = torch.rand(2)
    assert ck.describe_last() == (f"the last good checkpoint is {tmp_path / 'ck.pt'} (step 7; "
                                  "resume=True continues from it)")
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert saved["scaler"] == {} and saved["version"] == CHECKPOINT_VERSION  # a disabled scaler has no state
    assert json.loads(saved["fingerprint"]) == FP

    fresh = parts(1)  # other weights, bank, optimiser state
    ck2 = Checkpointer(tmp_path / "ck.pt", FP, fresh)
    assert ck2.exists()
    torch.manual_seed(123)
    pos = ck2.restore()
    assert pos == {"step": 7, "epoch": 2, "batch": 1, "elapsed_s": 3.5, "evals": [{"epoch": 1, "map": 0.5}]}
    assert torch.equal(torch.rand(2), after_save)  # the RNG continues where the save left it
    for a, b in zip(objs["model"].state_dict().values(), fresh["model"].state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(objs["loss"].bank, fresh["loss"].bank)
    sa, sb = objs["optimizer"].state_dict()["state"][0], fresh["optimizer"].state_dict()["state"][0]
    assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["step"], sb["step"])
    assert "(step 7;" in ck2.describe_last()


def test_checkpointer_refuses_another_configuration_or_split(tmp_path):
    Checkpointer(tmp_path / "ck.pt", FP, parts()).save(step=1, epoch=0, batch=1, elapsed_s=0.0, evals=[])
    other_split = Checkpointer(tmp_path / "ck.pt", {**FP, "split_checksums": {"train": "xyz"}}, parts())
    with pytest.raises(ConfigError, match=r"split_checksums\.train: checkpoint 'abc' vs now 'xyz'"):
        other_split.restore()
    with pytest.raises(ConfigError, match=r"train\.lr: checkpoint 0\.1 vs now 0\.2.*resume=False"):
        check_checkpoint(tmp_path / "ck.pt", {**FP, "train": {"lr": 0.2}})
    assert check_checkpoint(tmp_path / "ck.pt", {"split_checksums": {"train": "abc"}}, only_given=True)["step"] == 1


def test_checkpointer_without_path_or_on_other_ranks_writes_nothing(tmp_path):
    ck = Checkpointer(None, FP, parts())
    assert not ck.exists()
    ck.save(step=3, epoch=0, batch=3, elapsed_s=0.0, evals=[])
    reader = Checkpointer(tmp_path / "ck.pt", FP, parts(), writer=False)  # not rank 0
    reader.save(step=3, epoch=0, batch=3, elapsed_s=0.0, evals=[])
    assert not (tmp_path / "ck.pt").exists() and "(step 3;" in reader.describe_last()


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    objs = parts()
    ck = Checkpointer(tmp_path / "ck.pt", FP, objs)
    ck.save(step=4, epoch=0, batch=4, elapsed_s=1.0, evals=[])

    def dies_halfway(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the run is interrupted during the write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        ck.save(step=8, epoch=0, batch=8, elapsed_s=2.0, evals=[])
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "ck.pt")["step"] == 4  # the previous checkpoint, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]  # no temporary file left
    assert "(step 4;" in ck.describe_last()  # an unfinished write is not the last good checkpoint


@pytest.mark.parametrize("field, value, words", [
    ("step", None, "field 'step' is missing"),
    ("epoch", -1, "field 'epoch' is damaged (expected an integer >= 0"),
    ("batch", "3", "field 'batch' is damaged"),
    ("elapsed_s", "x", "field 'elapsed_s' is damaged"),
    ("evals", "[{", "field 'evals' is damaged (expected the JSON text of a list"),
    ("fingerprint", None, "field 'fingerprint' is missing"),
    ("rng", {"torch": torch.zeros(1)}, "field 'rng' is damaged"),
    ("optimizer", None, "field 'optimizer' is missing"),
])
def test_restore_names_a_missing_or_damaged_field_before_loading_anything(tmp_path, field, value, words):
    """A checkpoint of the right version whose fields are missing or damaged: a DataError naming the file
    and the field (was a raw KeyError / JSONDecodeError), and nothing restored into the objects."""
    path = tmp_path / "ck.pt"
    Checkpointer(path, FP, parts(0)).save(step=2, epoch=0, batch=2, elapsed_s=1.0, evals=[])
    ckpt = torch.load(path, weights_only=True)
    if value is None:
        del ckpt[field]
    else:
        ckpt[field] = value
    torch.save(ckpt, path)
    fresh = parts(1)
    before = {k: v.clone() for k, v in fresh["model"].state_dict().items()}
    with pytest.raises(DataError, match=re.escape(words)) as err:
        Checkpointer(path, FP, fresh).restore()
    assert str(path) in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in fresh["model"].state_dict().items())
