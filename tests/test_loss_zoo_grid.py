"""Same-backbone comparisons: validation before training (hashlib_vit.compare, the runner), and what the
results package makes of them: the chance-level table from run directories, the collapse note, the
collapse diagnostics (results.analysis) and the mAP-vs-bits figure (results.figures)."""
import json

import matplotlib
import numpy as np
import pytest
import torch
from conftest import fake_curves

from hashlib_vit import compare
from hashlib_vit.errors import ConfigError
from hashlib_vit.results import RunDir
from hashlib_vit.results import analysis
from hashlib_vit.results.figures import map_vs_bits
from hashlib_vit.results.tables import chance_level_table, loss_zoo_summary

matplotlib.use("Agg")


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
        rd = RunDir(tmp_path / compare.run_name(row["method"], row["bits"])).prepare()
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
    (dict(losses="dpsh"), "losses='dpsh' must be a non-empty list"),
    (dict(losses=["dpsh", "nope"]), "losses='nope'"),
    (dict(bits_list=16), "bits_list=16"),
    (dict(loss_params={"dpsh": {"etta": 1}}), r"\['etta'\]"),
    (dict(lr=-1.0), "lr=-1.0"),
])
def test_run_comparison_validates_everything_before_training(kw, match, tmp_path):
    args = dict(losses=["csq", "dpsh"], bits_list=[8], root=str(tmp_path), protocol="digits", backbone="vit32_test",
                epochs=1)
    args.update(kw)
    with pytest.raises(ConfigError, match=match):
        compare.run_comparison(**args)
    assert not list(tmp_path.iterdir())  # nothing was started


def test_run_comparison_loads_with_the_data_options(tmp_path, monkeypatch):
    # common RunConfig parameters reach the loader when run_comparison loads the data itself
    seen = {}

    class Stop(Exception):
        pass

    class FakeProtocol:
        def load(self, data_root, seed=0, **options):
            seen.update(data_root=data_root, seed=seed, options=options)
            raise Stop

    monkeypatch.setattr(compare, "get_protocol", lambda name: FakeProtocol())
    with pytest.raises(Stop):
        compare.run_comparison(["csq"], [8], root=str(tmp_path), protocol="digits", backbone="vit32_test", epochs=1,
                               data_options={"cache_splits": False})
    assert seen == {"data_root": None, "seed": 0, "options": {"cache_splits": False}}
    with pytest.raises(ConfigError, match=r"data_options \['mising'\]"):
        compare.run_comparison(["csq"], [8], root=str(tmp_path), protocol="digits", backbone="vit32_test", epochs=1,
                               data_options={"mising": "skip"})


def test_code_diagnostics_see_an_input_independent_model():
    from hashlib_vit.data import get_protocol
    from hashlib_vit.experiment import RunConfig, RunResult
    from hashlib_vit.models import build_model

    data = get_protocol("digits").load(None, seed=0)
    model = build_model("vit32_test", bits=8)
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.copy_(torch.tensor([0.1, -0.1, 0.1, -0.1, 0.1, -0.1, 0.1, -0.1]))
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
            rd = RunDir(tmp_path / variant / compare.run_name(row["method"], row["bits"])).prepare()
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
    assert compare.as_list('["dpsh", "csq"]', "losses") == ["dpsh", "csq"]
    assert compare.as_list("dpsh, csq", "losses") == ["dpsh", "csq"]
    assert compare.as_list("[12, 48]", "bits_list", int) == [12, 48]
    assert compare.as_list(32, "bits_list", int) == [32]
    assert compare.as_dict('{"dpsh": {"eta": 0.2}}', "loss_params") == {"dpsh": {"eta": 0.2}}
    with pytest.raises(ConfigError, match="bits_list"):
        compare.as_list("[a, b]", "bits_list", int)
    with pytest.raises(ConfigError, match="loss_params"):
        compare.as_dict("[1]", "loss_params")
