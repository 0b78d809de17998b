"""TransHash recipes (configs), early parameter checks, the reported-numbers table, one tiny end-to-end run."""
import pytest
import torch

from hashlib_vit.config import load_yaml as load_yaml_params
from hashlib_vit.errors import ConfigError
from hashlib_vit.experiment import RunConfig, run_experiment
from hashlib_vit.results.reference import paper_value, reference_results, transhash_reported


def test_paper_recipe_config_is_expressible(root):
    params = load_yaml_params(str(root / "configs" / "transhash_paper.yaml"))
    cfg = RunConfig.from_dict(params).validate()
    tc = cfg.train_config()
    assert (tc.optimizer, tc.momentum, tc.lr, tc.weight_decay, tc.schedule, tc.warmup_steps, tc.grad_clip,
            tc.batch_size) == ("sgd", 0.9, 0.03, 1e-4, "cosine", 500, 1.0, 64)
    assert cfg.backbone == "vit_large_patch32_224" and cfg.img_size == 224 and cfg.model_params["groups"] == 2
    assert cfg.head == "mgvt" and cfg.loss == "transhash"


def test_small_recipe_config_validates(root):
    cfg = RunConfig.from_dict(load_yaml_params(str(root / "configs" / "transhash_small.yaml"))).validate()
    assert cfg.backbone.startswith("vit32") and cfg.weights is None


def test_momentum_reaches_the_optimizer():
    assert RunConfig(optimizer="sgd", momentum=0.5).train_config().momentum == 0.5


def test_bits_groups_error_before_any_data_is_loaded():
    with pytest.raises(ConfigError, match="bits=16 with groups=3"):
        RunConfig(head="mgvt", loss="transhash", bits=16, model_params={"groups": 3}).validate()
    RunConfig(head="mgvt", loss="transhash", bits=12, model_params={"local_stream": False}).validate()


def test_reported_numbers_are_consistent():
    t1, t2, t3 = transhash_reported(1), transhash_reported(2), transhash_reported(3)
    row = t1[t1["method"] == "TransHash"].sort_values(["dataset", "bits"], key=lambda c: c.map(
        {"cifar10": 0, "nuswide": 1, "imagenet100": 2}) if c.name == "dataset" else c)["map"].tolist()
    imagenet_average = paper_value("TransHash", "imagenet100", "mean")  # stated in the paper's text
    assert sum(row[8:]) / 4 == pytest.approx(imagenet_average, abs=5e-5)  # the paper's 86.10 %
    full2 = t2[t2["method"] == "TransHash"].reset_index(drop=True)
    assert full2["map"].tolist() == t1[t1["method"] == "TransHash"]["map"].tolist()
    g2 = t3[t3["groups"] == 2].set_index("bits")["map"]
    assert g2[32] == row[1] and g2[64] == row[3]
    assert (t1.groupby("method").size() == 12).all() and (t2.groupby("method").size() == 12).all()
    df = t1
    assert len(df) == 12 * t1["method"].nunique() == 12 * 11
    assert df.query("method == 'TransHash' and dataset == 'cifar10' and bits == 32")["map"].item() == 0.9108
    # the only copy of these numbers is the reference CSV: every value read back equals its CSV cell
    ref = reference_results()
    csv = ref[(ref["method"] == "TransHash") & (ref["table"] == "Table 1") & (ref["family"] == "cifar10")
              & (ref["bits"] == 32)]["value"].item()
    assert paper_value("TransHash", "cifar10", 32, table="Table 1") == csv
    merged = t1.dropna().merge(ref[ref["table"] == "Table 1"].drop(columns="dataset").rename(columns={"family": "dataset"}),
                               on=["method", "dataset", "bits"])
    assert len(merged) == len(t1.dropna()) == 112 and (merged["map"] == merged["value"]).all()
    assert t3["map"].notna().sum() == 13  # '–' (did not converge) cells stay NaN


def test_tiny_transhash_run_end_to_end(tmp_path):
    res = run_experiment(protocol="digits", backbone="vit32_test", head="mgvt", loss="transhash", bits=16,
                         epochs=1, batch_size=32, model_params={"groups": 2}, run_dir=str(tmp_path / "run"),
                         progress=False, save_codes=False)
    assert res.query_codes.shape[1] == 16 and 0.0 < res.metrics["map"] <= 1.0
    assert {"loss_pair_global", "loss_pair_local", "loss_quant"} <= set(res.history["steps"][-1])
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.slow
@pytest.mark.notebook
def test_transhash_notebook_with_ablation_parameters(root, tmp_path):
    import json

    import papermill

    run_dir = tmp_path / "run"
    papermill.execute_notebook(str(root / "notebooks" / "02_transhash.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters=dict(backbone="vit32_test", bits=12, epochs=2, local_stream=False,
                                               likelihood="sigmoid", lambda_q=0.0, run_dir=str(run_dir)),
                               kernel_name="python3", progress_bar=False, cwd=str(root))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert metrics["method"] == "transhash w/o P w/o C w/o Q" and metrics["bits"] == 12
    assert config["model_params"]["local_stream"] is False and config["loss_params"]["likelihood"] == "sigmoid"
