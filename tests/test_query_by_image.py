"""Query by image: an uploaded image prepared exactly as the protocol's own (size, channels, grey levels),
encoded, searched; the search UI's logic (QuerySearch) without a browser."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from hashlib_vit.data import get_protocol
from hashlib_vit.data.datasets import load_square
from hashlib_vit.data.digits import load_digits_images
from hashlib_vit.data.query_images import digits_levels, load_size, prepare_query_images, read_query_image
from hashlib_vit.errors import DataError
from hashlib_vit.retrieval.index import HashIndex
from hashlib_vit.retrieval.query import encode_prepared, encode_query_images, search_query_images


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


class ProjModel(torch.nn.Module):
    """A stand-in hash model: a fixed random projection of the normalised image, signed."""

    def __init__(self, img_size=32, bits=16, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.img_size = img_size
        self.w = torch.nn.Parameter(torch.randn(3 * img_size * img_size, bits, generator=g), requires_grad=False)

    def encode(self, x):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, self.img_size, self.img_size)
        u = (x.flatten(1) - 0.5) @ self.w
        return torch.where(u >= 0, 1, -1).to(torch.int8)


@pytest.fixture(scope="module")
def digits():
    return get_protocol("digits").load(seed=0, cache_splits=False)


@pytest.fixture(scope="module")
def sklearn_digits():
    from sklearn.datasets import load_digits

    return load_digits().images.astype(np.int64), load_digits_images(32)[0]


# ----------------------------------------------------------------------------- preparation
def test_a_digit_at_its_grey_levels_gives_the_data_sets_image_exactly(digits, sklearn_digits):
    levels, images = sklearn_digits
    for i in (0, 7, 1234):
        grey = np.rint(levels[i] * 255 / 16).astype(np.uint8)  # the 8x8 digit saved as an image
        got, _ = prepare_query_images([png(grey)], digits, 32)
        assert got.dtype == torch.uint8 and got.shape == (1, 3, 32, 32)
        assert torch.equal(got[0], images[i])
        # enlarged 25x as RGB with a black margin on the sides: the same image (box average, centre square)
        big = np.kron(grey, np.ones((25, 25), np.uint8))
        big = np.pad(np.repeat(big[..., None], 3, -1), ((0, 0), (30, 30), (0, 0)))
        assert torch.equal(prepare_query_images([Image.fromarray(big)], digits, 32)[0][0], images[i])
        # dark ink on white paper: inverted automatically (the border is light)
        assert torch.equal(prepare_query_images([png(255 - grey)], digits, 32)[0][0], images[i])
        assert np.array_equal(digits_levels(Image.fromarray(255 - grey), invert=False), 16 - levels[i])


def test_in_memory_rgb_protocol_keeps_a_native_image_and_squares_others():
    data = SimpleNamespace(protocol=get_protocol("cifar10"), in_memory=True)
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    got, tf = prepare_query_images(png(rgb), data, 32)
    assert torch.equal(got[0], torch.from_numpy(rgb).permute(2, 0, 1))
    assert tf.out_size == 32 and tf.resize is None
    grey = np.random.default_rng(1).integers(0, 256, (48, 80), dtype=np.uint8)  # 'L' mode, not square
    got, _ = prepare_query_images([png(grey)], data, 32)
    assert got.shape == (1, 3, 32, 32) and torch.equal(got[0, 0], got[0, 1]) and torch.equal(got[0, 0], got[0, 2])
    rgba = Image.fromarray(np.dstack([rgb, np.full((32, 32), 255, np.uint8)]), "RGBA")
    assert torch.equal(prepare_query_images([rgba], data, 32)[0][0], torch.from_numpy(rgb).permute(2, 0, 1))
    # a 224-pixel model on CIFAR-10: the stored 32x32 image, then the eval transform's resize + centre crop
    got, tf = prepare_query_images([png(rgb)], data, 224)
    assert got.shape[-1] == 32 and (tf.resize, tf.out_size) == (256, 224)


def test_file_protocol_image_is_what_the_list_loader_decodes(tmp_path):
    data = SimpleNamespace(protocol=get_protocol("nuswide21"), in_memory=False)
    rgb = np.random.default_rng(2).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    assert load_size(data, 224) == 224  # the protocol's native size: decoded at the model's input size
    got, tf = prepare_query_images([path], data, 224)
    assert torch.equal(got[0], load_square(path, 224))
    assert tf(got, train=False).shape == (1, 3, 224, 224)
    assert load_size(data, 32) == 37  # another size: the eval transform's resize (32 * 256 / 224), then its crop
    got, tf = prepare_query_images([path], data, 32)
    assert torch.equal(got[0], load_square(path, 37)) and tf(got, train=False).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("content, why", [(b"", "empty"), (b"hello, not an image", "not an image"),
                                          ("truncated", "corrupt or truncated")])
def test_an_unreadable_upload_is_named(digits, content, why):
    if content == "truncated":
        whole = png(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8))
        content = whole[:len(whole) // 2]
    with pytest.raises(DataError, match="holiday.png") as e:
        prepare_query_images([content], digits, 32, names=["holiday.png"])
    assert why in str(e.value) or "cannot decode" in str(e.value)


def test_a_missing_file_and_a_wrong_type_are_named(tmp_path):
    with pytest.raises(DataError, match="nope.png"):
        read_query_image(tmp_path / "nope.png")
    with pytest.raises(DataError, match="expected a PIL image, image bytes or a path"):
        read_query_image(3.5)


# ----------------------------------------------------------------------------- encoding and searching
def test_encoding_an_upload_of_a_query_image_gives_its_code(digits, sklearn_digits):
    levels, images = sklearn_digits
    model = ProjModel()
    i = int(digits.query.ids[5].split("/")[1])  # the query's position in the embedded data set
    upload = png(np.rint(levels[i] * 255 / 16).astype(np.uint8))
    _, tf = prepare_query_images([upload], digits, model.img_size)
    stored = encode_prepared(model, digits.query.images[5:6], tf)
    assert np.array_equal(encode_query_images(model, upload, digits), stored)
    db = encode_prepared(model, digits.database.images, tf)
    index = HashIndex.from_codes(db, labels=digits.database.labels.numpy())
    assert np.array_equal(search_query_images(model, [upload], digits, index, 7).ids, index.search(stored, 7).ids)
    assert model.training  # mode restored


# ----------------------------------------------------------------------------- the search UI
@pytest.fixture(scope="module")
def ui_parts(digits):
    model = ProjModel()
    _, tf = prepare_query_images([png(np.zeros((8, 8), np.uint8))], digits, 32)
    qc = encode_prepared(model, digits.query.images, tf)
    dc = encode_prepared(model, digits.database.images, tf)
    index = HashIndex.from_codes(dc, labels=digits.database.labels.numpy())
    return model, qc, digits.query.labels.numpy(), index


def test_search_by_pick_and_radius_equal_the_index(digits, ui_parts):
    from hashlib_vit.results.query_search import QuerySearch

    model, qc, ql, index = ui_parts
    qs = QuerySearch(index, digits, qc, ql, model=model)
    hit = qs.search(3, k=6)
    want = index.search(qc[3:4], 6)
    assert np.array_equal(hit.ids, want.ids[0]) and np.array_equal(hit.distances, want.distances[0])
    assert hit.labels == [digits.class_names[int(np.argmax(r))] for r in index.labels[want.ids[0]]]
    assert np.array_equal(hit.relevant, want.relevant(ql[3:4])[0])
    within = index.radius_search(qc[3:4], 4)[0]
    hit = qs.search(3, k=5, radius=4)
    assert hit.n_within == len(within.ids) and np.array_equal(hit.ids, within.ids[:5])
    assert (hit.distances <= 4).all()
    fig = qs.figure(hit)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0].startswith("query") and all(t.startswith("d=") for t in titles[1:])
    assert len(titles) == 1 + len(hit.ids)
    with pytest.raises(DataError, match="outside the query set"):
        qs.search(len(qc), k=3)
    with pytest.raises(DataError, match="needs the trained model"):
        QuerySearch(index, digits, qc, ql).search(b"...", k=3)


def test_widget_callbacks_search_as_the_index_does(digits, ui_parts, sklearn_digits):
    pytest.importorskip("ipywidgets")
    import matplotlib

    matplotlib.use("Agg")
    from hashlib_vit.results.query_search import QuerySearch

    model, qc, ql, index = ui_parts
    qs = QuerySearch(index, digits, qc, ql, model=model)
    box = qs.widget()
    assert box is not None and qs.last is not None  # the first search is drawn at once
    hit = qs.update(pick=2, k=7)
    assert np.array_equal(hit.ids, index.search(qc[2:3], 7).ids[0])
    qs.controls["k"].value = 4  # as a user moving the slider: the callback searches again
    assert len(qs.last.ids) == 4 and np.array_equal(qs.last.ids, index.search(qc[2:3], 4).ids[0])
    qs.controls["use_radius"].value = True
    assert qs.last.radius == qs.controls["radius"].value and qs.last.n_within is not None
    levels, _ = sklearn_digits
    i = int(digits.query.ids[9].split("/")[1])
    hit = qs.update(upload=("my_digit.png", png(np.rint(levels[i] * 255 / 16).astype(np.uint8))),
                    use_radius=False, k=5)
    assert hit.source == "my_digit.png" and np.array_equal(hit.ids, index.search(qc[9:10], 5).ids[0])
    assert qs.update(upload=("broken.png", b"garbage")) is None
    assert "broken.png" in qs.controls["status"].value
    hit = qs.update(pick=0)  # back to the query set
    assert hit.source == "query #0"
