"""DCH / TransHash Cauchy loss (METHODS §2.3, §5.4, §7 item 3): closed form, weights, numerics."""
import math

import pytest
import torch
import torch.nn.functional as F

from hashlib_vit.errors import ConfigError
from hashlib_vit.losses import LOSSES, build_loss
from hashlib_vit.losses.cauchy import cauchy_quantization, cosine_hamming, pair_weights
from hashlib_vit.models import HashOutput


def _cos(a, b):
    return float(a @ b) / (max(float(a.norm()), 1e-4) * max(float(b.norm()), 1e-4))


def _bernoulli_nll_reference(heads, labels, gamma, lam, likelihood="cauchy", alpha=0.5):
    """-log of the Cauchy (or sigmoid) Bernoulli, weighted, written pair by pair from METHODS §2.3."""
    n = labels.shape[0]
    s = [[float(labels[i] @ labels[j] > 0) for j in range(n)] for i in range(n)]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    n_pos = sum(s[i][j] for i, j in pairs)
    n_neg = len(pairs) - n_pos
    total = 0.0
    for h in heads:
        k = h.shape[1]
        acc = 0.0
        for i, j in pairs:
            w = (len(pairs) / n_pos if s[i][j] else len(pairs) / n_neg) if n_pos and n_neg else 1.0
            if likelihood == "cauchy":
                d = k / 2 * (1 - min(_cos(h[i], h[j]), 0.99))
                p = gamma / (gamma + d)  # P(s_ij = 1)
                nll = -math.log(p) if s[i][j] else -math.log(1 - p)
            else:
                t = alpha * float(h[i] @ h[j])
                p = 1 / (1 + math.exp(-t))
                nll = -math.log(p) if s[i][j] else -math.log(1 - p)
            acc += w * nll
        q = 0.0
        for i in range(n):
            d = k / 2 * (1 - min(_cos(h[i].abs(), torch.ones(k, dtype=h.dtype)), 0.99))
            q += math.log(1 + d / gamma)
        total += acc / len(pairs) + lam * q / n
    return total


def test_dch_and_transhash_are_registered():
    assert "dch" in LOSSES and "transhash" in LOSSES
    assert LOSSES.get("dch").defaults["gamma"] == 20.0 and LOSSES.get("dch").defaults["lambda_q"] == 0.1
    assert LOSSES.get("transhash").defaults["gamma"] == 2.0  # [I], chosen on validation (docs/defaults.md)


@pytest.mark.parametrize("gamma,lam", [(20.0, 0.1), (5.0, 1.0)])
def test_dch_equals_cauchy_bernoulli_nll(gamma, lam):
    torch.manual_seed(1)
    u = torch.randn(7, 12, dtype=torch.float64)
    y = F.one_hot(torch.tensor([0, 1, 0, 2, 1, 0, 2]), 3).float()
    res = build_loss("dch", 12, 3, gamma=gamma, lambda_q=lam)(HashOutput(u=u), y)
    assert res.total.item() == pytest.approx(_bernoulli_nll_reference([u], y, gamma, lam), rel=1e-6)


def test_transhash_sums_heads_closed_form_multilabel():
    torch.manual_seed(2)
    heads = (torch.randn(6, 8), torch.randn(6, 4), torch.randn(6, 4))
    y = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]]).float()
    out = HashOutput(u=torch.cat(heads, 1), heads=heads)
    res = build_loss("transhash", 16, 3, multi_label=True)(out, y)  # TransHash's default gamma 2 (docs/defaults.md)
    assert res.total.item() == pytest.approx(_bernoulli_nll_reference(heads, y, 2.0, 0.1), rel=1e-5)
    assert set(res.parts) == {"pair_global", "pair_local", "quant"}
    # same group index across the pair: swapping local heads of one image changes the loss
    swapped = (heads[0], heads[1].clone(), heads[2].clone())
    swapped[1][0], swapped[2][0] = heads[2][0], heads[1][0]
    res2 = build_loss("transhash", 16, 3, multi_label=True)(HashOutput(u=torch.cat(swapped, 1), heads=swapped), y)
    assert res2.total.item() != pytest.approx(res.total.item())


def test_sigmoid_ablation_closed_form():
    torch.manual_seed(3)
    heads = (torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64))
    y = F.one_hot(torch.tensor([0, 0, 1, 1, 2]), 3).float()
    loss = build_loss("transhash", 16, 3, likelihood="sigmoid")
    res = loss(HashOutput(u=torch.cat(heads, 1), heads=heads), y)
    want = _bernoulli_nll_reference(heads, y, 2.0, 0.1, likelihood="sigmoid", alpha=0.5)
    assert res.total.item() == pytest.approx(want, rel=1e-6)


def test_wo_q_drops_the_quantization_term():
    torch.manual_seed(4)
    u = torch.randn(6, 8)
    y = F.one_hot(torch.tensor([0, 1, 0, 1, 2, 2]), 3).float()
    full = build_loss("dch", 8, 3)(HashOutput(u=u), y)
    no_q = build_loss("dch", 8, 3, lambda_q=0.0)(HashOutput(u=u), y)
    assert no_q.total.item() == pytest.approx(full.parts["pair"])
    assert full.total.item() == pytest.approx(full.parts["pair"] + 0.1 * full.parts["quant"])


def test_positive_and_negative_pairs_carry_equal_weight():
    y = F.one_hot(torch.tensor([0, 0, 0, 0, 1, 2, 3, 4]), 5).float()
    s, w, mask = pair_weights(y)
    pos, neg = (s > 0) & mask, (s == 0) & mask
    assert pos.sum() == 12 and neg.sum() == 44
    assert w[pos].sum().item() == pytest.approx(w[neg].sum().item())
    assert (w.diagonal() == 0).all()


def test_surrogate_is_hamming_distance_on_binary_codes():
    b = torch.tensor([[1.0, -1, 1, 1], [1, 1, -1, 1], [-1, 1, -1, -1]])
    d = cosine_hamming(b, cos_max=1.0)
    ham = (4 - b @ b.T) / 2
    assert torch.allclose(d, ham, atol=1e-6)
    assert torch.allclose(cosine_hamming(b).diagonal(), torch.full((3,), 4 / 2 * 0.01))  # clamped at cos 0.99
    assert torch.allclose(cauchy_quantization(b, 20.0), torch.full((3,), math.log1p(0.02 / 20)), atol=1e-7)


@pytest.mark.parametrize("name", ["dch", "transhash"])
@pytest.mark.parametrize("case", ["coinciding", "near_zero", "exact_zero", "huge"])
def test_finite_loss_and_gradients(name, case):
    torch.manual_seed(5)
    u = torch.randn(4, 8)
    if case == "coinciding":
        u = u[:1].repeat(4, 1)
    elif case == "near_zero":
        u = u * 1e-9
    elif case == "exact_zero":
        u[1] = 0.0
    else:
        u = u * 1e6
    u.requires_grad_(True)
    y = F.one_hot(torch.tensor([0, 0, 1, 1]), 2).float()
    res = build_loss(name, 8, 2)(HashOutput(u=u), y)
    res.total.backward()
    assert torch.isfinite(res.total) and torch.isfinite(u.grad).all()


def test_bad_hyperparameters_are_named():
    with pytest.raises(ConfigError, match="likelihood='probit'"):
        build_loss("transhash", 16, 3, likelihood="probit")
    with pytest.raises(ConfigError, match="gamma=0"):
        build_loss("dch", 16, 3, gamma=0)
