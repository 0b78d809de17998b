"""Issue 19, part 1: a validation split carved from the training split (seeded, per class, with its checksum),
never touching query or database, evaluated during and after training as ``val_map``; bad requests are
clear errors before anything runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hashlib_vit.data import get_protocol
from hashlib_vit.data.validation import carve_validation, validation_positions
from hashlib_vit.errors import ConfigError, DataError

TINY = dict(backbone="vit32_test", bits=16, epochs=2, batch_size=64, progress=False, device="cpu", warmup_steps=2)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return get_protocol("digits").load(seed=0, cache=tmp_path_factory.mktemp("cache"))


def test_carved_per_class_from_train_only_and_seeded(digits):
    d = carve_validation(digits, 3, seed=0)
    assert d.validation is not None and len(d.validation) == 3 * 10
    assert np.bincount(d.validation.classes, minlength=10).tolist() == [3] * 10
    val, train = set(d.validation.ids), set(d.train.ids)
    assert not val & train and val | train == set(digits.train.ids)  # a partition of the training split
    assert d.query.ids == digits.query.ids and d.database.ids == digits.database.ids  # untouched
    assert d.sizes() == {**digits.sizes(), "train": len(digits.train) - 30, "validation": 30}
    # recorded like every split: its checksum, the reduced train's, and the full train's
    assert d.checksums["train_full"] == digits.checksums["train"] and d.checksums["train"] != digits.checksums["train"]
    assert len(d.checksums["validation"]) == 64 and d.checksums["query"] == digits.checksums["query"]
    # the same seed gives the same items; another seed others; the loaded data is not changed
    assert carve_validation(digits, 3, seed=0).validation.ids == d.validation.ids
    assert carve_validation(digits, 3, seed=1).validation.ids != d.validation.ids
    assert digits.validation is None and len(digits.train) == len(d.train) + 30
    assert carve_validation(digits, 0, seed=0) is digits


def test_too_large_a_validation_split_is_a_clear_error(digits):
    per_class = int(np.bincount(digits.train.classes).min())
    with pytest.raises(DataError, match=rf"val_per_class={per_class}: the training split of protocol 'digits' has only "
                                        rf"{per_class} items of class \d+ .* use val_per_class <= {per_class - 1}"):
        carve_validation(digits, per_class, seed=0)
    with pytest.raises(DataError, match="already holds a validation split"):
        carve_validation(carve_validation(digits, 1, seed=0), 1, seed=0)


def test_multi_label_draws_per_class_times_classes_items():
    rng = np.random.default_rng(0)
    labels = (rng.random((400, 5)) < 0.3).astype(np.float32)
    labels[labels.sum(1) == 0, 0] = 1  # every row at least one label
    labels[0] = [1, 1, 0, 0, 0]  # certainly multi-label
    pos = validation_positions(labels, 4, seed=0)
    assert len(pos) == 20 and len(set(pos.tolist())) == 20 and (np.diff(pos) > 0).all()
    with pytest.raises(DataError, match=r"takes val_per_class x classes = 200 items, half or more of the 400"):
        validation_positions(labels, 40, seed=0)


def test_val_per_class_is_validated_before_anything_runs(tmp_path):
    from hashlib_vit.experiment import run_experiment

    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ConfigError, match="val_per_class"):
            run_experiment(**TINY, val_per_class=bad, run_dir=str(tmp_path / "r"))
    with pytest.raises(DataError, match="val_per_class=1000"):
        run_experiment(**TINY, val_per_class=1000, run_dir=str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_a_run_reports_val_map_during_and_after_training(tmp_path):
    from hashlib_vit.experiment import run_experiment

    res = run_experiment(**TINY, val_per_class=5, eval_every=1, run_dir=str(tmp_path / "r"))
    m = res.metrics
    assert 0 <= m["val_map"] <= 1 and m["val_per_class"] == 5 and m["map"] != m["val_map"]
    evals = json.loads((tmp_path / "r" / "evals.json").read_text())
    assert [e["epoch"] for e in evals] == [1, 2] and all(0 <= e["val_map"] <= 1 for e in evals)
    assert evals[-1]["val_map"] == pytest.approx(m["val_map"])
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    assert set(env["split_checksums"]) >= {"validation", "train_full"}
    plain = run_experiment(**TINY, run_dir=str(tmp_path / "p")).metrics
    assert "val_map" not in plain


# ----------------------------------------------------------------------------- sensitivity, selected on validation
def _runs(rows):
    import pandas as pd

    return pd.DataFrame([{"config": {"loss": loss, "seed": s, "loss_params": lp}, "val_map": v, "map": m}
                         for loss, s, lp, v, m in rows])


def test_sensitivity_table_selects_on_validation_never_on_the_queries():
    from hashlib_vit.results.sensitivity import sensitivity_table

    runs = _runs([("hsc", 0, {"tau": 0.2}, 0.30, 0.90), ("hsc", 1, {"tau": 0.2}, 0.34, 0.91),
                  ("hsc", 0, {"tau": 0.5}, 0.60, 0.40), ("hsc", 1, {"tau": 0.5}, 0.62, 0.41),
                  ("hsc", 0, {}, 0.10, 0.95), ("csq", 0, {"tau": 9.0}, 0.99, 0.99)])
    t = sensitivity_table(runs, "loss_params.tau", where={"loss": "hsc"})
    assert t["value"].tolist() == [0.2, 0.5, "(default)"] and t["n"].tolist() == [2, 2, 1]
    assert t["val_map_mean"].tolist() == pytest.approx([0.32, 0.61, 0.10])
    assert t["map_mean"].tolist() == pytest.approx([0.905, 0.405, 0.95])
    assert t["selected"].tolist() == [False, True, False]  # the best validation value, not the best query mAP
    assert t.attrs == {"parameter": "loss_params.tau", "select": "val_map"}


def test_sensitivity_bad_requests_are_clear_errors():
    from hashlib_vit.results.sensitivity import sensitivity_table

    runs = _runs([("hsc", 0, {"tau": 0.2}, 0.3, 0.9), ("hsc", 0, {"tau": 0.5}, 0.6, 0.4)])
    with pytest.raises(ConfigError, match=r"select='map' is not a selection metric; allowed: val_map"):
        sensitivity_table(runs, "loss_params.tau", select="map")
    with pytest.raises(ConfigError, match=r"select='val_acc' is not a selection metric"):
        sensitivity_table(runs, "loss_params.tau", select="val_acc")
    with pytest.raises(DataError, match=r"no run matches \{'loss': 'dpsh'\}"):
        sensitivity_table(runs, "loss_params.tau", where={"loss": "dpsh"})
    with pytest.raises(DataError, match=r"parameter 'loss' takes one value \('hsc'\)"):
        sensitivity_table(runs, "loss")
    no_val = runs.assign(val_map=float("nan"))
    with pytest.raises(DataError, match=r"none of the 2 runs reports 'val_map': run the study with val_per_class"):
        sensitivity_table(no_val, "loss_params.tau")


def test_sensitivity_of_a_real_grid_through_the_grid_runner(tmp_path):
    from hashlib_vit.results.sensitivity import sensitivity_table
    from hashlib_vit.runner import run_grid

    grid = {"target": "experiment", "output": str(tmp_path / "grid"),
            "fixed": {**{k: v for k, v in TINY.items() if k != "progress"}, "val_per_class": 5},
            "sweep": {"lr": [1e-4, 1e-3]}}
    summary = run_grid(grid, progress=False)
    assert list(summary["status"]) == ["completed", "completed"]
    t = sensitivity_table(tmp_path / "grid", "lr")
    assert t["value"].tolist() == [1e-4, 1e-3] and t["n"].tolist() == [1, 1] and t["selected"].sum() == 1
    assert ((t["val_map_mean"] >= 0) & (t["val_map_mean"] <= 1)).all()


def test_write_sensitivity_builds_the_tables_from_the_runs(tmp_path):
    from hashlib_vit.results.sensitivity import write_sensitivity
    from hashlib_vit.runner import run_grid

    grid = {"target": "experiment", "output": str(tmp_path / "grid"),
            "fixed": {**{k: v for k, v in TINY.items() if k != "progress"}, "val_per_class": 5, "epochs": 1},
            "runs": [{"name": f"lr-{lr}", "lr": lr} for lr in (1e-4, 1e-3)]}
    run_grid(grid, progress=False, only=["lr-*"])
    files = write_sensitivity(tmp_path / "grid", {"lr": None})
    md = (tmp_path / "grid" / "sensitivity.md").read_text()
    assert [f.name for f in files] == ["sensitivity.md", "sensitivity_lr.csv", "sensitivity.png"]
    assert files[-1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "![sensitivity](sensitivity.png)" in md
    assert "## `lr` (others: as run) — chosen: " in md and "| value | n | val_map_mean |" in md
    assert "Runs: " in md and "(2 completed)" in md
