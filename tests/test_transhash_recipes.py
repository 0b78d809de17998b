"""TransHash recipes (configs), early parameter checks, the reported-numbers table, one tiny end-to-end run."""
import pytest
import torch

from hashlib_vit.config import load_yaml as load_yaml_params
from hashlib_vit.errors import ConfigError
from hashlib_vit.experiment import RunConfig, run_experiment
from hashlib_vit.reported_transhash import IMAGENET_AVERAGE_TRANSHASH, TABLE1, TABLE2, TABLE3, reported


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
    row = TABLE1["TransHash"]
    assert sum(row[8:]) / 4 == pytest.approx(IMAGENET_AVERAGE_TRANSHASH, abs=5e-5)  # the paper's 86.10 %
    assert TABLE2["TransHash"] == row and TABLE3[32][0] == row[1] and TABLE3[64][0] == row[3]
    assert all(len(v) == 12 for v in list(TABLE1.values()) + list(TABLE2.values()))
    df = reported(1)
    assert len(df) == 12 * len(TABLE1)
    assert df.query("method == 'TransHash' and dataset == 'cifar10' and bits == 32")["map"].item() == 0.9108


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
