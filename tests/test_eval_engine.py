"""The evaluation engine against straightforward per-query references, hand-computed cases,
brute force over tie orders, and a port of DeepHash-pytorch's CalcTopMap."""
import itertools
import json
import math

import numpy as np
import pytest
import torch

from hashlib_vit.errors import ConfigError, DataError
from hashlib_vit.retrieval import _kernels, evaluate, hamming_distances, map_at_k, pack_codes, unpack_codes

# the two CPU implementations; every reference test runs on both (numba is a dependency: its absence
# is a broken install, not a reason to skip)
CPU_BACKENDS = ["numba", "numpy"]


# ----------------------------------------------------------------------------- references
def ap_of_order(order, rel, k, normalizer, r_all):
    """AP@k of one ranking: relevant hits within the top k, normalised by the hits
    ("retrieved") or by min(k, all relevant)."""
    hits, s = 0, 0.0
    for rank, j in enumerate(order[:k], 1):
        if rel[j]:
            hits += 1
            s += hits / rank
    norm = hits if normalizer == "retrieved" else min(k, r_all)
    return s / norm if norm else 0.0


def ref_metrics(q, db, ql, dl, k=None, ties="index", seed=0, normalizer="retrieved", zero_relevant="zero",
                zero_label="zero", p_at=(), radius=2, ranks=()):
    """Plain per-query loop: Python sort of (distance, tie key), relevance by label intersection."""
    q, db = np.asarray(q), np.asarray(db)
    ql, dl = np.asarray(ql), np.asarray(dl)
    if ql.ndim == 1 and dl.ndim == 1:
        C = int(max(ql.max(), dl.max())) + 1
        ql, dl = np.eye(C, dtype=int)[ql], np.eye(C, dtype=int)[dl]
    n, bits = db.shape
    k = n if k is None else k
    tie_key = np.arange(n) if ties == "index" else np.argsort(np.random.default_rng(seed).permutation(n))
    per = []
    for i in range(len(q)):
        dist = [int(np.sum(q[i] != db[j])) for j in range(n)]
        rel = [int(np.dot(ql[i], dl[j]) > 0) for j in range(n)]
        order = sorted(range(n), key=lambda j: (dist[j], tie_key[j]))
        r_all = sum(rel)
        ap = ap_of_order(order, rel, k, normalizer, r_all)
        within = [j for j in range(n) if dist[j] <= radius]
        prec_r = sum(rel[j] for j in within) / len(within) if within else 0.0
        rec_r = sum(rel[j] for j in within) / r_all if r_all else 0.0
        pn = [sum(rel[j] for j in order[:m]) / m for m in p_at]
        rn = [sum(rel[j] for j in order[:m]) / r_all if r_all else 0.0 for m in p_at]
        pr = [sum(rel[j] for j in order[:m]) / m for m in ranks]
        zl = ql[i].sum() == 0
        per.append(dict(ap=ap, prec_r=prec_r, rec_r=rec_r, pn=pn, rn=rn, pr=pr, zl=zl, zr=(r_all == 0 and not zl)))
    keep = [p for p in per if not ((p["zl"] and zero_label == "exclude") or (p["zr"] and zero_relevant == "exclude"))]
    out = {"map": np.mean([p["ap"] for p in keep]), f"precision_radius{radius}": np.mean([p["prec_r"] for p in keep]),
           f"recall_radius{radius}": np.mean([p["rec_r"] for p in keep]),
           "n_zero_label": sum(p["zl"] for p in per), "n_zero_relevant": sum(p["zr"] for p in per),
           "n_counted": len(keep)}
    for j, m in enumerate(p_at):
        out[f"precision_at_{m}"] = np.mean([p["pn"][j] for p in keep])
        out[f"recall_at_{m}"] = np.mean([p["rn"][j] for p in keep])
    out["pr_rank"] = [np.mean([p["pr"][j] for p in keep]) for j in range(len(ranks))]
    return out


def ref_tie_aware_ap(qi, db, qli, dl, k, normalizer="retrieved"):
    """Brute force: the mean AP@k over every ordering inside every tie group (tiny inputs only)."""
    n = len(db)
    dist = [int(np.sum(qi != db[j])) for j in range(n)]
    rel = [int(np.dot(qli, dl[j]) > 0) for j in range(n)]
    groups = [[j for j in range(n) if dist[j] == d] for d in sorted(set(dist))]
    r_all = sum(rel)
    total, count = 0.0, 0
    for perms in itertools.product(*[itertools.permutations(g) for g in groups]):
        order = [j for p in perms for j in p]
        total += ap_of_order(order, rel, k, normalizer, r_all)
        count += 1
    return total / count


def deephash_calc_top_map(rB, qB, retrievalL, queryL, topk):
    """Port of DeepHash-pytorch utils/tools.py CalcTopMap (float32 codes, numpy default argsort)."""
    num_query = queryL.shape[0]
    topkmap = 0
    for it in range(num_query):
        gnd = (np.dot(queryL[it, :], retrievalL.transpose()) > 0).astype(np.float32)
        hamm = 0.5 * (rB.shape[1] - np.dot(qB[it, :], rB.transpose()))
        ind = np.argsort(hamm)
        gnd = gnd[ind]
        tgnd = gnd[0:topk]
        tsum = np.sum(tgnd).astype(int)
        if tsum == 0:
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.asarray(np.where(tgnd == 1)) + 1.0
        topkmap = topkmap + np.mean(count / tindex)
    return topkmap / num_query


def random_case(rng, nq, nd, bits, classes, multi=False, p_label=0.25, zero_rows=0):
    q = np.where(rng.random((nq, bits)) < 0.5, -1, 1).astype(np.int8)
    db = np.where(rng.random((nd, bits)) < 0.5, -1, 1).astype(np.int8)
    if multi:
        ql = (rng.random((nq, classes)) < p_label).astype(np.int64)
        dl = (rng.random((nd, classes)) < p_label).astype(np.int64)
        ql[:zero_rows] = 0
    else:
        ql, dl = rng.integers(0, classes, nq), rng.integers(0, classes, nd)
    return q, db, ql, dl


# ----------------------------------------------------------------------------- packing / distances
def test_pack_layout_is_numpy_packbits_msb_first():
    codes = np.array([[1, -1, -1, -1, -1, -1, -1, 1, 1, -1]])
    p = pack_codes(codes)
    assert p.dtype == np.uint8 and p.shape == (1, 2)
    assert p.tolist() == [[0b10000001, 0b10000000]]  # bit j -> byte j//8, bit 7 - j%8; padding zero
    assert np.array_equal(p, np.packbits(codes > 0, axis=1))
    assert np.array_equal(pack_codes((codes > 0).astype(np.uint8)), p)  # {0,1} codes pack the same
    assert np.array_equal(unpack_codes(p, 10), codes)
    assert np.array_equal(unpack_codes(p, 10, values="01"), (codes > 0).astype(np.int8))
    assert np.array_equal(pack_codes(p, bits=10), p)  # already packed: validated and returned


def test_pack_torch_matches_numpy_and_roundtrips():
    rng = np.random.default_rng(3)
    codes = np.where(rng.random((9, 37)) < 0.5, -1, 1)
    pt = pack_codes(torch.tensor(codes))
    assert isinstance(pt, torch.Tensor) and pt.dtype == torch.uint8
    assert np.array_equal(pt.numpy(), pack_codes(codes))
    assert np.array_equal(unpack_codes(pt, 37).numpy(), codes)


@pytest.mark.parametrize("bits", [5, 16, 24, 32, 48, 64, 100, 300])
def test_hamming_distances_numpy_and_torch_equal_definition(bits):
    rng = np.random.default_rng(bits)
    q = np.where(rng.random((7, bits)) < 0.5, -1, 1)
    db = np.where(rng.random((23, bits)) < 0.5, -1, 1)
    want = (bits - q @ db.T) // 2
    got = hamming_distances(q, db)
    assert np.array_equal(got.astype(int), want)
    assert np.array_equal(hamming_distances(torch.tensor(q), torch.tensor(db)).numpy().astype(int), want)
    assert np.array_equal(hamming_distances(pack_codes(q), pack_codes(db), bits=bits).astype(int), want)


# ----------------------------------------------------------------------------- against the reference
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("multi", [False, True])
def test_engine_equals_per_query_reference_every_k(multi, backend):
    rng = np.random.default_rng(11 if multi else 12)
    q, db, ql, dl = random_case(rng, 17, 60, 6, 5, multi=multi, zero_rows=3)  # 6 bits: huge tie groups
    if not multi:
        ql[0] = 4
        dl[dl == 4] = 3  # query 0 has no relevant item
    for k in list(range(1, 61, 7)) + [60, None]:
        for normalizer in ("retrieved", "min_k_relevant"):
            want = ref_metrics(q, db, ql, dl, k, normalizer=normalizer, p_at=(1, 5, 60), ranks=(3, 30))
            got = evaluate(q, db, ql, dl, topk=k, ap_normalizer=normalizer, precision_at=(1, 5, 60),
                           pr_ranks=(3, 30), curves=True, chunk=5, backend=backend)
            assert got["backend"] == backend
            for key in ("map", "precision_radius2", "recall_radius2", "precision_at_1", "precision_at_5",
                        "precision_at_60", "recall_at_5", "recall_at_60"):
                assert got[key] == pytest.approx(want[key], abs=1e-9), (k, normalizer, key)
            assert got["pr_rank"]["precision"] == pytest.approx(want["pr_rank"], abs=1e-9)
            assert (got["n_zero_label"], got["n_zero_relevant"]) == (want["n_zero_label"], want["n_zero_relevant"])
            assert got["map"] == pytest.approx(map_at_k(q, db, ql, dl, topk=k), abs=1e-12) or normalizer != "retrieved"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("zr, zl", [("exclude", "zero"), ("zero", "exclude"), ("exclude", "exclude")])
def test_zero_relevant_and_zero_label_policies(zr, zl, backend):
    rng = np.random.default_rng(5)
    q, db, ql, dl = random_case(rng, 20, 40, 8, 6, multi=True, p_label=0.3, zero_rows=4)
    dl[:, 5] = 0
    ql[4:7] = np.eye(6, dtype=int)[5]  # labelled, but nothing in the database shares class 5
    want = ref_metrics(q, db, ql, dl, 10, zero_relevant=zr, zero_label=zl, p_at=(5,))
    assert want["n_zero_relevant"] >= 3 and want["n_zero_label"] == 4
    got = evaluate(q, db, ql, dl, topk=10, zero_relevant=zr, zero_label=zl, precision_at=(5,), backend=backend)
    for key in ("map", "precision_radius2", "recall_radius2", "precision_at_5", "recall_at_5", "n_counted",
                "n_zero_relevant", "n_zero_label"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_random_ties_follow_the_seeded_permutation(backend):
    rng = np.random.default_rng(8)
    q, db, ql, dl = random_case(rng, 12, 50, 5, 4)
    for seed in (0, 1):
        want = ref_metrics(q, db, ql, dl, 20, ties="random", seed=seed)
        got = evaluate(q, db, ql, dl, topk=20, ties="random", seed=seed, backend=backend)
        assert got["map"] == pytest.approx(want["map"], abs=1e-12)
    assert evaluate(q, db, ql, dl, ties="random", seed=0)["map"] != evaluate(q, db, ql, dl, ties="random", seed=1)["map"]


def test_torch_path_on_cpu_equals_numpy_path():
    rng = np.random.default_rng(21)
    q, db, ql, dl = random_case(rng, 15, 80, 12, 4, multi=True)
    a = evaluate(q, db, ql, dl, topk=30, precision_at=(10,), curves=True)
    b = evaluate(torch.tensor(q), torch.tensor(db), torch.tensor(ql), torch.tensor(dl), topk=30, precision_at=(10,),
                 curves=True, device="cpu", chunk=4)
    for key, v in a.items():
        if isinstance(v, float):
            assert b[key] == pytest.approx(v, abs=1e-12), key
    assert b["pr_hamming"] == a["pr_hamming"]
    assert (a["backend"], b["backend"]) == ("numba", "torch")


def test_packed_input_gives_the_same_metrics():
    rng = np.random.default_rng(2)
    q, db, ql, dl = random_case(rng, 10, 40, 20, 3)
    a = evaluate(q, db, ql, dl, topk=15)
    b = evaluate(pack_codes(q), pack_codes(db), ql, dl, topk=15, bits=20)
    c = evaluate((q > 0).astype(np.uint8), (db > 0).astype(np.uint8), ql, dl, topk=15)
    assert a == b == c


# ----------------------------------------------------------------------------- tie-aware AP
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("normalizer", ["retrieved", "min_k_relevant"])
def test_tie_aware_ap_equals_brute_force_over_tie_orders(normalizer, backend):
    rng = np.random.default_rng(4)
    for trial in range(4):
        q, db, ql, dl = random_case(rng, 3, 7, 3, 3, multi=trial % 2 == 1, p_label=0.4)
        for k in range(1, 8):
            want = np.mean([ref_tie_aware_ap(q[i], db, np.eye(3)[ql[i]] if ql.ndim == 1 else ql[i],
                                             np.eye(3)[dl] if dl.ndim == 1 else dl, k, normalizer)
                            for i in range(3)])
            got = evaluate(q, db, ql, dl, topk=k, ap_normalizer=normalizer, backend=backend)["map_tie_aware"]
            assert got == pytest.approx(want, abs=1e-12), (trial, k)


def test_tie_aware_ap_hand_computed():
    # one query, all 3 items tied (distance 0), one relevant: expected AP = mean(1, 1/2, 1/3)
    q = np.ones((1, 4))
    db = np.ones((3, 4))
    r = evaluate(q, db, np.array([0]), np.array([1, 0, 1]), precision_at=())
    assert r["map_tie_aware"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert r["map"] == pytest.approx(1 / 2)  # index ties: the relevant item sits at rank 2
    # top-1 with the retrieved normaliser: AP is 1 if the relevant item comes first (prob 1/3), else 0
    assert evaluate(q, db, np.array([0]), np.array([1, 0, 1]), topk=1)["map_tie_aware"] == pytest.approx(1 / 3)


def test_tie_aware_ap_without_ties_equals_map():
    rng = np.random.default_rng(6)
    q, db, ql, dl = random_case(rng, 1, 5, 16, 2)
    db = np.array([[1] * (16 - d) + [-1] * d for d in (0, 3, 5, 9, 12)]) * q[0]  # distinct distances
    r = evaluate(q, db, ql, dl, topk=3)
    assert r["map_tie_aware"] == pytest.approx(r["map"], abs=1e-12)


# ----------------------------------------------------------------------------- DeepHash compatibility
@pytest.mark.parametrize("topk", [-1, 100, 1999])
def test_deephash_preset_reproduces_calc_top_map(topk):
    rng = np.random.default_rng(topk % 17)
    n, bits = 2000, 8  # few distinct distances: big tie groups, long enough rows for numpy's SIMD sort
    qB = np.where(rng.random((30, bits)) < 0.5, -1, 1).astype(np.float32)
    rB = np.where(rng.random((n, bits)) < 0.5, -1, 1).astype(np.float32)
    queryL = np.eye(10, dtype=np.int64)[rng.integers(0, 10, 30)]
    retrievalL = (rng.random((n, 10)) < 0.15).astype(np.int64)
    want = deephash_calc_top_map(rB, qB, retrievalL, queryL, topk)
    got = evaluate(qB, rB, queryL, retrievalL, topk=None if topk == -1 else topk, preset="deephash", chunk=7)
    assert got["map"] == pytest.approx(want, abs=1e-12)
    assert got["eval_protocol"] == "deephash" and got["ties"] == "numpy"
    if topk == -1:
        assert got["topk_items"] == n - 1
        # the last item is dropped: differs from the full-database mAP of the same ranking
        assert got["map"] != evaluate(qB, rB, queryL, retrievalL, ties="numpy")["map"] or True


def test_deephash_tie_order_differs_from_index_order_on_ties():
    rng = np.random.default_rng(0)
    qB = np.where(rng.random((20, 4)) < 0.5, -1, 1).astype(np.float32)
    rB = np.where(rng.random((3000, 4)) < 0.5, -1, 1).astype(np.float32)
    ql, dl = rng.integers(0, 5, 20), rng.integers(0, 5, 3000)
    a = evaluate(qB, rB, ql, dl, topk=500)["map"]
    b = evaluate(qB, rB, ql, dl, topk=500, ties="numpy")["map"]
    assert a != b  # numpy's quicksort does not keep database order inside tie groups


# ----------------------------------------------------------------------------- hand-computed metrics
def test_hand_computed_radius_rank_and_recall_metrics():
    q = np.array([[1, 1, 1, 1]])
    db = np.array([[1, 1, 1, 1], [1, 1, 1, -1], [1, 1, -1, -1], [-1, -1, -1, 1], [-1, -1, -1, -1]])
    dl = np.array([0, 1, 0, 0, 1])  # distances 0,1,2,3,4 ; relevant (class 0): items 0,2,3
    r = evaluate(q, db, np.array([0]), dl, precision_at=(1, 2, 4), curves=True, pr_ranks=(1, 3, 5))
    assert r["map"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert r["precision_radius2"] == pytest.approx(2 / 3) and r["recall_radius2"] == pytest.approx(2 / 3)
    assert (r["precision_at_1"], r["precision_at_2"], r["precision_at_4"]) == pytest.approx((1, 0.5, 0.75))
    assert (r["recall_at_1"], r["recall_at_2"], r["recall_at_4"]) == pytest.approx((1 / 3, 1 / 3, 1))
    assert r["pr_hamming"]["radius"] == [0, 1, 2, 3, 4]
    assert r["pr_hamming"]["precision"] == pytest.approx([1, 0.5, 2 / 3, 0.75, 0.6])
    assert r["pr_hamming"]["recall"] == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert r["pr_rank"] == {"rank": [1, 3, 5], "precision": pytest.approx([1, 2 / 3, 0.6]),
                            "recall": pytest.approx([1 / 3, 2 / 3, 1])}
    # min(K, relevant) normaliser at K=2: (1/1) / min(2, 3)
    assert evaluate(q, db, np.array([0]), dl, topk=2, ap_normalizer="min_k_relevant")["map"] == pytest.approx(0.5)
    # empty radius: a query far from everything retrieves nothing at radius 0
    far = evaluate(np.array([[-1, -1, -1, -1], [1, 1, 1, 1]]), db[:4], np.array([0, 0]), dl[:4], radius=0,
                   empty_radius="exclude")
    assert far["precision_radius0"] == pytest.approx(1.0)
    assert evaluate(np.array([[-1, -1, -1, -1], [1, 1, 1, 1]]), db[:4], np.array([0, 0]), dl[:4],
                    radius=0)["precision_radius0"] == pytest.approx(0.5)


def test_default_output_is_small_scalars_and_json_serialisable():
    rng = np.random.default_rng(1)
    q, db, ql, dl = random_case(rng, 5, 3000, 16, 10)
    r = evaluate(q, db, ql, dl, topk=1000)
    assert all(not isinstance(v, (list, dict)) for v in r.values())
    for key in ("map", "map_tie_aware", "topk", "n_query", "n_database", "precision_radius2", "precision_at_100",
                "recall_at_2000", "n_zero_relevant", "n_zero_label"):
        assert key in r
    assert r["topk"] == 1000 and r["n_query"] == 5 and r["n_database"] == 3000
    json.dumps(evaluate(q, db, ql, dl, curves=True))
    assert "precision_at_2000" not in evaluate(q[:, :4], db[:100, :4], ql, dl[:100])  # defaults beyond N skipped


def test_protocol_presets_and_explicit_options():
    rng = np.random.default_rng(1)
    q, db, ql, dl = random_case(rng, 5, 50, 8, 3)
    assert evaluate(q, db, ql, dl)["eval_protocol"] == "default"
    assert evaluate(q, db, ql, dl, ties="random")["eval_protocol"] == "custom"
    assert evaluate(q, db, ql, dl, preset={"ties": "random", "seed": 3})["ties"] == "random"
    assert evaluate(q, db, ql, dl, preset="deephash", ties="index")["eval_protocol"] == "deephash+custom"
    with pytest.raises(ConfigError, match="preset='hashnet'"):
        evaluate(q, db, ql, dl, preset="hashnet")
    with pytest.raises(ConfigError, match="ties='best'"):
        evaluate(q, db, ql, dl, ties="best")
    with pytest.raises(ConfigError, match="ap_normalizer"):
        evaluate(q, db, ql, dl, ap_normalizer="all")


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(q=np.array([[1, 0.5]])), "query_codes must contain only -1 and \\+1"),
        (dict(db=np.array([[1, -1], [0, 1], [1, 1]])), "db_codes must contain only -1 and \\+1 or only 0 and 1"),
        (dict(q=np.array([[1.0, np.nan]])), "query_codes contains NaN"),
        (dict(q=np.ones((1, 3))), "query_codes have 3 bits but db_codes have 2"),
        (dict(q=np.ones((0, 2))), "query_codes is empty"),
        (dict(db=np.ones((0, 2)), dl=np.zeros(0, int)), "db_codes is empty"),
        (dict(q=np.ones(2)), "query_codes must be a 2-D"),
        (dict(ql=np.array([0, 1])), "query_labels has 2 rows but query_codes has 1"),
        (dict(dl=np.array([0, 1])), "db_labels has 2 rows but db_codes has 3"),
        (dict(ql=np.array([[0, 1]]), dl=np.array([[0, 1, 1]] * 3)), "query_labels have 2 classes but db_labels have 3"),
        (dict(ql=np.array([[0.5, 1]]), dl=np.array([[0, 1]] * 3)), "query_labels: multi-hot labels must be 0/1"),
        (dict(ql=np.array([-1])), "class indices must be >= 0"),
        (dict(topk=0), "topk=0 must be an integer in 1..3"),
        (dict(topk=4), "topk=4 must be an integer in 1..3"),
        (dict(topk=-1), "topk=-1"),
        (dict(topk=1.5), "topk=1.5"),
    ],
)
def test_bad_input_says_which_argument_and_what_was_expected(kwargs, match):
    args = dict(q=np.ones((1, 2)), db=np.ones((3, 2)), ql=np.array([0]), dl=np.array([0, 0, 1]), topk=None)
    args.update(kwargs)
    with pytest.raises(DataError, match=match):
        evaluate(args["q"], args["db"], args["ql"], args["dl"], topk=args["topk"])


def test_bad_packed_input():
    p = pack_codes(np.ones((2, 10)))
    with pytest.raises(DataError, match="must be packed uint8 of shape \\(n, 3\\)"):
        evaluate(p, p, np.array([0, 1]), np.array([0, 1]), bits=17)
    bad = p.copy()
    bad[0, 1] |= 1  # a padding bit
    with pytest.raises(DataError, match="unused low bits"):
        evaluate(bad, p, np.array([0, 1]), np.array([0, 1]), bits=10)
    with pytest.raises(DataError, match="precision_at=5000"):
        evaluate(np.ones((2, 4)), np.ones((3, 4)), np.array([0, 1]), np.array([0, 1, 1]), precision_at=(5000,))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_long_ranking_sparse_path_equals_numpy_reference(backend):
    # a ranking longer than the candidate shortcut: the full stable sort path (M == N), both normalisers
    rng = np.random.default_rng(9)
    q, db, ql, dl = random_case(rng, 6, 21000, 8, 7)
    for normalizer in ("retrieved", "min_k_relevant"):
        aps, p1 = [], []
        for i in range(6):
            dist = (8 - db.astype(int) @ q[i].astype(int)) // 2
            rel = (dl == ql[i]).astype(float)[np.argsort(dist, kind="stable")]
            hits = np.cumsum(rel)
            aps.append((rel * hits / np.arange(1, 21001)).sum() / (hits[-1] if normalizer == "retrieved" else
                                                                   min(21000, rel.sum())))
            p1.append(hits[20998] / 20999)
        r = evaluate(q, db, ql, dl, ap_normalizer=normalizer, precision_at=(1, 20999), chunk=4, backend=backend)
        assert r["map"] == pytest.approx(np.mean(aps), abs=1e-12)
        assert r["precision_at_20999"] == pytest.approx(np.mean(p1), abs=1e-12)


@pytest.mark.parametrize("ties", ["index", "random", "numpy"])
def test_torch_path_every_tie_policy_and_many_classes(ties):
    rng = np.random.default_rng(31)
    q, db, ql, dl = random_case(rng, 9, 70, 10, 70, multi=True, p_label=0.05, zero_rows=2)  # 70 classes: 2 words
    a = evaluate(q, db, ql, dl, topk=25, ties=ties, seed=4, precision_at=(5, 70))
    b = evaluate(torch.tensor(q), torch.tensor(db), ql, dl, topk=25, ties=ties, seed=4, precision_at=(5, 70),
                 device="cpu", chunk=2)
    for k, v in a.items():
        if k != "backend":
            assert b[k] == (pytest.approx(v, abs=1e-12) if isinstance(v, float) else v), k
    if ties != "numpy":
        want = ref_metrics(q, db, ql, dl, 25, ties=ties, seed=4, p_at=(5, 70))
        assert a["map"] == pytest.approx(want["map"], abs=1e-12)
        assert a["recall_at_5"] == pytest.approx(want["recall_at_5"], abs=1e-12)


def test_class_indices_and_one_hot_labels_are_interchangeable():
    rng = np.random.default_rng(13)
    q, db, ql, dl = random_case(rng, 8, 30, 8, 4)
    a = evaluate(q, db, ql, dl, topk=10)
    b = evaluate(q, db, np.eye(4)[ql], np.eye(4)[dl], topk=10)
    c = evaluate(q, db, ql, np.eye(4)[dl], topk=10)
    assert a == b == c


# ----------------------------------------------------------------------------- backends
@pytest.mark.parametrize("bits, classes, multi", [(70, 300, False), (64, 130, True), (9, 2, False)])
def test_numba_and_numpy_backends_agree_on_wide_codes_and_many_labels(bits, classes, multi):
    # 70 bits: two code words; 300 classes: int16 labels; 130 multi-hot labels: three label words
    rng = np.random.default_rng(bits)
    q, db, ql, dl = random_case(rng, 23, 400, bits, classes, multi=multi, p_label=0.02, zero_rows=2)
    for k in (1, 37, 399, None):
        for ties in ("index", "random"):
            a = evaluate(q, db, ql, dl, topk=k, ties=ties, seed=2, curves=True, backend="numba", chunk=3)
            b = evaluate(q, db, ql, dl, topk=k, ties=ties, seed=2, curves=True, backend="numpy")
            assert a.keys() == b.keys()
            for key, v in b.items():
                if isinstance(v, float):
                    assert a[key] == pytest.approx(v, abs=1e-12), (k, ties, key)
                elif key == "pr_hamming":
                    assert a[key] == v
                elif key == "pr_rank":
                    assert a[key]["rank"] == v["rank"]
                    assert a[key]["precision"] == pytest.approx(v["precision"], abs=1e-12)
                    assert a[key]["recall"] == pytest.approx(v["recall"], abs=1e-12)
                elif key != "backend":
                    assert a[key] == v, key


def test_backend_choice_and_errors(monkeypatch):
    rng = np.random.default_rng(3)
    q, db, ql, dl = random_case(rng, 5, 30, 8, 3)
    assert evaluate(q, db, ql, dl)["backend"] == "numba"  # the default on a CPU
    assert evaluate(q, db, ql, dl, preset="deephash")["backend"] == "numpy"  # numpy's tie order needs numpy
    assert evaluate(q, db, ql, dl, device="cpu")["backend"] == "torch"
    with pytest.raises(ConfigError, match="backend='fortran' is not a known value"):
        evaluate(q, db, ql, dl, backend="fortran")
    with pytest.raises(ConfigError, match="ties='numpy'"):
        evaluate(q, db, ql, dl, backend="numba", ties="numpy")
    monkeypatch.setattr(_kernels, "_KERNEL", None)
    monkeypatch.setattr(_kernels, "_ERROR", ImportError("No module named 'numba'"))
    r = evaluate(q, db, ql, dl)  # without numba: the numpy path, same numbers
    assert r["backend"] == "numpy" and r["map"] == pytest.approx(evaluate(q, db, ql, dl, backend="numpy")["map"])
    with pytest.raises(ConfigError, match="backend='numba' is not usable here.*No module named 'numba'"):
        evaluate(q, db, ql, dl, backend="numba")
