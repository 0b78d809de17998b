"""Issue 18, kind 2: data that is wrong is refused at load, naming the file, line or folder and what was expected;
paths with spaces round-trip; skipped images are recorded with the run."""
import hashlib
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from hashlib_vit.data import get_protocol
from hashlib_vit.data.protocols import image_folder_protocol
from hashlib_vit.data.protocols import split_cache_folder
from hashlib_vit.data.splits import read_manifest
from hashlib_vit.errors import DataError


def _png(path, seed=0, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _lists(folder, rows: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in rows.items():
        (folder / f"{name}.txt").write_text("".join(f"{p} {' '.join(map(str, lab))}\n" for p, lab in lines))


def _onehot(c, k=80):
    return [1 if j == c else 0 for j in range(k)]


@pytest.fixture
def coco_like(tmp_path):
    """A tiny COCO-layout list folder (80 classes) over real PNGs: 3 query, 8 database (train = 4 of them)."""
    return _coco_folder(tmp_path, "images", "q/{i}.png", "db/{i}.png")


def _coco_folder(tmp_path, images_name, query_path, db_path):
    """Images (real PNGs) and COCO-layout lists: 3 query items, 8 database items, train = the first 4."""
    images = tmp_path / images_name
    q = [(query_path.format(i=i), _onehot(i)) for i in range(3)]
    db = [(db_path.format(i=i), _onehot(i % 5)) for i in range(8)]
    for k, (p, _) in enumerate(q + db):
        _png(images / p, seed=k)
    _lists(tmp_path / "lists", {"test": q, "train": db[:4], "database": db})
    return images, tmp_path / "lists", q, db


def test_an_image_folder_class_without_enough_images_names_the_folder(tmp_path):
    p = image_folder_protocol("t18_folder", num_classes=3, query_per_class=2, train_per_class=3, register=False)
    for c, n in (("cat", 8), ("dog", 8), ("empty", 0)):
        (tmp_path / "f" / c).mkdir(parents=True)
        for k in range(n):
            _png(tmp_path / "f" / c / f"{k}.png", seed=k)
    with pytest.raises(DataError, match=r"image folder .*f: each class needs at least 5 images \(2 query \+ 3 train per "
                                        r"class for protocol 't18_folder'\); too few in empty/ \(0\)"):
        p.load(tmp_path / "f", cache=tmp_path / "cache")
    for k in range(4):  # 4 < 5 is still too few; said with the count
        _png(tmp_path / "f" / "empty" / f"{k}.png", seed=k)
    with pytest.raises(DataError, match=r"too few in empty/ \(4\)"):
        p.load(tmp_path / "f", cache=tmp_path / "cache")


def test_a_zero_byte_or_non_image_file_in_a_list_is_refused_at_load(coco_like):
    images, lists, _, db = coco_like
    (images / db[2][0]).write_bytes(b"")
    with pytest.raises(DataError, match=r"coco train split \(.*lists/train.txt\): 1 listed image file\(s\) are "
                                        r"empty \(0 bytes\), e.g. .*images/db/2.png; replace them or remove"):
        get_protocol("coco").load(images, list_dir=lists)
    with pytest.raises(DataError, match=r"are empty .*missing='skip' leaves out only images that do not exist"):
        get_protocol("coco").load(images, list_dir=lists, missing="skip")  # a broken file is not a missing one
    (images / db[2][0]).write_text("<html>not found</html>")
    with pytest.raises(DataError, match=r"are not an image .*db/2.png"):
        get_protocol("coco").load(images, list_dir=lists)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_a_truncated_image_with_a_valid_header_is_refused_at_load(tmp_path, ext):
    """Cut short by a copy or a download: the header is fine, the end marker is missing. Found at load (was:
    accepted, then the run failed when the image was decoded, after its run directory was reset)."""

    images, lists, _, db = _coco_folder(tmp_path, "images", "q/{i}." + ext, "db/{i}." + ext)
    path = images / db[3][0]
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    whole = path.read_bytes()
    get_protocol("coco").load(images, list_dir=lists)  # complete files: accepted
    path.write_bytes(whole + b"\0" * 100)  # trailing bytes after the end marker: still a valid image
    get_protocol("coco").load(images, list_dir=lists)
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"1 listed image file\(s\) are truncated \(the file ends before the image "
                                        r"does.*\), e.g. .*db/3\." + ext):
        get_protocol("coco").load(images, list_dir=lists)


def test_a_query_listed_in_the_database_is_a_leak_refused_at_load(tmp_path):
    d = get_protocol("digits").load(seed=0, cache=tmp_path / "cache")
    d.export(tmp_path / "split")
    (tmp_path / "split" / "checksums.json").unlink()
    q_line = (tmp_path / "split" / "query.txt").read_text().splitlines(keepends=True)[3]
    with open(tmp_path / "split" / "database.txt", "a") as f:
        f.write(q_line)
    with pytest.raises(DataError, match=rf"database split of protocol 'digits': query not in database: .*found 1 query "
                                        rf"items in the database, e.g. '{q_line.split()[0]}' \(split files in .*split\)"):
        get_protocol("digits").load(split_dir=tmp_path / "split", cache=tmp_path / "cache")


def test_duplicates_and_labels_that_do_not_fit_the_protocol(tmp_path, coco_like):
    images, lists, q, db = coco_like
    _lists(lists, {"test": q + q[:1], "train": db[:4], "database": db})
    with pytest.raises(DataError, match=r"query split of protocol 'coco': no duplicates: .*'q/0.png'"):
        get_protocol("coco").load(images, list_dir=lists)
    # an all-zero row on a multi-label protocol, and a multi-hot / all-zero row on a single-label one (imagenet100)
    _lists(lists, {"test": q[:2] + [(q[2][0], [0] * 80)], "train": db[:4], "database": db})
    with pytest.raises(DataError, match=r"query split of protocol 'coco': label format: .*at least one"):
        get_protocol("coco").load(images, list_dir=lists)
    one = lambda c: _onehot(c, 100)  # noqa: E731
    qi = [(p, one(k)) for k, (p, _) in enumerate(q)]
    dbi = [(p, one(k % 5)) for k, (p, _) in enumerate(db)]
    for bad in ([0] * 100, [1, 1] + [0] * 98):
        _lists(lists, {"test": qi[:2] + [(q[2][0], bad)], "train": dbi[:4], "database": dbi})
        with pytest.raises(DataError, match=r"query split of protocol 'imagenet100': label format: expected exactly one "
                                            r"class per row .*'q/2.png' with %d" % sum(bad)):
            get_protocol("imagenet100").load(images, list_dir=lists)
    _lists(lists, {"test": [(p, lab[:79]) for p, lab in q], "train": db[:4], "database": db})  # width 79, not 80
    with pytest.raises(DataError, match=r"test.txt, line 1: expected 80 labels after the path, got 79"):
        get_protocol("coco").load(images, list_dir=lists)


def test_paths_with_spaces_round_trip_through_lists_export_and_the_split_cache(tmp_path):
    images, _, q, db = _coco_folder(tmp_path, "my images", "query set/cat {i}.png", "data base/ünï cødé {i}.png")
    data = get_protocol("coco").load(images, list_dir=tmp_path / "lists")
    assert data.query.ids == [p for p, _ in q] and data.database.ids == [p for p, _ in db]
    data.export(tmp_path / "exported")
    back = get_protocol("coco").load(images, split_dir=tmp_path / "exported")
    assert back.query.ids == data.query.ids and back.checksums == data.checksums
    assert np.array_equal(back.database.labels.numpy(), data.database.labels.numpy())


def test_no_listed_image_found_is_a_prefix_mismatch_showing_where_it_looked(coco_like, tmp_path):
    images, lists, q, db = coco_like
    # lists written with a prefix the image root does not have (HashNet's './data/coco/...' style)
    _lists(lists, {"test": [("./data/coco/" + p, lab) for p, lab in q], "train": db[:4], "database": db})
    for missing in ("error", "skip"):
        with pytest.raises(DataError, match=r"coco query split .*none of the 3 listed images exists under data_root=.*do "
                                            r"not match.*'./data/coco/q/0.png' was looked for at .*images/data/coco/q/"
                                            r"0.png.*carry the prefix 'data/coco'"):
            get_protocol("coco").load(images, list_dir=lists, missing=missing)


def test_skipped_images_are_recorded_in_env_and_metrics(coco_like, tmp_path):
    from hashlib_vit.experiment import run_experiment

    images, lists, q, db = coco_like
    (images / db[6][0]).unlink()
    (images / db[7][0]).unlink()
    with pytest.warns(UserWarning, match="skipped 2 of 8"):
        data = get_protocol("coco").load(images, list_dir=lists, missing="skip")
    assert data.skipped() == {"database": {"count": 2, "examples": [db[6][0], db[7][0]]}}
    res = run_experiment(protocol="coco", data=data, data_options={"missing": "skip"}, backbone="vit32_test", bits=16,
                         epochs=1, batch_size=4, topk=None, device="cpu", progress=False, run_dir=str(tmp_path / "run"))
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["skipped_images"] == {"database": {"count": 2, "examples": [db[6][0], db[7][0]]}}
    assert res.metrics["skipped_images"] == {"database": 2}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_images"] == {"database": 2}


def test_a_damaged_split_manifest_is_named_and_the_cache_rewritten(tmp_path):
    d = get_protocol("digits").load(seed=0, cache=tmp_path / "cache")
    folder = split_cache_folder("digits", 0, tmp_path / "cache")
    (folder / "checksums.json").write_text('{"sha256": {"query": ')
    with pytest.raises(DataError, match=r"split manifest .*checksums.json is not valid JSON \(line 1"):
        read_manifest(folder)
    with pytest.warns(UserWarning, match="writing the split cache .* again"):
        again = get_protocol("digits").load(seed=0, cache=tmp_path / "cache")
    assert again.checksums == d.checksums and read_manifest(folder) == d.checksums
    (folder / "checksums.json").write_text('{"sha256": {"query": 5}}')
    with pytest.raises(DataError, match=r"field 'sha256.query' = 5 is not a sha256"):
        read_manifest(folder)
    (folder / "checksums.json").write_text('{"sha256": ["a"]}')
    with pytest.raises(DataError, match=r"field 'sha256' must be a mapping"):
        read_manifest(folder)
    # a cached list file edited or damaged (it disagrees with its own manifest): named and written again
    export = get_protocol("digits").load(seed=0, cache=tmp_path / "cache2")
    folder2 = split_cache_folder("digits", 0, tmp_path / "cache2")
    q = folder2 / "query.txt"
    q.write_text(q.read_text().replace("digits/", "digitz/", 1))
    with pytest.warns(UserWarning, match=r"query.txt no longer match\(es\) the sha256 in its checksums.json"):
        again = get_protocol("digits").load(seed=0, cache=tmp_path / "cache2")
    assert again.checksums == export.checksums and read_manifest(folder2) == export.checksums
    # a cache whose files and manifest agree but differ from the split drawn now: the data or the code changed
    (folder2 / "query.txt").write_text(q.read_text().replace("digits/", "digitz/", 1))
    sums = json.loads((folder2 / "checksums.json").read_text())  # the manifest made to agree with the file
    sums["sha256"]["query"] = hashlib.sha256((folder2 / "query.txt").read_bytes()).hexdigest()
    (folder2 / "checksums.json").write_text(json.dumps(sums))
    with pytest.raises(DataError, match=r"differs from the split drawn now .* the data or the split code changed"):
        get_protocol("digits").load(seed=0, cache=tmp_path / "cache2")
    # an imported split folder with a damaged manifest is the user's: refused, named, never rewritten
    d.export(tmp_path / "mine")
    (tmp_path / "mine" / "checksums.json").write_text("not json")
    with pytest.raises(DataError, match=r"split manifest .*mine/checksums.json is not valid JSON"):
        get_protocol("digits").load(split_dir=tmp_path / "mine", cache=tmp_path / "cache")
    assert (tmp_path / "mine" / "checksums.json").read_text() == "not json"


def test_a_truncated_cifar_archive_is_named(tmp_path):
    from hashlib_vit.data.sources import CIFAR10_CLASSES, load_cifar10_pool

    root = tmp_path / "cifar"
    root.mkdir()
    buf = None
    for c in CIFAR10_CLASSES:
        with zipfile.ZipFile(root / f"cifar10_jpg_{c}.zip", "w") as z:
            _png(tmp_path / "x.png")
            z.write(tmp_path / "x.png", f"train/{c}/0.png")
        buf = (root / f"cifar10_jpg_{c}.zip").read_bytes()
    (root / "cifar10_jpg_truck.zip").write_bytes(buf[: len(buf) // 2])
    with pytest.raises(DataError, match=r"CIFAR-10 archive .*cifar10_jpg_truck.zip is damaged or truncated"):
        load_cifar10_pool(root, cache=tmp_path / "cache")


def test_a_data_root_given_to_the_embedded_digits_is_said_to_be_unused(tmp_path):
    with pytest.warns(UserWarning, match=r"protocol 'digits' is embedded .*data_root='/nonexistent' is not used"):
        get_protocol("digits").load("/nonexistent", cache=tmp_path / "c")
