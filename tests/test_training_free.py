"""Training-free baselines (LSH, PCA+sign, PCA+random rotation, ITQ): closed forms, statistics, the run path,
tables and the notebook helper."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hashlib_vit.errors import ConfigError, DataError
from hashlib_vit.experiment import RunConfig, random_codes_map, run_experiment
from hashlib_vit.losses import LOSSES, TRAINING_FREE, build_training_free
from hashlib_vit import baselines as tf
from hashlib_vit.baselines import baseline_table, extract_features
from hashlib_vit.losses.training_free import ITQ, LSH, PCARandomRotation, PCASign, pca_components, random_orthogonal
from hashlib_vit.results import REQUIRED_METRICS, RunDir
from hashlib_vit.retrieval import map_at_k

TINY = dict(backbone="vit32_test", protocol="digits", progress=False, device="cpu", eval_batch_size=512)


def spectrum_data(n=300, d=20, seed=0):
    """Features with well separated variances (distinct principal directions) and a non-zero mean."""
    g = np.random.default_rng(seed)
    rot = random_orthogonal(d, g)
    scales = 2.0 ** -np.arange(d / 2, step=0.5)  # 1, 0.71, 0.5, ... distinct
    return (g.standard_normal((n, d)) * scales) @ rot.T + 5.0


def clustered(seed=0, d=64, classes=10, noise=3.0):
    """Gaussian clusters: train (100/class), query (10/class), database (100/class)."""
    g = np.random.default_rng(seed)
    centers = 3.0 * g.standard_normal((classes, d))

    def draw(m):
        y = np.repeat(np.arange(classes), m)
        return (centers[y] + noise * g.standard_normal((len(y), d))).astype(np.float32), y

    return draw(100), draw(10), draw(100)


# ----------------------------------------------------------------------------- registry
def test_registry_names_and_defaults():
    assert TRAINING_FREE.names() == ["itq", "lsh", "pca_rr", "pca_sign"]
    assert not set(TRAINING_FREE.names()) & set(LOSSES.names())
    assert ITQ.defaults == {"iterations": 50} and LSH.defaults == {"center": True} and PCASign.defaults == {}
    assert isinstance(build_training_free("pca_rr", 8, seed=3), PCARandomRotation)
    with pytest.raises(ConfigError, match="loss='nope'.*itq"):
        build_training_free("nope", 8)
    with pytest.raises(ConfigError, match=r"\['steps'\].*'itq'.*iterations"):
        build_training_free("itq", 8, steps=3)
    with pytest.raises(ConfigError, match="iterations=-1"):
        build_training_free("itq", 8, iterations=-1)
    with pytest.raises(ConfigError, match="center='yes'"):
        build_training_free("lsh", 8, center="yes")
    with pytest.raises(ConfigError, match="bits=0"):
        build_training_free("lsh", 0)


# ----------------------------------------------------------------------------- PCA + sign
def test_pca_sign_matches_sklearn_components_up_to_a_defined_sign():
    from sklearn.decomposition import PCA

    x = spectrum_data().astype(np.float32).astype(np.float64)  # float32 features, as the backbone gives them
    k = 8
    h = PCASign(k).fit(x.astype(np.float32))
    ref = PCA(n_components=k, svd_solver="full").fit(x)
    comps = ref.components_.copy()
    lead = comps[np.arange(k), np.argmax(np.abs(comps), 1)]
    comps *= np.sign(lead)[:, None]  # the documented convention: largest |loading| positive
    np.testing.assert_allclose(h.components, comps, atol=1e-8)
    np.testing.assert_allclose(h.explained_variance, ref.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(h.mean, ref.mean_, atol=1e-12)
    assert (h.components[np.arange(k), np.argmax(np.abs(h.components), 1)] > 0).all()
    # the codes are the signs of the projections on those components (sign(0) = +1)
    z = (x - ref.mean_) @ comps.T
    codes = h.encode(x)
    assert codes.dtype == np.int8 and codes.shape == (len(x), k)
    np.testing.assert_array_equal(codes, np.where(z >= 0, 1, -1))
    # the convention does not depend on the data's orientation: flipping every feature keeps each direction's
    # loading pattern up to a global sign, so the fitted components (with the convention) are the same
    np.testing.assert_allclose(PCASign(k).fit(-x).components, h.components, atol=1e-8)


def test_pca_components_are_orthonormal_and_ordered():
    mean, comps, var = pca_components(spectrum_data(d=12), 12)
    np.testing.assert_allclose(comps @ comps.T, np.eye(12), atol=1e-10)
    assert (np.diff(var) <= 0).all() and var[0] > var[-1] > 0


# ----------------------------------------------------------------------------- random rotation
def test_random_rotation_is_orthogonal_and_seeded():
    for k in (1, 7, 64):
        r = random_orthogonal(k, np.random.default_rng(0))
        np.testing.assert_allclose(r @ r.T, np.eye(k), atol=1e-10)
        np.testing.assert_allclose(r.T @ r, np.eye(k), atol=1e-10)
    x = spectrum_data()
    a, b, c = (PCARandomRotation(16, seed=s).fit(x) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.R, b.R)
    assert not np.allclose(a.R, c.R)
    np.testing.assert_allclose(a.R @ a.R.T, np.eye(16), atol=1e-10)
    # PCA-RR = PCA projection, then the rotation
    np.testing.assert_allclose(a.project(x), PCASign(16).fit(x).project(x) @ a.R, atol=1e-9)


# ----------------------------------------------------------------------------- ITQ
def test_itq_quantization_loss_never_increases_and_r_stays_orthogonal():
    (tx, _), _, _ = clustered(seed=1)
    h = ITQ(32, seed=0).fit(tx)
    hist = np.array(h.loss_history)
    assert len(hist) == 51
    assert (np.diff(hist) <= 1e-9 * hist[0]).all(), np.diff(hist).max()
    assert hist[-1] < 0.98 * hist[0]  # it does optimise (measured: -3.3%; ||V||^2 dominates Q)
    np.testing.assert_allclose(h.R @ h.R.T, np.eye(32), atol=1e-10)
    # the stored loss is ||B - V R||_F^2 recomputed independently from the fitted state
    v = (tx.astype(np.float64) - h.mean) @ h.components.T
    z = v @ h.R
    assert math.isclose(hist[-1], float(((np.where(z >= 0, 1.0, -1.0) - z) ** 2).sum()), rel_tol=1e-10)
    np.testing.assert_array_equal(h.encode(tx), np.where(z >= 0, 1, -1))


def test_itq_with_zero_iterations_is_pca_rr_with_the_same_seed():
    (tx, _), (qx, _), _ = clustered(seed=2)
    a = ITQ(16, seed=5, iterations=0).fit(tx)
    b = PCARandomRotation(16, seed=5).fit(tx)
    np.testing.assert_array_equal(a.encode(qx), b.encode(qx))
    assert len(a.loss_history) == 1


def test_itq_beats_pca_sign_on_clustered_data_and_all_beat_random():
    (tx, _), (qx, qy), (dx, dy) = clustered(seed=0)
    maps = {}
    for name in ("lsh", "pca_sign", "pca_rr", "itq"):
        h = build_training_free(name, 32, seed=0).fit(tx)
        maps[name] = map_at_k(h.encode(qx), h.encode(dx), qy, dy)
    g = np.random.default_rng(0)
    rand = map_at_k(np.where(g.random((len(qx), 32)) < .5, -1, 1), np.where(g.random((len(dx), 32)) < .5, -1, 1),
                    qy, dy)
    assert rand < 0.2  # 10 balanced classes: chance ~0.1
    # measured: itq 0.990, pca_rr 0.932, lsh 0.646, pca_sign 0.346 (PCA puts the noise directions in bits 10..32)
    assert maps["itq"] > 0.95 and maps["itq"] > maps["pca_sign"] + 0.3
    assert maps["itq"] >= maps["pca_rr"] > maps["pca_sign"]
    assert min(maps.values()) > rand + 0.2


# ----------------------------------------------------------------------------- LSH
def test_lsh_identical_features_identical_codes_and_seeded():
    x = np.random.default_rng(0).standard_normal((50, 10))
    h = LSH(64, seed=3).fit(x)
    np.testing.assert_array_equal(h.encode(x[[4, 4]])[0], h.encode(x[[4, 4]])[1])
    np.testing.assert_array_equal(h.encode(x), LSH(64, seed=3).fit(x).encode(x))
    assert (h.encode(x) != LSH(64, seed=4).fit(x).encode(x)).any()
    # centring: the training mean is subtracted (default); center=False keeps Charikar's origin
    np.testing.assert_allclose(h.mean, x.mean(0))
    assert not LSH(8, center=False).fit(x).mean.any()


@pytest.mark.parametrize("theta", [math.pi / 6, math.pi / 3, math.pi / 2, 2 * math.pi / 3, 0.95 * math.pi])
def test_lsh_collision_probability_is_one_minus_angle_over_pi(theta):
    """Charikar 2002: Pr[h(x) = h(y)] = 1 - theta/pi. 20,000 bits (fixed seed): sd <= 0.0036, tolerance 0.02."""
    d = 8
    g = np.random.default_rng(11)
    e1, e2 = np.linalg.qr(g.standard_normal((d, 2)))[0].T
    x, y = e1, math.cos(theta) * e1 + math.sin(theta) * e2
    h = LSH(20000, seed=7, center=False).fit(g.standard_normal((5, d)))  # K >> D is allowed for LSH
    c = h.encode(np.stack([x, 3.0 * y]))  # the length does not matter, only the angle
    agree = float((c[0] == c[1]).mean())
    assert abs(agree - (1 - theta / math.pi)) < 0.02, (agree, 1 - theta / math.pi)


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_raise_specific_errors():
    x = spectrum_data(n=30, d=10)
    with pytest.raises(ConfigError, match=r"bits=11 .*min\(n, D\) = min\(30, 10\) = 10"):
        PCASign(11).fit(x)
    with pytest.raises(ConfigError, match=r"min\(n, D\) = min\(5, 10\) = 5"):
        ITQ(6).fit(x[:5])
    assert LSH(64).fit(x).encode(x).shape == (30, 64)  # LSH: any number of bits
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match=r"NaN/inf.*row 3"):
        ITQ(4).fit(bad)
    with pytest.raises(DataError, match=r"NaN/inf"):
        PCASign(4).fit(x).encode(bad)
    with pytest.raises(DataError, match="empty"):
        LSH(4).fit(np.zeros((0, 10)))
    with pytest.raises(DataError, match="2-D"):
        LSH(4).fit(np.zeros(10))
    with pytest.raises(DataError, match="D=9 dimensions but the method was fitted on D=10"):
        PCARandomRotation(4).fit(x).encode(x[:, :9])
    with pytest.raises(ConfigError, match="must be fitted"):
        ITQ(4).encode(x)
    # torch tensors are accepted
    np.testing.assert_array_equal(PCASign(4).fit(torch.from_numpy(x).float()).encode(x), PCASign(4).fit(x).encode(x))


def test_run_config_validation_of_training_free_methods():
    RunConfig(loss="itq", bits=32, loss_params={"iterations": 5}).validate()
    RunConfig(loss="lsh", bits=128, backbone="vit32_tiny").validate()  # LSH: bits > D is fine
    with pytest.raises(ConfigError, match=r"loss_params \['lr'\].*'itq'"):
        RunConfig(loss="itq", loss_params={"lr": 1}).validate()
    with pytest.raises(ConfigError, match="head='mgvt'.*training-free"):
        RunConfig(loss="pca_sign", head="mgvt").validate()
    with pytest.raises(ConfigError, match="bits=128.*feature dimension D=96"):
        RunConfig(loss="pca_rr", bits=128, backbone="vit32_tiny").validate()
    with pytest.raises(ConfigError, match="bits=64.*D=32"):
        RunConfig(loss="itq", bits=64, backbone="vit32_test").validate()
    with pytest.raises(ConfigError, match="bits=256.*D=192"):  # a timm model: built on the meta device only
        RunConfig(loss="itq", bits=256, backbone="vit_tiny_patch16_224", img_size=32).validate()
    with pytest.raises(ConfigError, match="loss='nope'.*itq.*lsh"):
        RunConfig(loss="nope").validate()
    from hashlib_vit.runner import _registry_check

    assert _registry_check("loss", "itq") is None and "not a known loss" in _registry_check("loss", "nope")


# ----------------------------------------------------------------------------- the run path
@pytest.fixture(scope="module")
def stand_in_weights(tmp_path_factory):
    """A stand-in 'pretrained' checkpoint for vit32_test (no real pretrained weights exist here)."""
    from hashlib_vit.models import create_backbone

    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "vit32_test_standin.pth"
    torch.save(create_backbone("vit32_test").model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def itq_run(tmp_path_factory, stand_in_weights):
    from hashlib_vit.cli import main

    run_dir = tmp_path_factory.mktemp("tf") / "runs" / "itq16"
    rc = main(["train", "--loss", "itq", "--bits", "16", "--backbone", "vit32_test", "--weights", stand_in_weights,
               "--epochs", "7", "--loss-params", '{"iterations": 20}', "--run-dir", str(run_dir),
               "--progress", "false", "--device", "cpu", "--eval-batch-size", "512"])
    assert rc == 0
    return run_dir


def test_training_free_run_writes_the_run_directory(itq_run, stand_in_weights):
    rd = RunDir(itq_run)
    for name in ("metrics.json", "config.json", "env.json", "codes.npz"):
        assert rd.file(name).is_file(), name
    assert not rd.file("train_log.csv").exists() and not rd.file("evals.json").exists()
    m = rd.metrics()
    assert set(REQUIRED_METRICS) <= set(m)
    assert m["training"] == "none" and m["train_time_s"] == 0 and m["final_loss"] is None
    assert m["epochs"] == 0 and m["epochs_ignored"] == 7
    assert m["feature"] == "cls" and m["feature_dim"] == 32 and m["n_fit"] == 500 and m["fit_time_s"] >= 0
    assert m["pretrained"] is True and m["loss"] == "itq" and m["method"] == "itq" and m["bits"] == 16
    assert m["fit_info"]["iterations"] == 20
    assert m["fit_info"]["quantization_loss_per_item_last"] <= m["fit_info"]["quantization_loss_per_item_first"]
    assert rd.config()["loss_params"] == {"iterations": 20}
    assert set(rd.env()["split_checksums"]) == {"query", "train", "database"}
    with np.load(rd.file("codes.npz")) as z:
        qc, dc, ql, dl = z["query_codes"], z["db_codes"], z["query_labels"], z["db_labels"]
    assert qc.shape == (100, 16) and dc.shape == (1697, 16) and qc.dtype == np.int8
    assert math.isclose(m["map"], map_at_k(qc, dc, ql, dl), rel_tol=1e-12)
    assert m["map"] > m["map_random"]


def test_training_free_run_equals_fitting_by_hand(itq_run, stand_in_weights):
    """The run's codes are ITQ fitted on the eval-transform CLS features of the train split."""
    from hashlib_vit.data import PROTOCOLS, protocol_transforms
    from hashlib_vit.models import build_model

    data = PROTOCOLS.get("digits").load(seed=0)
    model = build_model("vit32_test", 16, weights=stand_in_weights)
    _, ev = protocol_transforms(data.protocol, model.img_size)
    feats = {s: extract_features(model, getattr(data, s), ev, batch_size=300)[0] for s in ("train", "query")}
    # the feature is HashModel.forward's HashOutput.features (CLS after the final norm)
    x = ev(data.query.images[:5], train=False)
    with torch.no_grad():
        model.eval()
        np.testing.assert_allclose(feats["query"][:5], model(x).features.numpy(), atol=1e-5)
    h = ITQ(16, seed=0, iterations=20).fit(feats["train"])
    with np.load(RunDir(itq_run).file("codes.npz")) as z:
        np.testing.assert_array_equal(h.encode(feats["query"]), z["query_codes"])


def test_tables_show_training_free_runs_beside_learned_ones(itq_run, tmp_path):
    import shutil

    from hashlib_vit.results.collect import collect
    from hashlib_vit.results.figures import collect_training_logs
    from hashlib_vit.results.tables import aggregate, build_tables, wide_table

    root = itq_run.parent
    learned = root / "csq16"
    if not learned.exists():
        run_experiment(**TINY, loss="csq", bits=16, epochs=1, batch_size=100, run_dir=str(learned))
    runs = collect(root).set_index("method")
    assert runs.at["itq", "training"] == "none (fit on 500 train imgs)"
    assert runs.at["csq", "training"].startswith("1 ep, 500 train imgs")
    assert runs.at["itq", "pretraining"].startswith("pretrained (") and runs.at["csq", "pretraining"].startswith("none")
    logs = collect_training_logs(collect(root))
    assert set(logs["method"]) == {"csq"}  # the training-free run has no log, and that is fine
    wide = wide_table(aggregate(collect(root)))
    assert {(i[0], i[3]) for i in wide.index} == {("itq", "none (fit on 500 train imgs)"),
                                                  ("csq", runs.at["csq", "training"])}
    out = build_tables(root, tmp_path / "tables", figures=False, select="none")
    assert "none (fit on 500 train imgs)" in out["files"][-1].read_text()
    shutil.rmtree(learned)


def test_baseline_table_extracts_features_once(monkeypatch):
    from hashlib_vit.data import PROTOCOLS

    data = PROTOCOLS.get("digits").load(seed=0)
    calls = []
    real = tf.extract_features

    def counting(*a, **k):
        calls.append(k.get("desc"))
        return real(*a, **k)

    monkeypatch.setattr(tf, "extract_features", counting)
    df = baseline_table(backbone="vit32_test", protocol="digits", bits=[8, 16], data=data, device="cpu",
                        params={"itq": {"iterations": 10}}, batch_size=512)
    assert calls == ["features train", "features query", "features database"]
    assert len(df) == 2 * 5 and set(df["method"]) == {"random", "lsh", "pca_sign", "pca_rr", "itq"}
    assert (df["feature_dim"] == 32).all() and (df["pretrained"] == False).all()  # noqa: E712
    assert df["map"].between(0, 1).all()
    by = df.set_index(["method", "bits"])["map"]
    assert by[("random", 16)] == random_codes_map(data, 16, None, seed=0)
    # the same number as one run through run_experiment with the same settings
    res = run_experiment(**TINY, loss="pca_sign", bits=16, run_dir=None)
    assert math.isclose(by[("pca_sign", 16)], res.metrics["map"], rel_tol=1e-12)
    with pytest.raises(ConfigError, match="bits=64.*D=32"):
        baseline_table(backbone="vit32_test", bits=[16, 64], data=data)
    with pytest.raises(ConfigError, match=r"params names method\(s\) \['lsh'\]"):
        baseline_table(backbone="vit32_test", methods=("itq",), params={"lsh": {}}, data=data)


def test_cli_lists_training_free_methods(capsys):
    from hashlib_vit.cli import main

    assert main(["list", "losses"]) == 0
    out = capsys.readouterr().out
    head, _, rest = out.partition("training-free")
    assert "csq" in head and "itq" not in head
    assert "itq" in rest and "{'iterations': 50}" in rest and "lsh" in rest and "pca_rr" in rest
