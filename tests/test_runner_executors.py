"""The one grid runner with the in-process experiment target on every executor (sequential, local worker
processes, submitit's local cluster), failures and failed submissions recorded, resume, and every bad input
refused before anything is written."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hashlib_vit.errors import ConfigError
from hashlib_vit.experiment import run_experiment
from hashlib_vit.runner import PARAMS_NAME, load_grid, run_grid, validate_grid

ROOT = Path(__file__).resolve().parents[1]
BASE = {"protocol": "digits", "backbone": "vit32_test", "epochs": 1, "batch_size": 32, "device": "cpu"}
# passes validation, then fails in run_experiment: the digits database has 1,697 items
BAD = {"loss": "csq", "bits": 16, "topk": 100000, "name": "bad-topk"}


def grid_spec(out: Path, executor=None, losses=("csq", "dpsh"), runs=(), **extra) -> dict:
    spec = {"target": "experiment", "output": str(out), "fixed": dict(BASE),
            "sweep": {"loss": list(losses), "bits": [16]}, "runs": [dict(r) for r in runs], **extra}
    if executor is not None:
        spec["executor"] = executor
    return spec


@pytest.fixture(scope="module")
def direct_map():
    """mAP of run_experiment called directly with each loss's parameters (no run directory)."""
    return {loss: run_experiment({**BASE, "loss": loss, "bits": 16, "run_dir": None, "progress": False}).metrics["map"]
            for loss in ("csq", "dpsh")}


def _summary(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "grid_summary.csv").set_index("run")


def test_sequential_experiment_grid_matches_run_experiment_records_failure_and_resumes(tmp_path, direct_map):
    out = tmp_path / "out"
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid_spec(out, runs=[BAD]), sort_keys=False))
    summary = run_grid(path, progress=False)
    assert list(summary["run"]) == ["loss-csq_bits-16", "loss-dpsh_bits-16", "bad-topk"]
    assert list(summary["status"]) == ["completed", "completed", "failed"]
    csv = _summary(out)
    for loss in ("csq", "dpsh"):
        name = f"loss-{loss}_bits-16"
        rd = out / name
        metrics = json.loads((rd / "metrics.json").read_text())
        assert metrics["map"] == pytest.approx(direct_map[loss], abs=1e-12)  # same seed -> same mAP
        assert csv.loc[name, "map"] == pytest.approx(direct_map[loss], abs=1e-9)
        assert json.loads((rd / "config.json").read_text())["run_dir"] == str(rd)
        record = json.loads((rd / PARAMS_NAME).read_text())
        assert record == {"target": "experiment", "status": "completed",
                          "parameters": {**BASE, "loss": loss, "bits": 16}}
    assert csv.loc["bad-topk", "status"] == "failed" and csv.loc["bad-topk", "target"] == "experiment"
    assert csv.loc["bad-topk", "error"].startswith("DataError: topk=100000")
    assert "DataError" in (out / "bad-topk" / "error.txt").read_text()
    assert not (out / "bad-topk" / "metrics.json").exists()

    # rerun: completed runs are skipped (untouched), the failed one is tried again
    before = (out / "loss-csq_bits-16" / "metrics.json").stat().st_mtime_ns
    summary = run_grid(path, progress=False)
    assert list(summary["status"]) == ["skipped", "skipped", "failed"]
    assert (out / "loss-csq_bits-16" / "metrics.json").stat().st_mtime_ns == before
    assert summary.set_index("run").loc["loss-dpsh_bits-16", "map"] == pytest.approx(direct_map["dpsh"], abs=1e-12)
    # --force reruns (the same mAP again); a parameter that changes the result makes a run pending again
    forced = run_grid(path, progress=False, force=True, only=["loss-csq_bits-16"])
    assert list(forced["status"]) == ["completed", "pending", "pending"]
    assert forced["map"][0] == pytest.approx(direct_map["csq"], abs=1e-12)
    changed = grid_spec(out, runs=[BAD])
    changed["fixed"]["lr"] = 0.01
    assert list(run_grid(changed, progress=False, dry_run=True)["status"]) == ["pending"] * 3
    # bookkeeping fields (field_role "record") never make a finished run incomplete
    moved = grid_spec(out, runs=[BAD])
    moved["fixed"].update(device="auto", save_codes=False, data_root="/elsewhere")
    assert list(run_grid(moved, progress=False, dry_run=True)["status"]) == ["skipped", "skipped", "pending"]


def test_local_executor_two_workers_gives_the_same_metrics(tmp_path, direct_map):
    out = tmp_path / "out"
    summary = run_grid(grid_spec(out, {"kind": "local", "workers": 2}), progress=False)
    assert list(summary["status"]) == ["completed", "completed"]
    for loss in ("csq", "dpsh"):
        m = json.loads((out / f"loss-{loss}_bits-16" / "metrics.json").read_text())
        assert m["map"] == pytest.approx(direct_map[loss], abs=1e-12)
    assert list(_summary(out)["status"]) == ["completed", "completed"]


def test_submitit_local_executor_same_metrics_job_ids_and_a_failing_job(tmp_path, direct_map):
    pytest.importorskip("submitit")
    out = tmp_path / "out"
    summary = run_grid(grid_spec(out, {"kind": "submitit-local", "timeout_min": 10}, losses=("csq",), runs=[BAD]),
                       progress=False)
    rows = summary.set_index("run")
    assert list(rows["status"]) == ["completed", "failed"]
    assert rows.loc["loss-csq_bits-16", "map"] == pytest.approx(direct_map["csq"], abs=1e-12)
    assert rows.loc["bad-topk", "error"].startswith("DataError: topk=100000")
    assert all(str(j).isdigit() for j in rows["job_id"])  # local jobs: the process id
    csv = _summary(out)
    assert [str(j) for j in csv["job_id"]] == [str(j) for j in rows["job_id"]]
    assert (out / ".submitit").is_dir()
    assert json.loads((out / "bad-topk" / PARAMS_NAME).read_text())["status"] == "failed"


def test_failing_submission_is_a_failed_run_and_the_grid_goes_on(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    calls = []

    def submit(self, fn, *args, **kwargs):
        calls.append(args[0].name)
        if len(calls) == 1:
            raise RuntimeError("sbatch: error: Batch job submission failed: Invalid partition name specified")
        raise FileNotFoundError("sbatch")

    monkeypatch.setattr(submitit.AutoExecutor, "submit", submit)
    out = tmp_path / "out"
    summary = run_grid(grid_spec(out, {"kind": "submitit-local"}), progress=False)
    assert calls == ["loss-csq_bits-16", "loss-dpsh_bits-16"]  # the second run is still submitted
    assert list(summary["status"]) == ["failed", "failed"]
    assert summary["error"][0] == ("submission failed: RuntimeError: sbatch: error: Batch job submission failed: "
                                   "Invalid partition name specified")
    assert summary["error"][1] == "submission failed: FileNotFoundError: sbatch"
    assert list(_summary(out)["status"]) == ["failed", "failed"]


def test_slurm_parameters_from_the_grid(tmp_path):
    pytest.importorskip("submitit")
    from hashlib_vit.runner import resolve_executor, submitit_parameters

    spec = {"kind": "slurm", "partition": "gpu", "gpus_per_node": 1, "cpus_per_task": 8, "timeout_min": 600,
            "mem_gb": 64, "account": "proj", "slurm_additional_parameters": {"hint": "nomultithread"}}
    assert submitit_parameters(spec) == {"slurm_partition": "gpu", "gpus_per_node": 1, "cpus_per_task": 8,
                                         "timeout_min": 600, "mem_gb": 64, "slurm_account": "proj",
                                         "slurm_additional_parameters": {"hint": "nomultithread"}}
    # the same grid on a laptop: the command line replaces the whole executor
    assert resolve_executor(spec, "local", 2) == {"kind": "local", "workers": 2}
    assert resolve_executor(spec, "sequential") == {"kind": "sequential"}
    assert resolve_executor({"kind": "sequential"}, workers=3) == {"kind": "local", "workers": 3}


# ----------------------------------------------------------------------------- refused before anything runs
def _tiny_notebook(path: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell('run_dir: str = "x"  # run directory\ndevice: str = "auto"  # device\n'
                                     'bits: int = 16  # code length')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("print(bits)")]
    nbformat.write(nb, str(path))
    return path


def _with(spec: dict, **changes) -> dict:
    spec = json.loads(json.dumps(spec))
    for k, v in changes.items():
        if k in ("fixed", "sweep") and isinstance(v, dict):
            spec[k] = {**spec[k], **v}
        else:
            spec[k] = v
    return spec


BAD_GRIDS = [
    ("unknown grid key", lambda s: _with(s, executer={"kind": "local"}),
     r"unknown key\(s\) \['executer'\]; allowed: \[.*'executor'.*'target'"),
    ("unknown parameter", lambda s: _with(s, sweep={"bitz": [16]}),
     r"run 'loss-csq_bits-16_bitz-16'.*unknown parameter 'bitz'.*did you mean bits"),
    ("unknown dotted key", lambda s: _with(s, fixed={"loss_params.gama": 5.0}),
     r"loss_params \['gama'\] are not hyper-parameters of loss='csq'"),
    ("dotted key into a non-dict field", lambda s: _with(s, fixed={"bits.x": 1}), r"bits\.x"),
    ("record-only sweep axis", lambda s: _with(s, sweep={"device": ["cpu", "auto"]}),
     r"sweep axis 'device' sets only \['device'\], which do not change the result"),
    ("record-only linked axis", lambda s: _with(s, sweep={"io": [{"name": "a", "progress": True, "save_codes": False},
                                                                {"name": "b", "progress": False}]}),
     r"sweep axis 'io' sets only \['progress', 'save_codes'\]"),
    ("bad value in the last run", lambda s: _with(s, runs=[{"loss": "dpsh", "bits": 0, "name": "zero"}]),
     r"run 'zero': bits=0 must be an integer >= 1"),
    ("bad loss name", lambda s: _with(s, sweep={"loss": ["csq", "nope"]}), r"loss='nope' is not a known value"),
    ("unknown executor kind", lambda s: _with(s, executor={"kind": "pbs"}),
     r"kind='pbs' is not a known executor; allowed: sequential, local, submitit-local, slurm"),
    ("bad workers", lambda s: _with(s, executor={"kind": "local", "workers": 0}), r"workers=0 must be an integer >= 1"),
    ("unknown slurm key", lambda s: _with(s, executor={"kind": "slurm", "partitio": "gpu"}),
     r"unknown key\(s\) \['partitio'\] for kind slurm; allowed: .*partition"),
    ("notebook and experiment", lambda s: _with(s, notebook="notebooks/00_quickstart.ipynb"),
     r"target experiment runs no notebook"),
    ("no target", lambda s: {k: v for k, v in s.items() if k != "target"}, r"target=None; give 'notebook: "),
    ("notebook-only key", lambda s: _with(s, timeout=60), r"'timeout' applies to notebook cells"),
]


@pytest.mark.parametrize("case,make,match", BAD_GRIDS, ids=[c[0] for c in BAD_GRIDS])
def test_bad_grids_raise_before_anything_is_written(tmp_path, case, make, match):
    if "slurm" in case:
        pytest.importorskip("submitit")
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=match):
        run_grid(make(grid_spec(out)), progress=False)
    assert not out.exists()


def test_grid_file_errors_name_the_file_and_the_axis(tmp_path):
    out = tmp_path / "out"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_with(grid_spec(out), sweep={"run_dir": ["a", "b"]})))
    with pytest.raises(ConfigError, match=r"study\.yaml.*'run_dir' is set by the runner"):
        run_grid(path, progress=False)
    path.write_text(yaml.safe_dump(_with(grid_spec(out), executer=None)))
    with pytest.raises(ConfigError, match=r"grid '.*study\.yaml': unknown key\(s\) \['executer'\]"):
        run_grid(path, progress=False)
    # a notebook target's sweep of a bookkeeping field is refused too
    nb = _tiny_notebook(tmp_path / "nb.ipynb")
    path.write_text(yaml.safe_dump({"notebook": str(nb), "output": str(out), "sweep": {"device": ["cpu", "auto"]}}))
    with pytest.raises(ConfigError, match=r"study\.yaml: sweep axis 'device'"):
        run_grid(path, progress=False)
    path.write_text(yaml.safe_dump({"notebook": str(nb), "output": str(out), "sweep": {"bits": [16, 32]}}))
    validate_grid(load_grid(path))  # a parameter that changes the result is fine
    assert not out.exists()


def test_missing_submitit_is_a_config_error_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    out = tmp_path / "out"
    for kind in ("slurm", "submitit-local"):
        with pytest.raises(ConfigError, match=r"need submitit, which is not installed: pip install \"hashlib_vit\[cluster\]\""):
            run_grid(grid_spec(out, {"kind": kind}), progress=False)
    # the same grid runs without submitit when the command line picks another executor (dry run: nothing written)
    assert list(run_grid(grid_spec(out, {"kind": "slurm"}), executor="local", dry_run=True, progress=False)["status"]) \
        == ["pending", "pending"]
    assert not out.exists()


def test_run_grid_command_with_executor_override(tmp_path, capsys):
    from hashlib_vit.cli import main

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grid_spec(tmp_path / "out", {"kind": "slurm", "partition": "gpu"}), sort_keys=False))
    assert main(["run-grid", str(path), "--executor", "local", "--workers", "2", "--dry-run", "--no-progress"]) == 0
    assert "loss-csq_bits-16" in capsys.readouterr().out
    assert main(["run-grid", str(path), "--workers", "0", "--dry-run"]) == 2
    assert "workers=0 must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_loss_zoo_grid_is_notebook_05s_default_comparison():
    """configs/grids/loss_zoo.yaml runs exactly the RunConfigs notebook 05 trains with its defaults."""
    from hashlib_vit.reproduce import notebook_run_configs

    grid = load_grid(ROOT / "configs" / "grids" / "loss_zoo.yaml")
    validate_grid(grid)
    assert grid.target == "experiment" and len(grid.runs) == 10
    assert grid.runs[0].name == "loss-dpsh_bits-16_seed-0"
    keys = ("protocol", "backbone", "head", "loss", "bits", "epochs", "batch_size", "lr", "optimizer", "seed",
            "weights", "img_size", "loss_params")

    def key(c):
        return tuple(json.dumps(getattr(c, k), sort_keys=True) for k in keys)

    ours = sorted(key(r.config()) for r in grid.runs)
    nb = sorted(key(c) for c in notebook_run_configs(ROOT / "notebooks" / "05_loss_zoo.ipynb", {}))
    assert ours == nb


def test_progress_bar_names_the_current_run_and_can_be_switched_off(tmp_path, monkeypatch, capsys):
    import hashlib_vit.runner as runner

    def fake_execute(run, **kw):  # stands in for run_experiment: the bar is what is tested here
        run.run_dir.mkdir(parents=True, exist_ok=True)
        return {"status": "completed", "seconds": 0.0, "map": 0.5}

    monkeypatch.setattr(runner, "execute_run", fake_execute)
    monkeypatch.setenv("HASHLIB_VIT_PROGRESS", "1")  # a bar although stderr is not a terminal here
    run_grid(grid_spec(tmp_path / "a"), progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err and "loss-dpsh_bits-16" in err and "grid <grid mapping>" in err
    run_grid(grid_spec(tmp_path / "b"), progress=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("HASHLIB_VIT_PROGRESS", "auto")  # the policy: no text bar into a file or pipe
    run_grid(grid_spec(tmp_path / "c"), progress=True)
    assert capsys.readouterr().err == ""


def test_reproduce_plans_an_experiment_grid_from_its_runconfigs(tmp_path, capsys):
    """hashlib-vit reproduce with an experiment-target grid: --set sets RunConfig fields (dotted keys too),
    --weights / --data-root per backbone / protocol, the dry run plans from the runs' own RunConfigs."""
    from hashlib_vit.reproduce import apply_options, parse_sets, plan, reproduce

    grid = load_grid(ROOT / "configs" / "grids" / "aevit_backbone_study.yaml", output=tmp_path / "runs")
    apply_options(grid, weights=["resnet50.a1_in1k=r50.pth", "none"], data_root=["cifar10=/data/c10"],
                  sets=parse_sets(["epochs=2", "loss_params.alpha=0.5", "img_size=32"]))
    by_name = {r.name: r for r in grid.runs}
    r = by_name["data-cifar10_model-resnet50_loss-hsc_bits-16_seed-0"]
    cfg = r.config()
    assert (cfg.epochs, cfg.img_size, cfg.weights, cfg.data_root, cfg.loss_params) == (2, 32, "r50.pth", "/data/c10",
                                                                                        {"alpha": 0.5})
    aevit = by_name["data-nuswide21_model-aevit_loss-csq_bits-64_seed-0"].config()
    assert (aevit.model_params, aevit.weights, aevit.data_root) == ({"aem": "all"}, None, "data/nuswide")
    with pytest.raises(ConfigError, match="--set nonsense: not a RunConfig field"):
        apply_options(grid, sets={"nonsense": 1})

    grid = load_grid(ROOT / "configs" / "grids" / "aevit_backbone_study.yaml", output=tmp_path / "runs")
    apply_options(grid, weights=["none"], data_root=["cifar10=/data/c10"], sets={"epochs": 2})
    planned, problems = plan(grid, only=["data-cifar10_model-vit_loss-csq_bits-*"])
    assert [p.name for p in planned] == [f"data-cifar10_model-vit_loss-csq_bits-{b}_seed-0" for b in (16, 32, 48, 64)]
    assert [(c.backbone, c.bits, c.epochs, c.model_params) for p in planned for c in p.configs][0] == \
        ("vit_base_patch16_224.augreg_in21k", 16, 2, {"aem": "off"})
    assert len(problems) == 1 and problems[0].startswith(
        "runs " + ", ".join(p.name for p in planned) + ": data_root='/data/c10' of protocol 'cifar10' is not a folder")
    # the whole command: refused with the problem, nothing written
    with pytest.raises(ConfigError, match="data_root='/data/c10' of protocol 'cifar10' is not a folder"):
        reproduce("loss-zoo", dry_run=True, output=tmp_path / "out", weights=["none"],
                  data_root=["cifar10=/data/c10"], only=["data-cifar10_model-vitb16_loss-csq_*"], echo=lambda *a: None)
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_experiment_grid_sweeps_method_presets(tmp_path):
    """``preset`` (configs/methods/<name>.yaml) is a run parameter of the experiment target: the preset sits
    below the run's own parameters (hashlib_vit.config.build_config), and an unknown one is refused up front."""
    out = tmp_path / "out"
    spec = {"target": "experiment", "output": str(out), "fixed": {**BASE, "bits": 16},
            "sweep": {"preset": ["csq", "dpsh"]}, "runs": [{"preset": "transhash", "bits": 32, "name": "th"}]}
    grid = load_grid(spec)
    validate_grid(grid)
    assert [r.name for r in grid.runs] == ["preset-csq", "preset-dpsh", "th"]
    cfgs = [r.config() for r in grid.runs]
    assert [(c.loss, c.head, c.bits, c.backbone) for c in cfgs] == [
        ("csq", "cls_linear", 16, "vit32_test"), ("dpsh", "cls_linear", 16, "vit32_test"),
        ("transhash", "mgvt", 32, "vit32_test")]
    with pytest.raises(ConfigError, match=r"run 'preset-nope': preset='nope' is not a known value"):
        run_grid({**spec, "sweep": {"preset": ["csq", "nope"]}}, progress=False)
    assert not out.exists()
