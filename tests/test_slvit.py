"""SL-ViT: the hash coding layer (METHODS §3.3) and the single cosine-margin loss (§3.4, §7 check 4)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hashlib_vit.errors import ConfigError
from hashlib_vit.losses import LOSSES, build_loss
from hashlib_vit.losses.orthohash import (OrthoHashLoss, binarize_ste, make_codebook, maxhd_codebook,
                                          quantization_error, resolve_scale)
from hashlib_vit.models import MODELS, HashOutput, build_model
from hashlib_vit.models.hash_layers import BNLinearHash
from hashlib_vit.models.hcl import HCLNeck
from hashlib_vit.models.necks import ClsNeck


def onehot(idx, c):
    return F.one_hot(torch.as_tensor(idx), c).float()


# ---------------------------------------------------------------- the loss


def test_registered():
    assert "orthohash" in LOSSES and "hcl" in MODELS
    assert LOSSES.get("orthohash").defaults["s"] == 8.0 and LOSSES.get("orthohash").defaults["m"] == 0.2


@pytest.mark.parametrize("codebook", ["bernoulli", "hadamard", "maxhd"])
def test_margin_zero_equals_softmax_ce_of_scaled_cosine(codebook):
    torch.manual_seed(1)
    n, c, k, s = 7, 10, 32, 5.0
    loss = build_loss("orthohash", k, c, s=s, m=0.0, codebook=codebook)
    v = torch.randn(n, k)
    y = torch.randint(0, c, (n,))
    cb = loss.codebook
    cos = (v @ cb.T) / (v.norm(dim=1, keepdim=True) * cb.norm(dim=1))
    expected = F.cross_entropy(s * cos, y)
    got = loss(HashOutput(u=v), onehot(y, c)).total
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_margin_is_subtracted_from_the_true_class_only():
    torch.manual_seed(2)
    n, c, k, s, m = 5, 4, 16, 8.0, 0.3
    loss = build_loss("orthohash", k, c, s=s, m=m)
    v, y = torch.randn(n, k), torch.randint(0, c, (n,))
    cos = F.normalize(v, dim=1) @ F.normalize(loss.codebook, dim=1).T
    logits = s * cos
    logits[torch.arange(n), y] -= s * m
    assert loss(HashOutput(u=v), onehot(y, c)).total.item() == pytest.approx(F.cross_entropy(logits, y).item(),
                                                                              rel=1e-5)
    # a margin makes the loss strictly larger than without it
    no_margin = build_loss("orthohash", k, c, s=s, m=0.0)
    assert loss(HashOutput(u=v), onehot(y, c)).total > no_margin(HashOutput(u=v), onehot(y, c)).total


def test_loss_falls_as_the_code_moves_toward_its_class_code():
    torch.manual_seed(3)
    c, k = 10, 32
    loss = build_loss("orthohash", k, c)
    y = torch.tensor([3])
    target = loss.codebook[3]
    v0 = torch.randn(1, k)
    values = []
    for a in np.linspace(0, 1, 11):
        v = (1 - a) * v0 + a * target
        values.append(loss(HashOutput(u=v), onehot(y, c)).total.item())
    assert all(b < a for a, b in zip(values, values[1:])), values
    # ... and its quantization error reaches 0 at the class code (a vertex of the hypercube)
    res = loss(HashOutput(u=target[None] * 0.7), onehot(y, c))
    assert res.parts["quant"] == pytest.approx(0.0, abs=1e-6) and res.parts["cos_target"] == pytest.approx(1.0)


def test_gradient_descent_on_the_single_loss_also_reduces_quantization_error():
    torch.manual_seed(4)
    c, k, n = 10, 32, 40
    loss = build_loss("orthohash", k, c)
    y = torch.arange(n) % c
    v = torch.randn(n, k, requires_grad=True)
    opt = torch.optim.Adam([v], lr=0.2)
    quant = []
    for _ in range(100):
        res = loss(HashOutput(u=v), onehot(y, c))
        quant.append(res.parts["quant"])
        opt.zero_grad()
        res.total.backward()
        opt.step()
    # no quantization term, yet the quantization error of the codes falls from the random level (~0.40)
    assert quant[0] > 0.3 and quant[-1] < 0.5 * quant[0], (quant[0], quant[-1])
    # and the signs agree with the class codes: discrimination and quantization by one term
    agree = (torch.where(v >= 0, 1.0, -1.0) == loss.codebook[y]).float().mean().item()
    assert agree > 0.9, agree


@pytest.mark.parametrize("method", ["bernoulli", "hadamard", "maxhd"])
@pytest.mark.parametrize("c,k", [(10, 16), (10, 32), (21, 64), (100, 64)])
def test_codebooks_are_exactly_pm1_fixed_and_seeded(method, c, k):
    if method == "hadamard" and 2 * k < c:
        with pytest.raises(ConfigError, match="hadamard"):
            make_codebook(method, c, k)
        return
    cb = make_codebook(method, c, k, seed=5)
    assert cb.shape == (c, k) and set(cb.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(cb, make_codebook(method, c, k, seed=5))
    loss = build_loss("orthohash", k, c, codebook=method, codebook_seed=5)
    assert torch.equal(loss.codebook, cb)
    assert "codebook" in dict(loss.named_buffers()) and not list(loss.parameters())  # a buffer, not learned


def test_hadamard_rows_are_half_the_bits_apart():
    k = 32
    cb = make_codebook("hadamard", 10, k)
    d = (k - cb @ cb.T) / 2
    off = d[~torch.eye(10, dtype=torch.bool)]
    assert torch.all(off == k / 2)


def test_bernoulli_codebook_differs_by_seed_and_is_balanced_on_average():
    a, b = make_codebook("bernoulli", 100, 64, seed=0), make_codebook("bernoulli", 100, 64, seed=1)
    assert not torch.equal(a, b)
    assert abs((a > 0).float().mean().item() - 0.5) < 0.03


def test_maxhd_has_larger_minimum_distance_than_random():
    c, k = 30, 16
    dmin = {}
    for method in ("bernoulli", "maxhd"):
        cb = make_codebook(method, c, k, seed=0)
        d = (k - cb @ cb.T) / 2
        dmin[method] = d[~torch.eye(c, dtype=torch.bool)].min().item()
    assert dmin["maxhd"] > dmin["bernoulli"] and dmin["maxhd"] >= 5, dmin
    # greedy: the first code is the first candidate, and no code is repeated
    cb = maxhd_codebook(c, k, seed=0)
    assert len({tuple(r.tolist()) for r in cb}) == c


def test_multilabel_soft_targets_sum_to_one_and_match_the_formula():
    torch.manual_seed(6)
    n, c, k, s, m = 6, 5, 16, 8.0, 0.2
    loss = build_loss("orthohash", k, c, multi_label=True, s=s, m=m)
    y = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1],
                      [0, 0, 1, 0, 0], [1, 0, 0, 0, 1]]).float()
    t = loss.targets(y)
    assert torch.allclose(t.sum(1), torch.ones(n)) and torch.all((t > 0) == (y > 0))
    v = torch.randn(n, k)
    cos = F.normalize(v, dim=1) @ F.normalize(loss.codebook, dim=1).T
    expected = -(y / y.sum(1, keepdim=True) * F.log_softmax(s * (cos - m * y), dim=1)).sum(1).mean()
    assert loss(HashOutput(u=v), y).total.item() == pytest.approx(expected.item(), rel=1e-5)
    # with one-hot labels the multi-label form is the single-label loss
    single = build_loss("orthohash", k, c, s=s, m=m)
    oh = onehot(torch.tensor([0, 1, 2, 3, 4, 0]), c)
    assert loss(HashOutput(u=v), oh).total.item() == pytest.approx(single(HashOutput(u=v), oh).total.item())


def test_unlabelled_rows_are_skipped():
    torch.manual_seed(7)
    loss = build_loss("orthohash", 16, 5, multi_label=True)
    v = torch.randn(3, 16)
    y = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, 1, 0, 0]]).float()
    full = loss(HashOutput(u=v), y).total
    kept = loss(HashOutput(u=v[[0, 2]]), y[[0, 2]]).total
    assert full.item() == pytest.approx(kept.item())


def test_binary_forward_uses_sign_with_straight_through_gradient():
    torch.manual_seed(8)
    n, c, k = 6, 10, 32
    ste = build_loss("orthohash", k, c, binary_forward=True)
    plain = build_loss("orthohash", k, c)
    y = onehot(torch.randint(0, c, (n,)), c)
    v = torch.randn(n, k, requires_grad=True)
    b = torch.where(v >= 0, 1.0, -1.0).detach().requires_grad_(True)
    l_ste = ste(HashOutput(u=v), y).total
    l_b = plain(HashOutput(u=b), y).total
    assert l_ste.item() == pytest.approx(l_b.item(), rel=1e-6)  # forward: the cosines of sgn(v)
    l_ste.backward()
    l_b.backward()
    assert torch.allclose(v.grad, b.grad, atol=1e-7) and v.grad.abs().sum() > 0  # backward: dL/dv = dL/db
    x = torch.tensor([-0.5, 0.0, 2.0], requires_grad=True)
    out = binarize_ste(x)
    assert out.tolist() == [-1.0, 1.0, 1.0]
    out.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_quantization_error_identity_and_cosine_bound():
    torch.manual_seed(9)
    k = 32
    v = torch.randn(200, k)
    b = torch.where(v >= 0, 1.0, -1.0)
    direct = ((math.sqrt(k) * F.normalize(v, dim=1) - b) ** 2).sum(1) / k
    assert torch.allclose(quantization_error(v), direct, atol=1e-5)
    # cos(v, c) <= cos(v, sgn v) for every binary c (here: 500 random codes)
    codes = torch.where(torch.rand(500, k) < 0.5, -1.0, 1.0)
    cos_codes = F.normalize(v, dim=1) @ F.normalize(codes, dim=1).T
    cos_sign = F.cosine_similarity(v, b, dim=1)
    assert torch.all(cos_codes <= cos_sign[:, None] + 1e-6)
    assert quantization_error(v).mean().item() == pytest.approx(2 * (1 - math.sqrt(2 / math.pi)), abs=0.03)


def test_scale_options_and_errors():
    assert resolve_scale(8, 32, 10) == 8.0
    assert resolve_scale("sqrt_bits", 64, 10) == 8.0
    assert resolve_scale("log_classes", 32, 10) == pytest.approx(math.sqrt(2 * math.log(9)))
    assert build_loss("orthohash", 64, 10, s="sqrt_bits").scale == 8.0
    for bad in (0, -1.0, "big", True):
        with pytest.raises(ConfigError, match="s="):
            resolve_scale(bad, 32, 10)
    with pytest.raises(ConfigError, match="at least 3 classes"):
        resolve_scale("log_classes", 32, 2)
    with pytest.raises(ConfigError, match="codebook='nope'"):
        build_loss("orthohash", 32, 10, codebook="nope")
    with pytest.raises(ConfigError, match="m=-0.1"):
        build_loss("orthohash", 32, 10, m=-0.1)
    with pytest.raises(ConfigError, match="lambda"):
        build_loss("orthohash", 32, 10, lambda_q=0.1)  # no quantization weight exists


def test_loss_reports_its_parts():
    torch.manual_seed(10)
    loss = OrthoHashLoss(16, 4)
    res = loss(HashOutput(u=torch.randn(8, 16)), onehot(torch.arange(8) % 4, 4))
    assert set(res.parts) == {"ce", "quant", "cos_target"}
    assert res.parts["ce"] == pytest.approx(res.total.item()) and 0 < res.parts["quant"] < 2


# ---------------------------------------------------------------- the hash coding layer


def test_hcl_with_attention_shapes_and_pooling():
    torch.manual_seed(0)
    m = build_model("vit32_test", bits=16, head="hcl")
    neck, head = m.neck, m.hash_layers[0]
    assert isinstance(neck, HCLNeck) and neck.block is not None and neck.pooling == "cls_mean"
    assert isinstance(head, BNLinearHash) and len(m.hash_layers) == 1
    assert neck.block.attn.num_heads == 2  # the backbone's number of heads
    assert neck.block.mlp.fc1.out_features == 4 * 32  # MLP ratio 4
    assert head.proj.bias is None and head.proj.weight.shape == (16, 64)  # [CLS; mean] = 2 x width 32
    assert 0.007 < head.proj.weight.std().item() < 0.013  # N(0, 0.01^2)
    assert head.bn.affine
    x = torch.rand(4, 3, 32, 32)
    out = m(x)
    assert out.u.shape == (4, 16) and out.features.shape == (4, 64)
    # the pooled feature is [CLS ; mean of the patch tokens] of the extra block's output
    tokens = neck.block(m.backbone(m.normalize(x)))
    assert torch.allclose(out.features, torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], 1), atol=1e-5)
    assert torch.allclose(out.u, head.bn(head.proj(out.features)), atol=1e-5)
    m.eval()
    codes = m.encode(x)
    assert codes.shape == (4, 16) and set(codes.unique().tolist()) <= {-1, 1}


def test_hcl_without_attention_is_cls_linear_bn():
    torch.manual_seed(0)
    m = build_model("vit32_test", bits=8, head="hcl", hcl_attention=False)
    # no extra block and CLS pooling: the cls neck + the bn_linear hash layer
    assert isinstance(m.neck, ClsNeck) and m.hash_layers[0].proj.weight.shape == (8, 32)
    x = torch.rand(3, 3, 32, 32)
    tokens = m.backbone(m.normalize(x))
    assert torch.allclose(m(x).u, m.hash_layers[0].bn(m.hash_layers[0].proj(tokens[:, 0])), atol=1e-6)
    # pooling can be chosen independently of the extra block
    m2 = build_model("vit32_test", bits=8, head="hcl", hcl_attention=True, pooling="cls")
    assert m2.neck.block is not None and m2.hash_layers[0].proj.weight.shape == (8, 32)
    m3 = build_model("vit32_test", bits=8, head="hcl", hcl_attention=False, pooling="cls_mean")
    assert m3.neck.block is None and m3.hash_layers[0].proj.weight.shape == (8, 64)


def test_hcl_modules_are_new_parameters():
    m = build_model("vit32_test", bits=8, head="hcl")
    new = {id(p) for p in m.new_parameters()}
    assert new == {id(p) for p in m.neck.parameters()} | {id(p) for p in m.hash_layers.parameters()}
    for module in (m.neck.block, m.hash_layers[0].proj, m.hash_layers[0].bn):
        assert {id(p) for p in module.parameters()} <= new
    assert not new & {id(p) for p in m.backbone_parameters()}


def test_hcl_bn_output_is_balanced_in_training():
    torch.manual_seed(0)
    m = build_model("vit32_test", bits=16, head="hcl").train()
    u = m(torch.rand(32, 3, 32, 32)).u
    assert torch.allclose(u.mean(0), torch.zeros(16), atol=1e-4)


def test_hcl_errors():
    with pytest.raises(ConfigError, match="pooling='avg'"):
        build_model("vit32_test", bits=8, head="hcl", pooling="avg")
    with pytest.raises(ConfigError, match="hcl_attention=False"):
        build_model("resnet18", bits=8, head="hcl", img_size=32)
    with pytest.raises(ConfigError, match="num_heads=5"):
        build_model("vit32_test", bits=8, head="hcl", num_heads=5)
    with pytest.raises(ConfigError, match="not known for head='hcl'"):
        build_model("vit32_test", bits=8, head="hcl", attention=True)


def test_hcl_on_a_cnn_is_orthohash_head():
    torch.manual_seed(0)
    m = build_model("resnet18", bits=8, head="hcl", img_size=32, hcl_attention=False)
    assert m(torch.rand(2, 3, 32, 32)).u.shape == (2, 8)


def test_paper_recipe_config_maps_to_orthohash_training(root):
    import yaml

    from hashlib_vit.experiment import RunConfig

    cfg = RunConfig.from_dict(yaml.safe_load((root / "configs" / "slvit_paper.yaml").read_text())).validate()
    tc = cfg.train_config()
    assert (cfg.head, cfg.loss, tc.optimizer, tc.weight_decay) == ("hcl", "orthohash", "adam", 5e-4)
    assert (tc.lr, tc.backbone_lr, tc.epochs, tc.schedule, tc.step_epochs, tc.step_gamma) == (1e-4, 1e-5, 100, "step",
                                                                                              80, 0.1)
