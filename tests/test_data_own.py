"""Your own images (data/own.py): the demo folder, the layout / count / header checks and the protocol."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hashlib_vit.data import PROTOCOLS, check_protocol
from hashlib_vit.data.own import (build_demo_folder, check_images, own_images_protocol, protocol_images,
                                  scan_class_folder, scan_list_file)
from hashlib_vit.errors import DataError

CIFAR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10"


def _img(path: Path, mode: str = "RGB", size=(12, 10), seed: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)


def _folder(root: Path, classes=("ant", "bee", "cow"), n=6, modes=("RGB",)):
    for c in classes:
        for k in range(n):
            _img(root / c / f"{k}.png", modes[k % len(modes)], seed=k)
    return root


def test_demo_folder_from_digits_written_once_and_reused(tmp_path):
    d = build_demo_folder(tmp_path / "demo", classes=3, per_class=7, source="digits")
    assert d.source == "digits" and d.class_names == ["zero", "one", "two"] and len(d) == 21
    files = sorted(p.relative_to(d.path).as_posix() for p in d.path.rglob("*.png"))
    assert len(files) == 21 and files[0] == "one/0000.png"
    assert json.loads((d.path / "demo.json").read_text())["per_class"] == 7
    stamp = (d.path / "one" / "0000.png").stat().st_mtime_ns
    again = build_demo_folder(tmp_path / "demo", classes=3, per_class=7, source="digits")
    assert again == d and (d.path / "one" / "0000.png").stat().st_mtime_ns == stamp  # reused, not rewritten
    bigger = build_demo_folder(tmp_path / "demo", classes=2, per_class=9, source="digits")  # an older demo: replaced
    assert len(list(bigger.path.rglob("*.png"))) == 18 and not (bigger.path / "two").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left behind"


def test_demo_folder_auto_falls_back_to_digits_and_never_overwrites(tmp_path):
    d = build_demo_folder(tmp_path / "demo", classes=2, per_class=3, cifar_root=tmp_path / "nothing")
    assert d.source == "digits"
    with pytest.raises(DataError, match="lacks cifar10_jpg"):
        build_demo_folder(tmp_path / "x", source="cifar10", cifar_root=tmp_path / "nothing")
    mine = tmp_path / "mine"
    _img(mine / "a" / "1.png")
    with pytest.raises(DataError, match="not a demo folder"):
        build_demo_folder(mine, classes=2, per_class=3, source="digits")
    assert (mine / "a" / "1.png").is_file()
    for bad in (dict(classes=1), dict(classes=11), dict(per_class=1), dict(per_class=175), dict(source="web")):
        with pytest.raises(DataError):
            build_demo_folder(tmp_path / "bad", **{"source": "digits", **bad})


@pytest.mark.skipif(not (CIFAR / "cifar10_jpg_airplane.zip").is_file(), reason="../shared/data/cifar10 not here")
def test_demo_folder_from_cifar10_copies_jpeg_bytes(tmp_path):
    import zipfile

    d = build_demo_folder(tmp_path / "demo", classes=2, per_class=5, cifar_root=CIFAR)
    assert d.source == "cifar10" and d.class_names == ["airplane", "automobile"]
    with zipfile.ZipFile(CIFAR / "cifar10_jpg_airplane.zip") as z:
        assert (d.path / "airplane" / "0003.jpg").read_bytes() == z.read("train/airplane/0003.jpg")
    assert len(list(d.path.rglob("*.jpg"))) == 10


def test_folder_protocol_checked_split(tmp_path):
    root = _folder(tmp_path / "set", n=7, modes=("RGB", "L", "P", "RGBA"))
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    p = own_images_protocol("t-own", image_dir=root, query_per_class=2, train_per_class=3, img_size=16)
    try:
        assert PROTOCOLS.get("t-own") is p and p.num_classes == 3 and p.n_database == 15
        images = protocol_images(p)
        assert images.class_names == ["ant", "bee", "cow"] and sum(images.modes.values()) == 21
        assert set(images.modes) == {"RGB", "L", "P", "RGBA"}  # mixed modes: all converted to RGB
        data = p.load(seed=3)
        assert data.sizes() == {"query": 6, "train": 9, "database": 15}
        assert data.query.images.shape == (6, 3, 16, 16) and check_protocol(data, files=False).ok
        assert not set(data.query.ids) & set(data.database.ids) and set(data.train.ids) <= set(data.database.ids)
        assert p.load(seed=3).checksums == data.checksums and p.load(seed=4).checksums != data.checksums
        again = own_images_protocol("t-own", image_dir=root, query_per_class=1, train_per_class=1)  # re-registered
        assert PROTOCOLS.get("t-own") is again
        out = p.load(seed=0, split_dir=None)
        assert out.split_dir is None  # the split is not cached; export it where the run is
    finally:
        PROTOCOLS._items.pop("t-own", None)


def test_train_outside_database_needs_one_more(tmp_path):
    root = _folder(tmp_path / "set", n=4)
    with pytest.raises(DataError, match="at least 5 images"):
        own_images_protocol(image_dir=root, query_per_class=1, train_per_class=3, train_in_database=False,
                            register=False)
    p = own_images_protocol(image_dir=root, query_per_class=1, train_per_class=2, train_in_database=False,
                            register=False)
    d = p.load(seed=0)
    assert d.sizes() == {"query": 3, "train": 6, "database": 3} and not set(d.train.ids) & set(d.database.ids)


@pytest.mark.parametrize("make, match", [
    (lambda r: r.mkdir(), "is empty"),
    (lambda r: _img(r / "a.png"), "no class sub-folders"),
    (lambda r: (_folder(r), _img(r / "stray.jpg")), "mixes class sub-folders.*stray.jpg"),
    (lambda r: (_folder(r), _img(r / "ant" / "train" / "x.png")), "ant holds sub-folder"),
    (lambda r: (_folder(r), (r / "empty").mkdir()), "empty holds no images"),
    (lambda r: _folder(r, classes=("only",)), "one class folder"),
    (lambda r: None, "does not exist"),
])
def test_bad_folders_named(tmp_path, make, match):
    root = tmp_path / "set"
    make(root)
    with pytest.raises(DataError, match=match):
        scan_class_folder(root)


def test_bad_images_and_short_classes_named_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHLIB_VIT_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "set", n=5)
    (root / "bee" / "zz.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read image .*bee/zz\.jpg"):
        own_images_protocol(image_dir=root, query_per_class=1, train_per_class=1, register=False)
    (root / "bee" / "zz.jpg").unlink()
    with pytest.raises(DataError, match=r"at least 7 images .*ant/ has 5.*bee/ has 5.*cow/ has 5"):
        own_images_protocol(image_dir=root, query_per_class=2, train_per_class=5, register=False)
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(root / "cow" / "deep.png")  # 16-bit greyscale
    with pytest.raises(DataError, match=r"deep\.png has mode I"):
        own_images_protocol(image_dir=root, query_per_class=1, train_per_class=1, register=False)
    assert not (tmp_path / "cache").exists()


def test_truncated_image_named_at_decode(tmp_path):
    root = _folder(tmp_path / "set", n=3)
    good = (root / "ant" / "0.png").read_bytes()
    (root / "ant" / "0.png").write_bytes(good[: len(good) // 2])  # header readable, pixels cut off
    p = own_images_protocol(image_dir=root, query_per_class=1, train_per_class=1, register=False)
    with pytest.raises(DataError, match=r"cannot decode image .*ant/0\.png"):
        p.load(seed=0)


def test_list_file_protocol(tmp_path):
    root = _folder(tmp_path / "imgs", classes=("a", "b"), n=4)
    lines = [f"{c}/{k}.png {int(c == 'a')} {int(c == 'b')}" for c in ("a", "b") for k in range(4)]
    (tmp_path / "imgs" / "all.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "imgs" / "classes.txt").write_text("0 apple\n1 banana\n")
    images = scan_list_file(tmp_path / "imgs" / "all.txt")
    assert images.class_names == ["apple", "banana"] and len(images) == 8 and images.base == root
    p = own_images_protocol(list_file=tmp_path / "imgs" / "all.txt", query_per_class=1, train_per_class=2,
                            register=False)
    assert p.load(seed=0).sizes() == {"query": 2, "train": 4, "database": 6}
    lst = tmp_path / "l.txt"  # paths relative to image_root
    lst.write_text("\n".join(lines) + "\n")
    assert len(scan_list_file(lst, image_root=root)) == 8
    with pytest.raises(DataError, match=r"l\.txt, line 1: image .*a/0\.png is not a file"):
        scan_list_file(lst)


@pytest.mark.parametrize("text, match", [
    ("a/0.png 1 1\n", "line 1: 'a/0.png' has 2 labels 1"),
    ("a/0.png 1 0\nb/0.png 0 1\na/0.png 1 0\n", "line 3: 'a/0.png' is listed again"),
    ("a/0.png 1 0\na/1.png 1 0\n", "same class"),
    ("a/0.png 1 0\nb/0.png 0 2\n", "line 2: label 2 is '2'"),
])
def test_bad_list_files_named(tmp_path, text, match):
    _folder(tmp_path, classes=("a", "b"), n=2)
    (tmp_path / "list.txt").write_text(text)
    with pytest.raises(DataError, match=match):
        scan_list_file(tmp_path / "list.txt")


def test_exactly_one_input(tmp_path):
    with pytest.raises(DataError, match="exactly one of image_dir"):
        own_images_protocol(register=False)
    with pytest.raises(DataError, match="exactly one of image_dir"):
        own_images_protocol(image_dir=tmp_path, list_file=tmp_path / "x.txt", register=False)
    with pytest.raises(DataError, match="needs list_file"):
        own_images_protocol(image_dir=tmp_path, image_root=tmp_path, register=False)
    with pytest.raises(DataError, match="is a folder"):
        scan_list_file(tmp_path)


def test_check_images_counts_modes(tmp_path):
    images = scan_class_folder(_folder(tmp_path / "s", n=4, modes=("RGB", "L")))
    assert check_images(images, threads=1) == {"L": 6, "RGB": 6}


def test_registry_replace():
    from hashlib_vit.registry import Registry

    r = Registry("thing")
    r.register("a", 1)
    with pytest.raises(KeyError, match="registered twice"):
        r.register("a", 2)
    r.register("a", 3, replace=True)
    assert r.get("a") == 3
