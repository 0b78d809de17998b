"""benchmarks/bench_recipes.py: the GPU-hours arithmetic, the throughput.csv rows, the report's guards."""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import sys
from pathlib import Path

import pytest

from hashlib_vit.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def B():
    spec = importlib.util.spec_from_file_location("bench_recipes", ROOT / "benchmarks" / "bench_recipes.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_recipes"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_steps_per_epoch_matches_tensorbatches(B):
    import torch

    from hashlib_vit.data import Split, TensorBatches, TensorTransform

    for n, b in [(5000, 64), (129, 64), (128, 64), (13000, 64), (10, 4)]:
        split = Split(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.zeros(n, 2))
        assert B.steps_per_epoch(n, b) == len(TensorBatches(split, b, TensorTransform(4), train=True)), (n, b)
    assert B.steps_per_epoch(5000, 64) == 79  # 127 epochs x 79 = 10,033 steps: TransHash's ~10,000 (METHODS §2.5)
    assert B.steps_per_epoch(129, 64) == 2  # the trailing single image is dropped
    with pytest.raises(ConfigError, match="n_train=1"):
        B.steps_per_epoch(1, 64)


def test_run_cost_formula(B):
    rate = {"train_img_s": 640.0, "encode_img_s": 5500.0, "batch": 64}
    c = B.run_cost(rate, epochs=127, n_train=5000, n_query=1000, n_database=54000)
    assert c["steps"] == 127 * 79
    assert c["train_s"] == pytest.approx(127 * 79 * 64 / 640.0)  # 1,003.3 s
    assert c["encode_s"] == pytest.approx(55000 / 5500.0)  # 10 s
    assert c["total_s"] == pytest.approx(c["train_s"] + c["encode_s"])
    c3 = B.run_cost(rate, epochs=127, n_train=5000, n_query=1000, n_database=54000, n_evals=3)
    assert c3["encode_s"] == pytest.approx(30.0) and c3["train_s"] == c["train_s"]
    with pytest.raises(ConfigError, match="train_img_s=0"):
        B.run_cost({**rate, "train_img_s": 0}, epochs=1, n_train=10, n_query=1, n_database=1)


def test_table_costs_with_made_up_rates(B):
    rates = {name: {"train_img_s": 1000.0, "encode_img_s": 10000.0, "batch": 64} for name in B.RECIPES}
    rates["transhash_mgvt"] = {"train_img_s": 500.0, "encode_img_s": 4000.0, "batch": 64}
    tables = {t["table"]: t for t in B.table_costs(rates)}
    t1 = tables["transhash_table1"]
    assert t1["runs"] == 12 and t1["complete"]
    # by hand: cifar10 127 x 79 steps, nuswide81 64 x 157 (10,000 / 64), imagenet100 49 x 204 (13,000 / 64)
    by_hand = 4 * sum(e * s * 64 / 500.0 + (q + d) / 4000.0
                      for e, s, q, d in [(127, 79, 1000, 54000), (64, 157, 5000, B.NUSWIDE81_DATABASE),
                                         (49, 204, 5000, 128503)]) / 3600
    assert t1["hours"] == pytest.approx(by_hand)
    assert tables["transhash_table2"]["runs"] == 16
    assert tables["transhash_table2"]["hours"] == pytest.approx(
        16 * (127 * 79 * 64 / 500.0 + 55000 / 4000.0) / 3600)
    assert tables["aevit_hsc"]["runs"] == 24
    assert tables["slvit"]["runs"] == 32
    assert tables["loss_zoo"]["runs"] == 168
    assert tables["aevit_backbone_study"]["runs"] == 2 * 4 * (1 + 4 * 5)
    # groups add up to the table
    for t in tables.values():
        assert t["hours"] == pytest.approx(sum(g["hours"] for g in t["groups"]))
        for g in t["groups"]:
            assert g["hours"] == pytest.approx(g["runs"] * g["run_hours"])
            assert g["hours"] == pytest.approx(g["train_hours"] + g["encode_hours"])


def test_missing_rate_makes_a_partial_table(B):
    rates = {"transhash_mgvt": {"train_img_s": 500.0, "encode_img_s": 4000.0, "batch": 64}}
    tables = {t["table"]: t for t in B.table_costs(rates)}
    assert tables["transhash_table1"]["complete"]
    slvit = tables["slvit"]
    assert not slvit["complete"] and slvit["hours"] == 0.0
    assert all(g["hours"] is None for g in slvit["groups"])


def test_protocol_sizes_come_from_the_protocols(B):
    from hashlib_vit.data import PROTOCOLS

    assert B.protocol_sizes("cifar10") == {"n_train": 5000, "n_query": 1000, "n_database": 54000, "note": ""}
    assert B.protocol_sizes("imagenet100")["n_database"] == PROTOCOLS.get("imagenet100").n_database
    nus = B.protocol_sizes("nuswide81")  # no documented database size: HashNet's count, marked [I]
    assert nus["n_database"] == 190834 and "[I]" in nus["note"]


def _row(B, **kw):
    """A row as `measure` writes it (the recipe's fields + the rates), with made-up numbers."""
    from dataclasses import asdict

    row = {"recipe": "aevit_hsc", **asdict(B.RECIPES["aevit_hsc"]), "n_views": 1, "params_m": 86.5, "amp": "bf16",
           "compile": False, "train_img_s": 1234.567, "encode_img_s": 9876.54, "peak_mem_gib": 12.3456,
           "env": {"device": "cuda", "device_name": "NVIDIA H200"}}
    row.update(kw)
    row["train_step_s"] = row["batch"] / row["train_img_s"]
    return row


def test_throughput_row_format(B):
    r = B.throughput_row(_row(B), {"device_name": "NVIDIA H200"}, "cmd (2026-11-30)")
    assert tuple(r) == B.THROUGHPUT_COLUMNS
    assert B.THROUGHPUT_COLUMNS == ("device", "backbone", "head", "aem", "img_size", "batch_size", "amp",
                                    "train_img_s", "encode_img_s", "peak_mem_gib", "source")
    assert r == {"device": "NVIDIA H200", "backbone": "vit_base_patch16_224", "head": "cls_linear", "aem": "true",
                 "img_size": 224, "batch_size": 64, "amp": "bf16", "train_img_s": "1234.6", "encode_img_s": "9876.5",
                 "peak_mem_gib": "12.35", "source": "cmd (2026-11-30)"}
    off = B.throughput_row(_row(B, aem="off", peak_mem_gib=None), {"device_name": "x"}, "s")
    assert off["aem"] == "false" and off["peak_mem_gib"] == ""


def test_merge_throughput_replaces_same_configuration(B):
    header = ",".join(B.THROUGHPUT_COLUMNS) + "\n"
    old = (header + "NVIDIA H200,vit_base_patch16_224,cls_linear,true,224,64,bf16,1.0,2.0,3.00,old\n"
           "NVIDIA H100 80GB HBM3,vit_base_patch16_224,cls_linear,false,224,256,bf16,2960,9653,,train_gpu.md\n")
    new = [B.throughput_row(_row(B), {"device_name": "NVIDIA H200"}, "new")]
    rows = list(csv.DictReader(io.StringIO(B.merge_throughput(old, new))))
    assert [r["source"] for r in rows] == ["train_gpu.md", "new"]  # the H200 row replaced, the H100 row kept
    assert rows[1]["train_img_s"] == "1234.6"
    # empty / missing file: header + the new rows
    assert B.merge_throughput("", new).splitlines()[0] == ",".join(B.THROUGHPUT_COLUMNS)
    with pytest.raises(DataError, match="header"):
        B.merge_throughput("device,backbone\nx,y\n", new)


def test_report_writes_only_into_out_dir_and_refuses_cpu_commit(B, tmp_path, monkeypatch):
    csv_path = tmp_path / "repo_throughput.csv"
    results = tmp_path / "results"
    monkeypatch.setattr(B, "THROUGHPUT_CSV", csv_path)
    monkeypatch.setattr(B, "RESULTS_DIR", results)
    rows = [_row(B, date="2026-11-30", command="measure x"),
            _row(B, recipe="aevit_hsc_2views", n_views=2, train_img_s=600.0),
            {"recipe": "transhash_mgvt", "error": "OutOfMemory: ...", "compile": False,
             "env": {"device": "cuda", "device_name": "NVIDIA H200"}}]
    raw = B.report(rows, command="report", out_dir=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["recipes_gpu.json", "recipes_gpu.md",
                                                                  "throughput.csv"]
    assert not csv_path.exists() and not results.exists()  # nothing in the repository without --commit-results
    tp = list(csv.DictReader(io.StringIO((tmp_path / "out" / "throughput.csv").read_text())))
    assert len(tp) == 1 and tp[0]["aem"] == "true"  # the two-view row is not a throughput.csv configuration
    md = (tmp_path / "out" / "recipes_gpu.md").read_text()
    assert "NVIDIA H200" in md and "**failed**" in md and "partial" in md
    tables = {t["table"]: t for t in raw["tables"]}
    assert not tables["transhash_table1"]["complete"]  # its recipe failed
    assert json.loads((tmp_path / "out" / "recipes_gpu.json").read_text())["env"]["device_name"] == "NVIDIA H200"
    # commit: CUDA rows land in the repository files
    B.report(rows, command="report", out_dir=tmp_path / "out2", commit=True)
    assert (results / "recipes_gpu.md").is_file() and csv_path.read_text().startswith("device,backbone")
    # CPU rows are never committed
    cpu = [_row(B, env={"device": "cpu", "device_name": "cpu"})]
    with pytest.raises(ConfigError, match="only CUDA"):
        B.report(cpu, command="report", out_dir=tmp_path / "out3", commit=True)


def test_read_rows_ignores_a_cut_last_line(B, tmp_path):
    p = tmp_path / "rows.jsonl"
    B.append_row(p, {"recipe": "a", "x": 1.5})
    p.write_text(p.read_text() + '{"recipe": "b", "x"')
    assert B.read_rows(p) == [{"recipe": "a", "x": 1.5}]
    with pytest.raises(DataError, match="does not exist"):
        B.read_rows(tmp_path / "none.jsonl")


def test_smoke_recipe_is_small_and_keeps_the_method(B):
    r = B.RECIPES["transhash_mgvt"]
    assert (r.backbone, r.head, r.loss, r.batch, r.img_size, r.optimizer) == (
        "vit_large_patch32_224", "mgvt", "transhash", 64, 224, "sgd")
    s = r.smoke()
    assert (s.backbone, s.img_size, s.batch, s.head, s.loss) == ("vit_tiny_patch16_224", 64, 4, "mgvt", "transhash")
    assert B.RECIPES["aevit_hsc_2views"].n_views == 2 and B.RECIPES["aevit_hsc"].n_views == 1
    assert B.RECIPES["resnet50_32"].smoke().img_size == 32
    assert math.isclose(B.RECIPES["slvit_hcl"].weight_decay, 5e-4)


def test_report_keeps_eager_rate_beside_a_failed_compile(B, tmp_path, monkeypatch):
    monkeypatch.setattr(B, "THROUGHPUT_CSV", tmp_path / "none.csv")
    rows = [_row(B), {"recipe": "aevit_hsc", "compile": True, "error": "TimeoutError: compile",
                      "env": {"device": "cuda", "device_name": "NVIDIA H200"}},
            {"recipe": "aevit_hsc", "compile": False, "error": "OutOfMemory: later retry",
             "env": {"device": "cuda", "device_name": "NVIDIA H200"}}]
    raw = B.report(rows, command="report", out_dir=tmp_path / "out")
    assert [(r["recipe"], r["compile"], "error" in r) for r in raw["recipes"]] == [("aevit_hsc", False, False),
                                                                                  ("aevit_hsc", True, True)]
    g = next(t for t in raw["tables"] if t["table"] == "aevit_hsc")["groups"][0]
    assert g["recipe"] == "aevit_hsc" and g["hours"] == pytest.approx(
        4 * (100 * 79 * 64 / 1234.567 + 55000 / 9876.54) / 3600)
