"""Issue 19, parts 2-3: the options the sensitivity studies vary (HSC's quantization form and beta warm-up,
TransHash's per-head gamma, the BN hash layer on the CLS token), the one-at-a-time study plan and its
command, and the regression that the HSC study found (codes collapsing to one vertex with the affine head)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hashlib_vit.errors import ConfigError, DataError
from hashlib_vit.losses import build_loss
from hashlib_vit.losses.hsc import quantization_term
from hashlib_vit.models import HashOutput, build_model


# ----------------------------------------------------------------------------- HSC options
def test_quantization_forms_values():
    h = torch.tensor([[1.0, -1.0, 0.0, 0.5]])
    assert quantization_term(h, "l2").item() == pytest.approx((0 + 0 + 1 + 0.25) / 4)
    assert quantization_term(h, "l1").item() == pytest.approx((0 + 0 + 1 + 0.5) / 4)
    lc = (0 + 0 + math.log(math.cosh(1.0)) + math.log(math.cosh(0.5))) / 4
    assert quantization_term(h, "log_cosh").item() == pytest.approx(lc, abs=1e-7)
    for form in ("l2", "l1", "log_cosh"):  # zero exactly at the hypercube vertices
        assert quantization_term(torch.tensor([[1.0, -1.0]]), form).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ConfigError, match=r"quant='l3'; expected one of \('l2', 'l1', 'log_cosh'\)"):
        quantization_term(h, "l3")


def test_hsc_beta_warmup_rises_linearly_and_enters_the_loss():
    loss = build_loss("hsc", 8, 2, beta=0.4, beta_warmup=10, alpha=0.0, quant="l2")
    assert [loss.beta_now() for s in (0, 5, 10, 20) if not loss.set_progress(s, 0)] == pytest.approx([0, 0.2, 0.4, 0.4])
    out = HashOutput(u=torch.full((4, 8), 0.3))  # identical codes: SupCon = log(3), |h|-1 the same everywhere
    labels = torch.eye(2)[[0, 0, 1, 1]]
    loss.set_progress(0, 0)
    at0 = loss(out, labels)
    loss.set_progress(10, 0)
    at10 = loss(out, labels)
    q = (math.tanh(0.3) - 1) ** 2
    assert at10.total.item() - at0.total.item() == pytest.approx(0.4 * q, rel=1e-5)
    assert build_loss("hsc", 8, 2, beta=0.4, beta_warmup=0).beta_now() == 0.4  # no warm-up: beta from step 0


@pytest.mark.parametrize("bad, match", [
    ({"quant": "l3"}, r"quant='l3'; expected one of"),
    ({"beta_warmup": -1}, r"beta_warmup=-1 must be an integer >= 0 \(training steps\)"),
    ({"beta_warmup": 2.5}, r"beta_warmup=2.5 must be an integer >= 0"),
    ({"n_views": 0}, r"n_views=0 must be an integer >= 1"),
])
def test_hsc_bad_options_are_named(bad, match):
    with pytest.raises(ConfigError, match=match):
        build_loss("hsc", 8, 2, **bad)


# ----------------------------------------------------------------------------- TransHash per-head gamma
def test_transhash_gamma_scale_bits_gives_each_head_its_share():
    heads = (torch.randn(6, 16), torch.randn(6, 8), torch.randn(6, 8))
    fixed = build_loss("transhash", 32, 3, gamma=20.0)
    scaled = build_loss("transhash", 32, 3, gamma=20.0, gamma_scale="bits")
    assert fixed.head_gammas(heads) == [20.0, 20.0, 20.0]
    assert scaled.head_gammas(heads) == [10.0, 5.0, 5.0]
    labels = torch.eye(3)[[0, 0, 1, 1, 2, 2]]
    out = HashOutput(u=torch.cat(heads, 1), heads=heads)
    assert scaled(out, labels).total.item() != pytest.approx(fixed(out, labels).total.item())
    # one head (DCH, or TransHash on a one-head model): the same gamma either way
    one = HashOutput(u=torch.randn(6, 32))
    assert build_loss("dch", 32, 3, gamma=20.0, gamma_scale="bits")(one, labels).total.item() == \
        pytest.approx(build_loss("dch", 32, 3, gamma=20.0)(one, labels).total.item())
    with pytest.raises(ConfigError, match=r"gamma_scale='per_head' is not a known value; allowed: fixed, bits"):
        build_loss("transhash", 32, 3, gamma_scale="per_head")


# ----------------------------------------------------------------------------- the cls_bn head
def test_cls_bn_head_is_cls_token_then_bn_hash_layer():
    from hashlib_vit.models import MODELS, resolve_model

    assert "cls_bn" in MODELS.names()
    spec = resolve_model("cls_bn", 16, {"aem": "all"}, backbone="vit32_test")
    assert (spec.neck, spec.hash_layer, spec.bits_split) == ("cls", "bn_linear", (16,))
    torch.manual_seed(0)
    model = build_model("vit32_test", 16, "cls_bn").train()
    u = model(torch.randn(8, 3, 32, 32)).u
    # bit balance: every bit has zero mean over the batch in training mode (BatchNorm, affine at init)
    assert u.shape == (8, 16) and u.mean(0).abs().max().item() < 1e-5
    assert resolve_model("cls_bn", 16, backbone="resnet50").neck == "cls"  # works on a CNN's pooled feature too


# ----------------------------------------------------------------------------- the collapse the study found
def test_hsc_preset_codes_do_not_collapse_to_one_vertex(tmp_path):
    """With the affine head (``cls_linear``) and SupCon + quantization (alpha 0), every code went to the same
    vertex (SupCon stuck at log(n-1), mAP exactly the random-codes level); the AE-ViT + HSC preset's BN
    hash layer keeps the bits balanced. Two short runs on the digits, same seed and budget."""
    from hashlib_vit.config import build_config
    from hashlib_vit.experiment import run_experiment

    base = dict(protocol="digits", backbone="vit32_test", bits=16, epochs=6, batch_size=32, lr=1e-3,
                device="cpu", progress=False, loss_params={"alpha": 0.0, "beta": 0.1})
    cfg = build_config(dict(base, run_dir=str(tmp_path / "preset")), preset="aevit_hsc")
    assert cfg.head == "cls_bn"
    res = run_experiment(cfg)
    codes = np.load(tmp_path / "preset" / "codes.npz")["db_codes"]
    assert len({row.tobytes() for row in codes}) > 50  # many distinct codes, not one vertex
    assert res.metrics["map"] > 2 * res.metrics["map_random"]


# ----------------------------------------------------------------------------- one-at-a-time study plan + command
def _study_runs():
    import pandas as pd

    rows = [("base", {"tau": 0.2, "beta": 0.1}, 0.5), ("tau-1", {"tau": 1.0, "beta": 0.1}, 0.7),
            ("beta-0", {"tau": 0.2, "beta": 0.0}, 0.6), ("both", {"tau": 1.0, "beta": 0.0}, 0.9)]
    return pd.DataFrame([{"run_dir": f"/x/grid/{n}", "config": {"loss": "hsc", "loss_params": lp}, "val_map": v,
                          "map": v - 0.05} for n, lp, v in rows])


def test_study_plan_holds_the_other_parameters_at_the_base_run():
    from hashlib_vit.results.sensitivity import sensitivity_table, study_plan

    runs = _study_runs()
    plan = study_plan(runs, ["loss_params.tau", "loss_params.beta"])
    assert plan == {"loss_params.tau": {"loss_params.beta": 0.1}, "loss_params.beta": {"loss_params.tau": 0.2}}
    t = sensitivity_table(runs, "loss_params.tau", where=plan["loss_params.tau"])
    assert t["value"].tolist() == [0.2, 1.0] and t["val_map_mean"].tolist() == [0.5, 0.7]  # "both" is not in it
    with pytest.raises(DataError, match=r"no run named 'start' \(the base of a one-at-a-time study\) among \['base', "):
        study_plan(runs, ["loss_params.tau"], base="start")
    with pytest.raises(DataError, match="no parameter to study"):
        study_plan(runs, [])


def test_sensitivity_command_bad_requests(tmp_path, capsys):
    from hashlib_vit.cli import main

    assert main(["sensitivity", str(tmp_path), "--param", "lr", "--select", "map"]) == 2
    assert "--select 'map' is not a selection metric; allowed: val_map" in capsys.readouterr().err
    assert main(["sensitivity", str(tmp_path), "--param", "lr"]) == 2
    assert f"error: no completed run below {str(tmp_path)!r}" in capsys.readouterr().err  # named, not a traceback


# ----------------------------------------------------------------------------- one source of each default
@pytest.mark.parametrize("stem, preset, names", [
    ("03_aevit_hsc", "aevit_hsc", ["tau", "alpha", "beta", "quant", "beta_warmup", "contrastive", "pos_weight",
                                   "n_views"]),
    ("02_transhash", "transhash", ["gamma", "lambda_q", "gamma_scale", "likelihood"]),
    ("04_single_loss", "slvit", ["s", "m", "codebook", "binary_forward"]),
])
def test_lesson_parameters_show_the_method_defaults(stem, preset, names):
    """A lesson's loss parameters are its method's defaults — the registry's, under the preset's own values —
    that the studies chose (docs/defaults.md): a default changed in one place and not the other fails here."""
    import ast

    import papermill

    from pathlib import Path

    from hashlib_vit.losses import LOSSES

    from hashlib_vit.config import build_config

    declared = papermill.inspect_notebook(str(Path(__file__).resolve().parents[1] / "notebooks" / f"{stem}.ipynb"))
    cfg = build_config({"protocol": "digits"}, preset=preset)
    defaults = {**LOSSES.get(cfg.loss).defaults, **cfg.loss_params}
    shown = {n: ast.literal_eval(declared[n]["default"]) for n in names}
    assert shown == {n: defaults[n] for n in names}
    if preset == "slvit":  # OrthoHash's stated s stays the registry's; SL-ViT's inferred one is the preset's
        assert LOSSES.get("orthohash").defaults["s"] == 8.0 and cfg.loss_params["s"] == 2.0


def test_hsc_on_the_affine_head_warns_before_training(tmp_path):
    from hashlib_vit.config import build_config
    from hashlib_vit.experiment import _warn_if_head_unsuited

    cfg = build_config({"protocol": "digits", "loss": "hsc"})
    with pytest.warns(UserWarning, match=r"loss 'hsc' with head 'cls_linear': the affine head .* --head cls_bn or "
                                         r"--preset aevit_hsc"):
        _warn_if_head_unsuited(cfg, build_loss("hsc", 32, 10))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the preset's head, or another loss on the affine head: no warning
        _warn_if_head_unsuited(build_config({"protocol": "digits"}, preset="aevit_hsc"), build_loss("hsc", 32, 10))
        _warn_if_head_unsuited(build_config({"protocol": "digits", "loss": "csq"}), build_loss("csq", 32, 10))


def test_min_seeds_keeps_a_single_lucky_seed_from_being_chosen():
    import pandas as pd

    from hashlib_vit.results.sensitivity import sensitivity_table

    rows = [("a", s, v) for s, v in enumerate([0.90, 0.92, 0.94])] + [("b", 0, 0.99)]
    runs = pd.DataFrame([{"config": {"method": m, "seed": s}, "val_map": v, "map": v} for m, s, v in rows])
    assert sensitivity_table(runs, "method")["selected"].tolist() == [False, True]  # b: one seed, highest mean
    t = sensitivity_table(runs, "method", min_seeds=3)
    assert t["selected"].tolist() == [True, False] and t["n"].tolist() == [3, 1]  # b shown, not chosen
    with pytest.raises(DataError, match=r"no value of 'method' has min_seeds=4 runs \(most: 3\)"):
        sensitivity_table(runs, "method", min_seeds=4)
