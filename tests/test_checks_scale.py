"""Issue 18 kind 9: sizes beyond the standard protocols (1,000-10,000 classes).

Hash centres, DPN targets and OrthoHash codebooks at 10,000 classes in seconds and bounded memory, with the
same values as the original all-pairs code at the standard sizes; impossible or unmet minimum distances
named with their numbers; the losses, label checks, splits and evaluation at 5,000-10,000 classes.
"""
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from hashlib_vit.errors import ConfigError, DataError
from hashlib_vit.losses import build_loss
from hashlib_vit.losses.centers import (CenterDistanceWarning, expected_close_pairs, gv_lower_bound,
                                        max_codes_upper_bound, mean_pairwise_distance, pairwise_distance_range)
from hashlib_vit.losses.csq import hash_centers
from hashlib_vit.losses.dpn import polarization_targets
from hashlib_vit.losses.orthohash import make_codebook, maxhd_codebook
from hashlib_vit.models.hashmodel import HashOutput
from hashlib_vit.retrieval import evaluate


def _bench():
    """benchmarks/bench_many_classes.py as a module (its naive references are the tests' references too)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_many_classes.py"
    spec = importlib.util.spec_from_file_location("bench_many_classes", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


#: The original implementation (all pairs as a C x C int64 matrix), the reference for the values.
legacy_centers = _bench().naive_centers


#: The original MaxHD (same pool up to 1,024 classes, the sizes compared here).
legacy_maxhd = _bench().naive_maxhd


def naive_range(c):
    c = np.asarray(c, dtype=np.int64)
    d = (c.shape[1] - c @ c.T) // 2
    off = d[~np.eye(len(c), dtype=bool)]
    return int(off.min()), int(off.max()), float(off.mean())


# ---------------------------------------------------------------- the same values at the standard sizes
@pytest.mark.parametrize("classes,bits,seed", [(10, 48, 3), (100, 48, 3), (80, 12, 3), (20, 8, 3), (100, 16, 0),
                                               (100, 32, 0), (21, 16, 0), (80, 48, 0), (100, 64, 0), (300, 24, 2),
                                               (1, 8, 0), (2, 6, 0)])
def test_hash_centers_values_unchanged(classes, bits, seed):
    """The all-pairs code's values, except that a row repeating an earlier one (two classes sharing a center,
    which the old code returned) is drawn again: the first occurrences stay where they were."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CenterDistanceWarning)
        new, old = hash_centers(classes, bits, seed), legacy_centers(classes, bits, seed)
    first = {}
    repeat = np.array([first.setdefault(r.numpy().tobytes(), i) != i for i, r in enumerate(old)])
    assert torch.equal(new[~repeat], old[~repeat])
    assert len({r.numpy().tobytes() for r in new}) == classes


@pytest.mark.parametrize("classes,bits,seed", [(10, 16, 0), (100, 64, 3), (100, 48, 1), (80, 128, 2), (3, 5, 0)])
def test_maxhd_values_unchanged(classes, bits, seed):
    assert torch.equal(maxhd_codebook(classes, bits, seed), legacy_maxhd(classes, bits, seed))


def test_distance_helpers_match_all_pairs():
    rng = np.random.default_rng(1)
    c = np.where(rng.random((300, 70)) < 0.5, -1, 1)
    lo, hi, (i, j) = pairwise_distance_range(c, block_bytes=40_000)  # many blocks
    want = naive_range(c)
    assert (lo, hi) == want[:2] and int((c[i] != c[j]).sum()) == lo and i < j
    assert mean_pairwise_distance(c) == pytest.approx(want[2], abs=1e-9)
    assert pairwise_distance_range(c, stop_at=want[0] + 3)[0] <= want[0] + 3


def test_bounds_are_the_textbook_numbers():
    assert max_codes_upper_bound(8, 5) == 2 * (5 // (10 - 8))  # Plotkin: A(8, 5) <= 4
    assert max_codes_upper_bound(7, 3) == 16  # Hamming: 2^7 / (1 + 7), the perfect Hamming code
    assert gv_lower_bound(7, 3) == pytest.approx(128 / 29)
    # two random 4-of-8 words are <= 2 apart with probability (C(4,3)C(4,1) + 1) / C(8,4) = 17/70
    assert expected_close_pairs(3, 8, 2, 4) == pytest.approx(3 * 17 / 70)


# ---------------------------------------------------------------- 10,000 classes
def test_hash_centers_10k_classes_64_bits_fast_bounded_and_reported():
    t = time.perf_counter()
    with pytest.warns(CenterDistanceWarning) as rec:
        c = hash_centers(10_000, 64)
    took = time.perf_counter() - t
    assert c.shape == (10_000, 64) and ((c == 1).sum(1) == 32).all()
    assert took < 20, took  # about 4 s on 2 busy cores (the all-pairs code: minutes and 3 GB)
    lo = pairwise_distance_range(c)[0]
    msg = str(rec[0].message)
    assert f"10000 classes at 64 bits: the closest two centers are {lo} bits apart" in msg
    assert "more than 16 (bits/4)" in msg and "Gilbert-Varshamov" in msg and "bits or more" in msg
    assert 8 <= lo <= 16


def test_impossible_center_requests_name_the_numbers():
    with pytest.raises(ConfigError, match=r"5000 classes cannot have distinct centers of 8 bits: there are only 70 "
                                          r"codes of 8 bits with exactly 4 ones .*use at least 15 bits"):
        hash_centers(5000, 8)
    with pytest.raises(ConfigError, match=r"center_min_distance=40 cannot be met: 10000 classes at 64 bits .*"
                                          r"Plotkin/Hamming bounds allow at most 4\b"):
        hash_centers(10_000, 64, min_distance=40)
    t = time.perf_counter()
    tracemalloc.start()
    with pytest.raises(ConfigError, match=r"center_min_distance=17 not reached: 10000 classes at 64 bits, the best of "
                                          r"the random draws has its closest centers \d+ apart.*Gilbert-Varshamov"):
        hash_centers(10_000, 64, min_distance=17)  # one full draw and its all-pairs scan
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - t < 15  # hopeless: one draw, not twenty
    assert peak < 150e6, peak  # a C x C int64 distance matrix alone would be 800 MB
    with pytest.raises(ConfigError, match="center_min_distance=-1"):
        hash_centers(10, 16, min_distance=-1)
    with pytest.raises(ConfigError, match="classes cannot have distinct centers"):
        build_loss("csq", 8, 5000)


def test_requested_min_distance_is_met_or_refused():
    c = hash_centers(200, 64, seed=1, min_distance=18)
    assert pairwise_distance_range(c)[0] >= 18
    with warnings.catch_warnings():
        warnings.simplefilter("error", CenterDistanceWarning)  # the request is met: no warning
        loss = build_loss("csq", 64, 200, center_min_distance=18)
    assert pairwise_distance_range(loss.centers)[0] >= 18
    assert torch.equal(hash_centers(16, 16, min_distance=8), legacy_centers(16, 16))  # Hadamard: 8 apart
    with pytest.raises(ConfigError, match="Hadamard centers of 16 bits for 16 classes are 8 apart"):
        hash_centers(16, 16, method="hadamard", min_distance=9)


def test_dpn_targets_and_orthohash_codebooks_at_10k_classes():
    t = time.perf_counter()
    tg = polarization_targets(10_000, 64)
    cb = maxhd_codebook(10_000, 64)
    assert time.perf_counter() - t < 20
    assert ((tg == -1).sum(1) == 32).all()
    assert pairwise_distance_range(cb)[0] >= 14  # greedy from a 40,000-code pool (random codes: about 8)
    with pytest.raises(ConfigError, match=r"DPN targets: 5000 classes cannot have distinct targets of 8 bits .*only 70"):
        polarization_targets(5000, 8)
    with pytest.warns(CenterDistanceWarning, match=r"DPN targets: \d+ of 60 classes share their random target"):
        polarization_targets(60, 8)
    with pytest.raises(ConfigError, match=r"codebook='bernoulli': 5000 classes cannot have distinct codes of 8 bits "
                                          r"\(there are only 256\); use at least 13 bits"):
        make_codebook("bernoulli", 5000, 8)


@pytest.mark.parametrize("name", ["csq", "dpn", "orthohash"])
def test_center_losses_forward_backward_5000_classes(name):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CenterDistanceWarning)
        loss = build_loss(name, 64, 5000, False)
    y = torch.zeros(8, 5000)
    y[torch.arange(8), torch.tensor([0, 7, 4999, 123, 7, 2500, 1, 3000])] = 1
    u = torch.randn(8, 64, requires_grad=True)
    res = loss(HashOutput(u=u), y)
    res.total.backward()
    assert torch.isfinite(res.total) and u.grad is not None and torch.isfinite(u.grad).all()
    if name == "csq":  # the closed form with the items' own centres
        c = loss.centers[y.argmax(1)]
        want = torch.nn.functional.binary_cross_entropy_with_logits(2 * u, (c + 1) / 2) \
            + 1e-4 * (torch.tanh(u).abs() - 1).pow(2).mean()
        assert res.total.item() == pytest.approx(want.item(), rel=1e-5)
    if name == "dpn":
        t = loss.targets_c[y.argmax(1)]
        assert res.total.item() == pytest.approx((1 - u * t).clamp_min(0).mean().item(), rel=1e-6)


# ---------------------------------------------------------------- evaluation, labels, splits
def naive_map(qc, dc, ql, dl, topk):
    ap = []
    for i in range(len(qc)):
        d = (qc[i] != dc).sum(1)
        order = np.argsort(d, kind="stable")[:topk]
        rel = (dl[order] == ql[i])
        hits = np.cumsum(rel)
        ap.append((hits / np.arange(1, topk + 1))[rel].sum() / rel.sum() if rel.sum() else 0.0)
    return float(np.mean(ap))


def test_evaluate_5000_classes_one_hot_and_indices_match_naive():
    rng = np.random.default_rng(0)
    C, Q, N = 5000, 60, 3000
    dcls = rng.integers(0, 200, N) * 25  # 200 of the 5000 classes occur
    qcls = dcls[rng.integers(0, N, Q)]
    proto = np.where(rng.random((C, 32)) < 0.5, -1, 1)
    dc = proto[dcls] * np.where(rng.random((N, 32)) < 0.15, -1, 1)
    qc = proto[qcls] * np.where(rng.random((Q, 32)) < 0.15, -1, 1)
    want = naive_map(qc, dc, qcls, dcls, 100)
    got = evaluate(qc, dc, qcls, dcls, topk=100, backend="numpy")
    assert got["map"] == pytest.approx(want, abs=1e-12)
    dl1 = np.zeros((N, C), np.float32)
    dl1[np.arange(N), dcls] = 1
    ql1 = np.zeros((Q, C), np.float32)
    ql1[np.arange(Q), qcls] = 1
    tracemalloc.start()
    got1 = evaluate(qc, dc, ql1, dl1, topk=100, backend="numpy")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert got1["map"] == pytest.approx(want, abs=1e-12)
    assert peak < 0.5 * dl1.nbytes, peak  # no (N, C) bool/float copy of the labels (one would be 15-60 MB)
    mixed = evaluate(qc, dc, qcls, dl1, topk=100, backend="numpy")  # indices against one-hot rows
    assert mixed["map"] == pytest.approx(want, abs=1e-12)
    multi = dl1.copy()
    multi[0, 4999] = 1  # one multi-label row: the packed path, same answer where class 4999 is unused
    assert evaluate(qc, dc, ql1, multi, topk=100, backend="numpy")["map"] == pytest.approx(want, abs=1e-12)
    bad = dl1.copy()
    bad[5, 17] = 2
    with pytest.raises(DataError, match="db_labels: multi-hot labels must be 0/1, found 2.0"):
        evaluate(qc, dc, ql1, bad)


def test_label_checks_and_split_at_10k_classes_fast():
    from hashlib_vit.data.check import _label_rows
    from hashlib_vit.data.splits import class_balanced_split

    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(10_000), 4)[rng.permutation(40_000)]
    t = time.perf_counter()
    idx = class_balanced_split(classes, 1, 1, seed=0, train_in_database=False)
    assert time.perf_counter() - t < 5
    assert len(idx.query) == len(idx.train) == 10_000 and len(idx.database) == 20_000
    assert np.array_equal(np.bincount(classes[idx.query], minlength=10_000), np.ones(10_000, np.int64))
    small = classes[classes < 2000]  # the same draw as one scan of the pool per class (the original loop)
    g = np.random.Generator(np.random.PCG64(0))
    q, t_, d = [], [], []
    for c in range(2000):
        perm = np.flatnonzero(small == c)[g.permutation(4)]
        q.append(perm[:1]), t_.append(perm[1:2]), d.append(perm[2:])
    got = class_balanced_split(small, 1, 1, seed=0, train_in_database=False)
    for a, b in zip((got.query, got.train, got.database), (q, t_, d)):
        assert np.array_equal(a, np.sort(np.concatenate(b)))
    y = np.zeros((2_000, 10_000), np.float32)
    y[np.arange(2_000), rng.integers(0, 10_000, 2_000)] = 1
    y[7, 3] = 0.5
    y[9] = 0
    t = time.perf_counter()
    tracemalloc.start()
    bad, k = _label_rows(y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - t < 5 and peak < y.nbytes / 4
    assert bad.tolist() == [7] and k[9] == 0 and k[0] == 1 and k[7] == float(y[7].sum())


@pytest.mark.parametrize("classes,bits", [(70, 8), (1000, 16), (12000, 16)])
def test_centers_are_distinct_whenever_distinct_centers_exist(classes, bits):
    """70 classes at 8 bits: exactly C(8, 4) = 70 balanced codes exist, but a random draw repeats some (29
    classes shared a center); repeats are drawn again, so no two classes share a center."""
    with pytest.warns(CenterDistanceWarning, match=r"classes shared a center in the best random draw .* drawn again"):
        c = hash_centers(classes, bits).numpy()
    assert len({r.tobytes() for r in c}) == classes and (c == 1).sum(1).tolist() == [bits // 2] * classes
    assert pairwise_distance_range(c)[0] >= 2
