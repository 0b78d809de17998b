"""The one run configuration (hashlib_vit.config): sections, roles, presets, overrides, string parsing."""
import json

import pytest

from hashlib_vit.config import (RunConfig, TrainConfig, apply_overrides, build_config, field_info, field_role,
                                fields_with_role, flatten, load_preset, load_yaml, parse_value, preset_names)
from hashlib_vit.errors import ConfigError

TINY = dict(protocol="digits", backbone="vit32_test", bits=16, epochs=1, batch_size=64, device="cpu", progress=False)


def test_flat_sectioned_and_dotted_keys_are_one_config():
    a = RunConfig(bits=16, lr=3e-4, loss="transhash", loss_params={"gamma": 5.0}, topk=100)
    b = RunConfig.from_dict({"model": {"bits": 16}, "train": {"lr": 3e-4}, "loss": {"loss": "transhash"},
                             "loss_params.gamma": 5.0, "eval.topk": 100})
    c = RunConfig.from_dict({"model.bits": 16, "train.lr": 3e-4, "loss.loss": "transhash",
                             "loss.loss_params.gamma": 5.0, "topk": 100})
    assert a == b == c
    assert a.train.lr == a.lr == 3e-4 and a.model.bits == 16 and a.objective.loss_params == {"gamma": 5.0}
    a.lr = 0.5  # writing a flat name writes its section
    assert a.train.lr == 0.5 and a.to_dict()["train"]["lr"] == 0.5
    assert a.train_config() is a.train  # the training configuration is the section, not a copy
    assert field_info("loss_params.gamma")["name"] == "loss_params"
    assert field_info("lr")["dotted"] == "train.lr"


def test_config_json_is_sectioned_and_older_flat_files_read_the_same():
    cfg = RunConfig(**TINY)
    d = cfg.to_dict()
    assert set(d) == {"method", "device", "run_dir", "data", "model", "loss", "train", "eval"}
    assert d["model"]["backbone"] == "vit32_test" and d["loss"]["loss"] == "csq" and d["train"]["epochs"] == 1
    old_flat = cfg.flat()  # the flat config.json of runs written before the sections
    assert flatten(d) == flatten(old_flat) == old_flat
    assert RunConfig.from_dict(d) == RunConfig.from_dict(old_flat) == cfg


def test_each_field_has_one_role_and_it_decides_resume_and_variants():
    assert field_role("lr") == field_role("loss_params.gamma") == field_role("weights") == "result"
    assert field_role("topk") == "eval"
    for name in ("run_dir", "device", "progress", "resume", "checkpoint_every_steps", "checkpoint_every_epochs",
                 "save_codes", "eval_batch_size", "eval_every", "data_root", "cache_dir", "method"):
        assert field_role(name) == "record", name
    cfg = RunConfig(**TINY)
    fp = cfg.fingerprint()
    unset = {"freeze_blocks", "feature_cache", "cache_views", "val_per_class"}  # count only when set
    assert set(fp) == set(fields_with_role("result")) - unset
    resumed = cfg.replace(resume=True, checkpoint_every_steps=3, run_dir="elsewhere", eval_every=1, topk=10)
    assert resumed.fingerprint() == fp  # nothing that is only bookkeeping or evaluation blocks a resume
    assert cfg.replace(lr=0.5).fingerprint() != fp
    with pytest.raises(ConfigError, match="unknown parameter 'lrr'.*did you mean lr"):
        field_role("lrr")


def test_training_section_fingerprint_matches_the_resume_contract():
    """The train loop's fingerprint (train/loop.py) keeps exactly the result fields of the train section."""
    from dataclasses import asdict

    t = TrainConfig()
    kept = {k for k in asdict(t) if field_role(k) == "result"}
    assert kept == {"epochs", "batch_size", "lr", "backbone_lr", "optimizer", "momentum", "weight_decay", "schedule",
                    "step_epochs", "step_gamma", "warmup_steps", "grad_clip", "amp", "compile", "seed"}


@pytest.mark.parametrize("name", preset_names())
def test_every_method_preset_builds_a_valid_config(name):
    cfg = build_config({"backbone": "vit32_test", "bits": 16}, preset=name)
    preset = load_preset(name)
    assert cfg.loss == preset["loss"] and cfg.head == preset["head"]
    assert cfg.bits == 16  # the parameters sit above the preset


def test_presets_give_the_methods_their_composition():
    assert {"aevit_hsc", "csq", "dch", "dpn", "dpsh", "dsh", "greedyhash", "hashnet", "slvit",
            "transhash"} <= set(preset_names())  # the three methods and every classic loss (more may be added)
    th = build_config({"backbone": "vit32_test", "bits": 16}, preset="transhash")
    assert (th.head, th.loss, th.model_params, th.method, th.grad_clip) == ("mgvt", "transhash", {"groups": 2},
                                                                          "transhash", 1.0)
    ae = build_config({"backbone": "vit32_test"}, preset="aevit_hsc")
    assert (ae.loss, ae.model_params) == ("hsc", {"aem": "all"})
    sl = build_config({"backbone": "vit32_test"}, preset="slvit")
    assert (sl.head, sl.loss, sl.model_params["hcl_attention"]) == ("hcl", "orthohash", True)


def test_layers_defaults_preset_parameters_overrides():
    cfg = build_config({"backbone": "vit32_test", "bits": 16, "grad_clip": 2.0, "model_params": {"local_stream": False},
                        "loss": None, "topk": None},
                       preset="transhash", overrides={"loss_params.gamma": 5.0, "train.weight_decay": 0.0})
    assert cfg.grad_clip == 2.0  # an explicit parameter beats the preset
    assert cfg.model_params == {"groups": 2, "local_stream": False}  # dicts merge key by key over the preset
    assert cfg.loss == "transhash"  # None means "not set": the preset's
    assert cfg.topk is None  # ... except where None is a value (topk=None ranks the whole database)
    assert cfg.loss_params == {"gamma": 5.0} and cfg.weight_decay == 0.0  # dotted overrides on top
    assert build_config({"backbone": "vit32_test", "loss": None}).loss == "csq"  # no preset: the default


def test_overrides_refuse_unknown_names_conflicts_and_bad_values_before_anything_runs():
    with pytest.raises(ConfigError, match="unknown parameter 'loss_parms.gamma'.*did you mean loss_params"):
        build_config({"backbone": "vit32_test"}, overrides={"loss_parms.gamma": 1})
    with pytest.raises(ConfigError, match=r"overrides\['lr'\]=0.5 conflicts with the explicit parameter lr=0.03"):
        apply_overrides({"lr": 0.03}, {"train.lr": 0.5})
    with pytest.raises(ConfigError, match="only the mapping fields .* take a dotted key"):
        build_config({}, overrides={"lr.x": 1})
    with pytest.raises(ConfigError, match="loss_params \\['gamma'\\] are not hyper-parameters of loss='csq'"):
        build_config({"backbone": "vit32_test"}, overrides={"loss_params.gamma": 5})
    with pytest.raises(ConfigError, match="preset='transhsh' is not a known value"):
        build_config({}, preset="transhsh")


def test_papermill_strings_are_parsed_by_one_rule_or_refused():
    assert parse_value('{"gamma": 5}') == {"gamma": 5} and parse_value("{gamma: 5}") == {"gamma": 5}
    assert parse_value("[16, 32]") == [16, 32] and parse_value("[csq, dpsh]") == ["csq", "dpsh"]
    assert parse_value("True") is True and parse_value("false") is False and parse_value("None") is None
    assert parse_value("1e-3") == 0.001 and parse_value("16") == 16 and parse_value("vit32_test") == "vit32_test"
    cfg = build_config({"backbone": "vit32_test", "loss_params": '{"lambda1": 0.01}', "compile": "False",
                        "save_codes": "true", "model_params": "{}", "grad_clip": "None"},
                       overrides='{"loss_params.center_seed": 3, "weight_decay": 0}')
    assert cfg.loss_params == {"lambda1": 0.01, "center_seed": 3} and cfg.compile is False and cfg.save_codes is True
    assert cfg.grad_clip is None and cfg.weight_decay == 0
    with pytest.raises(ConfigError, match="loss_params='gamma=5' is a string that does not parse as dict"):
        build_config({"loss_params": "gamma=5"})
    with pytest.raises(ConfigError, match="compile='maybe' is a string that does not parse as bool"):
        build_config({"compile": "maybe"})
    with pytest.raises(ConfigError, match="is not a YAML/JSON mapping"):
        build_config({}, overrides="[1, 2]")


@pytest.mark.parametrize("params, msg", [
    ({"seed": -1}, "seed=-1 must be an integer >= 0"),
    ({"seed": "abc"}, "seed='abc' must be an integer >= 0"),
    ({"split_seed": 1.5}, "split_seed=1.5 must be an integer >= 0"),
    ({"momentum": -0.9}, "momentum=-0.9 must be a finite number >= 0"),
    ({"weight_decay": -1e-4}, "weight_decay=-0.0001 must be a finite number >= 0"),
    ({"eval_batch_size": 0}, "eval_batch_size=0 must be an integer >= 1"),
    ({"img_size": 0}, "img_size=0 must be an integer >= 8"),
    ({"schedule": "step", "step_epochs": 0}, "step_epochs=0 must be an integer >= 1"),
    ({"step_gamma": 0}, "step_gamma=0 must be a number in"),
    ({"topk": 0}, "topk=0 must be an integer >= 1"),
    ({"backbone_lr": 0}, "backbone_lr=0 must be a positive finite number"),
])
def test_one_validation_names_the_field(params, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace("[", r"\[")):
        RunConfig(**{**TINY, **params}).validate()


def test_the_one_yaml_loader(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("model:\n  bits: 16\ntrain.lr: 0.01\nloss_params: {lambda1: 0.1}\n")
    assert load_yaml(good) == {"model": {"bits": 16}, "train.lr": 0.01, "loss_params": {"lambda1": 0.1}}
    assert RunConfig.from_dict(load_yaml(good)).lr == 0.01
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(tmp_path / "list.yaml")


def test_cli_train_with_a_preset_and_dotted_sets(tmp_path):
    from hashlib_vit.cli import main

    run = tmp_path / "run"
    rc = main(["train", "--preset", "transhash", "--backbone", "vit32_test", "--bits", "16", "--epochs", "1",
               "--batch-size", "64", "--device", "cpu", "--progress", "false", "--save-codes", "false",
               "--set", "loss_params.gamma=5", "--set", "train.warmup_steps=0", "--run-dir", str(run)])
    assert rc == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["head"] == "mgvt" and cfg["model"]["model_params"] == {"groups": 2}
    assert cfg["loss"] == {"loss": "transhash", "loss_params": {"gamma": 5}} and cfg["train"]["warmup_steps"] == 0
    assert main(["train", "--set", "nonsense"]) == 2  # not KEY=VALUE: an error before anything runs


def test_docs_configuration_lists_every_field_as_the_code_does():
    from pathlib import Path

    from hashlib_vit.config import describe

    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert describe() in text


def test_code_stats_writes_the_code_statistics(tmp_path):
    from hashlib_vit.experiment import run_experiment

    run_experiment(**TINY, run_dir=str(tmp_path / "r"), code_stats=True, save_codes=False)
    diag = json.loads((tmp_path / "r" / "diagnostics.json").read_text())
    assert set(diag) == {"mean_abs_u", "input_spread", "distinct_db_codes", "bit_balance"}
    assert 1 <= diag["distinct_db_codes"] <= 1697 and 0 <= diag["bit_balance"] <= 1 and diag["mean_abs_u"] > 0
    assert field_role("code_stats") == "record"
