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


def test_cifar10_split_is_seeded(cifar_pool, cifar10):
    from hashlib_vit.data import class_balanced_split

    # the protocol's split is exactly the seeded per-class draw over the canonical pool order
    idx = class_balanced_split(cifar_pool.classes, 100, 500, 0, train_in_database=False)
    assert [cifar_pool.ids[i] for i in idx.query] == cifar10.query.ids
    other = class_balanced_split(cifar_pool.classes, 100, 500, 1, train_in_database=False)
    assert not np.array_equal(other.query, idx.query)
    # the cached list files are the split (a second load checks them against a fresh draw)
    from pathlib import Path

    folder = Path(cifar10.split_dir)
    assert (folder / "query.txt").read_text().splitlines()[0].startswith(cifar10.query.ids[0] + " ")
    assert len((folder / "database.txt").read_text().splitlines()) == 54000


def test_cifar10_variants(shared_data, cifar_pool):
    one = get_protocol("cifar10-1").load(shared_data / "cifar10", seed=0)
    assert one.sizes() == {"query": 1000, "train": 5000, "database": 59000}
    assert set(one.train.ids) <= set(one.database.ids) and not set(one.query.ids) & set(one.database.ids)
    two = get_protocol("cifar10-2").load(shared_data / "cifar10", seed=0)
    assert two.sizes() == {"query": 10000, "train": 50000, "database": 50000}
    assert all(i.startswith("test/") for i in two.query.ids) and two.train.ids == two.database.ids


# ----------------------------------------------------------------------------- list files
LIST_COUNTS = {  # ../shared/data/hash_lists/README.md: lines and sha256 of the (uncompressed) text
    "imagenet/train.txt": (13000, 100, "c141cb443b3c674cd2b1e69700eadf85208a280f33ea15bd70edc082f94716d4"),
    "imagenet/test.txt": (5000, 100, "0aadea2e9afadd0e79ea734278b9dc390e66f6c10234d0b029c12fc6514885ed"),
    "imagenet/database.txt.gz": (128503, 100, "a23990649ead18c4b76764336e2175dda06d495bcc8c026a2158c81b41b2aa92"),
    "coco/train.txt": (10000, 80, "4708c66fa87bac20c85d470c29422c564b0a6811fc48d32a4714c23212e9500c"),
    "coco/test.txt": (5000, 80, "3f0e2c49e363bccbf5ed67cf8cd59cce2b04a7238417ba0c3baf876be3be90b7"),
    "coco/database.txt.gz": (117218, 80, "400e549e8d8c9e967a364d9ef06bd6e799022e28770d1242109306dcee468df4"),
    "nuswide_21/train.txt": (10500, 21, "c31007d63075cc173cb368f91475e4072a76b312b7dca0d14e88b1cc23586851"),
    "nuswide_21/test.txt": (2100, 21, "bbdbc13c08e340068064eb4f9849f33800139816fbe0e0792d5a49953581b41f"),
}


@pytest.mark.parametrize("name", sorted(LIST_COUNTS))
def test_shared_list_files_parse_with_the_published_line_counts(shared_data, name):
    from hashlib_vit.data import read_list_file

    lines, k, sha = LIST_COUNTS[name]
    lf = read_list_file(shared_data / "hash_lists" / name, k)
    assert len(lf) == lines and lf.labels.shape == (lines, k)
    assert lf.sha256 == sha  # our canonical list text is byte-identical to the file
    assert lf.labels.sum(1).min() >= 1
    if name.startswith("imagenet"):
        assert (lf.labels.sum(1) == 1).all()  # single-label


def test_coco_list_over_the_sample_photos_loads_real_images(shared_data):
    from hashlib_vit.data import FileSplit, TensorTransform, make_batches, read_list_file

    root = shared_data / "coco_samples"
    lf = read_list_file(root / "labels.txt", 80)
    assert len(lf) == 10
    split = FileSplit(root, lf.ids, lf.labels)
    batches = make_batches(split, 4, TensorTransform(224, resize=256), train=False)
    xs, ys = zip(*[(x, y) for x, y, _ in batches.epoch(0)])
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (10, 3, 224, 224) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.1  # real photos, not blank
    assert y.shape == (10, 80) and torch.equal(y, torch.as_tensor(lf.labels).float())
    from hashlib_vit.data.protocols import read_class_names

    names = read_class_names(shared_data / "hash_lists" / "coco", 80)
    assert [names[i] for i in (20, 37, 40, 49, 79)] == ["cat", "horse", "kite", "person", "zebra"]
    assert y[:, 49].sum() >= 1 and y.sum(1).min() >= 1


def test_coco_protocol_on_the_samples_stops_at_missing_images_or_skips_them(shared_data):
    proto = get_protocol("coco")
    with pytest.raises(Exception, match=r"4999 of 5000 listed images do not exist"):
        proto.load(shared_data / "coco_samples")
    with pytest.warns(UserWarning, match="skipped"):
        d = proto.load(shared_data / "coco_samples", missing="skip")
    assert d.sizes() == {"query": 1, "train": 1, "database": 9}
    assert d.query.skipped == 4999 and d.train.skipped == 9999 and d.database.skipped == 117209
    assert d.query.ids == ["train2014/COCO_train2014_000000135397.jpg"]
    assert d.class_names[79] == "zebra" and len(d.class_names) == 80


def test_nuswide21_without_database_list_says_where_it_comes_from(shared_data):
    with pytest.raises(Exception, match=r"no database.txt .*DeepHash-pytorch"):
        get_protocol("nuswide21").load(shared_data / "nuswide_samples")


def test_extracted_cifar_zips_load_as_an_image_folder_with_the_same_ids(shared_data, cifar_pool, tmp_path):
    import zipfile

    from hashlib_vit.data.sources import load_cifar10_pool

    root = tmp_path / "cifar_folder"
    for c in CIFAR10_CLASSES:  # what `unzip cifar10_jpg_<class>.zip -d root` gives, 2 images per split here
        with zipfile.ZipFile(shared_data / "cifar10" / f"cifar10_jpg_{c}.zip") as z:
            for name in (f"train/{c}/0000.jpg", f"train/{c}/0001.jpg", f"test/{c}/0000.jpg", f"test/{c}/0001.jpg"):
                z.extract(name, root)
    small = load_cifar10_pool(root, cache=tmp_path / "cache")
    assert len(small) == 40 and small.class_names == CIFAR10_CLASSES
    pos = {i: n for n, i in enumerate(cifar_pool.ids)}
    rows = [pos[i] for i in small.ids]
    assert torch.equal(small.images, cifar_pool.images[rows])
    assert small.classes.tolist() == cifar_pool.classes[rows].tolist()


@pytest.mark.slow
def test_run_experiment_trains_on_a_file_backed_coco_split(shared_data, tmp_path):
    # the experiment takes list-file data through make_batches (lazy PIL decoding), here the 10 sample photos
    from hashlib_vit.experiment import run_experiment

    lines = (shared_data / "coco_samples" / "labels.txt").read_text().splitlines(keepends=True)
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "test.txt").write_text("".join(lines[:3]))
    (splits / "train.txt").write_text("".join(lines))
    (splits / "database.txt").write_text("".join(lines[3:]))
    data = get_protocol("coco").load(shared_data / "coco_samples", split_dir=splits)
    assert data.sizes() == {"query": 3, "train": 10, "database": 7} and not data.in_memory
    res = run_experiment(protocol="coco", backbone="vit32_test", img_size=32, bits=16, epochs=1, batch_size=4,
                         loss="dpsh", run_dir=str(tmp_path / "run"), progress=False, data=data, device="cpu", topk=None)
    assert res.query_codes.shape == (3, 16) and res.db_codes.shape == (7, 16)
    assert 0 <= res.metrics["map"] <= 1 and res.metrics["topk"] == "all"  # 7 items < @5,000
    env = (tmp_path / "run" / "env.json").read_text()
    assert data.checksums["train"] in env
