"""Issue 18, kind 1: a run is validated (parameters, data, model + weights, loss, transforms, cache) before it
touches its run directory; a finished run is never changed by a run that cannot start.

One finished run (digits, vit32_test, 1 epoch) is built per module; every bad input below is then run against
it through run_experiment, the CLI and the grid runner, and every file of the finished run must be
byte-identical afterwards.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from hashlib_vit.errors import ConfigError, DataError

TINY = dict(backbone="vit32_test", bits=16, epochs=1, batch_size=64, progress=False, device="cpu", warmup_steps=2)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (relative path -> digest)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run directory (metrics.json, codes.npz, train_log.csv, ...), kept pristine in ``master``."""
    from hashlib_vit.experiment import run_experiment

    master = tmp_path_factory.mktemp("finished") / "run"
    run_experiment(**TINY, run_dir=str(master))
    assert (master / "metrics.json").is_file() and (master / "codes.npz").is_file()
    return master


@pytest.fixture
def run_dir(finished, tmp_path):
    """A fresh copy of the finished run, and its snapshot."""
    rd = tmp_path / "run"
    shutil.copytree(finished, rd)
    return rd


# ---------------------------------------------------------------- the catalogue of bad inputs
def _garbage_weights(tmp: Path) -> dict:
    p = tmp / "garbage.pt"
    p.write_bytes(b"this is not a checkpoint\n" * 10)
    return {"weights": str(p)}


def _wrong_shape_weights(tmp: Path) -> dict:
    from hashlib_vit.models import build_model

    sd = build_model("vit32_test", 16).backbone.state_dict()
    sd = {k: (torch.zeros(v.shape[0] + 3, *v.shape[1:]) if v.ndim >= 2 else v) for k, v in sd.items()}
    p = tmp / "wrong_shapes.pth"
    torch.save(sd, p)
    return {"weights": str(p)}


def _foreign_layout_weights(tmp: Path) -> dict:
    p = tmp / "resnet_like.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}, p)
    return {"weights": str(p)}


def _wrong_format_weights(tmp: Path) -> dict:
    p = tmp / "weights.txt"
    p.write_text("hello")
    return {"weights": str(p)}


def _empty_safetensors(tmp: Path) -> dict:
    p = tmp / "empty.safetensors"
    p.write_bytes(b"")
    return {"weights": str(p)}


def _bad_npz(tmp: Path) -> dict:
    p = tmp / "bad.npz"
    p.write_bytes(b"PK\x03\x04 truncated")
    return {"weights": str(p)}


def _missing_data_root(tmp: Path) -> dict:
    return {"protocol": "cifar10", "data_root": str(tmp / "no_such_folder")}


def _empty_data_root(tmp: Path) -> dict:
    (tmp / "empty_data").mkdir()
    return {"protocol": "cifar10", "data_root": str(tmp / "empty_data")}


def _bad_split_dir(tmp: Path) -> dict:
    return {"protocol": "cifar10", "data_root": str(tmp), "data_options": {"split_dir": str(tmp / "nope")}}


# (id, params over TINY (or a function of a temporary folder giving them), error type, words the message names)
CASES = [
    ("seed-abc", {"seed": "abc"}, ConfigError, ["seed", "integer"]),
    ("seed-neg", {"seed": -1}, ConfigError, ["seed", ">= 0"]),
    ("seed-float", {"seed": 1.5}, ConfigError, ["seed", "integer"]),
    ("seed-bool", {"seed": True}, ConfigError, ["seed", "integer"]),
    ("momentum-neg", {"momentum": -1}, ConfigError, ["momentum", ">= 0"]),
    ("weight-decay-neg", {"weight_decay": -0.1}, ConfigError, ["weight_decay", ">= 0"]),
    ("weight-decay-str", {"weight_decay": "x"}, ConfigError, ["weight_decay"]),
    ("img-size-0", {"img_size": 0}, ConfigError, ["img_size"]),
    ("img-size-not-patch-multiple", {"img_size": 33}, ConfigError, ["img_size", "patch"]),
    ("split-seed-neg", {"split_seed": -1}, ConfigError, ["split_seed", ">= 0"]),
    ("split-seed-float", {"split_seed": 1.5}, ConfigError, ["split_seed", "integer"]),
    ("split-seed-huge", {"split_seed": 2 ** 64}, ConfigError, ["split_seed"]),
    ("seed-huge", {"seed": 2 ** 64}, ConfigError, ["seed"]),
    ("step-epochs-0", {"schedule": "step", "step_epochs": 0}, ConfigError, ["step_epochs", ">= 1"]),
    ("eval-batch-0", {"eval_batch_size": 0}, ConfigError, ["eval_batch_size", ">= 1"]),
    ("eval-batch-str", {"eval_batch_size": "big"}, ConfigError, ["eval_batch_size"]),
    ("model-params-unknown", {"model_params": {"foo": 1}}, ConfigError, ["foo"]),
    ("model-params-str", {"model_params": "groups=2"}, ConfigError, ["model_params"]),
    ("bits-0", {"bits": 0}, ConfigError, ["bits", ">= 1"]),
    ("bits-str", {"bits": "16"}, ConfigError, ["bits", "integer"]),
    ("bits-float", {"bits": 16.0}, ConfigError, ["bits", "integer"]),
    ("epochs-0", {"epochs": 0}, ConfigError, ["epochs", ">= 1"]),
    ("batch-1", {"batch_size": 1}, ConfigError, ["batch_size", ">= 2"]),
    ("batch-too-big", {"batch_size": 100000}, ConfigError, ["batch_size"]),
    ("lr-0", {"lr": 0}, ConfigError, ["lr", "positive"]),
    ("lr-neg", {"lr": -1e-3}, ConfigError, ["lr", "positive"]),
    ("lr-nan", {"lr": float("nan")}, ConfigError, ["lr"]),
    ("lr-inf", {"lr": float("inf")}, ConfigError, ["lr", "finite"]),
    ("lr-str", {"lr": "fast"}, ConfigError, ["lr"]),
    ("backbone-lr-0", {"backbone_lr": 0}, ConfigError, ["backbone_lr"]),
    ("optimizer", {"optimizer": "adamx"}, ConfigError, ["optimizer", "adamw"]),
    ("schedule", {"schedule": "linear"}, ConfigError, ["schedule", "cosine"]),
    ("step-gamma-0", {"step_gamma": 0}, ConfigError, ["step_gamma"]),
    ("step-gamma-2", {"step_gamma": 2}, ConfigError, ["step_gamma"]),
    ("warmup-neg", {"warmup_steps": -1}, ConfigError, ["warmup_steps"]),
    ("warmup-float", {"warmup_steps": 2.5}, ConfigError, ["warmup_steps"]),
    ("grad-clip-0", {"grad_clip": 0}, ConfigError, ["grad_clip"]),
    ("grad-clip-inf", {"grad_clip": float("inf")}, ConfigError, ["grad_clip"]),
    ("momentum-inf", {"momentum": float("inf")}, ConfigError, ["momentum"]),
    ("amp", {"amp": "fp8"}, ConfigError, ["amp", "bf16"]),
    ("amp-fp16-cpu", {"amp": "fp16"}, ConfigError, ["amp", "CUDA"]),
    ("compile-str", {"compile": "yes"}, ConfigError, ["compile", "true or false"]),
    ("resume-int", {"resume": 1}, ConfigError, ["resume", "true or false"]),
    ("progress-str", {"progress": "no"}, ConfigError, ["progress"]),
    ("ckpt-steps-neg", {"checkpoint_every_steps": -1}, ConfigError, ["checkpoint_every_steps"]),
    ("ckpt-epochs-neg", {"checkpoint_every_epochs": -2}, ConfigError, ["checkpoint_every_epochs"]),
    ("log-every-0", {"log_every_steps": 0}, ConfigError, ["log_every_steps"]),
    ("topk-0", {"topk": 0}, ConfigError, ["topk"]),
    ("topk-str", {"topk": "all"}, ConfigError, ["topk"]),
    ("topk-too-large", {"topk": 10 ** 6}, DataError, ["topk", "database"]),
    ("eval-every-neg", {"eval_every": -1}, ConfigError, ["eval_every"]),
    ("save-codes-str", {"save_codes": "no"}, ConfigError, ["save_codes"]),
    ("code-stats-int", {"code_stats": 1}, ConfigError, ["code_stats"]),
    ("protocol", {"protocol": "cifar100"}, ConfigError, ["protocol", "digits"]),
    ("data-options-unknown", {"data_options": {"foo": 1}}, ConfigError, ["data_options", "foo"]),
    ("data-options-str", {"data_options": "x"}, ConfigError, ["data_options"]),
    ("loss", {"loss": "cauchyy"}, ConfigError, ["loss", "csq"]),
    ("loss-params-unknown", {"loss_params": {"foo": 1}}, ConfigError, ["loss_params", "foo"]),
    ("loss-params-bad-value", {"loss": "dpsh", "loss_params": {"alpha": "x"}}, ConfigError, ["alpha"]),
    ("head", {"head": "mlp"}, ConfigError, ["head", "cls_linear"]),
    ("backbone", {"backbone": "vit_nonexistent_patch3"}, ConfigError, ["backbone"]),
    ("mgvt-bits-groups", {"head": "mgvt", "bits": 17, "model_params": {"groups": 2}}, ConfigError, ["bits"]),
    ("freeze-neg", {"freeze_blocks": -2}, ConfigError, ["freeze_blocks"]),
    ("freeze-too-many", {"freeze_blocks": 100}, ConfigError, ["freeze_blocks"]),
    ("feature-cache-no-freeze", {"feature_cache": True}, ConfigError, ["feature_cache", "freeze_blocks"]),
    ("feature-cache-str", {"feature_cache": "yes"}, ConfigError, ["feature_cache"]),
    ("cache-views-0", {"freeze_blocks": 1, "feature_cache": True, "cache_views": 0}, ConfigError, ["cache_views"]),
    ("device", {"device": "tpu"}, ConfigError, ["device"]),
    ("device-cuda-absent", {"device": "cuda:3"}, ConfigError, ["device"]),
    ("method-int", {"method": 5}, ConfigError, ["method"]),
    ("training-free-bits", {"loss": "pca_sign", "bits": 10 ** 4}, ConfigError, ["bits", "feature dimension"]),
    ("training-free-head", {"loss": "itq", "head": "mgvt"}, ConfigError, ["head", "training-free"]),
    ("training-free-params", {"loss": "lsh", "loss_params": {"foo": 1}}, ConfigError, ["foo"]),
    ("weights-garbage", _garbage_weights, ConfigError, ["garbage.pt"]),
    ("weights-missing", {"weights": "/nonexistent/w.pth"}, ConfigError, ["weights", "w.pth", "no such file"]),
    ("weights-folder", lambda tmp: {"weights": str(tmp)}, ConfigError, ["weights", "a folder, not a file"]),
    ("weights-wrong-shapes", _wrong_shape_weights, ConfigError, ["wrong_shapes.pth"]),
    ("weights-foreign-layout", _foreign_layout_weights, ConfigError, ["resnet_like.pth"]),
    ("weights-wrong-format", _wrong_format_weights, ConfigError, ["weights.txt"]),
    ("weights-empty-safetensors", _empty_safetensors, ConfigError, ["empty.safetensors"]),
    ("weights-bad-npz", _bad_npz, ConfigError, ["bad.npz"]),
    ("weights-hub-offline", {"weights": "hub"}, ConfigError, ["weights"]),
    ("data-root-missing", _missing_data_root, (ConfigError, DataError), ["no_such_folder"]),
    ("data-root-empty", _empty_data_root, (ConfigError, DataError), ["empty_data"]),
    ("split-dir-missing", _bad_split_dir, (ConfigError, DataError), ["nope"]),
]


def _params(case, tmp: Path) -> dict:
    bad = case[1](tmp) if callable(case[1]) else dict(case[1])
    return {**TINY, **bad}


def _check_message(err: BaseException, words) -> None:
    text = str(err)
    for w in words:
        assert w in text, f"{w!r} not in {text!r}"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_run_experiment_refuses_before_touching_a_finished_run(case, run_dir, tmp_path):
    from hashlib_vit.experiment import run_experiment

    before = snapshot(run_dir)
    with pytest.raises(case[2]) as err:
        run_experiment({**_params(case, tmp_path), "run_dir": str(run_dir)})
    _check_message(err.value, case[3])
    assert snapshot(run_dir) == before


# ----------------------------------------------------------------------------- the CLI
CLI_CASES = [
    ("seed-abc", ["--seed", "abc"], "seed"),
    ("seed-neg", ["--seed", "-1"], "seed"),
    ("momentum-neg", ["--momentum", "-1"], "momentum"),
    ("img-size-0", ["--img-size", "0"], "img_size"),
    ("weight-decay-neg", ["--weight-decay", "-0.1"], "weight_decay"),
    ("split-seed-neg", ["--split-seed", "-1"], "split_seed"),
    ("split-seed-float", ["--split-seed", "1.5"], "split_seed"),
    ("step-epochs-0", ["--schedule", "step", "--step-epochs", "0"], "step_epochs"),
    ("eval-batch-0", ["--eval-batch-size", "0"], "eval_batch_size"),
    ("model-option", ["--set", "model_params.foo=1"], "foo"),
    ("weights-missing", ["--weights", "/nonexistent/w.pth"], "w.pth"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_before_touching_a_finished_run(case, run_dir, capsys):
    from hashlib_vit.cli import main

    before = snapshot(run_dir)
    argv = ["train", "--backbone", "vit32_test", "--bits", "16", "--epochs", "1", "--batch-size", "64",
            "--device", "cpu", "--progress", "false", "--run-dir", str(run_dir), *case[1]]
    assert main(argv) == 2
    assert case[2] in capsys.readouterr().err
    assert snapshot(run_dir) == before


def test_cli_garbage_weights_file(run_dir, tmp_path, capsys):
    from hashlib_vit.cli import main

    before = snapshot(run_dir)
    w = _garbage_weights(tmp_path)["weights"]
    argv = ["train", "--backbone", "vit32_test", "--bits", "16", "--epochs", "1", "--device", "cpu",
            "--progress", "false", "--run-dir", str(run_dir), "--weights", w]
    assert main(argv) == 2 and "garbage.pt" in capsys.readouterr().err
    assert snapshot(run_dir) == before


# ----------------------------------------------------------------------------- the grid runner
def test_grid_force_rerun_that_cannot_start_keeps_the_finished_run(finished, tmp_path):
    """``run_grid(force=True)`` of an experiment run whose weights file is garbage: the run fails (recorded as
    failed), and the finished run's results (metrics.json, codes.npz, train_log.csv, config.json) are kept."""
    from hashlib_vit.runner import run_grid

    out = tmp_path / "grid"
    rd = out / "r1"
    shutil.copytree(finished, rd)
    results = {k: v for k, v in snapshot(rd).items() if k != "grid_params.json"}
    w = _garbage_weights(tmp_path)["weights"]
    grid = {"name": "g", "target": "experiment", "output": str(out),
            "fixed": {**{k: v for k, v in TINY.items() if k != "progress"}, "weights": w},
            "runs": [{"name": "r1"}]}
    summary = run_grid(grid, force=True, progress=False, validate=False, only=["r1"]).set_index("run")
    assert summary.loc["r1", "status"] == "failed" and "garbage.pt" in summary.loc["r1", "error"]
    after = snapshot(rd)
    assert {k: after.get(k) for k in results} == results
    assert json.loads((rd / "grid_params.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("damage", ["epoch-word", "rows-missing", "checkpoint-field"])
def test_resume_over_a_finished_run_checks_log_and_checkpoint_before_touching_it(tmp_path, damage):
    """``resume=True`` over a finished run whose train_log.csv is damaged (or lacks rows the checkpoint
    needs, or whose checkpoint lacks a field): the error comes before metrics.json / codes.npz are removed
    and before config.json is rewritten."""
    from hashlib_vit.experiment import run_experiment

    rd = tmp_path / "run"
    params = {**TINY, "epochs": 2, "checkpoint_every_steps": 3, "run_dir": str(rd)}
    run_experiment(params)
    log = rd / "train_log.csv"
    lines = log.read_text().splitlines(keepends=True)
    if damage == "epoch-word":
        cells = lines[2].split(",")
        lines[2] = ",".join([cells[0], "zero", *cells[2:]])
        log.write_text("".join(lines))
    elif damage == "rows-missing":
        log.write_text("".join(lines[:2]))
    else:
        ckpt = torch.load(rd / "checkpoint.pt", weights_only=True)
        del ckpt["optimizer"]
        torch.save(ckpt, rd / "checkpoint.pt")
    before = snapshot(rd)
    with pytest.raises(DataError, match=r"training log .*line 3, column 'epoch'|does not belong to this checkpoint|"
                                        r"field 'optimizer' is missing"):
        run_experiment({**params, "resume": True})
    assert snapshot(rd) == before
