"""Same-backbone comparisons (the loss zoo, notebook 05) as one in-process grid of the runner: validation
before training, the run directories with their diagnostics (code_stats), and what the results package
makes of them: the chance-level table from run directories, the collapse note, the collapse diagnostics
(results.analysis) and the mAP-vs-bits figure (results.figures)."""
import json

import matplotlib
import numpy as np
import pytest
import torch
from conftest import fake_curves

from hashlib_vit import runner
from hashlib_vit.config import parse_value
from hashlib_vit.errors import ConfigError
from hashlib_vit.results import RunDir
from hashlib_vit.results import analysis
from hashlib_vit.results.collect import collect
from hashlib_vit.results.figures import map_vs_bits
from hashlib_vit.results.tables import chance_level_table, loss_zoo_summary

matplotlib.use("Agg")


def run_name(loss: str, bits: int) -> str:
    return f"loss-{loss}_bits-{bits}"  # the runner's name for a run of the zoo grid


def zoo_grid(root, losses=("csq", "dpsh"), bits_list=(8,), loss_params=None, **fixed):
    """The grid notebook 05 builds: the losses as a linked dimension (each with its own loss_params), the
    code lengths as a plain one, the shared parameters fixed, code statistics on."""
    loss_params = loss_params or {}
    base = dict(protocol="digits", backbone="vit32_test", epochs=1, batch_size=64, progress=False, code_stats=True)
    return {"target": "experiment", "output": str(root), "fixed": {**base, **fixed},
            "sweep": {"loss": losses if isinstance(losses, str) else
                      [{"name": n, "loss": n, "method": n, "loss_params": loss_params.get(n, {})} for n in losses],
                      "bits": bits_list if isinstance(bits_list, int) else list(bits_list)}}


def fake_rows():
    rows = []
    for method, base in (("csq", 0.8), ("dpsh", 0.11)):
        for bits in (16, 32):
            rows.append({"method": method, "backbone": "vit32_tiny", "protocol": "digits", "bits": bits, "epochs": 3,
                         "seed": 0, "pretrained": False, "topk": "all", "map": base + bits / 1000,
                         "map_random": 0.1, "final_loss": 0.5, "curves": fake_curves(bits)})
    return rows


def test_table_flags_runs_at_chance_and_keeps_them():
    t = chance_level_table(fake_rows())
    assert list(t["method"]) == ["csq", "csq", "dpsh", "dpsh"] and list(t["bits"]) == [16, 32, 16, 32]
    assert (t.loc[t.method == "dpsh", "note"].str.contains("at chance")).all()
    assert (t.loc[t.method == "csq", "note"] == "").all()
    assert t.loc[0, "map_over_random"] == pytest.approx(8.16)
    assert analysis.collapse_note(0.149, 0.1) != "" and analysis.collapse_note(0.151, 0.1) == ""


def test_table_from_run_directories_reads_diagnostics(tmp_path):
    for row in fake_rows():
        rd = RunDir(tmp_path / run_name(row["method"], row["bits"])).prepare()
        rd.write_metrics(row)
        if row["method"] == "dpsh":
            rd.write_json("diagnostics.json", {"mean_abs_u": 0.01, "input_spread": 0.02, "distinct_db_codes": 3,
                                               "bit_balance": 0.9})
    t = chance_level_table(tmp_path)
    assert len(t) == 4 and t.loc[t.method == "dpsh", "mean_abs_u"].tolist() == [0.01, 0.01]
    assert t.loc[t.method == "csq", "mean_abs_u"].isna().all()
    fig = map_vs_bits(t, title="x")
    ax = fig.axes[0]
    assert {line.get_label() for line in ax.get_lines()} >= {"random codes"}
    assert ax.get_ylim() == (0, 1)


@pytest.mark.parametrize("kw, match", [
    (dict(losses="dpsh"), "sweep.loss must be a non-empty list"),
    (dict(losses=["dpsh", "nope"]), "loss='nope'"),
    (dict(bits_list=16), "sweep.bits must be a non-empty list"),
    (dict(loss_params={"dpsh": {"etta": 1}}), r"\['etta'\]"),
    (dict(lr=-1.0), "lr=-1.0"),
])
def test_zoo_grid_validates_everything_before_training(kw, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        runner.run_grid(zoo_grid(tmp_path / "zoo", **kw), executor="sequential", progress=False)
    assert not list(tmp_path.iterdir())  # nothing was started


def test_zoo_grid_loads_with_the_data_options(tmp_path, monkeypatch):
    # the shared RunConfig parameters reach the protocol's loader when the runner loads the data
    from hashlib_vit.data.protocols import Protocol

    seen = {}

    class Stop(Exception):
        pass

    def fake_load(self, data_root, seed=0, **options):
        seen.update(data_root=data_root, seed=seed, options=options)
        raise Stop("loader reached")

    monkeypatch.setattr(Protocol, "load", fake_load)
    monkeypatch.setattr(runner, "_DATA_CACHE", {})
    summary = runner.run_grid(zoo_grid(tmp_path / "zoo", losses=["csq"], data_options={"cache_splits": False}),
                              executor="sequential", progress=False)
    assert seen == {"data_root": None, "seed": 0, "options": {"cache_splits": False}}
    assert list(summary["status"]) == ["failed"] and "loader reached" in summary.loc[0, "error"]
    with pytest.raises(ConfigError, match=r"data_options \['mising'\]"):
        runner.run_grid(zoo_grid(tmp_path / "zoo2", losses=["csq"], data_options={"mising": "skip"}), progress=False)
    assert not (tmp_path / "zoo2").exists()


def test_zoo_grid_writes_diagnostics_and_is_reproducible(tmp_path):
    # two losses x one length, one epoch: every run directory has diagnostics.json, the table reads it, and
    # rerunning a run of the grid (force) with the same seed gives the same mAP and the same code statistics
    grid = zoo_grid(tmp_path / "zoo", losses=["csq", "dpsh"], bits_list=[8], loss_params={"dpsh": {"eta": 0.2}})
    summary = runner.run_grid(grid, executor="sequential", progress=False)
    assert list(summary["run"]) == ["loss-csq_bits-8", "loss-dpsh_bits-8"]
    assert list(summary["status"]) == ["completed", "completed"] and list(summary["loss"]) == ["csq", "dpsh"]
    for name in summary["run"]:
        diag = json.loads((tmp_path / "zoo" / name / "diagnostics.json").read_text())
        assert set(diag) >= {"mean_abs_u", "input_spread", "distinct_db_codes", "bit_balance"}
    assert RunDir(tmp_path / "zoo" / "loss-dpsh_bits-8").config()["loss_params"] == {"eta": 0.2}  # per-loss params
    assert RunDir(tmp_path / "zoo" / "loss-csq_bits-8").config()["loss_params"] == {}
    first = chance_level_table(collect(tmp_path / "zoo"))
    assert list(first["method"]) == ["csq", "dpsh"] and list(first["bits"]) == [8, 8]
    assert first[["mean_abs_u", "input_spread", "distinct_db_codes", "bit_balance"]].notna().all().all()
    assert ((first["map"] >= 0) & (first["map"] <= 1)).all() and (first["map_random"] > 0).all()
    assert list(first["note"]) == [analysis.collapse_note(m, r) for m, r in zip(first["map"], first["map_random"])]
    again = runner.run_grid(grid, executor="sequential", progress=False)
    assert list(again["status"]) == ["skipped", "skipped"]  # finished runs with the same parameters are reused
    redo = runner.run_grid(grid, executor="sequential", progress=False, force=True, only=["loss-dpsh_bits-8"])
    assert redo.set_index("run").loc["loss-dpsh_bits-8", "status"] == "completed"
    second = chance_level_table(collect(tmp_path / "zoo"))
    cols = ["map", "map_random", "mean_abs_u", "input_spread", "distinct_db_codes", "bit_balance"]
    assert np.allclose(first[cols].to_numpy(float), second[cols].to_numpy(float))


def test_code_diagnostics_see_an_input_independent_model():
    from hashlib_vit.data import get_protocol
    from hashlib_vit.experiment import RunConfig, RunResult
    from hashlib_vit.models import build_model

    data = get_protocol("digits").load(None, seed=0)
    model = build_model("vit32_test", bits=8)
    with torch.no_grad():
        model.hash_layers[0].fc.weight.zero_()
        model.hash_layers[0].fc.bias.copy_(torch.tensor([0.1, -0.1, 0.1, -0.1, 0.1, -0.1, 0.1, -0.1]))
    db = np.tile(np.array([1, -1] * 4, dtype=np.int8), (len(data.database), 1))
    res = RunResult(RunConfig(), {}, {}, model, data, db[:len(data.query)], db, None)
    d = analysis.code_diagnostics(res)
    assert d["mean_abs_u"] == pytest.approx(0.1, rel=1e-5)
    assert d["input_spread"] == pytest.approx(0.0, abs=1e-5)
    assert d["distinct_db_codes"] == 1 and d["bit_balance"] == 1.0
    json.dumps(d)  # written to diagnostics.json


@pytest.mark.parametrize("classes", [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 2, [0, 0, 0, 1, 2, 3, 3, 4, 5, 5, 6, 7, 8, 9, 9, 9]])
def test_collapsed_profile_pairwise_losses_get_no_separating_gradient(classes):
    import torch.nn.functional as F

    y = F.one_hot(torch.tensor(classes), 10).float()
    p = analysis.collapsed_loss_profile(["dpsh", "hashnet", "dsh", "dch", "csq", "dpn", "greedyhash"], 16, y,
                                       scales=[0.0, 0.1, 1.0])
    at = p.set_index(["loss", "scale"])
    for name in ("dpsh", "hashnet"):  # identical outputs: lowest loss at u = 0
        assert at.loc[(name, 0.0), "value"] < at.loc[(name, 0.1), "value"] < at.loc[(name, 1.0), "value"]
    for name in ("dpsh", "hashnet", "dsh", "dch"):  # and no gradient that could separate the items
        assert (at.loc[name, "item_grad_across"] < 1e-5).all(), name
    for name in ("csq", "dpn", "greedyhash"):  # class-specific pull from the first step
        assert at.loc[(name, 0.0), "item_grad_across"] > 0.1, name


def test_summarize_writes_markdown_and_json(tmp_path):
    for variant in ("base", "lr1e-4"):
        for row in fake_rows():
            rd = RunDir(tmp_path / variant / run_name(row["method"], row["bits"])).prepare()
            rd.write_json("config.json", {"lr": 1e-3 if variant == "base" else 1e-4, "batch_size": 32,
                                          "loss_params": {}})
            rd.write_metrics(row)
    df = loss_zoo_summary(tmp_path)
    assert len(df) == 8 and set(df["variant"]) == {"base", "lr1e-4"}
    md = (tmp_path / "summary.md").read_text().splitlines()
    assert md[1].startswith("| variant | method | bits") and len(md) == 2 + 1 + 8
    assert "at chance" in (tmp_path / "summary.md").read_text()
    assert len(json.loads((tmp_path / "summary.json").read_text())) == 8


def test_list_and_dict_parameters_from_strings():
    # notebook 05 reads list and dict parameters given as strings (papermill -p losses '[...]') with the one rule
    assert parse_value('["dpsh", "csq"]') == ["dpsh", "csq"]
    assert parse_value("[dpsh, csq]") == ["dpsh", "csq"]
    assert parse_value("[12, 48]") == [12, 48]
    assert parse_value(32) == 32 and parse_value([16, 32]) == [16, 32]
    assert parse_value('{"dpsh": {"eta": 0.2}}') == {"dpsh": {"eta": 0.2}}
    assert parse_value("{dpsh: {eta: 0.2}}") == {"dpsh": {"eta": 0.2}}
    assert parse_value("dpsh, csq") == "dpsh, csq"  # not a list: the notebook refuses it with a ConfigError
