"""AE-ViT (AEM) and HSC-Loss: METHODS.md §7 checks 5 and 6, plus the behaviour around them."""
from __future__ import annotations

import json
import math

import pytest
import torch

from hashlib_vit.errors import ConfigError
from hashlib_vit.losses import build_loss
from hashlib_vit.losses.hsc import dsh_contrastive, positive_weights, supcon_loss
from hashlib_vit.models import HashOutput, build_model
from hashlib_vit.models.aem import AEM, AEPatchEmbed, aem_maps, find_aem, parse_aem
from hashlib_vit.train import TrainConfig, param_groups


def onehot(classes, c):
    return torch.nn.functional.one_hot(torch.as_tensor(classes), c).float()


# ----------------------------------------------------------------------------- AEM


@pytest.mark.parametrize("branches", ["all", "local", "channel", "spatial", "local,spatial", "channel,spatial"])
def test_aem_module_is_identity_at_init(branches):
    torch.manual_seed(1)
    aem = AEM(32, parse_aem(branches))
    x = torch.randn(3, 32, 5, 6) * 4
    for mode in (True, False):
        aem.train(mode)
        assert torch.equal(aem(x), x)


@pytest.mark.parametrize("aem", ["all", "local,channel"])
def test_aevit_equals_plain_vit_with_same_weights(aem):
    torch.manual_seed(0)
    plain = build_model("vit32_test", 16)
    torch.manual_seed(123)  # a different random init everywhere ...
    ae = build_model("vit32_test", 16, aem=aem)
    missing, unexpected = ae.load_state_dict(plain.state_dict(), strict=False)  # ... then the plain ViT's weights
    assert not unexpected and missing and all(".aem." in k for k in missing)
    x = torch.rand(5, 3, 32, 32)
    for mode in (True, False):
        plain.train(mode)
        ae.train(mode)
        assert torch.equal(ae(x).u, plain(x).u)
    assert isinstance(ae.backbone.model.patch_embed, AEPatchEmbed)
    assert ae.backbone.model.patch_embed.grid_size == plain.backbone.model.patch_embed.grid_size


def test_same_seed_gives_same_start_with_and_without_aem():
    torch.manual_seed(0)
    plain = build_model("vit32_test", 16)
    after_plain = torch.rand(3)
    torch.manual_seed(0)
    ae = build_model("vit32_test", 16, aem="all")
    after_ae = torch.rand(3)
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(ae(x).u, plain(x).u)
    assert torch.equal(after_plain, after_ae), "AEM init must not shift the global random stream"


def test_aem_parameters_are_new_and_gate_not_decayed():
    model = build_model("vit32_test", 16, aem="all")
    aem = find_aem(model)
    aem_ids = {id(p) for p in aem.parameters()}
    assert aem_ids <= {id(p) for p in model.new_parameters()}
    assert not aem_ids & {id(p) for p in model.backbone_parameters()}
    # extra parameters: 9D + D^2 + 2 D^2/r + 98 + D (+ 2D for BN) with D = 32, r = 16 -> D/r = 2
    d = 32
    assert aem.extra_parameters() == 9 * d + d * d + 2 * d * 2 + 98 + d + 2 * d
    loss = build_loss("hsc", 16, 10)
    groups = param_groups(model, loss, TrainConfig(weight_decay=0.1))
    gamma_group = next(g for g in groups if any(p is aem.gamma for p in g["params"]))
    assert gamma_group["name"] == "new_nodecay" and gamma_group["weight_decay"] == 0.0
    pw_group = next(g for g in groups if any(p is aem.pw.weight for p in g["params"]))
    assert pw_group["name"] == "new"


def test_aem_learns_after_one_step():
    torch.manual_seed(0)
    model = build_model("vit32_test", 16, aem="all")
    loss = build_loss("hsc", 16, 4)
    x, y = torch.rand(8, 3, 32, 32), onehot([0, 0, 1, 1, 2, 2, 3, 3], 4)
    res = loss(model(x), y, torch.arange(8))
    res.total.backward()
    aem = find_aem(model)
    assert aem.gamma.grad is not None and aem.gamma.grad.abs().sum() > 0
    assert torch.all(aem.pw.weight.grad == 0), "with the gate at 0 no branch parameter sees a gradient yet"
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    model.eval()
    pe = model.backbone.model.patch_embed
    feat = pe.proj(model.normalize(x))
    assert not torch.allclose(aem(feat), feat)


@pytest.mark.parametrize("branches", ["local", "all", "channel", "spatial", "local,spatial"])
def test_every_aem_variant_leaves_the_start(branches):
    """Issue 20 (found by lesson 03's Exercise 3.1): with the point-wise conv zero-initialised as well as the
    gate, aem="local" alone was a saddle (no AEM parameter ever got a gradient) and its ablation trained the
    plain ViT. Only the gate starts at zero now: the module is the identity at step 0 for every variant, the
    gate moves on the first step and every branch parameter on the second."""
    torch.manual_seed(0)
    model = build_model("vit32_test", 16, aem=branches)
    plain = build_model("vit32_test", 16, aem="off")
    x, y = torch.rand(8, 3, 32, 32), onehot([0, 0, 1, 1, 2, 2, 3, 3], 4)
    model.eval(), plain.eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if ".aem." not in k})
    assert torch.equal(model(x).u, plain(x).u), "AEM is the identity at step 0"
    model.train()
    loss = build_loss("hsc", 16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    aem = find_aem(model)
    for step in (1, 2):
        opt.zero_grad()
        loss(model(x), y, torch.arange(8)).total.backward()
        moving = {n for n, p in aem.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        if step == 1:
            assert moving == {"gamma"}, moving
        else:
            assert moving == {n for n, _ in aem.named_parameters()}, moving
        opt.step()


def test_parse_aem_and_errors():
    assert parse_aem("all") == ("local", "channel", "spatial")
    assert parse_aem("off") == () and parse_aem(None) == () and parse_aem(False) == ()
    assert parse_aem("spatial, local") == ("local", "spatial")
    assert parse_aem(["channel"]) == ("channel",)
    with pytest.raises(ConfigError, match="unknown branch"):
        parse_aem("local,edges")
    with pytest.raises(ConfigError, match="needs a ViT"):
        build_model("resnet18", 16, aem="all")
    plain = build_model("vit32_test", 16, aem="off")
    assert find_aem(plain) is None


def test_aem_maps_shapes_and_ranges():
    torch.manual_seed(0)
    model = build_model("vit32_test", 16, aem="all")
    find_aem(model).gamma.data.fill_(0.5)
    model.train()
    maps = aem_maps(model, torch.rand(3, 3, 32, 32))
    assert model.training, "aem_maps restores the mode"
    assert maps["spatial"].shape == (3, 4, 4) and maps["channel"].shape == (3, 32) and maps["change"].shape == (3, 4, 4)
    assert torch.all((maps["spatial"] > 0) & (maps["spatial"] < 1))
    assert torch.all(maps["change"] > 0)
    assert find_aem(model).keep_maps is False
    maps = aem_maps(build_model("vit32_test", 16, aem="local"), torch.rand(2, 3, 32, 32))
    assert maps["spatial"] is None and maps["channel"] is None


# ----------------------------------------------------------------------------- SupCon term


def test_supcon_closed_form_tiny_case():
    # z1 = z3 = e1 (same class), z2 = e2 (other class, no positive -> skipped); tau = 0.5:
    # anchor 1: -log(e^{1/tau} / (e^{0} + e^{1/tau})) = log(1 + e^{-2}); anchor 3 the same.
    h = torch.tensor([[2.0, 0.0], [0.0, 0.3], [0.7, 0.0]])
    y = onehot([0, 1, 0], 2)
    assert supcon_loss(h, y, tau=0.5).item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)


def _supcon_reference(h, y, tau):
    z = torch.nn.functional.normalize(h.double(), dim=1)
    n = len(z)
    losses = []
    for i in range(n):
        pos = [j for j in range(n) if j != i and float(y[i] @ y[j]) > 0]
        if not pos:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(n) if a != i)
        losses.append(-sum(float(z[i] @ z[p]) / tau - math.log(denom) for p in pos) / len(pos))
    return sum(losses) / len(losses)


def test_supcon_matches_loop_reference_and_skips_anchors_without_positives():
    torch.manual_seed(3)
    h = torch.randn(7, 12)
    y = onehot([0, 0, 1, 1, 1, 2, 3], 4)  # items 5 and 6 have no positive
    ref = _supcon_reference(h, y, 0.2)
    assert supcon_loss(h, y, tau=0.2).item() == pytest.approx(ref, rel=1e-5)
    # a version that would average over all anchors (counting skipped ones as 0) differs
    assert ref != pytest.approx(ref * 5 / 7)
    # no positives anywhere -> 0, still differentiable
    h2 = torch.randn(4, 8, requires_grad=True)
    val = supcon_loss(h2, torch.eye(4))
    val.backward()
    assert val.item() == 0.0 and torch.all(h2.grad == 0)


@pytest.mark.parametrize("scale", [1e-3, 0.37, 8.0])
def test_supcon_invariant_to_code_scale(scale):
    torch.manual_seed(4)
    h = torch.randn(10, 16)
    y = onehot([0, 1, 2, 0, 1, 2, 0, 1, 2, 3], 4)
    assert supcon_loss(h * scale, y).item() == pytest.approx(supcon_loss(h, y).item(), rel=1e-5)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_supcon_identical_codes_and_labels_is_log_n_minus_1(n):
    h = torch.ones(n, 8) * 0.3
    y = torch.ones(n, 1)
    assert supcon_loss(h, y, tau=0.2).item() == pytest.approx(math.log(n - 1), abs=1e-5)


def test_jaccard_positive_weights():
    y = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]], dtype=torch.float)
    w = positive_weights(y, pos_weight="jaccard")
    # anchor 0: J(0,1) = 1/2, J(0,2) = 2/3, J(0,3) = 0 -> normalised 3/7, 4/7, 0
    assert w[0].tolist() == pytest.approx([0, 3 / 7, 4 / 7, 0])
    assert torch.allclose(w.sum(1), torch.ones(4))
    u = positive_weights(y)  # uniform: 1/|P(i)|
    assert u[3].tolist() == pytest.approx([0, 0, 1, 0]) and u[0].tolist() == pytest.approx([0, 0.5, 0.5, 0])
    # single-label data: Jaccard and uniform coincide
    y1 = onehot([0, 0, 1, 1, 0], 2)
    assert torch.allclose(positive_weights(y1, pos_weight="jaccard"), positive_weights(y1))


def test_two_views_make_the_other_view_a_positive():
    # item with a label shared by nobody: single view -> skipped; two views -> its other view is a positive
    y = torch.tensor([[1.0, 0], [0, 1.0], [0, 0]])  # third image has no label at all
    idx = torch.tensor([0, 1, 2])
    w = positive_weights(torch.cat([y, y]), torch.cat([idx, idx]))
    assert w[2].tolist() == pytest.approx([0, 0, 0, 0, 0, 1])
    loss = build_loss("hsc", 8, 2, multi_label=True, n_views=2)
    out = HashOutput(u=torch.randn(6, 8))
    assert torch.isfinite(loss(out, torch.cat([y, y]), torch.cat([idx, idx])).total)
    with pytest.raises(ConfigError, match="appear 2 times"):
        loss(HashOutput(u=torch.randn(3, 8)), y, idx)


# ----------------------------------------------------------------------------- HSC-Loss


def test_hsc_total_is_weighted_sum_and_classifier_gets_gradients():
    torch.manual_seed(5)
    loss = build_loss("hsc", 16, 3, alpha=0.5, beta=0.25, tau=0.3, quant="l2", beta_warmup=0)  # the sum as written
    u = torch.randn(6, 16, requires_grad=True)
    y = onehot([0, 1, 2, 0, 1, 2], 3)
    res = loss(HashOutput(u=u), y, torch.arange(6))
    h = torch.tanh(u)
    sc = supcon_loss(h, y, tau=0.3)
    ce = torch.nn.functional.cross_entropy(loss.classifier(h), y.argmax(1))
    q = (h.abs() - 1).pow(2).mean()
    assert res.total.item() == pytest.approx((sc + 0.5 * ce + 0.25 * q).item(), rel=1e-6)
    assert set(res.parts) == {"contrastive", "cls", "quant"}
    res.total.backward()
    assert loss.classifier.weight.grad is not None and loss.classifier.weight.grad.abs().sum() > 0
    assert loss.classifier.bias.grad.abs().sum() > 0
    assert u.grad.abs().sum() > 0


@pytest.mark.parametrize("multi_label", [False, True])
def test_hsc_shapes_single_and_multi_label(multi_label):
    torch.manual_seed(6)
    n, k, c = 9, 24, 5
    loss = build_loss("hsc", k, c, multi_label=multi_label)
    if multi_label:
        y = (torch.rand(n, c) < 0.4).float()
        y[0] = 0  # an item without labels is allowed (no positive -> skipped as an anchor)
    else:
        y = onehot(torch.randint(0, c, (n,)), c)
    u = torch.randn(n, k, requires_grad=True)
    res = loss(HashOutput(u=u), y, torch.arange(n))
    assert res.total.ndim == 0 and torch.isfinite(res.total)
    assert loss.classifier(torch.tanh(u)).shape == (n, c)
    res.total.backward()
    assert u.grad.shape == (n, k)
    if multi_label:  # BCE over classes
        h = torch.tanh(u.detach())
        bce = torch.nn.functional.binary_cross_entropy_with_logits(loss.classifier(h), y)
        assert res.parts["cls"] == pytest.approx(bce.item(), rel=1e-6)


def test_hsc_dsh_option_matches_formula():
    h_u = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    y = onehot([0, 0, 1], 2)
    h = torch.tanh(h_u)
    # ordered pairs (0,1) similar, (0,2),(1,2) dissimilar; m = 2K = 4
    d2 = lambda a, b: float((h[a] - h[b]).pow(2).sum())  # noqa: E731
    terms = [0.5 * d2(0, 1), 0.5 * max(4 - d2(0, 2), 0), 0.5 * max(4 - d2(1, 2), 0)]
    assert dsh_contrastive(h, y).item() == pytest.approx(2 * sum(terms) / 6, rel=1e-6)
    loss = build_loss("hsc", 2, 2, contrastive="dsh", alpha=0.0, beta=0.0)
    assert loss(HashOutput(u=h_u), y).total.item() == pytest.approx(2 * sum(terms) / 6, rel=1e-6)


def test_hsc_bad_hyper_parameters():
    with pytest.raises(ConfigError, match="contrastive"):
        build_loss("hsc", 16, 3, contrastive="triplet")
    with pytest.raises(ConfigError, match="tau"):
        build_loss("hsc", 16, 3, tau=0)
    with pytest.raises(ConfigError, match="n_views"):
        build_loss("hsc", 16, 3, n_views=0)
    with pytest.raises(ConfigError, match="pos_weight"):
        build_loss("hsc", 16, 3, pos_weight="cosine")
    with pytest.raises(ConfigError, match="not hyper-parameters"):
        build_loss("hsc", 16, 3, temperature=0.1)


# ----------------------------------------------------------------------------- two views through the loop


def test_multiview_batches_repeat_images_with_independent_augmentation():
    from hashlib_vit.data import TensorBatches, TensorTransform, get_protocol
    from hashlib_vit.data.views import MultiViewBatches

    data = get_protocol("digits").load(seed=0)
    base = TensorBatches(data.train, 16, TensorTransform(32, pad_crop=4, hflip=True), train=True, seed=3)
    mv = MultiViewBatches(base, 2)
    assert len(mv) == len(base) and mv.batch_size == 32
    (x1, y1, i1), (x2, y2, i2) = next(base.epoch(1)), next(mv.epoch(1))
    assert x2.shape == (32, 3, 32, 32)
    assert torch.equal(x2[:16], x1), "view 1 is the single-view batch"
    assert not torch.equal(x2[16:], x1), "view 2 is augmented independently"
    assert torch.equal(i2, torch.cat([i1, i1])) and torch.equal(y2, torch.cat([y1, y1]))
    again = next(mv.epoch(1))
    assert torch.equal(again[0], x2), "deterministic"


def test_run_experiment_aevit_hsc_two_views(tmp_path):
    from hashlib_vit.experiment import run_experiment

    res = run_experiment(protocol="digits", backbone="vit32_test", loss="hsc", bits=16, epochs=1, batch_size=64,
                         run_dir=str(tmp_path / "run"), model_params={"aem": "all"}, loss_params={"n_views": 2},
                         progress=False, save_codes=False, method="aevit_hsc")
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert 0 <= res.metrics["map"] <= 1
    assert find_aem(res.model).gamma.abs().sum() > 0, "the gate moved during training"
    assert {"loss_contrastive", "loss_cls", "loss_quant"} <= set(res.history["steps"][0])


# ----------------------------------------------------------------------------- backbone study


def study_grid(root, models, losses, *, vit="vit32_test", proto_size=32, **fixed):
    """The grid notebook 03 builds for the backbone study: a linked ``model`` dimension (AE-ViT = the ViT with
    AEM, its ablation without; the CNNs at the protocol's size, AlexNet at >= 64 px) times the losses, HSC with
    its own hyper-parameters."""
    table = {"aevit": {"backbone": vit, "model_params.aem": "all"}, "vit": {"backbone": vit, "model_params.aem": "off"},
             "resnet50": {"backbone": "resnet50", "img_size": max(proto_size, 32)},
             "alexnet": {"backbone": "alexnet", "img_size": max(proto_size, 64)}}
    return {"target": "experiment", "output": str(root),
            "fixed": {"protocol": "digits", "progress": False, "save_codes": False, **fixed},
            "sweep": {"model": [{"name": m, **table[m]} for m in models],
                      "loss": [{"name": n, "loss": n, "loss_params": {"tau": 0.5} if n == "hsc" else {}} for n in losses]}}


def test_study_grid_runs(tmp_path):
    from hashlib_vit.losses import LOSSES
    from hashlib_vit.runner import load_grid, run_grid

    grid = load_grid(study_grid(tmp_path / "s", ["aevit", "vit", "alexnet", "resnet50"], ["dpsh", "hsc"], epochs=2))
    assert len(grid.runs) == 8
    cfg = {r.name: r.config() for r in grid.runs}
    assert {n.split("_")[0]: c.img_size for n, c in cfg.items()} == {
        "model-aevit": None, "model-vit": None, "model-alexnet": 64, "model-resnet50": 32}  # digits are 32 px
    assert cfg["model-aevit_loss-dpsh"].model_params == {"aem": "all"} and cfg["model-aevit_loss-dpsh"].backbone == "vit32_test"
    assert cfg["model-vit_loss-hsc"].model_params == {"aem": "off"} and cfg["model-vit_loss-hsc"].loss_params == {"tau": 0.5}
    assert cfg["model-alexnet_loss-dpsh"].img_size == 64 and cfg["model-alexnet_loss-dpsh"].model_params == {}
    assert str(cfg["model-alexnet_loss-hsc"].run_dir).endswith("model-alexnet_loss-hsc")
    assert cfg["model-alexnet_loss-hsc"].epochs == 2 and cfg["model-alexnet_loss-hsc"].method_name() == "hsc"  # method = the loss
    with pytest.raises(ConfigError, match="no_such_loss"):  # refused before anything runs
        run_grid(study_grid(tmp_path / "bad", ["vit"], ["dpsh", "no_such_loss"]), progress=False)
    assert not (tmp_path / "bad").exists()
    # the notebook's one-liner: unregistered losses are reported and skipped
    study_losses = ["dpsh", "no_such_loss"]
    assert ([n for n in study_losses if n in LOSSES], [n for n in study_losses if n not in LOSSES]) == (["dpsh"], ["no_such_loss"])


def test_study_table_rows_and_columns(tmp_path):
    # two cells of the study, one short epoch each: the summary labels each run with the linked dimension's name
    # (AE-ViT and the plain ViT share loss and method), and the pivot has the losses as rows and the models as columns
    from hashlib_vit.runner import run_grid

    summary = run_grid(study_grid(tmp_path / "s", ["aevit", "vit"], ["dpsh"], epochs=1, batch_size=64, bits=8),
                       executor="sequential", progress=False)
    assert list(summary["status"]) == ["completed", "completed"]
    assert list(summary["model"]) == ["aevit", "vit"] and list(summary["loss"]) == ["dpsh", "dpsh"]
    pivot = summary.pivot(index="loss", columns="model", values="map").reindex(columns=["aevit", "vit"])
    assert pivot.shape == (1, 2) and list(pivot.index) == ["dpsh"]
    for model in ("aevit", "vit"):
        metrics = json.loads((tmp_path / "s" / f"model-{model}_loss-dpsh" / "metrics.json").read_text())
        assert pivot.loc["dpsh", model] == pytest.approx(metrics["map"]) and metrics["method"] == "dpsh"


def test_multiview_batches_on_image_files(tmp_path):
    import numpy as np
    from PIL import Image

    from hashlib_vit.data import TensorTransform
    from hashlib_vit.data.datasets import FileSplit, make_batches
    from hashlib_vit.data.views import MultiViewBatches

    rng = np.random.default_rng(0)
    ids = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        ids.append(f"{i}.png")
    split = FileSplit(tmp_path, ids, np.eye(3)[[0, 1, 2, 0, 1, 2]])
    base = make_batches(split, 3, TensorTransform(32, pad_crop=4, hflip=True), train=True, seed=1)
    mv = MultiViewBatches(base, 2)
    (x1, _, i1), (x2, y2, i2) = next(base.epoch(0)), next(mv.epoch(0))
    assert x2.shape == (6, 3, 32, 32) and torch.equal(x2[:3], x1) and torch.equal(i2, torch.cat([i1, i1]))
    assert torch.equal(y2[:3], y2[3:])


def test_aem_is_timms_embed_layer_also_with_dynamic_img_size():
    """AEPatchEmbed goes in through VisionTransformer(embed_layer=...): the plain ViT's init and keys are
    unchanged (only patch_embed.aem.* is new), and with dynamic_img_size (NHWC patch map) at another input
    size the AE-ViT computes the plain ViT's function at initialisation."""
    from timm.models.vision_transformer import VisionTransformer

    from hashlib_vit.models.aem import AEMOptions

    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0, dynamic_img_size=True)
    torch.manual_seed(0)
    plain = VisionTransformer(**kw).eval()
    torch.manual_seed(0)
    ae = VisionTransformer(**kw, embed_layer=AEMOptions(aem="all").embed_layer()).eval()
    assert isinstance(ae.patch_embed, AEPatchEmbed) and isinstance(ae.patch_embed.aem, AEM)
    extra = set(ae.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("patch_embed.aem.") for k in extra)
    assert set(plain.state_dict()) <= set(ae.state_dict())
    for k, v in plain.state_dict().items():
        assert torch.equal(v, ae.state_dict()[k]), k
    x = torch.rand(2, 3, 48, 40)  # 6 x 5 patches
    out = ae.forward_features(x)
    assert out.shape == (2, 31, 32) and torch.equal(out, plain.forward_features(x))
    with torch.no_grad():
        ae.patch_embed.aem.gamma.fill_(1.0)
    assert not torch.allclose(ae.forward_features(x), out)
