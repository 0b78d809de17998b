"""The run directory's metrics.json: schema versions, the one validating reader, write_metrics refusing
metrics without curves, the migration of schema-1 files, and the single collector's columns."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import fake_curves

from hashlib_vit.errors import ConfigError, DataError
from hashlib_vit.results import REQUIRED_METRICS, SCHEMA_VERSION, RunDir, read_metrics
from hashlib_vit.results.collect import CODE_STATISTICS, collect, variant_fields
from hashlib_vit.results.migrate import migrate, migrate_run

BASE = {"method": "csq", "backbone": "vit32_test", "protocol": "digits", "bits": 4, "topk": "all", "map": 0.5,
        "epochs": 1, "seed": 0, "pretrained": False}


def write_raw(tmp_path, obj, name="run") -> RunDir:
    rd = RunDir(tmp_path / name).prepare()
    rd.file("metrics.json").write_text(json.dumps(obj))
    return rd


def test_write_metrics_stamps_schema_2_and_reads_back(tmp_path):
    rd = RunDir(tmp_path / "r").prepare()
    given = {**BASE, "curves": fake_curves(4)}
    rd.write_metrics(given)
    raw = json.loads(rd.file("metrics.json").read_text())
    assert given == raw  # the caller's dict is stamped too: in-memory metrics equal the file
    assert SCHEMA_VERSION == 2 and raw["schema_version"] == 2
    m = read_metrics(rd.file("metrics.json"))
    assert m == raw and m["curves"]["pr_hamming"]["radius"] == [0, 1, 2, 3, 4]


def test_write_metrics_refuses_metrics_without_curves_before_writing(tmp_path):
    rd = RunDir(tmp_path / "r").prepare()
    with pytest.raises(ConfigError, match="required key 'curves' missing"):
        rd.write_metrics(dict(BASE))
    bad = fake_curves(4)
    del bad["pr_rank"]
    with pytest.raises(ConfigError, match=r"'curves\.pr_rank' is missing"):
        rd.write_metrics({**BASE, "curves": bad})
    with pytest.raises(ConfigError, match=r"required key\(s\) \['map'\] missing"):
        rd.write_metrics({k: v for k, v in BASE.items() if k != "map"} | {"curves": fake_curves(4)})
    assert not rd.file("metrics.json").exists()  # nothing half-written


def test_read_metrics_accepts_schema_1_with_or_without_curves(tmp_path):
    m1 = read_metrics(write_raw(tmp_path, BASE, "a").file("metrics.json"))
    assert "schema_version" not in m1 and m1["map"] == 0.5
    m1c = read_metrics(write_raw(tmp_path, {**BASE, "curves": fake_curves(4)}, "b").file("metrics.json"))
    assert m1c["curves"]["pr_rank"]["rank"] == [1, 5, 10]


@pytest.mark.parametrize("change, match", [
    ({"bits": "32"}, r"key 'bits' is '32' \(str\); expected an integer"),
    ({"bits": True}, r"key 'bits' is True \(bool\); expected an integer"),
    ({"map": "0.5"}, r"key 'map' is '0.5' \(str\); expected a number"),
    ({"method": 3}, r"key 'method' is 3 \(int\); expected a string"),
    ({"topk": 1.5}, r"key 'topk' is 1.5 \(float\); expected an integer or 'all'"),
    ({"schema_version": 3}, r"key 'schema_version' is 3; expected 2"),
    ({"schema_version": 2}, r"required key 'curves' missing"),
    ({"curves": [1, 2]}, r"key 'curves' is list; expected a dict"),
    ({"curves": {**fake_curves(4), "pr_hamming": {"radius": [0, 1], "precision": [1.0], "recall": [0.1, 1.0]}}},
     r"lists of 'curves\.pr_hamming' .* differ in length"),
    ({"curves": {**fake_curves(4), "pr_rank": {"rank": [1], "precision": ["x"], "recall": [0.1]}}},
     r"'curves\.pr_rank\.precision' holds 'x'"),
])
def test_read_metrics_names_the_file_and_the_key(tmp_path, change, match):
    rd = write_raw(tmp_path, {**BASE, **change})
    with pytest.raises(DataError, match=match) as err:
        read_metrics(rd.file("metrics.json"))
    assert str(rd.file("metrics.json")) in str(err.value)
    with pytest.raises(DataError, match=match):
        collect(tmp_path)  # the collector reads through the same validator


@pytest.mark.parametrize("key", REQUIRED_METRICS)
def test_read_metrics_missing_key(tmp_path, key):
    rd = write_raw(tmp_path, {k: v for k, v in BASE.items() if k != key})
    with pytest.raises(DataError, match=rf"metrics.json: required key\(s\) \['{key}'\] missing"):
        read_metrics(rd.file("metrics.json"))


def test_read_metrics_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_metrics(tmp_path / "nope" / "metrics.json")
    rd = RunDir(tmp_path / "r").prepare()
    rd.file("metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        read_metrics(rd.file("metrics.json"))
    rd.file("metrics.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="holds list; expected a JSON object"):
        read_metrics(rd.file("metrics.json"))


def test_migrate_stamps_computes_or_reports(tmp_path):
    with_curves = write_raw(tmp_path, {**BASE, "curves": fake_curves(4)}, "stamp")
    bare = write_raw(tmp_path, BASE, "bare")
    coded = write_raw(tmp_path, BASE, "coded")
    rng = np.random.default_rng(0)
    ql, dl = rng.integers(0, 2, 6), rng.integers(0, 2, 20)
    coded.write_codes(query_codes=np.where(rng.random((6, 4)) < 0.5, -1, 1).astype(np.int8), query_labels=ql,
                      db_codes=np.where(rng.random((20, 4)) < 0.5, -1, 1).astype(np.int8), db_labels=dl)
    assert migrate(tmp_path, dry_run=True) == {str(bare.path): "no curves, no codes.npz: left as schema 1",
                                               str(coded.path): "curves from codes.npz",
                                               str(with_curves.path): "stamped"}
    assert "schema_version" not in json.loads(coded.file("metrics.json").read_text())  # dry run wrote nothing
    migrate(tmp_path)
    assert read_metrics(with_curves.file("metrics.json")) == {"schema_version": 2, **BASE, "curves": fake_curves(4)}
    m = read_metrics(coded.file("metrics.json"))
    assert m["schema_version"] == 2 and m["curves"]["pr_hamming"]["radius"] == [0, 1, 2, 3, 4]
    assert m["curves"]["pr_hamming"]["recall"][-1] == pytest.approx(1.0)  # radius K retrieves everything
    assert json.loads(bare.file("metrics.json").read_text()) == BASE  # unchanged
    assert migrate_run(coded.path) == "schema 2 already"


def test_collect_columns_one_row_per_run(tmp_path):
    a = RunDir(tmp_path / "zoo" / "csq_4bits").prepare()
    a.write_json("config.json", {"loss": "csq", "lr": 0.001, "seed": 0, "epochs": 1, "batch_size": 8})
    a.write_json("env.json", {"git_commit": "abc", "protocol": {"train": 500}})
    a.write_json("diagnostics.json", {"mean_abs_u": 0.9, "input_spread": 0.5, "distinct_db_codes": 12,
                                      "bit_balance": 0.1})
    a.write_metrics({**BASE, "map_random": 0.1, "curves": fake_curves(4)})
    b = write_raw(tmp_path / "zoo", {**BASE, "method": "dpsh", "map": 0.12, "map_random": 0.1}, "dpsh_4bits")
    b.write_json("config.json", {"loss": "dpsh", "lr": 0.001, "seed": 0})
    runs = collect(tmp_path).set_index("method")
    assert len(runs) == 2
    for col in ("config", "variant", "run_dir", "pretraining", "training", "family", "git_commit", "map_random",
                "note", "schema_version", "curves", *CODE_STATISTICS, *REQUIRED_METRICS[1:]):
        assert col in runs.columns, col
    assert runs.loc["csq", "schema_version"] == 2 and runs.loc["dpsh", "schema_version"] == 1
    assert runs.loc["csq", "note"] == "" and runs.loc["dpsh", "note"].startswith("at chance level")
    assert runs.loc["csq", "distinct_db_codes"] == 12 and np.isnan(runs.loc["dpsh", "mean_abs_u"])
    assert runs.loc["csq", "training"] == "1 ep, 500 train imgs, batch 8" and runs.loc["csq", "git_commit"] == "abc"
    assert runs.loc["csq", "config"]["lr"] == 0.001 and runs.loc["csq", "family"] == "digits"
    assert runs.loc["csq", "curves"]["pr_rank"]["rank"] == [1, 5, 10] and runs.loc["dpsh", "curves"] != runs.loc[
        "dpsh", "curves"]  # NaN: a schema-1 run without curves
    assert runs.loc["csq", "run_dir"] == str(a.path)


def test_variants_come_from_the_field_roles(tmp_path):
    for lr, seed in ((0.001, 0), (0.001, 1), (0.01, 0)):
        rd = RunDir(tmp_path / f"r_{lr}_{seed}").prepare()
        rd.write_json("config.json", {"lr": lr, "seed": seed, "device": f"cuda:{seed}"})
        rd.write_metrics({**BASE, "seed": seed, "curves": fake_curves(4)})
    fields = set(variant_fields())
    assert not {"seed", "device", "run_dir", "resume", "checkpoint_every_steps", "progress"} & fields
    assert {"lr", "loss_params", "topk", "weight_decay"} <= fields
    runs = collect(tmp_path)
    assert sorted(runs["variant"]) == ["lr=0.001", "lr=0.001", "lr=0.01"]  # seed and device never split a row


def test_a_resumed_run_and_an_uninterrupted_run_are_one_variant(tmp_path):
    """Regression: a resumed run writes resume/checkpoint_every_* (and world_size) into config.json; those
    are bookkeeping (role "record"), so the tables average it with the uninterrupted seeds of the setting."""
    from hashlib_vit.experiment import run_experiment
    from hashlib_vit.results.tables import aggregate

    common = dict(protocol="digits", backbone="vit32_test", bits=8, epochs=2, batch_size=64, device="cpu",
                  progress=False, save_codes=False, warmup_steps=0)
    plain = run_experiment(**common, seed=0, run_dir=str(tmp_path / "runs" / "s0"))
    other = run_experiment(**common, seed=1, run_dir=str(tmp_path / "runs" / "s1"))
    # the same seed 0 with checkpoints, then continued with resume=True from its checkpoint (on CPU the
    # result is identical to the uninterrupted run; tests/test_train_kill_resume.py kills one mid-run)
    resumed_dir = tmp_path / "runs" / "s0_resumed"
    run_experiment(**common, seed=0, run_dir=str(resumed_dir), checkpoint_every_steps=1, checkpoint_every_epochs=1)
    resumed = run_experiment(**common, seed=0, run_dir=str(resumed_dir), resume=True, checkpoint_every_steps=1,
                             checkpoint_every_epochs=1)
    cfg = RunDir(resumed_dir).config()
    assert cfg["resume"] is True and cfg["checkpoint_every_steps"] == 1 and "world_size" in cfg
    assert resumed.metrics["map"] == plain.metrics["map"]
    runs = collect(tmp_path / "runs")
    assert len(runs) == 3 and (runs["variant"] == "").all()  # the resumed run is not a variant of its own
    agg = aggregate(runs)
    assert len(agg) == 1 and int(agg["n"].iloc[0]) == 3  # seeds 0, 1 and the resumed 0: one averaged setting
    assert agg["mean"].iloc[0] == pytest.approx((2 * plain.metrics["map"] + other.metrics["map"]) / 3)


# ----------------------------------------------------------------------------- the run-directory API readers
@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    """One real run (digits, vit32_test, 8 bits, 2 epochs of 8 steps, evaluated every epoch, code statistics)."""
    from hashlib_vit.experiment import run_experiment

    run_dir = tmp_path_factory.mktemp("api") / "run"
    result = run_experiment(protocol="digits", backbone="vit32_test", loss="csq", bits=8, epochs=2, batch_size=64,
                            device="cpu", seed=0, progress=False, eval_every=1, code_stats=True, warmup_steps=0,
                            run_dir=str(run_dir))
    return result, RunDir(run_dir)


def copy_run(made_run, tmp_path) -> RunDir:
    import shutil

    return RunDir(shutil.copytree(made_run[1].path, tmp_path / "copy"))


def test_codes_are_the_runs_codes(made_run):
    result, rd = made_run
    c = rd.codes()
    assert np.array_equal(c.query_codes, result.query_codes) and np.array_equal(c.db_codes, result.db_codes)
    assert c.query_codes.dtype == np.int8 and c.query_codes.shape == (100, 8) and c.db_codes.shape == (1697, 8)
    assert np.array_equal(c.query_labels, result.data.query.labels.numpy())
    from hashlib_vit.retrieval import map_at_k

    assert map_at_k(*c, topk=None) == pytest.approx(rd.metrics()["map"])


@pytest.mark.parametrize("change, match", [
    (lambda a: a.pop("db_labels"), r"key\(s\) \['db_labels'\] missing"),
    (lambda a: a.update(query_codes=a["query_codes"].astype(np.float32)), r"'query_codes' is float32 .* expected a 2-D int8"),
    (lambda a: a.update(db_codes=np.where(a["db_codes"] > 0, 1, 0).astype(np.int8)), r"'db_codes' holds 0; expected only -1 and \+1"),
    (lambda a: a.update(query_codes=a["query_codes"][:, :4]), r"'query_codes' have 4 bits but 'db_codes' 8"),
    (lambda a: a.update(query_labels=a["query_labels"][:5]), r"'query_labels' has 5 rows but 'query_codes' has 100"),
    (lambda a: a.update(db_codes=a["db_codes"][:10], db_labels=a["db_labels"][:10]),
     r"10 database items, but metrics.json says n_database=1697"),
])
def test_codes_name_the_file_and_the_field(made_run, tmp_path, change, match):
    rd = copy_run(made_run, tmp_path)
    with np.load(rd.file("codes.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    rd.write_codes(**arrays)
    with pytest.raises(DataError, match=match) as err:
        rd.codes()
    assert str(rd.file("codes.npz")) in str(err.value)


def test_codes_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"codes.npz does not exist \(the run was made with save_codes=False"):
        RunDir(tmp_path).codes()


def test_data_rebuilds_the_recorded_splits_and_refuses_others(made_run, tmp_path):
    result, rd = made_run
    data = rd.data()
    assert data.checksums == result.data.checksums == rd.env()["split_checksums"]
    assert torch_equal(data.query.labels, result.data.query.labels) and len(data.database) == 1697
    other = copy_run(made_run, tmp_path)
    env = other.env()
    env["split_checksums"]["query"] = "0" * 64
    other.write_json("env.json", env)
    with pytest.raises(DataError, match=r"env.json: split 'query' of protocol 'digits' .* rebuilds with sha256 "
                                        rf"{data.checksums['query']}; the run recorded 0000"):
        other.data()
    env.pop("split_checksums")
    other.write_json("env.json", env)
    with pytest.raises(DataError, match="key 'split_checksums' is None"):
        other.data()


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_curves_are_the_evaluations_per_epoch(made_run, tmp_path):
    result, rd = made_run
    df = rd.curves()
    assert list(df.columns) == ["epoch", "step", "map", "source"] and list(df["epoch"]) == [1, 2]
    assert list(df["step"]) == [8, 16] and df["step"].dtype == np.int64
    assert list(df["map"]) == [e["map"] for e in result.history["evals"]]
    assert df["map"].iloc[-1] == pytest.approx(rd.metrics()["map"]) and set(df["source"]) == {"evals.json"}
    # without periodic evaluations: the final evaluation of metrics.json, at the last step of the log
    other = copy_run(made_run, tmp_path)
    other.file("evals.json").unlink()
    df = other.curves()
    assert df.to_dict("records") == [{"epoch": 2, "step": 16, "map": rd.metrics()["map"], "source": "metrics.json"}]
    other.write_json("evals.json", [{"epoch": 1, "step": 8, "map": "high"}])
    with pytest.raises(DataError, match=r"evals.json: entry 0 key 'map' is 'high'; expected a number"):
        other.curves()


def test_train_log_is_typed(made_run, tmp_path):
    result, rd = made_run
    log = rd.train_log()
    assert len(log) == 16 and list(log["step"]) == list(range(1, 17)) and list(log["epoch"]) == [0] * 8 + [1] * 8
    assert log["step"].dtype == np.int64 and log["loss"].dtype == np.float64 and log["grad_norm"].isna().all()
    assert {"loss_center", "loss_quant", "lr"} <= set(log.columns)
    assert log["loss"].tolist() == pytest.approx([s["loss"] for s in result.history["steps"]])
    other = copy_run(made_run, tmp_path)
    text = other.file("train_log.csv").read_text().splitlines()
    other.file("train_log.csv").write_text("\n".join(text[:3] + [text[3].replace(",0,", ",zero,", 1)] + text[4:]))
    with pytest.raises(DataError, match=r"train_log.csv, line 4, column 'epoch': 'zero'; expected a whole number"):
        other.train_log()
    other.file("train_log.csv").write_text("step,loss\n1,0.5\n")
    with pytest.raises(DataError, match=r"column\(s\) \['epoch'\] missing"):
        other.train_log()
    other.file("train_log.csv").unlink()
    with pytest.raises(DataError, match="train_log.csv does not exist"):
        other.train_log()


def test_describe_summary_diagnostics_and_files(made_run, tmp_path):
    result, rd = made_run
    m = result.metrics
    s = rd.summary()
    assert s == {"method": "csq", "backbone": "vit32_test", "weights": "none (vit32_test)", "pretrained": False,
                 "bits": 8, "protocol": "digits", "n_query": 100, "n_database": 1697, "topk": "all", "epochs": 2,
                 "steps": 16, "train_time_s": m["train_time_s"], "device": "cpu", "map": m["map"],
                 "map_random": m["map_random"], "map_ratio": m["map"] / m["map_random"]}
    text = rd.describe()
    assert text.splitlines()[0] == "csq: vit32_test (weights: none (vit32_test), from scratch), 8 bits, protocol digits"
    assert "100 queries, 1,697 database items; 2 epochs, 16 steps" in text
    assert f"mAP@all {m['map']:.3f} (random codes {m['map_random']:.3f}, {m['map'] / m['map_random']:.1f}x)" in text
    assert rd.diagnostics()["distinct_db_codes"] == len(np.unique(result.db_codes, axis=0))
    files = rd.files()
    assert list(files.index) == sorted(["codes.npz", "config.json", "diagnostics.json", "env.json", "evals.json",
                                        "metrics.json", "train_log.csv"])
    assert files.loc["metrics.json", "bytes"] == rd.file("metrics.json").stat().st_size
    other = copy_run(made_run, tmp_path)
    other.write_json("diagnostics.json", {"mean_abs_u": 0.1, "input_spread": 0.2, "bit_balance": 0.0})
    with pytest.raises(DataError, match=r"diagnostics.json: key 'distinct_db_codes' is None; expected a number"):
        other.diagnostics()
    other.file("metrics.json").unlink()
    with pytest.raises(DataError, match="metrics.json does not exist"):
        other.describe()
