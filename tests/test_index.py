"""faiss binary index wrapper: exact search equals the evaluator's ranking, persistence, errors."""
import numpy as np
import pytest
import torch

from hashlib_vit.errors import ConfigError, DataError
from hashlib_vit.retrieval.index import HashIndex, search_images


def ranking(q, db):
    """Reference ranking: Hamming distance ascending, ties by database index (stable)."""
    d = (db.shape[1] - db.astype(np.int64) @ q.astype(np.int64)) // 2
    order = np.argsort(d, kind="stable")
    return order, d[order]


def pm1(rng, n, bits, p=0.5):
    return np.where(rng.random((n, bits)) < p, -1, 1).astype(np.int8)


@pytest.mark.parametrize("bits", [8, 16, 64])
def test_flat_search_equals_reference_ranking_with_ties(bits):
    rng = np.random.default_rng(bits)
    # few distinct codes -> huge tie blocks
    protos = pm1(rng, 5, bits)
    db = protos[rng.integers(0, 5, 3000)]
    flip = rng.random(db.shape) < 0.03
    db = np.where(flip, -db, db)
    q = pm1(rng, 20, bits)
    index = HashIndex.from_codes(db)
    for k in (1, 10, 257, 3000):
        res = index.search(q, k)
        for j in range(len(q)):
            order, dist = ranking(q[j], db)
            assert np.array_equal(res.ids[j], order[:k]), (bits, k, j)
            assert np.array_equal(res.distances[j], dist[:k])


def test_matches_map_ranking_of_the_evaluator():
    from hashlib_vit.retrieval import map_at_k

    rng = np.random.default_rng(0)
    db, q = pm1(rng, 500, 16), pm1(rng, 30, 16)
    dl, ql = rng.integers(0, 4, 500), rng.integers(0, 4, 30)
    res = HashIndex.from_codes(db, labels=dl).search(q, 50)
    # AP@50 computed from the index's ranking equals the evaluator's mAP@50
    aps = []
    for j in range(30):
        rel = (res.labels[j] == ql[j]).astype(float)
        hits = np.cumsum(rel)
        aps.append((rel * hits / np.arange(1, 51)).sum() / max(rel.sum(), 1))
    assert np.mean(aps) == pytest.approx(map_at_k(q, db, ql, dl, topk=50), abs=1e-12)


def test_packed_codes_and_odd_bit_counts():
    from hashlib_vit.retrieval.codes import pack_codes

    rng = np.random.default_rng(5)
    db, q = pm1(rng, 300, 12), pm1(rng, 4, 12)  # 12 bits: padded to 2 bytes, distances unchanged
    a = HashIndex.from_codes(db).search(q, 30)
    b = HashIndex.from_codes(pack_codes(db), bits=12).search(pack_codes(q), 30, bits=12)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.distances, b.distances)
    for j in range(4):
        order, dist = ranking(q[j], db)
        assert np.array_equal(a.ids[j], order[:30]) and np.array_equal(a.distances[j], dist[:30])


def test_radius_search_is_inclusive_and_sorted():
    rng = np.random.default_rng(1)
    db, q = pm1(rng, 400, 16), pm1(rng, 3, 16)
    index = HashIndex.from_codes(db, labels=np.arange(400) % 7)
    for j, r in enumerate(index.radius_search(q, 5)):
        order, dist = ranking(q[j], db)
        want = order[dist <= 5]
        assert np.array_equal(r.ids, want) and (r.distances <= 5).all()
        assert np.array_equal(r.labels, (np.arange(400) % 7)[want])


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_roundtrip(tmp_path, kind):
    rng = np.random.default_rng(2)
    db, q = pm1(rng, 2000, 32), pm1(rng, 10, 32)
    labels = (rng.random((2000, 5)) < 0.3).astype(np.int8)
    index = HashIndex.from_codes(db, labels=labels, kind=kind, nlist=16, nprobe=4)
    before = index.search(q, 20)
    path = index.save(tmp_path / "db.faiss")
    again = HashIndex.load(path)
    after = again.search(q, 20)
    assert again.kind == kind and again.ntotal == 2000 and again.bits == 32
    assert np.array_equal(before.ids, after.ids) and np.array_equal(before.distances, after.distances)
    assert np.array_equal(before.labels, after.labels)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_approximate_indexes_find_most_exact_neighbours():
    rng = np.random.default_rng(3)
    centers = pm1(rng, 50, 64)
    db = centers[rng.integers(0, 50, 5000)]
    db = np.where(rng.random(db.shape) < 0.05, -db, db)
    q = np.where(rng.random((50, 64)) < 0.05, -centers, centers)
    exact = HashIndex.from_codes(db).search(q, 10).distances
    for kind in ("ivf", "hnsw"):
        approx = HashIndex.from_codes(db, kind=kind, nlist=32, nprobe=8).search(q, 10).distances
        # recall of the distance profile: approximate k-th distances rarely exceed the exact ones
        assert (approx[:, -1] <= exact[:, -1] + 2).mean() >= 0.9, kind


def test_bad_inputs_are_named():
    rng = np.random.default_rng(4)
    index = HashIndex.from_codes(pm1(rng, 10, 16))
    with pytest.raises(DataError, match="query_codes have 32 bits but the index holds 16"):
        index.search(pm1(rng, 2, 32), 3)
    with pytest.raises(DataError, match="index is empty"):
        HashIndex(16).search(pm1(rng, 1, 16), 1)
    with pytest.raises(DataError, match="db_codes is empty"):
        HashIndex.from_codes(np.ones((0, 16)))
    with pytest.raises(DataError, match="db_codes must contain only -1 and \\+1"):
        HashIndex.from_codes(np.full((3, 16), 2))
    with pytest.raises(ConfigError, match="bits=0 must be a positive integer"):
        HashIndex(0)
    with pytest.raises(ConfigError, match="kind='lsh'"):
        HashIndex(16, "lsh")
    with pytest.raises(DataError, match="k=0"):
        index.search(pm1(rng, 1, 16), 0)


def test_search_images_through_a_model():
    from hashlib_vit.models import build_model

    torch.manual_seed(0)
    model = build_model("vit32_test", bits=16).eval()
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        db_codes = model.encode(images.float() / 255).numpy()
    index = HashIndex.from_codes(db_codes, labels=np.arange(12))
    res = search_images(model, images[:4], index, k=1)
    # each image finds a code at distance 0 (itself or an identical code earlier in the database)
    assert (res.distances[:, 0] == 0).all()


def test_relevance_and_average_precision_of_a_search():
    from hashlib_vit.retrieval import map_at_k

    rng = np.random.default_rng(3)
    db, q = pm1(rng, 400, 16), pm1(rng, 30, 16)
    dl = np.eye(5)[rng.integers(0, 5, 400)]
    ql = np.eye(5)[rng.integers(0, 5, 30)]
    found = HashIndex.from_codes(db, labels=dl).search(q, 10)
    rel = found.relevant(ql)
    assert rel.shape == (30, 10) and np.array_equal(rel, (dl[found.ids] * ql[:, None]).sum(-1) > 0)
    assert found.average_precision(ql).mean() == pytest.approx(map_at_k(q, db, ql, dl, topk=10), abs=1e-12)
    by_class = HashIndex.from_codes(db, labels=dl.argmax(1)).search(q, 10)  # class indices: the same relevance
    assert np.array_equal(by_class.relevant(ql.argmax(1)), rel)
    # one hand-checked AP: relevant at ranks 1 and 3 of 3 -> (1/1 + 2/3) / 2
    from hashlib_vit.retrieval.index import SearchResult

    r = SearchResult(np.array([[4, 5, 6]]), np.zeros((1, 3), int), np.array([[1, 0, 1]]))
    assert r.average_precision(np.array([1]))[0] == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(DataError, match="query_labels have 2 rows but the search has 1 queries"):
        r.relevant(np.array([1, 0]))
    with pytest.raises(DataError, match="has no labels"):
        HashIndex.from_codes(db).search(q, 3).relevant(ql)


def test_distance_recall_and_benchmark_search():
    from hashlib_vit.retrieval.index import benchmark_search, clustered_codes, distance_recall

    exact = np.array([[0, 1, 1, 2], [3, 3, 3, 3]])
    assert distance_recall(exact, exact) == 1.0
    assert distance_recall(np.array([[0, 1, 2, 2], [3, 3, -1, -1]]), exact) == pytest.approx((3 + 2) / 8)
    codes = clustered_codes(500, 16, n_centers=4, flip=0.0, seed=1)
    assert codes.dtype == np.int8 and len(np.unique(codes, axis=0)) <= 4
    t = benchmark_search([300, 2000], 16, n_queries=20, k=5, seed=0)
    assert list(t["database"]) == [300] * 3 + [2000] * 3 and list(t["index"]) == ["flat", "ivf", "hnsw"] * 2
    assert (t.loc[t["index"] == "flat", "recall"] == 1.0).all() and t["recall"].between(0, 1).all()
    assert (t["queries_per_s"] > 0).all() and (t["build_s"] >= 0).all()
    with pytest.raises(ConfigError, match=r"unknown index\(es\) \['lsh'\]"):
        benchmark_search([10], 8, kinds=("flat", "lsh"))
