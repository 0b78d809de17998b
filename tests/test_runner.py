"""The grid runner: expansion, validation before running, failures recorded, resume by skipping."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from hashlib_vit.errors import ConfigError
from hashlib_vit.runner import default_run_name, load_grid, run_grid, validate_grid

# A tiny notebook (no torch): writes a run directory whose mAP is a known function of its parameters,
# or raises in its second cell when fail=True.
PARAMS = '''run_dir: str = "results/runs/tiny"  # run directory
loss: str = "csq"  # loss name
bits: int = 16  # code length
seed: int = 0  # seed
lr: float = 0.001  # learning rate
fail: bool = False  # raise on purpose
note: "Optional[str]" = None  # free text'''
BODY = '''import json, pathlib
from hashlib_vit.results import RunDir
rd = RunDir(run_dir).prepare()
rd.write_json("config.json", {"loss": loss, "bits": bits, "seed": seed, "lr": lr, "epochs": 1, "batch_size": 8})
rd.write_json("env.json", {"git_commit": "test", "protocol": {"train": 10}})
(rd.path / "train_log.csv").write_text("step,epoch,loss\\n0,0,1.0\\n1,0,0.5\\n")
map_value = 0.5 + bits / 1000 + seed / 100 + (0.1 if loss == "dpsh" else 0.0)'''
FAIL = '''if fail:
    raise RuntimeError(f"deliberate failure for {loss}/{bits}")
curves = {"pr_hamming": {"radius": [0, 1], "precision": [1.0, 0.5], "recall": [0.5, 1.0]},
          "pr_rank": {"rank": [1], "precision": [1.0], "recall": [0.5]}, "empty_radius": "exclude"}
rd.write_metrics({"method": loss, "loss": loss, "backbone": "tiny", "protocol": "digits", "bits": bits, "topk": "all",
                  "map": map_value, "epochs": 1, "seed": seed, "pretrained": False, "curves": curves})'''


METRICS = {"method": "csq", "backbone": "tiny", "protocol": "digits", "bits": 16, "topk": "all", "map": 0.5,
           "epochs": 1, "seed": 0, "pretrained": False}  # a valid (schema 1) metrics.json


def make_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell(PARAMS)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), p, nbformat.v4.new_code_cell(BODY),
                nbformat.v4.new_code_cell(FAIL)]
    nbformat.write(nb, str(path))
    return path


def write_grid(tmp_path: Path, **spec) -> Path:
    g = tmp_path / "grid.yaml"
    g.write_text(yaml.safe_dump(spec, sort_keys=False))
    return g


@pytest.fixture
def tiny_nb(tmp_path):
    return make_notebook(tmp_path / "tiny.ipynb")


def test_grid_expansion_names_and_explicit_runs(tmp_path, tiny_nb):
    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(tmp_path / "out"), fixed={"lr": 0.01},
                   sweep={"loss": ["csq", "dpsh"], "bits": [16, 32]},
                   runs=[{"loss": "csq", "bits": 64, "name": "extra"}, {"loss": "dpsh", "bits": 8}])
    grid = load_grid(g)
    names = [r.name for r in grid.runs]
    assert names == ["loss-csq_bits-16", "loss-csq_bits-32", "loss-dpsh_bits-16", "loss-dpsh_bits-32", "extra",
                     "loss-dpsh_bits-8"]
    assert grid.runs[0].params == {"lr": 0.01, "loss": "csq", "bits": 16, "run_dir": str(tmp_path / "out" / names[0])}
    assert load_grid(g).runs[3].name == names[3]  # deterministic
    assert default_run_name({"lr": 0.0001, "loss_params": {"a": 1}}) == "lr-0.0001_loss_params-a-1"
    # a linked dimension sets several parameters together and names the run by its label
    g = write_grid(tmp_path, notebook=str(tiny_nb), output="o", sweep={
        "data": [{"name": "a", "loss": "csq", "lr": 0.1}, {"loss": "dpsh", "lr": 0.2}], "bits": [16]})
    runs = load_grid(g).runs
    assert [r.name for r in runs] == ["data-a_bits-16", "data-dpsh-0.2_bits-16"]
    assert {k: v for k, v in runs[1].params.items() if k != "run_dir"} == {"loss": "dpsh", "lr": 0.2, "bits": 16}
    # duplicate names are refused
    bad = write_grid(tmp_path, notebook=str(tiny_nb), output="o", name="{loss}", sweep={"loss": ["csq"], "bits": [16, 32]})
    with pytest.raises(ConfigError, match="same name"):
        load_grid(bad)


def test_validation_rejects_bad_name_and_type_before_running(tmp_path, tiny_nb):
    out = tmp_path / "out"
    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(out), sweep={"loss": ["csq"], "bitz": [16]})
    with pytest.raises(ConfigError) as e:
        run_grid(g, progress=False)
    msg = str(e.value)
    assert "grid.yaml" in msg and "run 'loss-csq_bitz-16'" in msg and "'bitz'" in msg and "bits" in msg
    assert not out.exists(), "nothing may run (or be written) when validation fails"

    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(out), fixed={"bits": "sixteen"}, sweep={"seed": [0]})
    with pytest.raises(ConfigError, match=r"parameter 'bits'.*'sixteen'.*must be int"):
        run_grid(g, progress=False)
    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(out), fixed={"fail": 1}, sweep={"seed": [0]})
    with pytest.raises(ConfigError, match="parameter 'fail'.*fail=1 .*must be bool"):
        run_grid(g, progress=False)
    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(out), sweep={"loss": ["no-such-loss"]})
    with pytest.raises(ConfigError, match="'no-such-loss' is not a known loss"):
        run_grid(g, progress=False)
    from hashlib_vit.runner import _registry_check

    assert "['nope']" in _registry_check("losses", ["csq", "nope"]) and _registry_check("losses", ["csq"]) is None
    # ints are accepted for floats, None for Optional, and the grid validates
    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(out), fixed={"lr": 1, "note": None}, sweep={"seed": [0]})
    validate_grid(load_grid(g))
    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(out), fixed={"run_dir": "x"}, sweep={"seed": [0]})
    with pytest.raises(ConfigError, match="run_dir"):
        load_grid(g)


@pytest.mark.notebook
def test_grid_runs_records_failure_resumes_and_tables(tmp_path, tiny_nb):
    from hashlib_vit.results.collect import collect
    from hashlib_vit.results.tables import aggregate, wide_table

    out = tmp_path / "out"
    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(out), sweep={"loss": ["csq", "dpsh"], "bits": [16]},
                   runs=[{"loss": "csq", "bits": 32, "fail": True, "name": "broken"}])
    summary = run_grid(g, progress=False)
    assert list(summary["status"]) == ["completed", "completed", "failed"]
    csv = pd.read_csv(out / "grid_summary.csv")
    assert list(csv["run"]) == ["loss-csq_bits-16", "loss-dpsh_bits-16", "broken"]
    broken = csv.set_index("run").loc["broken"]
    assert broken["status"] == "failed"
    assert "RuntimeError: deliberate failure for csq/32" in broken["error"]
    # the cell index in the executed notebook saved in the run directory (papermill inserts the
    # injected-parameters cell after the parameters cell, so the failing 4th cell is at index 4)
    assert broken["error_cell"] == 4 and broken["error_source"].startswith("if fail")
    assert csv.set_index("run").loc["loss-dpsh_bits-16", "map"] == pytest.approx(0.616)
    for name in ("loss-csq_bits-16", "loss-dpsh_bits-16"):
        rd = out / name
        assert (rd / "metrics.json").is_file() and (rd / "tiny.ipynb").is_file()  # executed notebook kept
        assert json.loads((rd / "grid_params.json").read_text())["parameters"]["loss"] == name.split("_")[0][5:]
    # a failed notebook is kept as <stem>.failed.ipynb (a finished run's executed notebook is never replaced)
    assert not (out / "broken" / "metrics.json").exists() and (out / "broken" / "tiny.failed.ipynb").is_file()
    assert not (out / "broken" / "tiny.ipynb").exists()

    # the table: rows = methods, columns = data set x bits
    runs = collect(out)
    table = wide_table(aggregate(runs))
    assert [i[0] for i in table.index] == ["csq", "dpsh"]
    assert list(table.columns) == [("digits", 16)]
    assert table.iloc[1, 0] == "0.616 (n=1)"

    # rerun: completed runs are skipped (their files untouched), the failed one is tried again
    before = (out / "loss-csq_bits-16" / "metrics.json").stat().st_mtime_ns
    summary = run_grid(g, progress=False)
    assert list(summary["status"]) == ["skipped", "skipped", "failed"]
    assert (out / "loss-csq_bits-16" / "metrics.json").stat().st_mtime_ns == before
    # changed parameters make a run incomplete again (its recorded config no longer matches)
    g2 = write_grid(tmp_path, notebook=str(tiny_nb), output=str(out), fixed={"lr": 0.5},
                    sweep={"loss": ["csq", "dpsh"], "bits": [16]})
    dry = run_grid(g2, progress=False, dry_run=True)
    assert list(dry["status"]) == ["pending", "pending"]


def test_interrupted_grid_keeps_summary_and_resumes(tmp_path, tiny_nb, monkeypatch, capsys):
    """Ctrl-C in the middle: the summary says what finished; the rerun runs only what is missing."""
    import hashlib_vit.runner as runner

    executed = []

    def fake_execute(run, **kw):  # stands in for papermill: writes what the notebook would
        executed.append(run.name)
        if len(executed) == 2:  # Ctrl-C during the second run (loss-csq_bits-32)
            raise KeyboardInterrupt
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / runner.PARAMS_NAME).write_text(json.dumps(runner._params_record(run)))
        (run.run_dir / "metrics.json").write_text(json.dumps(METRICS))  # a valid one: the run is complete
        return {"status": "completed", "seconds": 0.0, "map": 0.5}

    monkeypatch.setattr(runner, "execute_run", fake_execute)
    out = tmp_path / "out"
    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(out), sweep={"loss": ["csq", "dpsh"], "bits": [16, 32]})
    # --only executes a subset; the summary still lists the whole grid
    s = run_grid(g, progress=False, only=["loss-dpsh_bits-32"])
    assert list(s["status"]) == ["pending", "pending", "pending", "completed"]
    executed.clear()
    with pytest.raises(KeyboardInterrupt):
        run_grid(g, progress=False)
    s = pd.read_csv(out / "grid_summary.csv")
    assert list(s["status"]) == ["completed", "interrupted", "pending", "skipped"]
    summary = run_grid(g, progress=False)
    assert list(summary["status"]) == ["skipped", "completed", "completed", "skipped"]
    # first pass: csq-16 done, csq-32 interrupted; second pass: only the three unfinished runs, in grid order
    assert executed == ["loss-csq_bits-16", "loss-csq_bits-32", "loss-csq_bits-32", "loss-dpsh_bits-16"]


def test_run_grid_command_dry_run(tmp_path, tiny_nb, capsys):
    from hashlib_vit.cli import main

    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(tmp_path / "out"), sweep={"bits": [16, 32]})
    assert main(["run-grid", str(g), "--dry-run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "bits-16" in out and "bits-32" in out and "pending" in out
    assert not (tmp_path / "out").exists()
    bad = write_grid(tmp_path, notebook=str(tiny_nb), output=str(tmp_path / "out"), sweep={"bitz": [16]})
    assert main(["run-grid", str(bad), "--dry-run"]) == 2
    assert "'bitz'" in capsys.readouterr().err


def test_completion_record(tmp_path, tiny_nb):
    """Complete = recorded parameters match, status completed, a metrics.json at or below run_dir."""
    import hashlib_vit.runner as runner

    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(tmp_path / "out"), sweep={"bits": [16]})
    run = load_grid(g).runs[0]
    rd = run.run_dir
    (rd / "loss-a_bits-16").mkdir(parents=True)
    metrics = METRICS
    (rd / "loss-a_bits-16" / "metrics.json").write_text(json.dumps(metrics))  # a notebook writing sub-run directories

    def record(status, **over):
        rec = {**runner._params_record(run), "status": status}
        rec["parameters"] = {**rec["parameters"], **over}
        (rd / runner.PARAMS_NAME).write_text(json.dumps(rec))

    record("completed")
    assert runner.run_is_complete(run)
    record("running")  # killed mid-run
    assert not runner.run_is_complete(run)
    record("completed", bits=32)  # other parameters
    assert not runner.run_is_complete(run)
    record("completed")
    (rd / "loss-a_bits-16" / "metrics.json").write_text(json.dumps({**metrics, "map": "high"}))
    with pytest.warns(UserWarning, match=r"loss-a_bits-16/metrics.json: key 'map' is 'high'.*runs again"):
        assert not runner.run_is_complete(run)  # a damaged metrics.json is not a finished run


def test_dict_valued_parameters_sweep_as_values_not_linked_groups(tmp_path):
    nb = make_notebook(tmp_path / "dicts.ipynb")
    book = nbformat.read(str(nb), as_version=4)
    book.cells[1].source += "\nloss_params: dict = {}  # loss options\ndata_options: dict = {}  # loader options"
    nbformat.write(book, str(nb))
    g = write_grid(tmp_path, notebook=str(nb), output="o", sweep={
        "data_options": [{"missing": "skip"}, {"missing": "error"}], "loss_params": [{"a": 1}, {"a": 2}]})
    runs = load_grid(g).runs
    assert len(runs) == 4
    assert [(r.params["data_options"], r.params["loss_params"]) for r in runs] == [
        ({"missing": "skip"}, {"a": 1}), ({"missing": "skip"}, {"a": 2}),
        ({"missing": "error"}, {"a": 1}), ({"missing": "error"}, {"a": 2})]
    assert "missing" not in runs[0].params  # not spread into the run's parameters like a linked group


def test_explicit_runs_without_a_sweep_add_no_implicit_base_run(tmp_path, tiny_nb):
    # issue 19 (found running the sensitivity studies): a grid of only `runs` ran one more, unnamed run of
    # `fixed` alone ("run"); a grid of `fixed` alone is still that one run
    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(tmp_path / "out"), fixed={"lr": 0.01},
                   runs=[{"name": "a", "loss": "csq"}, {"name": "b", "loss": "dpsh"}])
    assert [r.name for r in load_grid(g).runs] == ["a", "b"]
    g = write_grid(tmp_path, notebook=str(tiny_nb), output=str(tmp_path / "out"), fixed={"lr": 0.01})
    assert [r.name for r in load_grid(g).runs] == ["run"]


def test_a_grid_run_leaves_the_lessons_exercises_out(tmp_path):
    """Issue 20: a batch run executes the lesson, not its exercises (a solution may train or read committed
    results); the executed notebook in the run directory holds no exercise or solution cell."""
    path = make_notebook(tmp_path / "lesson.ipynb")
    nb = nbformat.read(str(path), as_version=4)
    ex = nbformat.v4.new_markdown_cell("### Exercise 1.1 — Try it\nCompute something.")
    ex.metadata["tags"] = ["exercise"]
    sol = nbformat.v4.new_code_cell("raise RuntimeError('a solution ran in a batch run')")
    sol.metadata["tags"] = ["solution"]
    nb.cells[3:3] = [ex, sol]  # before the last cell, as a lesson's Exercises section
    nbformat.write(nb, str(path))
    out = tmp_path / "out"
    g = write_grid(tmp_path, notebook=str(path), output=str(out), sweep={"loss": ["csq"], "bits": [16]})
    summary = run_grid(g, progress=False)
    assert list(summary["status"]) == ["completed"], summary.to_dict("records")
    executed = nbformat.read(str(out / "loss-csq_bits-16" / "lesson.ipynb"), as_version=4)
    tags = {t for c in executed.cells for t in c.metadata.get("tags", [])}
    assert not tags & {"exercise", "solution"} and len(executed.cells) == len(nb.cells) - 2 + 1  # + papermill's cell
