"""Sources, list files, split cache/export/import, file-backed batches, and every bad-input case."""
from __future__ import annotations

import gzip
import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from hashlib_vit.data import (FileBatches, FileSplit, Split, TensorBatches, TensorTransform, get_protocol,
                              make_batches, parse_list_text, protocol_transforms, read_list_file, split_lines)
from hashlib_vit.data.protocols import split_cache_folder
from hashlib_vit.data.sources import load_cifar10_pool, load_cifar10_python, load_image_folder
from hashlib_vit.data.splits import split_cache_is_complete
from hashlib_vit.errors import DataError


# ----------------------------------------------------------------------------- helpers
def _png(path, size=(20, 12), value=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if value is None else \
        np.full((size[1], size[0], 3), value, np.uint8)
    Image.fromarray(arr).save(path)
    return arr


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


# ----------------------------------------------------------------------------- list files
def test_list_text_parses_paths_and_labels():
    lf = parse_list_text("a/1.jpg 0 1 1\n\nb/2.jpg 1 0 0\n", "x.txt", 3)
    assert lf.ids == ["a/1.jpg", "b/2.jpg"]
    assert lf.labels.tolist() == [[0, 1, 1], [1, 0, 0]]
    assert lf.line_numbers.tolist() == [1, 3]
    # canonical text round-trips byte for byte
    assert split_lines(lf.ids, lf.labels) == "a/1.jpg 0 1 1\nb/2.jpg 1 0 0\n"


def test_list_file_plain_and_gz_give_the_same_items(tmp_path):
    text = "".join(f"img/{i}.jpg {' '.join('1' if j == i % 4 else '0' for j in range(4))}\n" for i in range(50))
    (tmp_path / "l.txt").write_text(text)
    with gzip.open(tmp_path / "l.txt.gz", "wt") as f:
        f.write(text)
    a, b = read_list_file(tmp_path / "l.txt", 4), read_list_file(tmp_path / "l.txt.gz", 4)
    assert a.ids == b.ids and np.array_equal(a.labels, b.labels) and a.sha256 == b.sha256
    assert a.labels.sum(0).tolist() == [13, 13, 12, 12]


def test_wrong_label_count_names_file_line_expected_and_got(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("a.jpg 0 1 0\nb.jpg 1 0 0\nc.jpg 1 0\n")
    with pytest.raises(DataError, match=r"train.txt, line 3: expected 3 labels after the path, got 2"):
        read_list_file(p, 3)
    # K inferred from the first line when not given
    with pytest.raises(DataError, match=r"line 3: expected 3 labels.*got 2"):
        read_list_file(p)


@pytest.mark.parametrize("bad", ["2", "-1", "0.5", "x"])
def test_labels_must_be_0_or_1(bad):
    with pytest.raises(DataError, match=rf"l.txt, line 2: label 2 is '{bad}'; labels must be 0 or 1"):
        parse_list_text(f"a.jpg 0 1\nb.jpg 1 {bad}\n", "l.txt", 2)


def test_line_without_labels_and_empty_list_are_errors(tmp_path):
    with pytest.raises(DataError, match="line 1: 'a.jpg' has a path but no labels"):
        parse_list_text("a.jpg\n", "l.txt", 2)
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(DataError, match="e.txt is empty"):
        read_list_file(tmp_path / "e.txt", 2)
    with pytest.raises(DataError, match="does not exist"):
        read_list_file(tmp_path / "nope.txt", 2)


# ----------------------------------------------------------------------------- file-backed splits
@pytest.fixture
def image_list(tmp_path):
    root = tmp_path / "imgs"
    ids, labels = [], []
    for i in range(13):
        _png(root / "sub" / f"{i}.png", size=(20 + i, 12 + 2 * i), seed=i)
        ids.append(f"sub/{i}.png")
        labels.append([i % 3 == 0, i % 3 == 1, i % 2 == 0])
    return root, ids, np.asarray(labels, dtype=np.uint8)


def test_file_batches_load_lazily_deterministic_and_resumable(image_list):
    root, ids, labels = image_list
    split = FileSplit(root, ids, labels)
    tf = TensorTransform(16, resize=18, hflip=True)
    fb = make_batches(split, 4, tf, train=True, seed=3)
    assert isinstance(fb, FileBatches) and len(fb) == 3 and fb.num_samples == 13 and fb.batch_size == 4
    run1 = list(fb.epoch(1))
    run2 = list(fb.epoch(1))
    resumed = list(fb.epoch(1, start=2))
    assert [b[0].shape for b in run1] == [(4, 3, 16, 16)] * 3  # 13 % 4 == 1: trailing singleton dropped
    for (x1, y1, i1), (x2, y2, i2) in zip(run1, run2):
        assert torch.equal(x1, x2) and torch.equal(i1, i2)
    assert torch.equal(resumed[0][0], run1[2][0]) and torch.equal(resumed[0][2], run1[2][2])
    assert 0.0 <= run1[0][0].min() and run1[0][0].max() <= 1.0
    for x, y, idx in run1:
        assert torch.equal(y, torch.as_tensor(labels[idx.numpy()]).float())
    assert not torch.equal(torch.cat([b[2] for b in run1]), torch.cat([b[2] for b in fb.epoch(2)]))
    ev = list(make_batches(split, 5, TensorTransform(16, resize=18), train=False))
    assert torch.cat([b[2] for b in ev]).tolist() == list(range(13))
    # evaluation: centre square of the shorter side, resized -> a uniform image stays uniform
    _png(root / "flat.png", size=(40, 10), value=200)
    flat = FileSplit(root, ["flat.png"], [[1, 0, 0]]).load_images([0], 8)
    assert flat.shape == (1, 3, 8, 8) and (flat == 200).all()


def test_missing_image_stops_by_default_and_skip_reports_count(image_list):
    root, ids, labels = image_list
    ids2 = ids + ["sub/missing_a.png", "sub/missing_b.png"]
    labels2 = np.concatenate([labels, [[1, 0, 0], [0, 1, 0]]])
    with pytest.raises(DataError, match=r"2 of 15 listed images do not exist .*missing_a.png.*missing='skip'"):
        FileSplit(root, ids2, labels2)
    with pytest.warns(UserWarning, match="skipped 2 of 15"):
        s = FileSplit(root, ids2, labels2, missing="skip")
    assert s.skipped == 2 and len(s) == 13 and s.ids == ids and torch.equal(s.labels, torch.as_tensor(labels).float())


def test_corrupt_and_truncated_images_name_the_file(image_list, tmp_path):
    root, ids, labels = image_list
    good = (root / "sub" / "0.png").read_bytes()
    (root / "sub" / "trunc.png").write_bytes(good[: len(good) // 2])
    (root / "sub" / "junk.jpg").write_bytes(b"this is not an image")
    with pytest.raises(DataError, match=r"1 listed image file\(s\) are truncated .*trunc.png"):  # found at load
        FileSplit(root, ["sub/trunc.png"], [[1, 0, 0]])
    fb = FileBatches(FileSplit(root, ["sub/trunc.png"], [[1, 0, 0]], check_files=False), 1, TensorTransform(8),
                     train=False)
    with pytest.raises(DataError, match=r"cannot decode image .*trunc.png"):  # unchecked: found when decoded
        list(fb.epoch(0))
    with pytest.raises(DataError, match=r"1 listed image file\(s\) are not an image .*junk.jpg"):  # found at load
        FileSplit(root, ["sub/0.png", "sub/junk.jpg"], [[1, 0, 0], [1, 0, 0]])
    # an image folder holding it fails the same way when decoded
    folder = tmp_path / "folder"
    _png(folder / "train" / "a" / "0.png")
    (folder / "train" / "b").mkdir(parents=True)
    (folder / "train" / "b" / "1.jpg").write_bytes(good[:40])
    with pytest.raises(DataError, match=r"cannot decode image .*1.jpg"):
        load_image_folder(folder, splits=("train",), cache=tmp_path / "c")


def test_empty_splits_are_errors(image_list):
    root, ids, labels = image_list
    with pytest.raises(DataError, match="empty"):
        Split(torch.zeros(0, 3, 8, 8, dtype=torch.uint8), torch.zeros(0, 3))
    # no listed image exists at all: a prefix problem, said as such (not "pass missing='skip'", not "empty")
    for missing in ("error", "skip"):
        with pytest.raises(DataError, match=r"query: none of the 1 listed images exists under data_root=.*do not "
                                            r"match.*'nope.png' was looked for at .*imgs/nope.png"):
            FileSplit(root, ["nope.png"], [[1, 0, 0]], missing=missing, name="query")


# ----------------------------------------------------------------------------- image folders and CIFAR sources
def test_image_folder_pool_is_sorted_and_cached(tmp_path, cache):
    root = tmp_path / "ds"
    for split, n in (("train", 3), ("test", 2)):
        for c in ("cat", "dog"):
            for k in range(n):
                _png(root / split / c / f"{k}.png", size=(8, 8), seed=k)
    pool = load_image_folder(root, cache=cache)
    assert pool.class_names == ["cat", "dog"] and pool.images.shape == (10, 3, 8, 8)
    assert pool.ids[:4] == ["train/cat/0.png", "train/cat/1.png", "train/cat/2.png", "train/dog/0.png"]
    assert pool.classes.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]
    again = load_image_folder(root, cache=cache)  # from the cache
    assert torch.equal(again.images, pool.images) and again.ids == pool.ids
    _png(root / "train" / "cat" / "0.png", size=(8, 8), seed=99)  # changed bytes -> new cache key
    changed = load_image_folder(root, cache=cache)
    assert not torch.equal(changed.images[0], pool.images[0])


def test_image_folder_hidden_folders_and_files_are_neither_classes_nor_images(tmp_path):
    """Jupyter's .ipynb_checkpoints is no class, macOS's ._x.png resource fork no image (issue 20: the
    own-images lesson lists its folders through the same scan)."""
    from hashlib_vit.data.sources import scan_image_folder

    root = tmp_path / "ds"
    for c in ("cat", "dog"):
        for k in range(2):
            _png(root / c / f"{k}.png", size=(8, 8), seed=k)
    _png(root / ".ipynb_checkpoints" / "0.png", size=(8, 8), seed=3)
    (root / "cat" / "._0.png").write_bytes(b"\0\5\26\7 resource fork")
    rel, cls, names = scan_image_folder(root)
    assert names == ["cat", "dog"] and rel == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"]
    assert cls.tolist() == [0, 0, 1, 1]


def _fake_cifar_batches(folder, per_batch=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        d = {"batch_label": name, "labels": rng.integers(0, 10, per_batch).tolist(),
             "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(d))
        out[name] = d
    return out


def test_cifar_python_batches_checksum_mismatch_refused_before_unpickling(tmp_path, cache, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    _fake_cifar_batches(folder)
    unpickled = []
    real_load = pickle.load
    monkeypatch.setattr(pickle, "load", lambda *a, **k: unpickled.append(1) or real_load(*a, **k))
    with pytest.raises(DataError, match=r"data_batch_1: md5 [0-9a-f]{32} does not match the official CIFAR-10 "
                                        r"file \(c99cafc152244af753f735de768cd75f\); refusing to unpickle"):
        load_cifar10_pool(tmp_path, cache=cache)
    assert unpickled == []


def test_cifar_python_opt_out_warns_and_orders_like_the_image_folder(tmp_path, cache):
    folder = tmp_path / "cifar-10-batches-py"
    batches = _fake_cifar_batches(folder)
    with pytest.warns(UserWarning, match="NOT checksum-verified"):
        pool = load_cifar10_python(folder, cache=cache, verify=False)
    assert len(pool) == 120 and pool.images.shape == (120, 3, 32, 32)
    # the k-th image of class c in the train batches is train/<c>/<k>.jpg
    labels = sum((batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    data = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    first = labels.index(3)
    j = pool.ids.index("train/cat/0000.jpg")
    assert pool.classes[j] == 3
    assert np.array_equal(pool.images[j].numpy().reshape(-1), data[first])
    # canonical order: train before test, then class, then k
    split = pool.split_names
    assert (split[:100] == "train").all() and (split[100:] == "test").all()
    assert np.all(np.diff(pool.classes[:100]) >= 0)


def test_missing_data_root_says_how_to_obtain_the_data(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*torchvision.datasets.CIFAR10\(root, download=True\)"):
        get_protocol("cifar10").load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no CIFAR-10 data.*download=True"):
        get_protocol("cifar10").load(tmp_path / "empty")
    for name, hint in (("coco", "DeepHash-pytorch"), ("imagenet100", "ILSVRC-2012"), ("nuswide21", "NUS-WIDE"),
                       ("nuswide81", "HashNet")):
        with pytest.raises(DataError, match=rf"does not exist.*{hint}"):
            get_protocol(name).load(tmp_path / "no_images")
    with pytest.raises(DataError, match=r"'nuswide81' has no default list folder: pass list_dir=.*HashNet"):
        get_protocol("nuswide81").load(tmp_path)
    with pytest.raises(DataError, match=r"list folder .*nope for protocol .coco. does not exist.*DeepHash-pytorch"):
        get_protocol("coco").load(tmp_path, list_dir=tmp_path / "nope")


# ----------------------------------------------------------------------------- split cache, export, import
def test_split_cache_written_once_then_checked(cache):
    d = get_protocol("digits").load(seed=0, cache=cache)
    folder = split_cache_folder("digits", 0, cache)
    assert d.split_dir == str(folder) and split_cache_is_complete(folder)
    man = json.loads((folder / "checksums.json").read_text())
    assert man["sha256"] == d.checksums and man["seed"] == 0
    text = (folder / "query.txt").read_text()
    assert text.splitlines()[0] == "digits/0019 0 0 0 0 0 0 0 0 0 1"
    assert get_protocol("digits").load(seed=0, cache=cache).checksums == d.checksums
    # a list file that no longer matches its own manifest is damaged: written again (the manifest still holds
    # the split drawn now); a cache that agrees with itself but not with the split drawn now is an error
    # (tests/test_checks_data.py::test_a_damaged_split_manifest_is_named_and_the_cache_rewritten)
    (folder / "query.txt").write_text(text.replace("digits/0019", "digits/0020"))
    with pytest.warns(UserWarning, match="query.txt no longer match"):
        assert get_protocol("digits").load(seed=0, cache=cache).checksums == d.checksums
    assert (folder / "query.txt").read_text() == text


def test_nothing_half_written_in_the_split_cache(cache, monkeypatch):
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the train list: interrupted after the query list was written
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        get_protocol("digits").load(seed=0, cache=cache)
    monkeypatch.setattr(os, "replace", real_replace)
    folder = split_cache_folder("digits", 0, cache)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["query.txt"]  # no temporary file, no train.txt, no manifest
    assert not split_cache_is_complete(folder)
    d = get_protocol("digits").load(seed=0, cache=cache)  # an incomplete cache is rebuilt
    assert split_cache_is_complete(folder) and sorted(p.name for p in folder.iterdir()) == [
        "checksums.json", "database.txt", "query.txt", "train.txt"]
    assert json.loads((folder / "checksums.json").read_text())["sha256"] == d.checksums


def test_export_and_import_round_trip_and_foreign_split(tmp_path, cache):
    d = get_protocol("digits").load(seed=0, cache=cache)
    sums = d.export(tmp_path / "exp")
    assert sums == d.checksums
    back = get_protocol("digits").load(seed=123, split_dir=tmp_path / "exp", cache=cache)
    assert back.checksums == d.checksums and back.query.ids == d.query.ids
    assert torch.equal(back.train.images, d.train.images)
    # a split made elsewhere: any ids of the pool, in its own order, plain or gzip
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    lab = lambda c: " ".join("1" if j == c else "0" for j in range(10))  # noqa: E731
    (foreign / "query.txt").write_text(f"digits/0005 {lab(5)}\ndigits/0000 {lab(0)}\n")
    (foreign / "train.txt").write_text(f"digits/0001 {lab(1)}\ndigits/0002 {lab(2)}\n")
    with gzip.open(foreign / "database.txt.gz", "wt") as f:
        f.write(f"digits/0003 {lab(3)}\ndigits/0004 {lab(4)}\ndigits/0001 {lab(1)}\ndigits/0002 {lab(2)}\n")
    f = get_protocol("digits").load(split_dir=foreign, cache=cache)  # digits: the training set is in the database
    assert f.sizes() == {"query": 2, "train": 2, "database": 4} and f.query.ids == ["digits/0005", "digits/0000"]
    assert f.query.classes.tolist() == [5, 0]
    (foreign / "query.txt").write_text(f"digits/0005 {lab(5)}\ndigits/9999 {lab(0)}\n")
    with pytest.raises(DataError, match=r"query.txt, line 2: 'digits/9999' is not an item of protocol 'digits'"):
        get_protocol("digits").load(split_dir=foreign, cache=cache)
    (foreign / "query.txt").write_text(f"digits/0005 {lab(4)}\n")
    with pytest.raises(DataError, match=r"query.txt, line 1: labels of 'digits/0005' differ"):
        get_protocol("digits").load(split_dir=foreign, cache=cache)


def test_split_files_are_byte_identical_for_the_same_seed(tmp_path):
    a = get_protocol("digits").load(seed=7, cache=tmp_path / "a")
    b = get_protocol("digits").load(seed=7, cache=tmp_path / "b")
    for n in ("query", "train", "database"):
        fa = (split_cache_folder("digits", 7, tmp_path / "a") / f"{n}.txt").read_bytes()
        fb = (split_cache_folder("digits", 7, tmp_path / "b") / f"{n}.txt").read_bytes()
        assert fa == fb and a.checksums[n] == b.checksums[n]


# ----------------------------------------------------------------------------- transforms
def test_protocol_transforms_match_backbone_size():
    p = get_protocol("cifar10")
    tr, ev = protocol_transforms(p, 224)
    assert (tr.out_size, tr.resize, tr.hflip) == (224, 256, True) and (ev.out_size, ev.resize, ev.hflip) == (224, 256, False)
    tr, ev = protocol_transforms(p, 32)
    assert (tr.out_size, tr.resize, tr.pad_crop, tr.hflip) == (32, None, 4, True) and ev.resize is None
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert protocol_transforms(p, 224)[1](x, train=False).shape == (2, 3, 224, 224)
    assert torch.equal(protocol_transforms(p, 32)[1](x, train=False), x.float() / 255)
    assert not protocol_transforms(get_protocol("digits"), 32)[0].hflip  # a mirrored digit is another digit


def test_make_batches_gives_tensor_batches_for_in_memory_splits():
    s = Split(torch.zeros(5, 3, 8, 8, dtype=torch.uint8), torch.eye(5))
    assert isinstance(make_batches(s, 2, TensorTransform(8), train=False), TensorBatches)


def test_custom_image_folder_protocol(tmp_path, cache):
    from hashlib_vit.data.protocols import image_folder_protocol

    for c in ("ant", "bee", "cow"):
        for k in range(6):
            _png(tmp_path / "set" / c / f"{k}.jpg", size=(24, 16), seed=k)
    p = image_folder_protocol("tmp-folder", num_classes=3, query_per_class=1, train_per_class=2,
                              train_in_database=False, topk=None, img_size=16, register=False)
    d = p.load(tmp_path / "set", seed=0, cache=cache)
    assert d.sizes() == {"query": 3, "train": 6, "database": 9}
    assert d.class_names == ["ant", "bee", "cow"] and d.query.images.shape == (3, 3, 16, 16)
    assert not set(d.train.ids) & set(d.database.ids) and d.query.load_images([0, 1], 8).shape == (2, 3, 8, 8)
    wrong = image_folder_protocol("tmp-folder4", num_classes=4, query_per_class=1, train_per_class=1,
                                  register=False)
    with pytest.raises(DataError, match="has 3 class folders.*expects 4"):
        wrong.load(tmp_path / "set", cache=cache)


@pytest.mark.parametrize("kw", [dict(out_size=32, pad_crop=4, hflip=True), dict(out_size=24, resize=28, hflip=True),
                                dict(out_size=32, pad_crop=2, hflip=False)])
def test_batched_augmentation_equals_per_image_reference(kw):
    from hashlib_vit.utils import batch_generator

    x = torch.randint(0, 256, (9, 3, 32, 32), dtype=torch.uint8)
    tf = TensorTransform(**kw)
    got = tf(x, train=True, generator=batch_generator(5, 1, 2, 3))
    # reference: one image at a time with the same random draws (crop offsets, then flips)
    g = batch_generator(5, 1, 2, 3)
    xf = x.float() / 255
    if tf.resize:
        exact = torch.nn.functional.interpolate(xf, size=(tf.resize,) * 2, mode="bilinear", antialias=True,
                                                align_corners=False)
        # on the CPU uint8 images are resized in uint8 (like PIL): within one grey level of the float resize
        xf = torch.nn.functional.interpolate(x, size=(tf.resize,) * 2, mode="bilinear", antialias=True,
                                             align_corners=False).float() / 255
        assert (xf - exact).abs().max() <= 1.01 / 255
    pad = 0 if tf.resize else tf.pad_crop
    xf = torch.nn.functional.pad(xf, (pad,) * 4, mode="reflect") if pad else xf
    span = xf.shape[-1] - tf.out_size
    oy, ox = torch.randint(0, span + 1, (9,), generator=g), torch.randint(0, span + 1, (9,), generator=g)
    flip = torch.rand(9, generator=g) < 0.5 if tf.hflip else torch.zeros(9, dtype=torch.bool)
    for i in range(9):
        ref = xf[i, :, oy[i]:oy[i] + tf.out_size, ox[i]:ox[i] + tf.out_size]
        ref = ref.flip(-1) if flip[i] else ref
        assert torch.allclose(got[i], ref, atol=1e-6)
    assert flip.any() or not tf.hflip


def test_run_experiment_uses_file_batches_for_list_file_data(image_list, tmp_path):
    from hashlib_vit.data import ProtocolData
    from hashlib_vit.experiment import run_experiment

    root, ids, labels = image_list
    proto = get_protocol("coco")  # any list-file protocol: only its transforms / topk / label type matter here
    labels80 = np.zeros((len(ids), 80), np.uint8)
    labels80[:, :3] = labels
    q, db = FileSplit(root, ids[:3], labels80[:3]), FileSplit(root, ids[3:], labels80[3:])
    data = ProtocolData(proto, q, FileSplit(root, ids, labels80), db, [str(i) for i in range(80)], 0, {
        "query": "q", "train": "t", "database": "d"})
    res = run_experiment(protocol="coco", backbone="vit32_test", img_size=16, bits=8, epochs=1, batch_size=4,
                         loss="dpsh", run_dir=None, progress=False, data=data, device="cpu", topk=None)
    assert res.query_codes.shape == (3, 8) and res.db_codes.shape == (10, 8)
    assert set(np.unique(res.db_codes)) <= {-1, 1} and len(res.history["steps"]) == 3


def test_cifar10_download_option_fetches_the_python_batches_when_root_is_empty(tmp_path, cache, monkeypatch):
    from hashlib_vit.data import sources

    calls = []

    def fake_download(root):  # stands in for torchvision.datasets.CIFAR10(root, download=True)
        calls.append(root)
        _fake_cifar_batches(root / "cifar-10-batches-py", per_batch=120)
        return root / "cifar-10-batches-py"

    monkeypatch.setattr(sources, "download_cifar10", fake_download)
    with pytest.warns(UserWarning, match="NOT checksum-verified"):
        d = get_protocol("cifar10-2").load(tmp_path / "dl", download=True, verify=False, cache=cache)
    assert calls == [tmp_path / "dl"] and d.sizes() == {"query": 120, "train": 600, "database": 600}
    with pytest.raises(DataError, match="md5"):  # the same files, now checked (they are not the official ones)
        get_protocol("cifar10").load(tmp_path / "dl", download=True, cache=cache)
    assert len(calls) == 1  # nothing downloaded when root already holds CIFAR-10
