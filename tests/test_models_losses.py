"""Model and loss shapes, closed-form loss values, and parameter validation."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hashlib_vit.errors import ConfigError
from hashlib_vit.losses import LOSSES, build_loss
from hashlib_vit.losses.csq import hash_centers
from hashlib_vit.models import HashOutput, build_model


@pytest.mark.parametrize("backbone,size", [("vit32_test", 32), ("resnet18", 32)])
def test_model_output_shapes(backbone, size):
    torch.manual_seed(0)
    m = build_model(backbone, bits=16, img_size=size if backbone == "resnet18" else None)
    out = m(torch.rand(3, 3, size, size))
    assert out.u.shape == (3, 16) and len(out.heads) == 1
    codes = m.encode(torch.rand(3, 3, size, size))
    assert codes.dtype == torch.int8 and set(codes.unique().tolist()) <= {-1, 1}


def test_vit_head_is_on_cls_token():
    torch.manual_seed(0)
    m = build_model("vit32_test", bits=8)
    x = torch.rand(2, 3, 32, 32)
    tokens = m.backbone(m.normalize(x))
    assert tokens.shape == (2, 17, 32)  # 16 patches + CLS
    assert torch.allclose(m(x).u, m.hash_layers[0].fc(tokens[:, 0]), atol=1e-6)


def test_new_parameters_are_head_only():
    m = build_model("vit32_test", bits=8)
    assert {id(p) for p in m.new_parameters()} == {id(p) for p in m.hash_layers.parameters()}


@pytest.mark.parametrize("bad, match", [
    (dict(bits=0), "bits=0"),
    (dict(head="nope"), "head='nope'.*cls_linear"),
    (dict(backbone="no_such_net"), "backbone='no_such_net'"),
    (dict(weights="/no/such/file.pth"), "no such file"),
])
def test_model_config_errors(bad, match):
    kw = dict(backbone="vit32_test", bits=8)
    kw.update(bad)
    with pytest.raises(ConfigError, match=match):
        build_model(**kw)


def test_local_weights_file_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = build_model("vit32_test", bits=8)
    path = tmp_path / "vit.pth"
    torch.save(m.backbone.model.state_dict(), path)
    m2 = build_model("vit32_test", bits=8, weights=str(path))
    assert m2.backbone.pretrained
    for (k, a), (_, b) in zip(m.backbone.model.state_dict().items(), m2.backbone.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_dpsh_closed_form():
    torch.manual_seed(0)
    u = torch.randn(4, 6)
    y = F.one_hot(torch.tensor([0, 1, 0, 2]), 3).float()
    loss = build_loss("dpsh", 6, 3, eta=0.1)
    res = loss(HashOutput(u=u), y)
    want, n = 0.0, 0
    for i in range(4):
        for j in range(4):
            if i != j:
                th = 0.5 * float(u[i] @ u[j])
                s = float(y[i] @ y[j] > 0)
                want += math.log1p(math.exp(th)) - s * th
                n += 1
    want = want / n + 0.1 * float(((u - torch.sign(u)) ** 2).mean())
    assert res.total.item() == pytest.approx(want, rel=1e-5)


def test_dpsh_finite_on_extreme_inputs():
    u = torch.full((3, 8), 1e4)
    y = torch.eye(3)
    assert torch.isfinite(build_loss("dpsh", 8, 3)(HashOutput(u=u), y).total)


def test_csq_hadamard_centers_are_half_apart():
    c = hash_centers(10, 16)
    assert set(c.unique().tolist()) == {-1.0, 1.0}
    d = (16 - c @ c.T) / 2
    off = d[~torch.eye(10, dtype=bool)]
    assert set(off.unique().tolist()) <= {8.0, 16.0}  # rows K/2 apart, a row and its negation K apart


def test_csq_bernoulli_centers_for_48_bits():
    c = hash_centers(100, 48, seed=0)
    assert c.shape == (100, 48) and (c.sum(1) == 0).all()  # exactly K/2 ones per center


def test_csq_multilabel_target_is_sign_of_sum():
    loss = build_loss("csq", 16, 4, multi_label=True)
    y = torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 1.0, 0]])
    t = loss.targets(y)
    s = y @ loss.centers
    assert torch.equal(t[1], loss.centers[2])
    assert torch.equal(t[0][s[0] != 0], torch.sign(s[0][s[0] != 0]))
    assert torch.equal(t[0][s[0] == 0], loss.fill[s[0] == 0])


def test_unknown_loss_hyperparameter_is_named():
    with pytest.raises(ConfigError, match="\\['gama'\\].*allowed"):
        build_loss("dpsh", 8, 2, gama=1)


ONE_STEP_CASES = [(n, v) for n in LOSSES.names() for v in ("single", "multi")] + [
    (n, "bank") for n in LOSSES.names() if "memory_bank" in LOSSES.get(n).defaults]


@pytest.mark.parametrize("name,variant", ONE_STEP_CASES)
def test_one_step_reduces_each_loss(name, variant):
    """One gradient step on the outputs lowers every loss: single-label, multi-label, memory bank."""
    torch.manual_seed(0)
    u = torch.randn(8, 16, requires_grad=True)
    if variant == "multi":
        y = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1],
                          [0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0]], dtype=torch.float)
    else:
        y = F.one_hot(torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), 4).float()
    hp = {"memory_bank": True} if variant == "bank" else {}
    loss = build_loss(name, 16, 4, multi_label=variant == "multi", **hp)
    idx = torch.arange(8)
    before = loss(HashOutput(u=u), y, idx).total
    before.backward()
    with torch.no_grad():
        u2 = u - 0.05 * u.grad / u.grad.norm()
    after = loss(HashOutput(u=u2), y, idx).total
    assert after.item() < before.item()


def test_balanced_pair_weights_give_equal_mass():
    from hashlib_vit.losses.base import balanced_pair_weights, off_diagonal_mask, pair_similarity

    y = F.one_hot(torch.tensor([0, 0, 0, 1, 2, 3]), 4).float()
    s = pair_similarity(y)
    mask = off_diagonal_mask(6)
    w = balanced_pair_weights(s, mask)
    pos, neg = (s > 0) & mask, (s == 0) & mask
    assert w[pos].sum().item() == pytest.approx(w[neg].sum().item()) == pytest.approx(mask.sum().item())
    assert (w[~mask] == 0).all()
    only_neg = balanced_pair_weights(torch.zeros(3, 3), off_diagonal_mask(3))
    assert torch.equal(only_neg, off_diagonal_mask(3).float())
