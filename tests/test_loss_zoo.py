"""The classic loss zoo (METHODS.md §5, checks of §7): closed-form values against naive loops,
CSQ centers, DPN targets, GreedyHash's straight-through gradient, HashNet's continuation, the memory
bank, multi-label handling and finiteness on extreme inputs."""
import math

import pytest
import torch
import torch.nn.functional as F

from hashlib_vit.errors import ConfigError, DataError
from hashlib_vit.losses import LOSSES, PairwiseLoss, build_loss
from hashlib_vit.losses.csq import hash_centers
from hashlib_vit.losses.dpn import polarization_targets
from hashlib_vit.losses.greedyhash import sign_ste
from hashlib_vit.losses.hashnet import continuation_beta
from hashlib_vit.models import HashOutput

PAIRWISE = [n for n in LOSSES.names() if issubclass(LOSSES.get(n), PairwiseLoss)]


def out(u):
    return HashOutput(u=u)


def labels_single(classes, c):
    return F.one_hot(torch.tensor(classes), c).float()


MULTI = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1]], dtype=torch.float)


def sim(yi, yj):
    return float(float(yi @ yj) > 0)


def sgn(x):
    return 1.0 if x >= 0 else -1.0


def softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def pairs(n):
    return [(i, j) for i in range(n) for j in range(n) if i != j]


# ---------------------------------------------------------------- closed forms (naive loops)

def dsh_ref(u, y, alpha, m):
    n, k = u.shape
    tot = 0.0
    for i, j in pairs(n):
        d = float(((u[i] - u[j]) ** 2).sum())
        s = sim(y[i], y[j])
        tot += 0.5 * s * d + 0.5 * (1 - s) * max(m - d, 0.0)
    quant = sum(abs(abs(float(v)) - 1) for v in u.flatten()) / (n * k)
    return tot / len(pairs(n)) + alpha * quant


def dpsh_ref(u, y, eta):
    n, k = u.shape
    tot = sum(softplus(0.5 * float(u[i] @ u[j])) - sim(y[i], y[j]) * 0.5 * float(u[i] @ u[j]) for i, j in pairs(n))
    quant = sum((float(v) - sgn(float(v))) ** 2 for v in u.flatten()) / (n * k)
    return tot / len(pairs(n)) + eta * quant


def hashnet_ref(u, y, alpha, beta):
    n, _ = u.shape
    z = torch.tanh(beta * u.double())
    ps = pairs(n)
    s = {p: sim(y[p[0]], y[p[1]]) for p in ps}
    n1 = sum(s.values())
    n0 = len(ps) - n1
    tot = 0.0
    for p in ps:
        ip = alpha * float(z[p[0]] @ z[p[1]])
        w = (len(ps) / n1 if s[p] else len(ps) / n0) if n1 and n0 else 1.0
        tot += w * (math.log1p(math.exp(ip)) - s[p] * ip)
    return tot / len(ps)


def csq_ref(u, targets, lam):
    n, k = u.shape
    tot, q = 0.0, 0.0
    for i in range(n):
        for b in range(k):
            h = math.tanh(float(u[i, b]))
            p, t = (h + 1) / 2, (float(targets[i, b]) + 1) / 2
            tot += -(t * math.log(p) + (1 - t) * math.log(1 - p))
            q += (abs(h) - 1) ** 2
    return tot / (n * k) + lam * q / (n * k)


def dpn_ref(u, targets, m):
    n, k = u.shape
    return sum(max(m - float(u[i, b]) * float(targets[i, b]), 0.0) for i in range(n) for b in range(k)) / (n * k)


def greedy_ref(u, y, w, alpha, multi):
    n, k = u.shape
    tot = 0.0
    for i in range(n):
        b = torch.tensor([sgn(float(v)) for v in u[i]], dtype=torch.double)
        logits = (w.double() @ b).tolist()
        if multi:
            tot += sum(softplus(z) - float(t) * z for z, t in zip(logits, y[i])) / len(logits)
        else:
            lse = max(logits) + math.log(sum(math.exp(z - max(logits)) for z in logits))
            tot += lse - logits[int(y[i].argmax())]
    pen = sum(abs(abs(float(v)) - 1) ** 3 for v in u.flatten()) / (n * k)
    return tot / n + alpha * pen


@pytest.mark.parametrize("multi", [False, True])
def test_dsh_closed_form(multi):
    torch.manual_seed(1)
    y = MULTI if multi else labels_single([0, 1, 0, 2, 1], 4)
    u = torch.randn(5, 6) * 1.5
    res = build_loss("dsh", 6, 4, multi, alpha=0.1)(out(u), y)
    assert res.total.item() == pytest.approx(dsh_ref(u, y, 0.1, 12.0), rel=1e-5)
    res = build_loss("dsh", 6, 4, multi, alpha=0.01, margin=3.0)(out(u), y)
    assert res.total.item() == pytest.approx(dsh_ref(u, y, 0.01, 3.0), rel=1e-5)


@pytest.mark.parametrize("multi", [False, True])
def test_dpsh_closed_form_multilabel_too(multi):
    torch.manual_seed(2)
    y = MULTI if multi else labels_single([0, 1, 0, 2, 1], 4)
    u = torch.randn(5, 8) * 2
    assert build_loss("dpsh", 8, 4, multi, eta=0.3)(out(u), y).total.item() == pytest.approx(dpsh_ref(u, y, 0.3),
                                                                                               rel=1e-5)


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("alpha,step,beta", [("10/K", 0, 1.0), (0.1, 450, math.sqrt(3.0))])
def test_hashnet_closed_form(multi, alpha, step, beta):
    torch.manual_seed(3)
    y = MULTI if multi else labels_single([0, 1, 0, 2, 1], 4)
    u = torch.randn(5, 8)
    loss = build_loss("hashnet", 8, 4, multi, alpha=alpha)
    loss.set_progress(step, 0)
    res = loss(out(u), y)
    a = 10 / 8 if alpha == "10/K" else alpha
    assert res.parts["beta"] == pytest.approx(beta)
    assert res.total.item() == pytest.approx(hashnet_ref(u, y, a, beta), rel=1e-5)


def test_hashnet_all_similar_batch_uses_unit_weights():
    u = torch.randn(4, 8)
    y = labels_single([1, 1, 1, 1], 3)
    assert build_loss("hashnet", 8, 3)(out(u), y).total.item() == pytest.approx(hashnet_ref(u, y, 10 / 8, 1.0),
                                                                              rel=1e-5)


@pytest.mark.parametrize("multi", [False, True])
def test_csq_closed_form(multi):
    torch.manual_seed(4)
    y = MULTI if multi else labels_single([0, 1, 3, 2, 1], 4)
    u = torch.randn(5, 16) * 2
    loss = build_loss("csq", 16, 4, multi, lambda1=0.05)
    assert loss(out(u), y).total.item() == pytest.approx(csq_ref(u, loss.targets(y), 0.05), rel=1e-5)


@pytest.mark.parametrize("multi", [False, True])
def test_dpn_closed_form(multi):
    torch.manual_seed(5)
    y = MULTI if multi else labels_single([0, 1, 3, 2, 1], 4)
    u = torch.randn(5, 16) * 1.5
    loss = build_loss("dpn", 16, 4, multi, m=0.7)
    t = loss.targets(y)
    if not multi:
        assert torch.equal(t, loss.targets_c[y.argmax(1)])
    assert loss(out(u), y).total.item() == pytest.approx(dpn_ref(u, t, 0.7), rel=1e-5)


@pytest.mark.parametrize("multi", [False, True])
def test_greedyhash_closed_form(multi):
    torch.manual_seed(6)
    y = MULTI if multi else labels_single([0, 1, 3, 2, 1], 4)
    u = torch.randn(5, 8) * 1.5
    u[0, 0] = 0.0  # sign(0) = +1
    loss = build_loss("greedyhash", 8, 4, multi, alpha=0.3)
    want = greedy_ref(u, y, loss.classifier.weight.detach(), 0.3, multi)
    assert loss(out(u), y).total.item() == pytest.approx(want, rel=1e-5)
    assert loss.classifier.bias is None and loss.classifier.weight.shape == (4, 8)
    assert any(p is loss.classifier.weight for p in loss.parameters())  # trained with the new-module lr


# ---------------------------------------------------------------- the §7 structural checks

@pytest.mark.parametrize("bits", [16, 32, 64])
def test_csq_hadamard_rows_exactly_half_apart(bits):
    c = hash_centers(2 * bits, bits)
    d = (bits - c @ c.T) / 2
    i, j = torch.meshgrid(torch.arange(2 * bits), torch.arange(2 * bits), indexing="ij")
    want = torch.where(i == j, 0.0, torch.where((i - j).abs() == bits, float(bits), bits / 2))
    assert torch.equal(d, want)  # distinct rows K/2 apart, a row and its negation K apart


@pytest.mark.parametrize("classes,bits", [(10, 48), (100, 48), (80, 12), (20, 8)])
def test_csq_bernoulli_centers(classes, bits):
    c = hash_centers(classes, bits, seed=3)
    assert c.shape == (classes, bits) and set(c.unique().tolist()) == {-1.0, 1.0}
    assert ((c == 1).sum(1) == bits // 2).all()
    d = (bits - c @ c.T) / 2
    off = d[~torch.eye(classes, dtype=torch.bool)]
    if classes <= 10:  # a draw meeting the criterion exists at this size: it is the one returned
        assert off.min() > bits / 4 and off.mean() >= bits / 2
    assert torch.equal(c, hash_centers(classes, bits, seed=3))  # seeded


def test_csq_center_errors():
    with pytest.raises(ConfigError, match="centers='nope'"):
        build_loss("csq", 16, 4, centers="nope")
    with pytest.raises(ConfigError, match="hadamard"):
        build_loss("csq", 48, 4, centers="hadamard")
    assert (build_loss("csq", 16, 4, centers="bernoulli").centers.sum(1) == 0).all()


@pytest.mark.parametrize("bits", [8, 16, 32, 48, 64, 12])
def test_dpn_targets_have_exactly_half_minus_ones(bits):
    t = polarization_targets(50, bits, 0.5, seed=bits)
    assert set(t.unique().tolist()) == {-1.0, 1.0}
    assert ((t == -1).sum(1) == bits // 2).all()
    loss = build_loss("dpn", bits, 50)
    assert ((loss.targets_c == -1).sum(1) == bits // 2).all()
    assert ((polarization_targets(5, 20, 0.25) == -1).sum(1) == 5).all()


def test_dpn_multilabel_target_is_sign_of_sum_with_fixed_fill():
    loss = build_loss("dpn", 16, 4, multi_label=True)
    y = torch.tensor([[1.0, 1.0, 0, 0], [1.0, 1.0, 1.0, 0]])
    s = y @ loss.targets_c
    t = loss.targets(y)
    assert torch.equal(t[s != 0], torch.sign(s[s != 0]))
    assert torch.equal(t[0][s[0] == 0], loss.fill[s[0] == 0])
    assert (s[0] == 0).any()  # two random targets agree on about half of the bits


def test_dpn_adaptive_targets_follow_the_outputs():
    loss = build_loss("dpn", 8, 2, adaptive=True)
    before = loss.targets_c.clone()
    u = torch.tensor([[2.0, -2.0, 0.5, 2.0, -2.0, 2.0, -2.0, 2.0],
                      [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    y = labels_single([0, 1], 2)
    loss(out(u), y)
    assert torch.equal(loss.targets_c, before)  # only after the epoch
    loss.end_epoch(0)
    want0 = torch.tensor([1.0, -1, before[0, 2], 1, -1, 1, -1, 1])  # |0.5| < m: ternarised to 0, keeps old
    assert torch.equal(loss.targets_c[0], want0)
    assert torch.equal(loss.targets_c[1], torch.ones(8))
    assert not build_loss("dpn", 8, 2).hparams["adaptive"]  # off by default


def test_greedyhash_straight_through_gradient():
    torch.manual_seed(7)
    y = labels_single([0, 1, 2, 1], 3)
    u = torch.randn(4, 8, requires_grad=True)
    loss = build_loss("greedyhash", 8, 3, alpha=0.0)
    loss(out(u), y).total.backward()
    b = torch.where(u.detach() >= 0, 1.0, -1.0).requires_grad_(True)
    F.cross_entropy(loss.classifier(b), y.argmax(1)).backward()
    assert torch.allclose(u.grad, b.grad, atol=1e-7) and u.grad.abs().sum() > 0
    # sign_ste itself: forward is the sign (0 -> +1), backward the identity
    x = torch.tensor([-0.3, 0.0, 2.0], requires_grad=True)
    y2 = sign_ste(x)
    assert y2.tolist() == [-1.0, 1.0, 1.0]
    (y2 * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0]


def test_greedyhash_rejects_multihot_labels_in_single_label_mode():
    with pytest.raises(DataError, match="multi_label=True"):
        build_loss("greedyhash", 8, 4)(out(torch.randn(5, 8)), MULTI)


def test_hashnet_continuation_values():
    for t in range(0, 5000, 200):  # METHODS §7.9: (1 + 0.005 t)^0.5 at multiples of 200 iterations
        assert continuation_beta(t, 0) == pytest.approx((1 + 0.005 * t) ** 0.5)
        assert continuation_beta(t + 199, 0) == continuation_beta(t, 0)  # held until the next update
    assert [continuation_beta(0, e, "epoch") for e in (0, 19, 20, 39, 40, 60)] == pytest.approx(
        [1, 1, math.sqrt(2), math.sqrt(2), math.sqrt(3), 2.0])
    assert continuation_beta(10_000, 99, "constant", init_beta=2.5) == 2.5
    loss = build_loss("hashnet", 16, 4, schedule="epoch")
    loss.set_progress(5000, 45)
    assert loss.beta == pytest.approx(math.sqrt(3))
    assert build_loss("hashnet", 16, 4).alpha == pytest.approx(10 / 16)
    assert build_loss("hashnet", 16, 4, alpha=0.1).alpha == 0.1
    with pytest.raises(ConfigError, match="schedule='weekly'"):
        build_loss("hashnet", 16, 4, schedule="weekly")
    with pytest.raises(ConfigError, match="alpha='10/k'"):
        build_loss("hashnet", 16, 4, alpha="10/k")


# ---------------------------------------------------------------- memory bank

@pytest.mark.parametrize("name", PAIRWISE)
def test_memory_bank_with_the_whole_set_equals_in_batch_value(name):
    """A batch holding the whole training set pairs with exactly the in-batch pairs."""
    torch.manual_seed(8)
    u = torch.randn(6, 8)
    y = torch.cat([MULTI, MULTI[:1]])
    a = build_loss(name, 8, 4, True)(out(u), y).total
    bank = build_loss(name, 8, 4, True, memory_bank=True)
    b = bank(out(u), y, torch.arange(6)).total
    assert b.item() == pytest.approx(a.item(), rel=1e-6)


def test_memory_bank_pairs_batch_with_all_rows_seen_detached():
    torch.manual_seed(9)
    y_all = labels_single([0, 1, 2, 0, 1, 2, 0, 1], 3)
    u_all = torch.randn(8, 8)
    loss = build_loss("dpsh", 8, 3, eta=0.1, memory_bank=True)
    loss(out(u_all[:4]), y_all[:4], torch.tensor([0, 1, 2, 3]))
    assert loss.bank_u.shape == (4, 8)  # lazy growth to the largest index seen
    u2 = u_all[[5, 7, 2]].clone().requires_grad_(True)
    idx = torch.tensor([5, 7, 2])
    res = loss(out(u2), y_all[idx], idx)
    assert loss.bank_u.shape == (8, 8) and loss.bank_seen.tolist() == [1, 1, 1, 1, 0, 1, 0, 1]
    # naive: each batch item vs every seen row (0,1,2,3,5,7), its own row excluded
    seen = [0, 1, 2, 3, 5, 7]
    tot, cnt = 0.0, 0
    for a, i in enumerate(idx.tolist()):
        for j in seen:
            if j != i:
                th = 0.5 * float(u_all[i] @ u_all[j])
                tot += softplus(th) - sim(y_all[i], y_all[j]) * th
                cnt += 1
    quant = float(((u2.detach() - torch.sign(u2.detach())) ** 2).mean())
    assert res.total.item() == pytest.approx(tot / cnt + 0.1 * quant, rel=1e-5)
    res.total.backward()  # gradient only through the batch side
    assert not loss.bank_u.requires_grad and u2.grad is not None
    assert torch.equal(loss.bank_u[5], u_all[5])


def test_memory_bank_preallocated_size_and_errors():
    loss = build_loss("dsh", 8, 3, memory_bank=True, memory_bank_size=10)
    loss(out(torch.randn(3, 8)), labels_single([0, 1, 2], 3), torch.tensor([0, 4, 9]))
    assert loss.bank_u.shape == (10, 8) and int(loss.bank_seen.sum()) == 3
    with pytest.raises(ConfigError, match="memory_bank_size=10"):
        loss(out(torch.randn(2, 8)), labels_single([0, 1], 3), torch.tensor([3, 10]))
    with pytest.raises(ConfigError, match="needs index="):
        loss(out(torch.randn(2, 8)), labels_single([0, 1], 3))
    with pytest.raises(ConfigError, match="memory_bank_size=-1"):
        build_loss("hashnet", 8, 3, memory_bank=True, memory_bank_size=-1)
    loss.eval()  # eval mode: in-batch pairs, the bank is left alone
    before = loss.bank_u.clone()
    loss(out(torch.randn(2, 8)), labels_single([0, 1], 3), torch.tensor([0, 1]))
    assert torch.equal(loss.bank_u, before)


def test_memory_bank_through_the_training_loop(name="dpsh"):
    """The loop passes training-split positions: after one epoch the bank holds every item once."""
    from hashlib_vit.data import Split, TensorBatches, TensorTransform
    from hashlib_vit.models import build_model
    from hashlib_vit.train import TrainConfig, train

    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8, generator=g),
                  F.one_hot(torch.arange(37) % 3, 3).float())
    torch.manual_seed(0)
    model = build_model("vit32_test", bits=8)
    loss = build_loss(name, 8, 3, memory_bank=True)
    batches = TensorBatches(split, 8, TensorTransform(32), train=True, seed=0)
    hist = train(model, loss, batches, TrainConfig(epochs=1, batch_size=8, lr=1e-3), progress=False)
    assert loss.bank_u.shape == (37, 8) and loss.bank_seen.all()
    assert torch.equal(loss.bank_y, split.labels)  # rows addressed by training-split position
    assert all(math.isfinite(r["loss"]) for r in hist["steps"]) and not loss.bank_u.requires_grad


# ---------------------------------------------------------------- robustness

@pytest.mark.parametrize("name", LOSSES.names())
@pytest.mark.parametrize("case", ["huge", "identical", "zeros"])
def test_every_loss_is_finite_on_extreme_inputs(name, case):
    y = MULTI
    if case == "huge":
        u = torch.tensor([[1e4, -1e4] * 4, [-1e4, 1e4] * 4, [1e4] * 8, [-1e4] * 8, [3e3, -7e3] * 4])
    elif case == "identical":
        u = torch.ones(5, 8) * 0.3
    else:
        u = torch.zeros(5, 8)
    u.requires_grad_(True)
    loss = build_loss(name, 8, 4, multi_label=True)
    res = loss(out(u), y, torch.arange(5))
    res.total.backward()
    assert torch.isfinite(res.total) and torch.isfinite(u.grad).all()
    assert all(math.isfinite(v) for v in res.parts.values())


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_accepts_48_bits(name):
    loss = build_loss(name, 48, 10)
    res = loss(out(torch.randn(6, 48)), labels_single([0, 1, 2, 3, 4, 0], 10), torch.arange(6))
    assert torch.isfinite(res.total)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_returns_detached_0d_parts(name):
    """The loop syncs to the host only when it logs: every part is a 0-d tensor without gradient
    (detached from the graph), on the total's device, equal to the value it names."""
    u = torch.randn(6, 16, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    loss = build_loss(name, 16, 10)
    res = loss(out(u), labels_single([0, 1, 2, 3, 4, 0], 10), torch.arange(6))
    assert res.total.requires_grad and res.total.ndim == 0
    assert res.parts, f"{name} reports no parts"
    for part, v in res.parts.items():
        assert isinstance(v, torch.Tensor) and v.ndim == 0, (name, part, v)
        assert not v.requires_grad and v.grad_fn is None, (name, part)
        assert v.device == res.total.device and v.is_floating_point() and math.isfinite(float(v)), (name, part)


def test_loss_result_normalises_parts():
    from hashlib_vit.losses.base import LossResult

    total = torch.tensor(2.5, requires_grad=True) * 2
    res = LossResult(total, {"same": total, "row": total.reshape(1), "number": 0.125})
    assert res.parts["same"].grad_fn is None and float(res.parts["same"]) == 5.0
    assert res.parts["row"].shape == () and float(res.parts["row"]) == 5.0
    assert res.parts["number"].dtype == torch.float64 and float(res.parts["number"]) == 0.125
    assert res.total.requires_grad  # the objective keeps its graph
    assert res.host_parts() == {"same": 5.0, "row": 5.0, "number": 0.125}
    assert all(type(v) is float for v in res.host_parts().values()) and LossResult(total).host_parts() == {}
    with pytest.raises(ValueError, match=r"loss part 'vec' has shape \(3,\); expected one value"):
        LossResult(total, {"vec": torch.zeros(3)})
