"""The embedded digits protocol: sizes, class balance, disjointness, determinism, transforms."""
import numpy as np
import pytest
import torch

from hashlib_vit.data import PROTOCOLS, TensorBatches, TensorTransform, class_balanced_split, get_protocol
from hashlib_vit.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def digits():
    return get_protocol("digits").load(seed=0)


def test_sizes_and_balance(digits):
    assert digits.sizes() == {"query": 100, "train": 500, "database": 1697}
    assert np.bincount(digits.query.classes, minlength=10).tolist() == [10] * 10
    assert np.bincount(digits.train.classes, minlength=10).tolist() == [50] * 10
    assert digits.query.images.shape == (100, 3, 32, 32) and digits.query.images.dtype == torch.uint8
    assert digits.query.labels.shape == (100, 10)


def test_query_not_in_database_and_train_inside_database(digits):
    q, t, d = set(digits.query.ids), set(digits.train.ids), set(digits.database.ids)
    assert not q & d and not q & t
    assert t <= d
    assert len(q | d) == 1797


def test_same_seed_same_split_other_seed_other_split():
    a, b = get_protocol("digits").load(seed=0), get_protocol("digits").load(seed=0)
    c = get_protocol("digits").load(seed=1)
    assert a.checksums == b.checksums and a.query.ids == b.query.ids
    assert torch.equal(a.train.images, b.train.images)
    assert a.checksums["query"] != c.checksums["query"]


def test_split_checksum_is_pinned():
    # the split depends only on (data, sizes, seed): this value must not change across machines
    d = get_protocol("digits").load(seed=0)
    assert d.query.ids[:3] == ["digits/0019", "digits/0048", "digits/0061"]
    assert d.checksums == {
        "query": "ccd6aa1abdca022d75a115b47893a087b4a869e015e64876c129079f514f9704",
        "train": "7db81bfb0773e30766097e58feac859a20d18aa57dd8d05f744744184a065714",
        "database": "5a6c00833e90c4642d8629f7282158c9fa12079af394bb9c9ab4c7120f83eb0d",
    }


def test_class_balanced_split_errors_on_too_small_class():
    with pytest.raises(DataError, match="class 1 has 2 items"):
        class_balanced_split(np.array([0, 0, 0, 0, 1, 1]), 1, 2, seed=0)


def test_unknown_protocol_lists_choices():
    with pytest.raises(ConfigError, match="protocol='nope'.*digits"):
        PROTOCOLS.get("nope")


def test_batches_are_deterministic_and_resumable(digits):
    tf = TensorTransform(32, pad_crop=2)
    tb = TensorBatches(digits.train, 64, tf, train=True, seed=3)
    full = list(tb.epoch(2))
    resumed = list(tb.epoch(2, start=3))
    assert len(full) == len(tb) == 8
    for (x1, y1, i1), (x2, y2, i2) in zip(full[3:], resumed):
        assert torch.equal(i1, i2) and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(list(tb.epoch(1))[0][2], full[0][2])  # another epoch, another order


def test_eval_transform_center_crops_and_scales():
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = TensorTransform(224, resize=256)(x, train=False)
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    same = TensorTransform(32)(x, train=False)
    assert torch.allclose(same, x.float() / 255)
