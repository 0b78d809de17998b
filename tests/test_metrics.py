"""mAP@K in the HashNet / DeepHash convention, against hand-computed cases and a brute-force loop."""
import numpy as np
import pytest
import torch

from hashlib_vit.errors import DataError
from hashlib_vit.models import sign_codes
from hashlib_vit.retrieval import map_at_k


def brute_ap(q, db, ql, dl, k):
    """Straightforward per-query AP@k (stable ranking by Hamming distance, ties by index)."""
    bits = q.shape[0]
    dist = [(bits - int(np.dot(q, d))) // 2 for d in db]
    order = sorted(range(len(db)), key=lambda i: (dist[i], i))[:k]
    hits, s = 0, 0.0
    for r, i in enumerate(order, 1):
        if (ql * dl[i]).sum() > 0:
            hits += 1
            s += hits / r
    return s / hits if hits else 0.0


def test_hand_computed_single_query_with_ties():
    q = np.array([[1, 1, -1]])
    db = np.array([[1, 1, -1], [1, 1, 1], [-1, -1, 1], [1, 1, -1]])
    # distances 0,1,3,0 -> stable order 0,3,1,2 ; relevance 1,1,0,1 -> AP = (1/1 + 2/2 + 3/4) / 3
    assert map_at_k(q, db, np.array([0]), np.array([0, 1, 0, 0])) == pytest.approx((1 + 1 + 0.75) / 3, abs=1e-12)
    # top-2: items 0 and 3, both relevant -> 1.0
    assert map_at_k(q, db, np.array([0]), np.array([0, 1, 0, 0]), topk=2) == pytest.approx(1.0)


def test_tie_order_is_database_index():
    # all database codes identical -> every distance ties; ranking = database order
    q = np.ones((1, 4), dtype=int)
    db = np.ones((4, 4), dtype=int)
    labels_db = np.array([1, 0, 0, 1])
    # order 0,1,2,3 ; rel 0,1,1,0 -> AP = (1/2 + 2/3)/2
    assert map_at_k(q, db, np.array([0]), labels_db) == pytest.approx((0.5 + 2 / 3) / 2)
    # reversing the database reverses the tie order: rel 0,1,1,0 again by symmetry -> same
    labels_db2 = np.array([0, 0, 1, 1])
    assert map_at_k(q, db, np.array([1]), labels_db2) == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_three_queries_six_items_known_map():
    # METHODS §7.1: a hand-built 3-query / 6-item case
    db = np.array([[1, 1, 1, 1], [1, 1, 1, -1], [1, 1, -1, -1], [1, -1, -1, -1], [-1, -1, -1, -1], [-1, 1, 1, 1]])
    dl = np.array([0, 0, 1, 1, 2, 0])
    q = np.array([[1, 1, 1, 1], [-1, -1, -1, -1], [1, -1, 1, -1]])
    ql = np.array([0, 1, 2])
    # q0: dists 0,1,2,3,4,1 -> order 0,1,5,2,3,4 ; rel 1,1,1,0,0,0 -> AP 1
    # q1: dists 4,3,2,1,0,3 -> order 4,3,2,1,5,0 ; rel 0,1,1,0,0,0 -> (1/2 + 2/3)/2
    # q2: dists 2,1,2,1,2,3 -> order 1,3,0,2,4,5 ; rel 0,0,0,0,1,0 -> 1/5
    expected = (1 + (0.5 + 2 / 3) / 2 + 1 / 5) / 3
    assert map_at_k(q, db, ql, dl) == pytest.approx(expected, abs=1e-12)


def test_zero_relevant_query_counts_as_zero():
    q = np.array([[1, 1], [1, -1]])
    db = np.array([[1, 1], [-1, -1]])
    # query 1 has class 5: nothing relevant -> AP 0 ; query 0 -> AP 1
    assert map_at_k(q, db, np.array([0, 5]), np.array([0, 0])) == pytest.approx(0.5)


def test_topk_normaliser_is_relevant_within_topk():
    q = np.array([[1, 1, 1, 1]])
    db = np.array([[1, 1, 1, 1], [-1, -1, -1, -1], [1, 1, 1, -1]])
    dl = np.array([0, 1, 0])
    # order 0,2,1; top-1 has 1 relevant of 1 -> AP@1 = 1, although 2 relevant exist overall
    assert map_at_k(q, db, np.array([0]), dl, topk=1) == pytest.approx(1.0)


def test_multi_label_relevance_is_shared_label():
    q = np.array([[1, -1, 1]])
    db = np.array([[1, -1, 1], [1, -1, -1], [-1, 1, -1]])
    ql = np.array([[1, 1, 0]])
    dl = np.array([[0, 1, 1], [0, 0, 1], [1, 0, 0]])
    # order 0,1,2 ; rel 1,0,1 -> (1 + 2/3)/2
    assert map_at_k(q, db, ql, dl) == pytest.approx((1 + 2 / 3) / 2)


def test_against_brute_force_random_with_many_ties():
    rng = np.random.default_rng(0)
    for trial in range(5):
        bits = int(rng.choice([4, 8, 16]))
        q = np.where(rng.random((13, bits)) < 0.5, -1, 1)
        db = np.where(rng.random((57, bits)) < 0.5, -1, 1)
        ql = (rng.random((13, 5)) < 0.3).astype(int)
        dl = (rng.random((57, 5)) < 0.3).astype(int)
        for k in (1, 7, 57, None):
            want = np.mean([brute_ap(q[i], db, ql[i], dl, k or 57) for i in range(13)])
            assert map_at_k(q, db, ql, dl, topk=k, chunk=4) == pytest.approx(want, abs=1e-12)


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(1)
    q = np.where(rng.random((5, 8)) < 0.5, -1, 1)
    db = np.where(rng.random((20, 8)) < 0.5, -1, 1)
    ql, dl = rng.integers(0, 3, 5), rng.integers(0, 3, 20)
    a = map_at_k(q, db, ql, dl)
    b = map_at_k(torch.tensor(q), torch.tensor(db), torch.tensor(ql), torch.tensor(dl))
    assert isinstance(b, float) and a == pytest.approx(b)


def test_sign_of_zero_is_plus_one():
    assert sign_codes(torch.tensor([[0.0, -0.0, 1e-9, -1e-9]])).tolist() == [[1, 1, 1, -1]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(q=np.array([[-1, 0]])), "only -1 and \\+1"),
        (dict(q=np.array([[1, 2]])), "only -1 and \\+1"),
        (dict(q=np.array([[1.0, np.nan]])), "NaN"),
        (dict(q=np.ones((1, 3))), "3 bits but db_codes have 2"),
        (dict(q=np.ones((0, 2))), "empty"),
        (dict(ql=np.array([0, 1])), "query_labels has 2 rows"),
        (dict(topk=0), "topk=0"),
        (dict(topk=5), "topk=5"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    args = dict(q=np.ones((1, 2)), db=np.ones((3, 2)), ql=np.array([0]), dl=np.array([0, 0, 1]), topk=None)
    args.update(kwargs)
    with pytest.raises(DataError, match=match):
        map_at_k(args["q"], args["db"], args["ql"], args["dl"], topk=args["topk"])
