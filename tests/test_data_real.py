"""Real-data tests on ../shared/data (skipped when it is absent): CIFAR-10 JPEG copy, list files, samples."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hashlib_vit.data import get_protocol
from hashlib_vit.data.sources import CIFAR10_CLASSES, load_cifar10_pool

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="session")
def cifar_pool(shared_data):
    # decoded once per machine (cached under data/cache), a second or two afterwards
    return load_cifar10_pool(shared_data / "cifar10")


@pytest.fixture(scope="session")
def cifar10(shared_data, cifar_pool):
    return get_protocol("cifar10").load(shared_data / "cifar10", seed=0)


def test_cifar10_jpeg_copy_is_60000_images_6000_per_class(cifar_pool):
    assert len(cifar_pool) == 60000
    assert cifar_pool.images.shape == (60000, 3, 32, 32) and cifar_pool.images.dtype == torch.uint8
    assert np.bincount(cifar_pool.classes, minlength=10).tolist() == [6000] * 10
    assert cifar_pool.class_names == CIFAR10_CLASSES
    split = cifar_pool.split_names
    assert (split == "train").sum() == 50000 and (split == "test").sum() == 10000
    assert len(set(cifar_pool.ids)) == 60000
    assert cifar_pool.ids[0] == "train/airplane/0000.jpg" and cifar_pool.ids[-1] == "test/truck/0999.jpg"


def test_cifar10_pixels_match_the_exact_originals(shared_data, cifar_pool):
    # cifar10_partial.npz holds the exact original pixels of the first 1,017 test-batch images; the
    # k-th test image of class c is test/<c>/<k>.jpg, within JPEG error of the original (mean abs.
    # difference about 5.8 of 255, against about 70 for a wrong index)
    z = np.load(shared_data / "cifar10" / "cifar10_partial.npz")
    labels, index = z["test_labels_all"], z["test_index"]
    k_of = np.zeros(len(labels), dtype=int)
    counts = np.zeros(10, dtype=int)
    for j, c in enumerate(labels):
        k_of[j], counts[c] = counts[c], counts[c] + 1
    pos = {i: n for n, i in enumerate(cifar_pool.ids)}
    rows = [pos[f"test/{CIFAR10_CLASSES[labels[j]]}/{k_of[j]:04d}.jpg"] for j in index[:300]]
    ours = cifar_pool.images[rows].permute(0, 2, 3, 1).numpy().astype(float)
    err = np.abs(ours - z["test_images"][:300]).mean()
    assert err < 10, err
    assert cifar_pool.classes[rows].tolist() == labels[index[:300]].tolist()


def test_cifar10_protocol_sizes_balance_and_disjointness(cifar10):
    assert cifar10.sizes() == {"query": 1000, "train": 5000, "database": 54000}
    assert np.bincount(cifar10.query.classes, minlength=10).tolist() == [100] * 10
    assert np.bincount(cifar10.train.classes, minlength=10).tolist() == [500] * 10
    assert np.bincount(cifar10.database.classes, minlength=10).tolist() == [5400] * 10
    q, t, d = set(cifar10.query.ids), set(cifar10.train.ids), set(cifar10.database.ids)
    assert not q & d and not q & t and not t & d  # train excluded from the database
    assert len(q | t | d) == 60000
    assert cifar10.class_names == CIFAR10_CLASSES
    assert cifar10.query.images.shape == (1000, 3, 32, 32) and cifar10.query.images.dtype == torch.uint8
    assert cifar10.protocol.topk is None
    assert set(cifar10.checksums) == {"query", "train", "database"}


def test_cifar10_split_is_seeded(shared_data, cifar10):
    again = get_protocol("cifar10").load(shared_data / "cifar10", seed=0)
    assert again.checksums == cifar10.checksums
    other = get_protocol("cifar10").load(shared_data / "cifar10", seed=1)
    assert other.checksums["query"] != cifar10.checksums["query"]
