"""hashlib-vit reproduce: table registry, notebook overrides, grid validation, GPU-time estimates, and one
paper recipe end to end (two steps on real CIFAR-10 images from a stand-in hub checkpoint, offline)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from hashlib_vit import cli
from hashlib_vit.errors import ConfigError, DataError
from hashlib_vit.config import RunConfig, apply_overrides, build_config
from hashlib_vit.results import RunDir
from hashlib_vit.reproduce import (TABLES, THROUGHPUT_COLUMNS, apply_options, check_weights_spec, estimate_config,
                                   lookup_rate, notebook_run_configs, parse_sets, plan, read_throughput,
                                   vit_forward_flops)
from hashlib_vit.runner import load_grid, validate_grid

ROOT = Path(__file__).resolve().parents[1]
NB02 = ROOT / "notebooks" / "02_transhash.ipynb"
NB05 = ROOT / "notebooks" / "05_loss_zoo.ipynb"


# ----------------------------------------------------------------------------- overrides helper
def test_overrides_reach_the_config_and_merge_dicts():
    cfg = build_config(dict(protocol="digits", backbone="vit32_test", lr=0.03, model_params={"groups": 2},
                                    head="mgvt", loss="transhash", bits=16),
                               overrides={"weight_decay": 1e-4, "warmup_steps": 500, "backbone_lr": 3e-3,
                                          "momentum": 0.8, "model_params": {"local_rearrange": True}})
    assert (cfg.weight_decay, cfg.warmup_steps, cfg.backbone_lr, cfg.momentum) == (1e-4, 500, 3e-3, 0.8)
    assert cfg.model_params == {"groups": 2, "local_rearrange": True} and cfg.lr == 0.03
    assert apply_overrides({"lr": 0.1}, '{"lr": 0.1, "amp": "off"}') == {"lr": 0.1, "amp": "off"}  # equal: no clash


def test_overrides_refuse_unknown_names_conflicts_and_bad_values():
    with pytest.raises(ConfigError, match=r"unknown parameter 'wd'"):
        apply_overrides({}, {"wd": 1e-4})
    with pytest.raises(ConfigError, match=r"overrides\['lr'\]=0.5 conflicts with the explicit parameter lr=0.03"):
        apply_overrides({"lr": 0.03}, {"lr": 0.5})
    with pytest.raises(ConfigError, match=r"overrides\['model_params'\] sets \{'groups': 3\}.*\{'groups': 2\}"):
        apply_overrides({"model_params": {"groups": 2}}, {"model_params": {"groups": 3}})
    with pytest.raises(ConfigError, match="schedule='linear' is not a known value"):
        build_config({"backbone": "vit32_test"}, overrides={"schedule": "linear"})


def test_notebook_builds_its_configs_with_overrides_and_reports_conflicts():
    params = {"backbone": "vit32_test", "bits": 16, "lr": 0.03, "optimizer": "sgd",
              "overrides": {"weight_decay": 1e-4, "warmup_steps": 500, "momentum": 0.9, "schedule": "cosine"}}
    (cfg,) = notebook_run_configs(NB02, params)
    assert (cfg.head, cfg.loss, cfg.bits, cfg.lr, cfg.optimizer) == ("mgvt", "transhash", 16, 0.03, "sgd")
    assert (cfg.weight_decay, cfg.warmup_steps, cfg.momentum) == (1e-4, 500, 0.9)
    with pytest.raises(ConfigError, match=r"overrides\['optimizer'\]='adam' conflicts .* optimizer='sgd'"):
        notebook_run_configs(NB02, {**params, "overrides": {"optimizer": "adam"}})
    with pytest.raises(ConfigError, match="bits=16 with groups=3"):  # bits/groups compatibility, in the notebook's own check
        notebook_run_configs(NB02, {**params, "groups": 3})
    zoo = notebook_run_configs(NB05, {"losses": ["csq", "dpsh"], "bits_list": [16, 32], "backbone": "vit32_test",
                                      "overrides": {"backbone_lr": 1e-5}})
    assert [(c.loss, c.bits, c.backbone_lr) for c in zoo] == [("csq", 16, 1e-5), ("csq", 32, 1e-5),
                                                              ("dpsh", 16, 1e-5), ("dpsh", 32, 1e-5)]


# ----------------------------------------------------------------------------- grids
def _grid(tmp_path, fixed: dict, sweep: dict | None = None) -> Path:
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({"notebook": str(NB02), "output": str(tmp_path / "runs"), "fixed": fixed,
                                 "sweep": sweep or {"bits": [16]}}))
    return p


def test_runner_validates_overrides_before_anything_runs(tmp_path):
    ok = load_grid(_grid(tmp_path, {"backbone": "vit32_test", "overrides": {"weight_decay": 1e-4}}))
    validate_grid(ok)
    for overrides, msg in (({"weight_decai": 1e-4}, r"'weight_decai': not a configuration field; did you mean weight_decay"),
                           ({"warmup_steps": "500"}, r"warmup_steps='500' \(expected int\)"),
                           ({"optimizer": "lamb"}, "optimizer='lamb' is not a known value"),
                           ({"lr": 0.5}, r"conflicts with the explicit parameter lr=0.03")):
        g = load_grid(_grid(tmp_path, {"backbone": "vit32_test", "lr": 0.03, "overrides": overrides}))
        with pytest.raises(ConfigError, match=msg):
            validate_grid(g)
    assert not (tmp_path / "runs").exists()


def test_set_weights_and_data_root_pass_through(tmp_path):
    g = load_grid(_grid(tmp_path, {"backbone": "vit32_test"},
                        {"data": [{"name": "d", "protocol": "digits"}, {"name": "c", "protocol": "cifar10"},
                                  {"name": "c2", "protocol": "cifar10-2"}]}))
    apply_options(g, weights=["vit32_test=w.pth"], data_root=["cifar10=/x/c10"],
                  sets=parse_sets(["epochs=1", "warmup_steps=0", 'data_options={"missing": "skip"}']))
    d, c, c2 = g.runs
    assert d.params["epochs"] == 1 and d.params["overrides"] == {"warmup_steps": 0}  # not a notebook parameter
    assert d.params["data_options"] == {"missing": "skip"} and d.params["weights"] == "w.pth"
    assert "data_root" not in d.params and c.params["data_root"] == c2.params["data_root"] == "/x/c10"
    apply_options(g, weights=["none"], data_root=["/y"])
    assert [r.params["weights"] for r in g.runs] == [None] * 3 and {r.params["data_root"] for r in g.runs} == {"/y"}
    with pytest.raises(ConfigError, match="--set nonsense: neither a parameter of 02_transhash.ipynb nor a RunConfig"):
        apply_options(g, sets={"nonsense": 1})


def test_every_paper_grid_is_registered_tagged_and_sets_the_recipe():
    grids = {Path(t.grid).name for t in TABLES.values()}
    # the smoke-scale grids are not paper tables
    assert grids == {p.name for p in (ROOT / "configs" / "grids").glob("*.yaml")} - {"smoke.yaml", "loss_zoo.yaml"}
    for t in TABLES.values():
        text = t.grid_path.read_text()
        assert "cannot follow" not in text and "does not expose" not in text, t.grid
        assert "[K]" in text or "[C]" in text, t.grid
        g = load_grid(t.grid_path)
        for r in g.runs:
            # notebook target: the recipe's RunConfig fields travel in `overrides`; experiment target: they are
            # the run's own parameters
            ov = r.params if r.target == "experiment" else (r.params.get("overrides") or {})
            for name in ("weight_decay", "warmup_steps", "schedule", "backbone_lr", "amp"):
                assert name in ov, (t.name, r.name, name)
            assert ov.get("img_size", r.params.get("img_size")) == 224, (t.name, r.name)
    th = load_grid(TABLES["transhash-table1"].grid_path).runs[0].params
    assert (th["optimizer"], th["lr"], th["batch_size"], th["overrides"]["weight_decay"],
            th["overrides"]["warmup_steps"]) == ("sgd", 0.03, 64, 1e-4, 500)
    study = load_grid(TABLES["aevit-backbone-study"].grid_path).runs
    assert {r.params["backbone"] for r in study} == {"vit_base_patch16_224.augreg_in21k", "resnet50.a1_in1k", "alexnet"}
    assert {json.dumps(r.params.get("model_params.aem")) for r in study} == {"null", '"off"', '"all"'}
    assert {r.config().model_params.get("aem") for r in study if r.swept["model"] == "aevit"} == {"all"}
    assert {r.swept["model"] for r in study} == {"aevit", "vit", "resnet50", "alexnet"}
    assert {r.params["loss"] for r in study} == {"dsh", "dpsh", "hashnet", "csq", "hsc"}
    zoo = load_grid(TABLES["loss-zoo"].grid_path).runs  # loss x bits x data x backbone x seed, one run each
    assert len(zoo) == 7 * 3 * 2 * 2 * 2 and {r.target for r in zoo} == {"experiment"}


def test_list_names_every_table_with_its_grid(capsys):
    assert cli.main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for t in TABLES.values():
        assert t.name in out and t.grid in out and t.paper in out


# ----------------------------------------------------------------------------- estimates
def _throughput(tmp_path, rows: list[dict]) -> Path:
    p = tmp_path / "throughput.csv"
    lines = [",".join(THROUGHPUT_COLUMNS)]
    for r in rows:
        full = {"device": "GPU-X", "head": "cls_linear", "aem": "false", "batch_size": "64", "amp": "bf16",
                "peak_mem_gib": "", "source": "test", **r}
        lines.append(",".join(str(full[c]) for c in THROUGHPUT_COLUMNS))
    p.write_text("\n".join(lines) + "\n")
    return p


def test_vit_flops_are_counted_from_depth_width_and_tokens():
    # ViT-B/16 at 224: 196 patches + CLS, D = 768, 12 blocks, MLP 3072
    t, d = 197, 768
    block = 2 * t * (4 * d * d + 2 * 4 * d * d + 2 * t * d)
    expected = 2 * 196 * 3 * 16 * 16 * d + 12 * block
    assert vit_forward_flops("vit_base_patch16_224") == pytest.approx(expected)
    assert vit_forward_flops("vit_base_patch16_224.augreg_in21k", 224) == pytest.approx(expected)
    # MGVT adds the local block on G groups of N/G + 1 tokens; AEM the 3x3 depth-wise + D x D point-wise convs
    local = 2 * (2 * 99 * (12 * d * d + 2 * 99 * d))
    assert vit_forward_flops("vit_base_patch16_224", head="mgvt") == pytest.approx(expected + local)
    assert vit_forward_flops("vit_base_patch16_224", aem=True) == pytest.approx(expected + 2 * 196 * (9 * d + d * d))
    assert vit_forward_flops("resnet50") is None


def test_estimate_uses_an_exact_row_scales_the_nearest_or_says_unknown(tmp_path):
    rows = read_throughput(_throughput(tmp_path, [
        {"backbone": "vit_base_patch16_224", "img_size": 224, "train_img_s": 1000, "encode_img_s": 5000},
        {"backbone": "vit32_small", "img_size": 32, "train_img_s": 20000, "encode_img_s": 60000}]))
    cfg = RunConfig(protocol="cifar10", backbone="vit_base_patch16_224.augreg_in21k", bits=32, epochs=10,
                    batch_size=64, img_size=224, eval_every=5)
    e = estimate_config(cfg, rows)
    # 10 epochs x 5,000 train images; evaluations at epochs 5 and 10: 2 x (1,000 + 54,000)
    assert (e.train_images, e.encode_images, e.steps) == (50_000, 110_000, 10 * 79)
    assert e.seconds == pytest.approx(50_000 / 1000 + 110_000 / 5000) and e.basis.startswith("measured")
    big = RunConfig(protocol="cifar10", backbone="vit_large_patch32_224", head="mgvt", bits=32, epochs=1)
    r = lookup_rate(rows, "vit_large_patch32_224", "mgvt", False, 224, {"groups": 2})
    k = vit_forward_flops("vit_base_patch16_224", 224) / vit_forward_flops("vit_large_patch32_224", 224, "mgvt")
    assert r.train_img_s == pytest.approx(1000 * k) and r.encode_img_s == pytest.approx(5000 * k)
    assert r.basis.startswith("scaled from vit_base_patch16_224/cls_linear@224px on GPU-X")
    assert estimate_config(big, rows).seconds == pytest.approx(5000 / r.train_img_s + 55_000 / r.encode_img_s)
    cnn = estimate_config(RunConfig(protocol="cifar10", backbone="resnet50", epochs=1), rows)
    assert cnn.seconds is None and cnn.basis.startswith("unknown")
    nothing = estimate_config(cfg, read_throughput(_throughput(tmp_path, [])))
    assert nothing.seconds is None and nothing.basis == "unknown: no measured throughput"
    nus = estimate_config(RunConfig(protocol="nuswide81", backbone="vit_base_patch16_224", epochs=1), rows)
    assert nus.seconds is None and "does not document its database size" in nus.basis
    # two devices: one plan uses one of them (the one with more rows unless --device says otherwise)
    two = read_throughput(_throughput(tmp_path, [
        {"backbone": "vit_base_patch16_224", "img_size": 224, "train_img_s": 1000, "encode_img_s": 5000},
        {"device": "GPU-Y", "backbone": "vit_base_patch16_224", "img_size": 224, "train_img_s": 3000,
         "encode_img_s": 9000},
        {"device": "GPU-Y", "backbone": "vit32_small", "img_size": 32, "train_img_s": 20000, "encode_img_s": 60000}]))
    assert estimate_config(cfg, two).seconds == pytest.approx(50_000 / 3000 + 110_000 / 9000)
    assert estimate_config(cfg, two, device="gpu-x").seconds == pytest.approx(50_000 / 1000 + 110_000 / 5000)


def test_throughput_table_is_checked(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("device,backbone\nx,y\n")
    with pytest.raises(DataError, match="columns .* expected exactly device,backbone,head"):
        read_throughput(bad)
    p = _throughput(tmp_path, [{"backbone": "vit_base_patch16_224", "img_size": 224, "train_img_s": "fast",
                                "encode_img_s": 1}])
    with pytest.raises(DataError, match=r"line 2: train_img_s='fast' is not a float"):
        read_throughput(p)
    shipped = read_throughput()  # the package's table: only measured rows, each saying where from
    assert all(r.source and r.train_img_s > 0 for r in shipped)


# ----------------------------------------------------------------------------- dry run
def test_dry_run_validates_weights_data_and_prints_the_plan(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    tp = _throughput(tmp_path, [{"backbone": "vit32_test", "head": "mgvt", "img_size": 32, "train_img_s": 500,
                                 "encode_img_s": 2000}])
    args = ["reproduce", "transhash-table1", "--dry-run", "--output", str(tmp_path / "out"), "--throughput", str(tp),
            "--only", "data-cifar10_bits-16_seed-0", "data-cifar10_bits-32_seed-0"]
    with pytest.raises(ConfigError) as err:  # the recipe's hub weights are not in the (empty) cache
        cli_main_raising(args + ["--data-root", f"cifar10={tmp_path}"])
    msg = str(err.value)
    assert "2 problem(s)" not in msg and "runs data-cifar10_bits-16_seed-0, data-cifar10_bits-32_seed-0" in msg
    assert "timm/vit_large_patch32_224.orig_in21k" in msg and str(tmp_path / "empty_cache") in msg
    (tmp_path / "w.pth").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"data_root='/nonexistent' of protocol 'cifar10' is not a folder"):
        cli_main_raising(args + ["--weights", str(tmp_path / "w.pth"), "--data-root", "cifar10=/nonexistent"])
    capsys.readouterr()
    assert cli_main_raising(args + ["--weights", "none", "--data-root", f"cifar10={tmp_path}", "--set",
                                    "backbone=vit32_test", "--set", "epochs=2", "--set", "img_size=32"]) == 0
    out = capsys.readouterr().out.splitlines()
    runs = [ln for ln in out if ln.startswith("data-cifar10_bits-")]
    assert len(runs) == 2 and "protocol cifar10 | backbone vit32_test | bits 16 | epochs 2 | steps 158" in runs[0]
    per_run = 2 * 5000 / 500 + 55_000 / 2000
    assert f"est. GPU {per_run:.0f} s" in runs[0] and "measured: vit32_test/mgvt@32px on GPU-X" in runs[0]
    assert out[-1] == f"total estimated GPU time of the 2 run(s) still to do: {2 * per_run / 60:.1f} min"
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def cli_main_raising(argv):
    """cli.main turns errors into exit code 2; the reproduce entry point itself raises them."""
    from hashlib_vit.reproduce import reproduce_arguments, reproduce_main
    import argparse

    return reproduce_main(reproduce_arguments(argparse.ArgumentParser()).parse_args(argv[1:]))


# ----------------------------------------------------------------------------- end to end
def _tiny_cifar_split(folder: Path) -> Path:
    """Real CIFAR-10 images by id: 4 train (two steps of 2), 5 query, 10 database (every query class in it)."""
    from hashlib_vit.data.sources import CIFAR10_CLASSES
    from hashlib_vit.data.splits import write_split_files

    def part(split, start, n):
        ids = [f"{split}/{CIFAR10_CLASSES[i % 10]}/{start + i // 10:04d}.jpg" for i in range(n)]
        return ids, np.eye(10, dtype=np.uint8)[[i % 10 for i in range(n)]]

    write_split_files(folder, {"query": part("test", 0, 5), "train": part("train", 0, 4),
                               "database": part("train", 100, 10)})
    return folder


def test_transhash_recipe_end_to_end_on_real_cifar10_from_a_hub_standin(shared_data, tmp_path, monkeypatch):
    from hashlib_vit.models.standin import make_fake_hf_cache

    cache = tmp_path / "hf"
    make_fake_hf_cache(cache, "vit_tiny_patch16_224.augreg_in21k", seed=0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    split = _tiny_cifar_split(tmp_path / "split")
    out = tmp_path / "out"
    rc = cli.main(["reproduce", "transhash-table1", "--only", "data-cifar10_bits-16_seed-0", "--output", str(out),
                   "--weights", "hub", "--data-root", f"cifar10={shared_data / 'cifar10'}",
                   "--set", "backbone=vit_tiny_patch16_224.augreg_in21k", "--set", "epochs=1", "--set", "batch_size=2",
                   "--set", json.dumps({"split_dir": str(split)}).join(["data_options=", ""]),
                   "--set", "device=cpu", "--no-figures", "--no-progress"])
    assert rc == 0
    rd = out / "runs" / "data-cifar10_bits-16_seed-0"
    m = json.loads((rd / "metrics.json").read_text())
    cfg = RunDir(rd).config()  # config.json (sectioned) as flat fields
    assert m["pretrained"] is True and m["weights"]["source"] == "hf-cache" and m["bits"] == 16
    # the paper's recipe reached the run: [K] SGD 3e-2, wd 1e-4, 500 warm-up, cosine; [I] momentum, clip; 224 px
    assert (cfg["optimizer"], cfg["lr"], cfg["weight_decay"], cfg["warmup_steps"], cfg["schedule"], cfg["momentum"],
            cfg["grad_clip"], cfg["img_size"], cfg["head"], cfg["model_params"]["groups"]) == \
        ("sgd", 0.03, 1e-4, 500, "cosine", 0.9, 1.0, 224, "mgvt", 2)
    log = (rd / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 2  # two steps: 4 train images, batch 2
    codes = np.load(rd / "codes.npz")
    assert codes["query_codes"].shape == (5, 16) and codes["db_codes"].shape == (10, 16)
    assert 0.0 <= m["map"] <= 1.0
    table = (out / "tables" / "paper_table.md").read_text()
    ours = [ln for ln in table.splitlines() if ln.startswith("| ours")]
    paper = [ln for ln in table.splitlines() if ln.startswith("| TransHash | TransHash |")]
    assert len(ours) == 1 and f"{m['map']:.3f}" in ours[0]
    assert len(paper) == 1 and "0.9075" in paper[0]  # Table 1, CIFAR-10, 16 bits
    assert (out / "tables" / "comparison.md").is_file() and (out / "runs" / "grid_summary.csv").is_file()
