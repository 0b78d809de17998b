"""Issue 18, kind 3: every file the package reads back goes through one checked reader per file kind,
and a damaged file is a DataError naming the file and the field (or, where the file is a cache, a
warning naming it and a rebuild), never a raw json/pandas/faiss/numpy/zipfile error nor silent acceptance."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_curves

from hashlib_vit.cli import main
from hashlib_vit.errors import DataError

GOOD = {"method": "csq", "backbone": "vit32_test", "protocol": "digits", "bits": 16, "topk": "all", "map": 0.5,
        "epochs": 1, "seed": 0, "pretrained": False, "schema_version": 2, "curves": fake_curves(16)}


def write_run(root: Path, name: str, metrics) -> Path:
    rd = root / name
    rd.mkdir(parents=True)
    (rd / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    (rd / "config.json").write_text(json.dumps({"method": metrics.get("method") if isinstance(metrics, dict) else "x",
                                                "epochs": 1, "batch_size": 8}))
    return rd / "metrics.json"


# ----------------------------------------------------------------------------- metrics.json of a run
METRICS_FAULTS = {  # fault -> (file text, the field and what the message says)
    "not json": ('{"method": "csq", "map": 0.5', r"is not valid JSON \(line 1, column \d+"),
    "a list": ("[1, 2]", r"holds list; expected a JSON object"),
    "map missing": ({k: v for k, v in GOOD.items() if k != "map"}, r"required key\(s\) \['map'\] missing"),
    "map a word": ({**GOOD, "map": "high"}, r"key 'map' is 'high' \(str\); expected a number"),
    "map above 1": ({**GOOD, "map": 1.5}, r"key 'map' is 1.5; expected a number in \[0, 1\]"),
    "map NaN": ({**GOOD, "map": float("nan")}, r"key 'map' is nan; expected a number in \[0, 1\]"),
    "bits a string": ({**GOOD, "bits": "16"}, r"key 'bits' is '16' \(str\); expected an integer"),
    "bits zero": ({**GOOD, "bits": 0}, r"key 'bits' is 0; expected an integer >= 1"),
    "topk a word": ({**GOOD, "topk": "most"}, r"key 'topk' is 'most'; expected an integer >= 1 or 'all'"),
    "curves cut": ({**GOOD, "curves": {"pr_hamming": {}}}, r"key 'curves.pr_hamming.radius' is NoneType; expected a list"),
}


@pytest.mark.parametrize("fault", METRICS_FAULTS)
def test_metrics_json_faults_name_the_file_and_the_key(tmp_path, fault):
    from hashlib_vit.results import read_metrics
    from hashlib_vit.results.collect import collect

    text, msg = METRICS_FAULTS[fault]
    path = write_run(tmp_path / "runs", "bad", text)
    with pytest.raises(DataError, match=rf"{path}.*{msg}"):
        read_metrics(path)
    with pytest.raises(DataError, match=rf"{path}.*{msg}"), pytest.warns(UserWarning, match="run skipped"):
        collect(tmp_path / "runs")  # the only run is damaged: nothing usable
    with pytest.raises(DataError, match=rf"{path}.*{msg}"):
        collect(tmp_path / "runs", on_error="raise")


def test_tables_cli_skips_a_damaged_run_naming_it_and_keeps_the_others(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs, "good-16", GOOD)
    write_run(runs, "good-32", {**GOOD, "bits": 32, "curves": fake_curves(32), "map": 0.75})
    bad = write_run(runs, "bad", {**GOOD, "bits": "64"})
    with pytest.warns(UserWarning, match=rf"run skipped: {bad}: key 'bits' is '64'"):
        assert main(["tables", str(runs), "--out", str(tmp_path / "t"), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert f"note: run skipped: {bad}: key 'bits' is '64'" in out
    table = (tmp_path / "t" / "runs.csv").read_text().splitlines()
    assert len(table) == 3 and "good-16" in "".join(table) and "bad" not in "".join(table[1:])
    prov = json.loads((tmp_path / "t" / "provenance.json").read_text())
    assert prov["n_runs"] == 2 and any(str(bad) in n for n in prov["notes"])


def test_tables_cli_with_no_usable_run_fails_naming_every_file(tmp_path, capsys):
    runs = tmp_path / "runs"
    a = write_run(runs, "a", {**GOOD, "map": "high"})
    b = write_run(runs, "b", "{oops")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["tables", str(runs), "--out", str(tmp_path / "t"), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "none of the 2 run directories" in err and f"{a}: key 'map' is 'high'" in err
    assert f"{b} is not valid JSON" in err
    assert not (tmp_path / "t").exists()  # nothing written


def test_a_damaged_optional_file_of_a_run_is_named_in_a_warning(tmp_path):
    from hashlib_vit.results.collect import collect

    path = write_run(tmp_path, "r", GOOD)
    (path.parent / "env.json").write_text("{bad")
    (path.parent / "diagnostics.json").write_text(json.dumps({"mean_abs_u": "x"}))
    with pytest.warns(UserWarning) as rec:
        df = collect(tmp_path)
    text = " ".join(str(w.message) for w in rec)
    assert f"{path.parent / 'env.json'} is not valid JSON" in text
    assert f"{path.parent / 'diagnostics.json'}: key 'mean_abs_u' is 'x'" in text
    assert len(df) == 1 and df["map"].iloc[0] == 0.5 and np.isnan(df["mean_abs_u"].iloc[0])


def test_a_damaged_metrics_json_after_a_grid_run_is_a_failure(tmp_path):
    from hashlib_vit.runner import _metrics_problem

    path = write_run(tmp_path, "r", {**GOOD, "epochs": "one"})
    assert _metrics_problem(path.parent) == f"{path}: key 'epochs' is 'one' (str); expected an integer"
    path.write_text(json.dumps(GOOD))
    assert _metrics_problem(path.parent) is None


# ----------------------------------------------------------------------------- grid_summary.csv
def good_summary(path: Path) -> Path:
    from hashlib_vit.runner import write_summary

    rows = [{"run": "bits-16", "status": "completed", "target": "notebook", "notebook": "nb.ipynb",
             "run_dir": "out/bits-16", "bits": 16, "seconds": 1.5, "map": 0.5, "error_cell": None, "error": None,
             "error_source": None, "job_id": None},
            {"run": "bits-32", "status": "failed", "target": "notebook", "notebook": "nb.ipynb",
             "run_dir": "out/bits-32", "bits": 32, "seconds": 0.5, "map": None, "error_cell": 3,
             "error": "RuntimeError: boom\nsecond line", "error_source": "raise", "job_id": None}]
    return write_summary(path, rows)


def _replace_line(path: Path, n: int, new: str):
    lines = path.read_text().split("\n")
    lines[n - 1] = new
    path.write_text("\n".join(lines))


SUMMARY_FAULTS = {  # fault -> (damage, message)
    "garbage bytes": (lambda p: p.write_bytes(b"\xff\xfe\x00garbage\x89PNG"), r"cannot be read as UTF-8 text"),
    "NUL byte": (lambda p: p.write_text(p.read_text().replace("bits-32", "bits\x0032")),
                 r"line 3: holds NUL bytes"),
    "truncated line": (lambda p: p.write_text(p.read_text() + "bits-64,completed,notebook,nb.ip"),
                       r"line 5: 4 fields, the header has 12 .*truncated or damaged"),
    "status missing": (lambda p: p.write_text(p.read_text().replace("status", "state", 1)),
                       r"column\(s\) \['status'\] missing"),
    "map a word": (lambda p: p.write_text(p.read_text().replace(",0.5,", ",high,", 1)),
                   r"line 2, column 'map': 'high'; expected a number"),
    "map above 1": (lambda p: p.write_text(p.read_text().replace(",0.5,", ",7.5,", 1)),
                    r"data row 1 \(run 'bits-16'\), column 'map': 7.5; expected a number in \[0, 1\]"),
    "status unknown": (lambda p: p.write_text(p.read_text().replace("failed", "exploded")),
                       r"line 3, column 'status': 'exploded'; expected one of completed, failed"),
    "error_cell a word": (lambda p: p.write_text(p.read_text().replace(",3.0,", ",third,")),
                          r"line 3, column 'error_cell': 'third'; expected a whole number"),
    "empty": (lambda p: p.write_text(""), r"is empty or has no header line"),
}


@pytest.mark.parametrize("fault", SUMMARY_FAULTS)
def test_grid_summary_faults_name_the_file_line_and_column(tmp_path, fault):
    from hashlib_vit.results.collect import failed_runs
    from hashlib_vit.runner import read_summary

    path = good_summary(tmp_path / "out" / "grid_summary.csv")
    s = read_summary(path)  # the good file reads back: a multi-line error cell keeps its line numbers
    assert list(s["run"]) == ["bits-16", "bits-32"] and s["map"].iloc[0] == 0.5 and s["error_cell"].iloc[1] == 3
    damage, msg = SUMMARY_FAULTS[fault]
    damage(path)
    with pytest.raises(DataError, match=rf"grid summary {path}.*{msg}"):
        read_summary(path)
    with pytest.raises(DataError, match=rf"grid summary {path}.*{msg}"):
        failed_runs(tmp_path)  # what `hashlib-vit tables` reads


def test_tables_cli_names_a_damaged_grid_summary_before_writing(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs, "good", GOOD)
    path = good_summary(runs / "grid_summary.csv")
    SUMMARY_FAULTS["truncated line"][0](path)
    assert main(["tables", str(runs), "--out", str(tmp_path / "t"), "--no-figures"]) == 2
    assert f"grid summary {path}, line 5" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


# ----------------------------------------------------------------------------- split cache checksums.json
MANIFEST_FAULTS = {
    "not json": ('{"sha256": {"train": ', r"is not valid JSON \(line 1"),
    "a list": ("[]", r"holds a JSON list; expected a JSON object"),
    "sha256 missing": ('{"sums": {}}', r"field 'sha256' must be a mapping"),
    "sha256 not hex": ('{"sha256": {"train": "xyz"}}', r"field 'sha256.train' = 'xyz' is not a sha256"),
}


@pytest.mark.parametrize("fault", MANIFEST_FAULTS)
def test_a_damaged_split_cache_manifest_is_named_and_the_cache_written_again(tmp_path, fault):
    from hashlib_vit.data import get_protocol
    from hashlib_vit.data.protocols import split_cache_folder
    from hashlib_vit.data.splits import read_manifest

    d = get_protocol("digits").load(seed=0, cache=tmp_path / "cache")
    folder = split_cache_folder("digits", 0, tmp_path / "cache")
    man = folder / "checksums.json"
    assert read_manifest(folder) == d.checksums
    text, msg = MANIFEST_FAULTS[fault]
    man.write_text(text)
    with pytest.raises(DataError, match=rf"split manifest {man}.*{msg}"):
        read_manifest(folder)
    with pytest.warns(UserWarning, match=rf"split manifest {man}.*{msg}.*writing the split cache .* again"):
        again = get_protocol("digits").load(seed=0, cache=tmp_path / "cache")
    assert again.checksums == d.checksums and read_manifest(folder) == d.checksums  # rewritten, valid


# ----------------------------------------------------------------------------- HashIndex files
@pytest.fixture
def saved_index(tmp_path):
    from hashlib_vit.retrieval.index import HashIndex

    rng = np.random.default_rng(0)
    db = rng.choice([-1, 1], (60, 16)).astype(np.int8)
    return HashIndex.from_codes(db, labels=np.arange(60) % 4).save(tmp_path / "idx" / "db.faiss")


def _meta(path, **change):
    p = path.with_name(path.name + ".meta.json")
    meta = json.loads(p.read_text())
    meta.update(change)
    for k in [k for k, v in change.items() if v is ...]:
        del meta[k]
    p.write_text(json.dumps(meta))


def _write_labels(path, arr):
    np.save(path.with_name(path.name + ".labels.npy"), arr)


INDEX_FAULTS = {  # fault -> (damage, the file named, message)
    "meta not json": (lambda p: p.with_name(p.name + ".meta.json").write_text('{"bits": 16,'), ".meta.json",
                      r"index metadata .* is not valid JSON \(line 1"),
    "meta a list": (lambda p: p.with_name(p.name + ".meta.json").write_text("[16]"), ".meta.json",
                    r"holds a JSON list; expected a JSON object"),
    "meta missing": (lambda p: p.with_name(p.name + ".meta.json").unlink(), ".meta.json", r"must exist"),
    "bits missing": (lambda p: _meta(p, bits=...), ".meta.json", r"field 'bits' missing"),
    "bits a string": (lambda p: _meta(p, bits="16"), ".meta.json", r"field 'bits' is '16'; expected a positive"),
    "bits disagree": (lambda p: _meta(p, bits=32), ".meta.json",
                      r"holds 16-bit codes, but index metadata .* field 'bits' is 32"),
    "kind disagree": (lambda p: _meta(p, kind="hnsw"), ".meta.json",
                      r"holds a IndexBinaryFlat, but index metadata .* field 'kind' is 'hnsw'"),
    "kind unknown": (lambda p: _meta(p, kind="lsh"), ".meta.json", r"field 'kind' is 'lsh'; expected one of flat"),
    "ntotal disagree": (lambda p: _meta(p, ntotal=61), ".meta.json", r"holds 60 items, but .* field 'ntotal' is 61"),
    "has_labels a string": (lambda p: _meta(p, has_labels="yes"), ".meta.json",
                            r"field 'has_labels' is 'yes'; expected true or false"),
    "index truncated": (lambda p: p.write_bytes(p.read_bytes()[:70]), "db.faiss",
                        r"is not a readable faiss binary index .*truncated or corrupt"),
    "index garbage": (lambda p: p.write_bytes(b"\x00garbage" * 20), "db.faiss",
                      r"is not a readable faiss binary index"),
    "labels wrong length": (lambda p: _write_labels(p, np.arange(59)), ".labels.npy",
                            r"have shape \(59,\); expected 60 rows"),
    "labels truncated": (lambda p: p.with_name(p.name + ".labels.npy").write_bytes(
        p.with_name(p.name + ".labels.npy").read_bytes()[:100]), ".labels.npy", r"not a readable .npy array"),
    "labels missing": (lambda p: p.with_name(p.name + ".labels.npy").unlink(), ".labels.npy",
                       r"does not exist, but index metadata .* field 'has_labels' is true"),
}


@pytest.mark.parametrize("fault", INDEX_FAULTS)
def test_index_faults_name_the_file_and_the_field_before_any_search(saved_index, fault):
    from hashlib_vit.retrieval.index import HashIndex

    good = HashIndex.load(saved_index)
    assert good.ntotal == 60 and good.bits == 16 and list(good.labels[:5]) == [0, 1, 2, 3, 0]
    damage, named, msg = INDEX_FAULTS[fault]
    damage(saved_index)
    with pytest.raises(DataError, match=msg) as e:
        HashIndex.load(saved_index)
    assert str(saved_index.parent / ("db.faiss" if named == "db.faiss" else "db.faiss" + named)) in str(e.value) or (
        fault == "meta missing" and f"{saved_index} (and db.faiss.meta.json) must exist" in str(e.value))


# ----------------------------------------------------------------------------- feature cache manifest
def make_cache(folder: Path) -> Path:
    from hashlib_vit.data.feature_cache import CACHE_FORMAT

    folder.mkdir(parents=True)
    tokens = np.zeros((1, 3, 2, 4), dtype=np.float16)
    np.save(folder / "tokens.npy", tokens)
    size = (folder / "tokens.npy").stat().st_size
    (folder / "manifest.json").write_text(json.dumps(
        {"format": CACHE_FORMAT, "complete": True, "key": {"n": 1}, "shape": [1, 3, 2, 4], "dtype": "float16",
         "bytes": tokens.nbytes, "file_bytes": size}))
    return folder


CACHE_FAULTS = {
    "not json": (lambda m: '{"format": ', r"is not valid JSON"),
    "not complete": (lambda m: json.dumps({**m, "complete": False}), r"fields 'complete'=False"),
    "shape a word": (lambda m: json.dumps({**m, "shape": "big"}), r"field 'shape' is 'big'; expected 4 integers"),
    "file_bytes missing": (lambda m: json.dumps({k: v for k, v in m.items() if k != "file_bytes"}),
                           r"field 'file_bytes' is '\(missing\)'"),
    "dtype": (lambda m: json.dumps({**m, "dtype": "float32"}), r"field 'dtype' is 'float32'; expected 'float16'"),
}


@pytest.mark.parametrize("fault", CACHE_FAULTS)
def test_feature_cache_manifest_faults_name_the_file_and_the_field(tmp_path, fault):
    from hashlib_vit.data.feature_cache import read_feature_cache

    folder = make_cache(tmp_path / "c")
    assert read_feature_cache(folder).tokens.shape == (1, 3, 2, 4)
    man = folder / "manifest.json"
    text, msg = CACHE_FAULTS[fault]
    man.write_text(text(json.loads(man.read_text())))
    with pytest.raises(DataError, match=rf"feature cache {folder}: manifest {man}.*{msg}"):
        read_feature_cache(folder)


def test_feature_cache_tokens_truncated(tmp_path):
    from hashlib_vit.data.feature_cache import read_feature_cache

    folder = make_cache(tmp_path / "c")
    (folder / "tokens.npy").write_bytes((folder / "tokens.npy").read_bytes()[:60])
    with pytest.raises(DataError, match=rf"feature cache {folder}: tokens.npy cannot be read"):
        read_feature_cache(folder)


# ----------------------------------------------------------------------------- config.json beside weights
WEIGHTS_CFG_FAULTS = {
    "not json": ('{"pretrained_cfg": {', r"is not valid JSON"),
    "a list": ("[]", r"holds a JSON list"),
    "pretrained_cfg a list": ('{"pretrained_cfg": [0.5]}', r"field 'pretrained_cfg' is list"),
    "mean words": ('{"pretrained_cfg": {"mean": ["a", "b", "c"], "std": [0.2, 0.2, 0.2]}}',
                   r"field 'pretrained_cfg.mean' is \['a', 'b', 'c'\]; expected 3 numbers"),
    "std zero": ('{"pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0, 0.2]}}',
                 r"field 'pretrained_cfg.std' is \[0.2, 0, 0.2\]; expected 3 numbers .*each > 0"),
    "std missing": ('{"pretrained_cfg": {"mean": [0.5, 0.5, 0.5]}}', r"field 'pretrained_cfg.std' is None"),
}


@pytest.mark.parametrize("fault", WEIGHTS_CFG_FAULTS)
def test_weights_config_json_faults_name_the_file_and_the_field(tmp_path, fault):
    from hashlib_vit.models.weights import _json_cfg_norm

    weights = tmp_path / "snap" / "model.safetensors"
    weights.parent.mkdir()
    cfg = weights.parent / "config.json"
    cfg.write_text('{"pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}')
    assert _json_cfg_norm(weights) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), f"pretrained_cfg in {cfg}")
    cfg.write_text('{"architectures": ["Other"]}')
    assert _json_cfg_norm(weights) is None  # a config of another kind: no normalisation in it
    text, msg = WEIGHTS_CFG_FAULTS[fault]
    cfg.write_text(text)
    with pytest.raises(DataError, match=rf"config.json next to the weights file {cfg}.*{msg}"):
        _json_cfg_norm(weights)


# ----------------------------------------------------------------------------- cached image pool
def make_pool_cache(folder: Path):
    folder.mkdir(parents=True)
    np.save(folder / "images.npy", np.zeros((4, 3, 2, 2), dtype=np.uint8))
    np.save(folder / "classes.npy", np.array([0, 1, 1, 0]))
    (folder / "meta.json").write_text(json.dumps({"ids": ["a", "b", "c", "d"], "class_names": ["x", "y"],
                                                  "source": "test"}))


POOL_FAULTS = {
    "meta not json": (lambda f: (f / "meta.json").write_text("{"), "meta.json", r"is not valid JSON"),
    "ids missing": (lambda f: (f / "meta.json").write_text('{"class_names": [], "source": "s"}'), "meta.json",
                    r"field 'ids' is NoneType; expected a list of strings"),
    "images truncated": (lambda f: (f / "images.npy").write_bytes((f / "images.npy").read_bytes()[:90]),
                         "images.npy", r"not a readable .npy array"),
    "class out of range": (lambda f: np.save(f / "classes.npy", np.array([0, 1, 2, 0])), "classes.npy",
                           r"expected integer \(N,\) class indices in 0..1"),
    "rows disagree": (lambda f: np.save(f / "classes.npy", np.array([0, 1, 1])), "pool",
                      r"images.npy has 4 rows, classes.npy 3, field 'ids'"),
}


@pytest.mark.parametrize("fault", POOL_FAULTS)
def test_pool_cache_faults_are_named_and_the_pool_built_again(tmp_path, monkeypatch, fault):
    import torch

    import hashlib_vit.data.sources as sources

    monkeypatch.setattr(sources, "cache_dir", lambda cache=None: tmp_path)
    built = sources.Pool(torch.zeros((2, 3, 2, 2), dtype=torch.uint8), np.array([0, 1]), ["p", "q"], ["x", "y"],
                         "built", {})
    sources._cached_pool("test", {"f": "0" * 64}, lambda: built, None)  # built and cached
    folder = next((tmp_path / "pools").iterdir())
    for name in ("images.npy", "classes.npy", "meta.json"):
        (folder / name).unlink()
    folder.rmdir()
    make_pool_cache(folder)
    assert sources.read_pool_cache(folder, {}).ids == ["a", "b", "c", "d"]
    damage, named, msg = POOL_FAULTS[fault]
    damage(folder)
    with pytest.raises(DataError, match=rf"{folder}.*{msg}"):
        sources.read_pool_cache(folder, {})
    with pytest.warns(UserWarning, match=rf"{folder}.*{msg}.*building the cached pool .* again"):
        pool = sources._cached_pool("test", {"f": "0" * 64}, lambda: built, None)
    assert pool.ids == ["p", "q"] and sources.read_pool_cache(folder, {}).ids == ["p", "q"]


# ----------------------------------------------------------------------------- codes.npz, training log, CSVs
def test_codes_npz_truncated_or_wrong(tmp_path):
    from hashlib_vit.results.rundir import RunDir, read_codes

    rd = RunDir(tmp_path / "r").prepare()
    c = np.ones((3, 8), dtype=np.int8)
    path = rd.write_codes(query_codes=c, db_codes=c, query_labels=np.arange(3), db_labels=np.arange(3))
    assert read_codes(path).query_codes.shape == (3, 8)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match=rf"{path} is not a readable .npz file .*truncated or corrupt"):
        read_codes(path)
    rd.write_codes(query_codes=c, db_codes=c, query_labels=np.arange(2), db_labels=np.arange(3))
    with pytest.raises(DataError, match=rf"{path}: 'query_labels' has 2 rows but 'query_codes' has 3"):
        rd.codes()


def test_training_log_on_resume_with_a_garbled_step(tmp_path):
    from hashlib_vit.train.steplog import StepLog

    p = tmp_path / "train_log.csv"
    p.write_text("step,epoch,loss\n1,0,0.5\nx,0,0.4\n")
    with pytest.raises(DataError, match=rf"training log {p}, line 3, column 'step': 'x'; expected a whole number"):
        StepLog(p).rows_until(2)
    p.write_bytes(b"\xff\xfe garbage\n")
    with pytest.raises(DataError, match=rf"training log {p} cannot be read as UTF-8 text"):
        StepLog(p).rows_until(2)
    p.write_text("epoch,loss\n0,0.5\n")
    with pytest.raises(DataError, match=rf"training log {p}, line 1: column 'step' missing"):
        StepLog(p).rows_until(1)


def test_reference_results_csv_damaged(tmp_path):
    from hashlib_vit.results.reference import reference_results

    good = reference_results()
    p = tmp_path / "ref.csv"
    text = good.astype(str).to_csv(index=False)
    p.write_text(text)
    assert len(reference_results(p)) == len(good)
    lines = text.splitlines()
    p.write_text("\n".join(lines[:-1] + [lines[-1][:len(lines[-1]) // 3]]) + "\n")  # the last line cut short
    with pytest.raises(DataError, match=rf"reference results {p}, line {len(good) + 1}: \d+ fields, the header has 14"):
        reference_results(p)
    p.write_bytes(b"\x00\xff" * 20)
    with pytest.raises(DataError, match=rf"reference results {p} cannot be read as UTF-8"):
        reference_results(p)
