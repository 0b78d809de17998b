"""Contract tests over the protocol registry: every registered protocol, built on small data made here
(the embedded digits, fake CIFAR-10 batches, list files + images in tmp_path) and on ../shared/data
when present, has the sizes, disjointness, label format and checksums its definition promises, and
``check_protocol`` passes on it; planted faults (a query in the database, a duplicate line, a multi-hot
row on a single-label protocol, ...) make ``check_protocol`` raise a DataError naming the split.

A newly registered protocol is collected automatically; it needs a small-data builder in ``_build``
(the test fails, not skips, until it has one).
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from hashlib_vit.data import PROTOCOLS, FileSplit, ProtocolData, Split, check_protocol, get_protocol
from hashlib_vit.data import protocols as P
from hashlib_vit.data.splits import split_checksum
from hashlib_vit.errors import DataError

NAMES = list(PROTOCOLS)
CIFAR_PER_BATCH = 1010  # 101 per class in each of the 6 batches: 606 per class, enough for 100 query + 500 train


# ----------------------------------------------------------------------------- small data made here
@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    """Python batches like the official ones (class-balanced, random pixels) and a cache folder."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        labels = rng.permutation(np.arange(CIFAR_PER_BATCH) % 10).tolist()
        data = rng.integers(0, 256, (CIFAR_PER_BATCH, 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({"batch_label": name, "labels": labels, "data": data}))
    return root, tmp_path_factory.mktemp("cifar_cache")


def _write_lists(proto, folder, images, *, n_query=4, n_train=6, n_db=12, seed=0):
    """query/train/database list files over `images` (query outside the database, train inside it)."""
    rng = np.random.default_rng(seed)
    c = proto.num_classes
    ids = [f"img/{k:03d}.png" for k in range(n_query + n_db)]
    labels = np.zeros((len(ids), c), np.uint8)
    labels[np.arange(len(ids)), np.arange(len(ids)) % c] = 1  # every item has one label ...
    if proto.multi_label:  # ... multi-label items get a few more
        extra = rng.random((len(ids), c)) < 2 / c
        labels |= extra.astype(np.uint8)
    for i in ids:
        p = images / i
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(p)
    line = lambda k: f"{ids[k]} {' '.join(map(str, labels[k]))}\n"  # noqa: E731
    q, db = range(n_query), range(n_query, n_query + n_db)
    tr = list(db)[:n_train]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.txt").write_text("".join(line(k) for k in q))
    (folder / "train.txt").write_text("".join(line(k) for k in tr))
    (folder / "database.txt").write_text("".join(line(k) for k in db))
    return {"query": n_query, "train": n_train, "database": n_db}


def _build(name, tmp_path, fake_cifar, seed=0):
    """(ProtocolData, sizes the test expects, options for check_protocol) for protocol `name` on small data."""
    proto = get_protocol(name)
    if proto.loader is P._load_digits:
        return proto.load(seed=seed, cache=tmp_path / "cache"), {"query": 100, "train": 500, "database": 1697}, {}
    if proto.loader is P._load_cifar10:
        root, cache = fake_cifar
        with pytest.warns(UserWarning, match="NOT checksum-verified"):
            data = proto.load(root, seed=seed, verify=False, cache=cache, cache_splits=False)
        pool = 6 * CIFAR_PER_BATCH
        if name == "cifar10-2":  # the official split: query = the test batch, train = database = the 5 train batches
            return data, {"query": CIFAR_PER_BATCH, "train": pool - CIFAR_PER_BATCH, "database": pool - CIFAR_PER_BATCH}, {}
        db = pool - proto.n_query - (0 if proto.train_in_database else proto.n_train)
        return data, {"query": proto.n_query, "train": proto.n_train, "database": db}, {}
    if proto.loader is P._load_lists:
        sizes = _write_lists(proto, tmp_path / "lists", tmp_path / "images")
        data = proto.load(tmp_path / "images", seed=seed, list_dir=tmp_path / "lists")
        return data, sizes, {"expected_sizes": sizes}  # the declared sizes are those of the published lists
    pytest.fail(f"protocol {name!r} (loader {proto.loader.__name__}) has no small-data builder in this test: add one")


def _with_extra(split, src, k: int):
    """A copy of `split` with item `k` of `src` appended."""
    if isinstance(split, Split):
        return Split(torch.cat([split.images, src.images[k:k + 1]]), torch.cat([split.labels, src.labels[k:k + 1]]),
                     split.ids + [src.ids[k]])
    return FileSplit(split.root, split.ids + [src.ids[k]], torch.cat([split.labels, src.labels[k:k + 1]]),
                     check_files=False)


def _subset(split, keep):
    """A copy of `split` with the items where `keep` is true."""
    idx = np.flatnonzero(keep)
    if isinstance(split, Split):
        return Split(split.images[idx], split.labels[idx], [split.ids[i] for i in idx])
    return FileSplit(split.root, [split.ids[i] for i in idx], split.labels[idx], check_files=False)


def _replace(data, **splits):
    kw = {n: splits.get(n, getattr(data, n)) for n in ("query", "train", "database")}
    return ProtocolData(data.protocol, kw["query"], kw["train"], kw["database"], data.class_names, data.seed,
                        {n: split_checksum(kw[n].ids, kw[n].labels.numpy()) for n in kw}, split_dir=None,
                        origin=data.origin, pool_size=data.pool_size)


# ----------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name", NAMES)
def test_protocol_declaration_is_consistent(name):
    p = get_protocol(name)
    assert p.name == name and p.num_classes >= 2 and p.n_query > 0 and p.n_train > 0
    assert p.topk is None or p.topk > 0
    if p.seeded:  # drawn per class: the totals are whole numbers per class
        assert p.n_query % p.num_classes == 0 and p.n_train % p.num_classes == 0
    if p.n_database is not None and p.train_in_database:
        assert p.n_database >= p.n_train
    assert p.summary()["protocol"] == name and p.description and p.source


@pytest.mark.parametrize("name", NAMES)
def test_protocol_contract_on_small_data(name, tmp_path, fake_cifar):
    p = get_protocol(name)
    data, sizes, opts = _build(name, tmp_path, fake_cifar)
    assert data.sizes() == sizes
    q, t, d = (list(getattr(data, n).ids) for n in ("query", "train", "database"))
    assert len(set(q)) == len(q) and len(set(t)) == len(t) and len(set(d)) == len(d)
    assert not set(q) & set(t)
    assert (set(q) <= set(d)) if p.query_in_database else not set(q) & set(d)
    assert (set(t) <= set(d)) if p.train_in_database else not set(t) & set(d)
    k = {n: getattr(data, n).labels.sum(1) for n in ("query", "train", "database")}
    for n, per_item in k.items():
        assert getattr(data, n).labels.shape[1] == p.num_classes
        assert (per_item >= 1).all() if p.multi_label else (per_item == 1).all(), n
    if p.seeded:  # the same number of queries and training items from every class
        assert np.bincount(data.query.classes, minlength=p.num_classes).tolist() == [p.n_query // p.num_classes] * p.num_classes
        assert np.bincount(data.train.classes, minlength=p.num_classes).tolist() == [p.n_train // p.num_classes] * p.num_classes
    assert data.checksums == {n: split_checksum(getattr(data, n).ids, getattr(data, n).labels.numpy())
                              for n in ("query", "train", "database")}
    report = check_protocol(data, **opts)
    assert report.ok and report.sizes == sizes and not report.failures
    table = report.to_frame()
    assert set(table["split"]) == {"query", "train", "database"} and table["ok"].all()
    assert {"size", "no duplicates", "label format", "query not in train", "checksum recorded"} <= set(table["check"])
    if not p.multi_label:  # one label per item: the per-class table adds up to the split sizes
        assert report.class_frame().sum().to_dict() == sizes
    assert report.label_frame()["items"].to_dict() == sizes and p.name in str(report)


@pytest.mark.parametrize("name", NAMES)
def test_checksums_are_stable_and_follow_the_seed(name, tmp_path, fake_cifar):
    p = get_protocol(name)
    a = _build(name, tmp_path, fake_cifar, seed=0)[0]
    b = _build(name, tmp_path, fake_cifar, seed=0)[0]
    c = _build(name, tmp_path, fake_cifar, seed=1)[0]
    assert a.checksums == b.checksums and a.query.ids == b.query.ids
    if p.seeded:  # another seed draws another split
        assert all(a.checksums[n] != c.checksums[n] for n in ("query", "train"))
        assert set(a.query.ids) != set(c.query.ids)
    else:  # official splits and published lists do not depend on the seed
        assert a.checksums == c.checksums


@pytest.mark.parametrize("name", NAMES)
def test_a_query_planted_in_the_database_is_refused(name, tmp_path, fake_cifar):
    data = _build(name, tmp_path, fake_cifar)[0]
    opts = {"expected_sizes": {n: len(getattr(data, n)) + (n == "database") for n in ("query", "train", "database")}}
    bad = _replace(data, database=_with_extra(data.database, data.query, 0))
    with pytest.raises(DataError, match=rf"database split of protocol '{name}': query not in database: .*"
                                        rf"found 1 query items in the database, e.g. '{data.query.ids[0]}'"):
        check_protocol(bad, **opts)
    report = check_protocol(bad, strict=False, **opts)
    assert not report.ok and [(f.check, f.split) for f in report.failures] == [("query not in database", "database")]


@pytest.mark.parametrize("name", NAMES)
def test_the_training_set_rule_of_the_protocol_is_enforced(name, tmp_path, fake_cifar):
    p = get_protocol(name)
    data = _build(name, tmp_path, fake_cifar)[0]
    if p.train_in_database:  # a training item taken out of the database
        bad = _replace(data, database=_subset(data.database, [i != data.train.ids[0] for i in data.database.ids]))
        want = r"train split of protocol '%s': train inside database: .*found 1 training items not in the database"
    else:  # a training item put into the database
        bad = _replace(data, database=_with_extra(data.database, data.train, 0))
        want = r"database split of protocol '%s': train not in database: .*found 1 training items in the database"
    with pytest.raises(DataError, match=want % name):
        check_protocol(bad, expected_sizes={n: len(getattr(bad, n)) for n in ("query", "train", "database")})


def test_a_duplicate_line_is_refused_naming_the_split(tmp_path):
    p = get_protocol("coco")
    sizes = _write_lists(p, tmp_path / "lists", tmp_path / "images")
    lines = (tmp_path / "lists" / "train.txt").read_text().splitlines(keepends=True)
    (tmp_path / "lists" / "train.txt").write_text("".join(lines + lines[2:3]))
    dup = lines[2].split()[0]
    with pytest.raises(DataError, match=rf"train split of protocol 'coco': no duplicates: expected every item once, "
                                        rf"found 1 repeated items, e.g. '{dup}' \(split files in .*lists\)"):
        p.load(tmp_path / "images", list_dir=tmp_path / "lists")  # refused at load
    # the same for an imported seeded split (digits): the line is repeated in the database
    d = get_protocol("digits").load(seed=0, cache=tmp_path / "cache")
    folder = tmp_path / "exported"
    d.export(folder)
    (folder / "checksums.json").unlink()
    text = (folder / "database.txt").read_text()
    (folder / "database.txt").write_text(text + text.splitlines(keepends=True)[5])
    with pytest.raises(DataError, match=r"database split of protocol 'digits': no duplicates: .*found 1 repeated items"):
        get_protocol("digits").load(split_dir=folder, cache=tmp_path / "cache")


def test_a_multi_hot_row_on_a_single_label_protocol_is_refused(tmp_path):
    p = get_protocol("imagenet100")
    assert not p.multi_label
    sizes = _write_lists(p, tmp_path / "lists", tmp_path / "images")
    text = (tmp_path / "lists" / "test.txt").read_text().splitlines(keepends=True)
    row = text[1].split()
    row[1 + 50] = "1"  # a second class on line 2
    text[1] = " ".join(row) + "\n"
    (tmp_path / "lists" / "test.txt").write_text("".join(text))
    with pytest.raises(DataError, match=rf"query split of protocol 'imagenet100': label format: expected exactly one "
                                        rf"class per row \(single-label\), found 1 rows with another number of labels, "
                                        rf"e.g. '{row[0]}' with 2"):
        p.load(tmp_path / "images", list_dir=tmp_path / "lists")  # the list file is well-formed: refused at load
    # a multi-label protocol accepts the same row
    coco = get_protocol("coco")
    _write_lists(coco, tmp_path / "coco_lists", tmp_path / "images")
    assert check_protocol(coco.load(tmp_path / "images", list_dir=tmp_path / "coco_lists"), expected_sizes=sizes).ok


def test_sizes_follow_the_protocol_rule(tmp_path, fake_cifar):
    # published-list protocols: the declared sizes (a small list folder is refused unless its sizes are given)
    p = get_protocol("coco")
    _write_lists(p, tmp_path / "lists", tmp_path / "images")
    data = p.load(tmp_path / "images", list_dir=tmp_path / "lists")
    with pytest.raises(DataError, match=r"query split of protocol 'coco': size: expected 5000 items \(the protocol's "
                                        r"list files.*\), found 4 items"):
        check_protocol(data)
    # seeded draws: the same count in every class
    d = get_protocol("digits").load(seed=0, cache=tmp_path / "cache")
    first0 = int(np.flatnonzero(d.query.classes == 0)[0])
    fewer = _replace(d, query=_subset(d.query, np.arange(len(d.query)) != first0))
    with pytest.raises(DataError, match=r"query split of protocol 'digits': size: expected 100 items.*found 99 items; "
                                        r"query split of protocol 'digits': items per class: expected 10 items in each "
                                        r"of the 10 classes, found class '0' has 9"):
        check_protocol(fewer)
    with pytest.raises(DataError, match=r"expected_sizes names \['test'\]"):
        check_protocol(d, expected_sizes={"test": 3})


def test_checksums_are_checked_against_the_text_and_the_files(tmp_path):
    d = get_protocol("digits").load(seed=0, cache=tmp_path / "cache")
    rep = check_protocol(d)
    frame = rep.sizes_frame()
    assert frame["file_matches"].tolist() == [True, True, True] and frame["sha256"].to_dict() == d.checksums
    wrong = ProtocolData(d.protocol, d.query, d.train, d.database, d.class_names, d.seed,
                         {**d.checksums, "train": "0" * 64}, split_dir=None, origin=d.origin, pool_size=d.pool_size)
    with pytest.raises(DataError, match=r"train split of protocol 'digits': checksum recorded: .*found 000000000000"):
        check_protocol(wrong)
    # the list file on disk changed after the load (a line edited in the cache folder)
    path = tmp_path / "cache" / "splits" / "digits" / "seed0" / "query.txt"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[1:]))
    with pytest.raises(DataError, match=r"query split of protocol 'digits': list file on disk: expected .*seed0: "
                                        r"same sha256 \(ccd6aa1abdca..\), found a432920b572f..$"):
        check_protocol(d)
    assert not check_protocol(d, strict=False).sizes_frame()["file_matches"]["query"]
    assert check_protocol(d, files=False).ok  # the files are not read; the manifest still matches the split
    man = path.parent / "checksums.json"
    man.write_text(man.read_text().replace(d.checksums["train"], "1" * 64))
    with pytest.raises(DataError, match=r"train split of protocol 'digits': checksums.json entry: .*found 111111111111"):
        check_protocol(d, files=False)


def test_check_protocol_needs_protocol_data():
    with pytest.raises(DataError, match="check_protocol needs a ProtocolData"):
        check_protocol({"query": []})


# ----------------------------------------------------------------------------- on ../shared/data
@pytest.mark.realdata
@pytest.mark.parametrize("name", ["coco", "imagenet100"])
def test_published_lists_meet_their_protocol(name, shared_data):
    # the list files only (the images are not here): declared sizes, disjointness, labels, checksums
    p = get_protocol(name)
    lists = shared_data / "hash_lists" / p.list_dir.rsplit("/", 1)[-1]
    data = p.load(shared_data, list_dir=lists, check_files=False)
    report = check_protocol(data)
    assert report.origin == "lists" and data.sizes() == {"query": p.n_query, "train": p.n_train,
                                                         "database": p.n_database}
    assert report.sizes_frame()["file_matches"].all()
    assert check_protocol(p.load(shared_data, list_dir=lists, seed=3, check_files=False)).checksums == report.checksums


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["cifar10", "cifar10-1", "cifar10-2"])
def test_cifar10_protocols_meet_their_definition_on_the_real_data(name, shared_data):
    p = get_protocol(name)
    data = p.load(shared_data / "cifar10", seed=0)
    report = check_protocol(data)
    assert data.sizes() == {"query": p.n_query, "train": p.n_train, "database": p.n_database}
    assert report.expected_sizes == report.declared_sizes and report.ok
    if name == "cifar10-2":
        assert all(i.startswith("test/") for i in data.query.ids) and data.train.ids == data.database.ids


def test_skipped_images_lower_the_expected_sizes_of_a_list_protocol(tmp_path):
    import dataclasses

    # coco declared with the sizes of the small lists written here; two listed images then go missing
    small = dataclasses.replace(get_protocol("coco"), n_query=4, n_train=6, n_database=12)
    _write_lists(small, tmp_path / "lists", tmp_path / "images")
    assert check_protocol(small.load(tmp_path / "images", list_dir=tmp_path / "lists")).ok
    (tmp_path / "images" / "img" / "001.png").unlink()  # a query image
    (tmp_path / "images" / "img" / "005.png").unlink()  # a training (and database) image
    with pytest.warns(UserWarning, match="skipped"):
        data = small.load(tmp_path / "images", list_dir=tmp_path / "lists", missing="skip")
    report = check_protocol(data)
    assert report.expected_sizes == {"query": 3, "train": 5, "database": 11} == data.sizes()
    assert report.skipped == {"query": 1, "train": 1, "database": 1}
    # the loaded splits are subsets of their files: not compared with them
    assert report.sizes_frame()["file_matches"].isna().all() and "list file on disk" not in set(report.to_frame()["check"])


def test_a_protocol_with_queries_inside_the_database(tmp_path):
    import dataclasses

    # e.g. a protocol searching the queries' own collection: every query item must then be in the database
    p = dataclasses.replace(get_protocol("coco"), query_in_database=True)
    sizes = _write_lists(p, tmp_path / "lists", tmp_path / "images")
    with pytest.raises(DataError, match=r"query split of protocol 'coco': query inside database: expected every query "
                                        r"item in the database, found 4 missing, e.g. 'img/000.png'"):
        p.load(tmp_path / "images", list_dir=tmp_path / "lists")
    data = dataclasses.replace(get_protocol("coco")).load(tmp_path / "images", list_dir=tmp_path / "lists")
    data.protocol = p
    db = _with_extra(data.database, data.query, 0)
    for k in range(1, len(data.query)):
        db = _with_extra(db, data.query, k)
    inside = _replace(data, database=db)
    report = check_protocol(inside, expected_sizes={**sizes, "database": sizes["database"] + 4})
    assert report.ok and "query inside database" in set(report.to_frame()["check"])


def test_label_width_values_and_agreement_between_splits(tmp_path):
    d = get_protocol("digits").load(seed=0, cache=tmp_path / "cache")
    narrow = _replace(d, query=Split(d.query.images, d.query.labels[:, :9], d.query.ids))
    with pytest.raises(DataError, match=r"query split of protocol 'digits': label width: expected \(N, 10\) labels, "
                                        r"found shape \(100, 9\)"):
        check_protocol(narrow)
    half = d.train.labels.clone()
    half[3] *= 0.5
    soft = _replace(d, train=Split(d.train.images, half, d.train.ids))
    with pytest.raises(DataError, match=rf"train split of protocol 'digits': labels are 0/1: .*found 1 rows with other "
                                        rf"values, e.g. '{d.train.ids[3]}'"):
        check_protocol(soft)
    # a training item whose label differs from its copy in the database
    moved = d.train.labels.clone()
    moved[7] = moved[7].roll(1)
    other = _replace(d, train=Split(d.train.images, moved, d.train.ids))
    report = check_protocol(other, strict=False)
    assert [(f.check, f.split) for f in report.failures] == [("items per class", "train"),
                                                             ("same labels as in the database", "train")]
    assert f"e.g. '{d.train.ids[7]}'" in report.failures[1].found
