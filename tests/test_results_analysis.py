"""results.analysis and the small method figures the notebooks call: per-head mAP, codebook distances, the
output spread at initialisation, the quantization error in the code statistics, trained-vs-random bars."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from hashlib_vit.results import RunCodes, analysis, figures
from hashlib_vit.retrieval import map_at_k

matplotlib.use("Agg")


def toy_codes(seed=0, bits=8):
    rng = np.random.default_rng(seed)
    ql, dl = rng.integers(0, 3, 20), rng.integers(0, 3, 200)
    centers = np.where(rng.random((3, bits)) < 0.5, -1, 1)
    noisy = lambda lab: np.where(rng.random((len(lab), bits)) < 0.2, -centers[lab], centers[lab]).astype(np.int8)  # noqa: E731
    return RunCodes(noisy(ql), noisy(dl), np.eye(3)[ql], np.eye(3)[dl])


def test_per_head_map_slices_the_code():
    c = toy_codes()
    t = analysis.per_head_map(c, [4, 2, 2])
    assert list(t.index) == ["global", "local 1", "local 2", "all local", "full code"]
    assert list(t["n bits"]) == [4, 2, 2, 4, 8]
    assert t.loc["local 2", "mAP"] == pytest.approx(map_at_k(c.query_codes[:, 6:], c.db_codes[:, 6:], c.query_labels,
                                                             c.db_labels))
    assert t.loc["all local", "mAP"] == pytest.approx(map_at_k(c.query_codes[:, 4:], c.db_codes[:, 4:],
                                                               c.query_labels, c.db_labels))
    assert t.loc["full code", "mAP"] == pytest.approx(map_at_k(*c))
    one = analysis.per_head_map(c, [8], names=["all"], topk=10)  # one head: no 'all local', no extra full row
    assert list(one.index) == ["all"] and one["mAP"].iloc[0] == pytest.approx(map_at_k(*c, topk=10))
    with pytest.raises(ValueError, match=r"widths=\[4, 2\] sum to 6; the codes have 8 bits"):
        analysis.per_head_map(c, [4, 2])


def test_codebook_distances_and_figure():
    t = analysis.codebook_distances(10, 8)
    assert t.loc["maxhd", "min Hamming"] >= t.loc["bernoulli", "min Hamming"]
    assert 0 <= t.loc["bernoulli", "min Hamming"] <= t.loc["bernoulli", "mean Hamming"] <= t.loc["bernoulli", "max Hamming"] <= 8
    bad = analysis.codebook_distances(10, 6, methods=("bernoulli", "hadamard"))  # Hadamard needs b a power of 2
    assert "hadamard" in bad.loc["hadamard", "note"] and np.isnan(bad.loc["hadamard", "min Hamming"])
    assert bad.loc["bernoulli", "note"] == ""
    hd = analysis.codebook_distances(4, 8, methods=("hadamard",))
    assert hd.loc["hadamard", "min Hamming"] == 4  # rows of a Hadamard matrix of order 8 differ in 4 bits
    fig = figures.plot_codebooks(4, 8, methods=("bernoulli", "hadamard"))
    assert [a.get_title() for a in fig.axes] == ["bernoulli", "hadamard"]
    assert fig.axes[0].get_images()[0].get_array().shape == (4, 8)


def test_init_output_spread_and_quant_error():
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = analysis.init_output_spread({"vit32_test": None, "vit_tiny_patch16_224": 64}, x, bits=8)
    assert list(t.index) == ["vit32_test"]  # the 64-px model does not take 32-px images: left out
    torch.manual_seed(0)
    from hashlib_vit.models import build_model

    u = build_model("vit32_test", bits=8).eval()(x).u.detach()
    assert t.loc["vit32_test", "mean |u| at init"] == pytest.approx(float(u.abs().mean()), rel=1e-5)
    assert t.loc["vit32_test", "input spread at init"] == pytest.approx(float(u.std(0).mean() / u.abs().mean()), rel=1e-5)


def test_quant_error_is_zero_at_a_vertex():
    from hashlib_vit.data import get_protocol
    from hashlib_vit.experiment import RunConfig, RunResult
    from hashlib_vit.models import build_model

    data = get_protocol("digits").load(None, seed=0)
    model = build_model("vit32_test", bits=8)
    with torch.no_grad():  # every output is ±0.1 in each bit: a hypercube vertex direction
        model.hash_layers[0].fc.weight.zero_()
        model.hash_layers[0].fc.bias.copy_(torch.tensor([0.1, -0.1] * 4))
    db = np.tile(np.array([1, -1] * 4, dtype=np.int8), (len(data.database), 1))
    assert analysis.quant_error(RunResult(RunConfig(), {}, {}, model, data, db[:100], db, None),
                                max_items=100) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():  # one bit at 0.1, the others at 0.1/7: cos = (0.1 + 7 * 0.1/7) / (sqrt(8) * |u|)
        model.hash_layers[0].fc.bias.copy_(torch.tensor([0.1] + [0.1 / 7] * 7))
    u = torch.tensor([0.1] + [0.1 / 7] * 7)
    cos = float(u.sum() / (np.sqrt(8) * u.norm()))
    q = analysis.quant_error(RunResult(RunConfig(), {}, {}, model, data, db[:100], db, None), max_items=100)
    assert q == pytest.approx(2 * (1 - cos), rel=1e-4)


def test_map_against_random_and_cauchy_figures():
    runs = {"csq": {"method": "csq", "map": 0.6, "map_random": 0.1}, "dpsh": {"method": "dpsh", "map": 0.2,
                                                                          "map_random": 0.1}}
    fig = figures.map_against_random(runs)
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [0.6, 0.2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["csq", "dpsh"]
    assert [t.get_text() for t in ax.texts] == ["0.600\n(6.0x)", "0.200\n(2.0x)"]
    single = figures.map_against_random({"method": "csq", "map": 0.5, "map_random": 0.25})
    assert [t.get_text() for t in single.axes[0].get_xticklabels()] == ["csq"]
    with pytest.raises(ValueError, match="run 'x' has no 'map_random'"):
        figures.map_against_random({"x": {"method": "csq", "map": 0.5}})
    fig = figures.cauchy_likelihood(16, gammas=(5, 20), used=20)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["Cauchy, γ=5", "Cauchy, γ=20 (used)",
                                                "sigmoid(0.5·h_i·h_j), ±1 codes (w/o C)"]
    d, p = lines[1].get_data()
    assert p[0] == 1.0 and p[-1] == pytest.approx(20 / 36) and d[-1] == 16
    assert lines[2].get_ydata()[0] == pytest.approx(1 / (1 + np.exp(-8)))


def test_parameter_counts_per_module_and_new():
    from hashlib_vit.models import build_model

    model = build_model("vit32_test", bits=8)
    t = analysis.parameter_counts(model)
    n_all = sum(p.numel() for p in model.parameters())
    n_new = sum(p.numel() for p in model.new_parameters())
    assert t.loc["total", "parameters"] == n_all and t.loc["total", "new"] == n_new
    assert t.drop("total")["parameters"].sum() == n_all and 0 < n_new < n_all
    assert t.loc["backbone", "new"] == 0  # a from-scratch ViT trunk still counts as the backbone, not new
    assert analysis.per_head_map(toy_codes(), [8], names=["all"], topk="all").equals(
        analysis.per_head_map(toy_codes(), [8], names=["all"]))


def test_aem_at_init_is_the_identity():
    d = analysis.aem_at_init("vit32_test", 8, "all", seed=0, n=4)
    assert d["max_abs_diff"] == 0.0
    from hashlib_vit.models import build_model
    from hashlib_vit.models.aem import find_aem

    ae = build_model("vit32_test", 8, aem="all")
    plain = build_model("vit32_test", 8, aem="off")
    assert d["aem_parameters"] == find_aem(ae).extra_parameters() > 0
    assert d["vit_parameters"] == sum(p.numel() for p in plain.backbone.parameters())
    assert d["feature_map"] == "32 x (4, 4)"  # vit32_test: width 32, 8-px patches on 32-px images
    assert analysis.aem_at_init("vit32_test", 8, "spatial", n=2)["aem_parameters"] < d["aem_parameters"]


def test_aem_maps_of_a_run_titles_the_queries():
    from hashlib_vit.experiment import RunConfig, RunResult
    from hashlib_vit.data import get_protocol
    from hashlib_vit.models import build_model

    data = get_protocol("digits").load(None, seed=0)
    res = RunResult(RunConfig(), {}, {}, build_model("vit32_test", 8, aem="all"), data, None, None, None)
    fig = figures.aem_maps_of_run(res, n_show=3, seed=1)
    pick = np.random.default_rng(1).choice(len(data.query), size=3, replace=False)
    assert [a.get_title() for a in fig.axes[:3]] == [data.class_names[c] for c in data.query.classes[pick]]


@pytest.mark.parametrize("local_stream, widths", [(True, [8, 4, 4]), (False, [16])])
def test_mgvt_layout(local_stream, widths):
    from hashlib_vit.models import build_model

    model = build_model("vit32_test", 16, "mgvt", groups=2, local_stream=local_stream).train()
    lay = analysis.mgvt_layout(model)
    n_blocks = len(build_model("vit32_test", 16).backbone.model.blocks)
    assert lay == {"depth": n_blocks, "n_patches": 16, "widths": widths, "groups": len(widths) - 1,
                   "local_stream": local_stream}
    assert model.training  # left in the mode it was in
