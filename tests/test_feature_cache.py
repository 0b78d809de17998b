"""Partial fine-tuning (freeze_blocks) and the fp16 feature cache: model split, freezing, cache equivalence,
cache key, crash / full-disk safety, batch order."""
import copy
import errno
import shutil
import json

import numpy as np
import pytest
import torch

from hashlib_vit.data import Split, TensorBatches, TensorTransform
from hashlib_vit.data import feature_cache as fc
from hashlib_vit.data.feature_cache import CachedBatches, ViewBatches, build_feature_cache, read_feature_cache
from hashlib_vit.errors import ConfigError, DataError, DiskFullError
from hashlib_vit.experiment import RunConfig, run_experiment
from hashlib_vit.losses import build_loss
from hashlib_vit.models import build_model
from hashlib_vit.models.partial import PartialModel, check_freeze_config, freeze_prefix, max_freeze_blocks
from hashlib_vit.retrieval import encode
from hashlib_vit.train import TrainConfig, param_groups, train

TRAIN_TF = TensorTransform(32, pad_crop=4, hflip=True)
EVAL_TF = TensorTransform(32)


def make_split(n=72, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    # class-dependent mean colour so that training has something to learn
    base = (y[:, None, None, None].float() * 50 + 30).expand(n, 3, 32, 32)
    x = (base + torch.randint(-30, 30, (n, 3, 32, 32), generator=g)).clamp(0, 255).to(torch.uint8)
    return Split(x, torch.nn.functional.one_hot(y, classes).float(), [str(i) for i in range(n)])


def tiny(head="cls_linear", seed=0, **kw):
    torch.manual_seed(seed)
    return build_model("vit32_test", 16, head, **kw)


# ----------------------------------------------------------------------------- model split
@pytest.mark.parametrize("head", ["cls_linear", "mgvt", "hcl"])
def test_prefix_then_rest_equals_forward(head):
    model = build_model("vit32_tiny", 16, head).eval()
    x = torch.rand(3, 3, 32, 32)
    ref = model(x)
    limit = max_freeze_blocks(model)
    assert limit == (3 if head == "mgvt" else 4)  # vit32_tiny has 4 blocks; MGVT's last one is the branches
    for n in range(limit + 1):
        z = model.frozen_prefix(x, n)
        assert z.shape == (3, 65, 96)
        out = model.forward_from_tokens(z, n)
        assert torch.equal(out.u, ref.u) and torch.equal(out.features, ref.features), n
        assert all(torch.equal(a, b) for a, b in zip(out.heads, ref.heads))


@pytest.mark.parametrize("head", ["cls_linear", "mgvt", "hcl"])
def test_freeze_prefix_parameters_groups_and_modes(head):
    torch.manual_seed(0)
    model = build_model("vit32_tiny", 16, head, drop_path_rate=0.3)
    vit = model.backbone.model
    n = freeze_prefix(model, 2)
    assert n == 2 and model.frozen_blocks == 2
    frozen = {id(p) for m in (vit.patch_embed, vit.norm_pre, *vit.blocks[:2]) for p in m.parameters()}
    frozen |= {id(vit.cls_token), id(vit.pos_embed)}
    for p in model.parameters():
        assert p.requires_grad == (id(p) not in frozen)
    loss = build_loss("csq", 16, 4, False)
    grouped = {id(p) for g in param_groups(model, loss, TrainConfig()) for p in g["params"]}
    assert not grouped & frozen
    assert grouped == {id(p) for p in list(model.parameters()) + list(loss.parameters()) if id(p) not in frozen}
    model.train()
    assert not any(m.training for m in (vit.patch_embed, *vit.blocks[:2]))
    assert all(m.training for m in vit.blocks[2:]) and model.hash_layers.training
    # drop-path is off in the frozen blocks: the prefix is deterministic in train mode and equals eval mode
    x = torch.rand(4, 3, 32, 32)
    a, b = model.frozen_prefix(x, 2), model.frozen_prefix(x, 2)
    assert torch.equal(a, b)
    if head != "mgvt":  # the next block still trains with drop-path 0.3 (randomness only after block 2)
        assert not torch.equal(model.frozen_prefix(x, 3), model.frozen_prefix(x, 3))
    model.eval()
    assert torch.equal(model.frozen_prefix(x, 2), a)


def test_freeze_errors_name_n_backbone_and_depth(tmp_path):
    with pytest.raises(ConfigError, match=r"freeze_blocks=5 exceeds backbone 'vit32_tiny' of depth 4"):
        check_freeze_config("vit32_tiny", "cls_linear", 5)
    with pytest.raises(ConfigError, match=r"freeze_blocks=4 exceeds .*depth 4 with head='mgvt'.*at most 3"):
        check_freeze_config("vit32_tiny", "mgvt", 4)
    assert check_freeze_config("vit32_tiny", "mgvt", "all") == 3 and check_freeze_config("vit32_tiny", "hcl", -1) == 4
    with pytest.raises(ConfigError, match=r"freeze_blocks=13 exceeds backbone 'vit_small_patch16_224' of depth 12"):
        check_freeze_config("vit_small_patch16_224", "cls_linear", 13)  # timm name: depth read on the meta device
    with pytest.raises(ConfigError, match="'resnet18' is a CNN"):
        check_freeze_config("resnet18", "cls_linear", 1)
    with pytest.raises(ConfigError, match="integer >= 0"):
        check_freeze_config("vit32_tiny", "cls_linear", 1.5)
    with pytest.raises(ConfigError, match="exceeds"):
        freeze_prefix(tiny(), 3)  # built model: the same check
    run_dir = tmp_path / "run"
    for bad, match in [(dict(freeze_blocks=3), "depth 2"),
                       (dict(feature_cache=True), "needs freeze_blocks >= 1"),
                       (dict(freeze_blocks=1, feature_cache=True, model_params={"aem": "all"}), "AEM sits before"),
                       (dict(freeze_blocks=1, feature_cache=True, loss="hsc", loss_params={"n_views": 2}),
                        "cache_views >= 2"),
                       (dict(freeze_blocks=1, cache_views=0), "cache_views=0")]:
        with pytest.raises(ConfigError, match=match):
            run_experiment(backbone="vit32_test", bits=16, epochs=1, run_dir=str(run_dir), progress=False, **bad)
        assert not run_dir.exists()  # refused before anything was loaded or written


def test_aem_freezes_without_cache_and_aem_still_trains():
    model = tiny(aem="all")
    freeze_prefix(model, 1)
    aem = model.backbone.model.patch_embed.aem
    assert all(p.requires_grad for p in aem.parameters())
    assert not model.backbone.model.patch_embed.proj.weight.requires_grad
    model.train()
    assert aem.training and not model.backbone.model.blocks[0].training
    out = PartialModel(model, 1)(torch.rand(4, 3, 32, 32))
    out.u.sum().backward()
    assert aem.gamma.grad is not None and aem.gamma.grad.abs().sum() > 0  # gradients reach AEM through block 0
    with pytest.raises(ConfigError, match="AEM"):
        build_feature_cache(model, 1, make_split(), split_checksum="x", train_tf=TRAIN_TF, eval_tf=EVAL_TF)


# ----------------------------------------------------------------------------- cache = uncached reference
def _train_pair(head, views, tmp_path, steps_epochs=2, n_views=1, loss_name="dpsh", loss_params=None):
    """Train the same frozen model (a) on the cache, (b) uncached on the same views with fp16-rounded
    block-N tokens; return both models, histories and the cache."""
    split = make_split()
    base = tiny(head)
    n = freeze_prefix(base, 1)
    cfg = TrainConfig(epochs=steps_epochs, batch_size=16, lr=1e-3, seed=3)
    out = {}
    for kind in ("cached", "reference"):
        model = copy.deepcopy(base)
        torch.manual_seed(7)
        loss = build_loss(loss_name, 16, 4, False, **(loss_params or {}))
        if kind == "cached":
            cache = build_feature_cache(model, n, split, split_checksum="s", train_tf=TRAIN_TF, eval_tf=EVAL_TF,
                                        views=views, seed=3, cache_dir=tmp_path)
            batches, net = CachedBatches(cache, split, 16, seed=3, n_views=n_views), PartialModel(model, n)
        else:
            batches = ViewBatches(split, TRAIN_TF, EVAL_TF, views, 16, seed=3, n_views=n_views)
            net = PartialModel(model, n, token_dtype=torch.float16)
        torch.manual_seed(11)
        hist = train(net, loss, batches, cfg, progress=False)
        out[kind] = (model, hist)
    return out, cache, split


@pytest.mark.parametrize("head,views", [("cls_linear", 1), ("mgvt", 2), ("hcl", 3)])
def test_cached_run_equals_uncached_frozen_run(head, views, tmp_path):
    """Same seed, same views, the uncached reference's block-N tokens rounded to fp16 as the cache stores
    them: identical losses at every step and identical codes (exact equality, no tolerance)."""
    out, cache, split = _train_pair(head, views, tmp_path)
    (m_c, h_c), (m_r, h_r) = out["cached"], out["reference"]
    assert len(h_c["steps"]) == 2 * 5  # 72 images / 16 = 4.5 -> 5 batches x 2 epochs
    assert [s["loss"] for s in h_c["steps"]] == [s["loss"] for s in h_r["steps"]]
    query = make_split(40, seed=9)
    eval_batches = TensorBatches(query, 20, EVAL_TF, train=False)
    codes_c, _ = encode(m_c, eval_batches)
    codes_r, _ = encode(m_r, eval_batches)
    assert np.array_equal(codes_c, codes_r)
    for (k, a), b in zip(m_c.state_dict().items(), m_r.state_dict().values()):
        assert torch.equal(a, b), k
    # and training did change the trainable part (the comparison is not between two untouched models)
    assert h_c["steps"][-1]["loss"] != h_c["steps"][0]["loss"]


def test_cached_tokens_are_the_fp16_prefix_and_memory_mapped(tmp_path):
    split = make_split()
    model = tiny()
    freeze_prefix(model, 2)
    cache = build_feature_cache(model, 2, split, split_checksum="s", train_tf=TRAIN_TF, eval_tf=EVAL_TF,
                                cache_dir=tmp_path)
    assert cache.built and isinstance(cache.tokens, np.memmap) and cache.tokens.dtype == np.float16
    assert cache.tokens.shape == (1, 72, 17, 32)  # 1 view, 72 images, CLS + 16 patches, width 32
    with torch.no_grad():
        want = model.eval().frozen_prefix(split.images.float() / 255, 2).half().numpy()
    np.testing.assert_array_equal(np.asarray(cache.tokens[0]), want)
    m = json.loads((cache.path / "manifest.json").read_text())
    assert m["complete"] and m["bytes"] == 72 * 17 * 32 * 2 == fc.cache_bytes(72, 1, 17, 32)
    assert m["key"]["freeze_blocks"] == 2 and m["key"]["views"] == 1 and m["key"]["dtype"] == "float16"
    import hashlib

    assert m["sha256"] == hashlib.sha256(np.ascontiguousarray(cache.tokens).tobytes()).hexdigest()


def test_two_view_loss_on_the_cache(tmp_path):
    """HSC with n_views=2 on a 3-view cache: each batch holds two distinct views of every image, and the
    cached run equals the uncached reference exactly."""
    out, cache, split = _train_pair("cls_linear", 3, tmp_path, steps_epochs=1, n_views=2, loss_name="hsc",
                                    loss_params={"n_views": 2})
    assert [s["loss"] for s in out["cached"][1]["steps"]] == [s["loss"] for s in out["reference"][1]["steps"]]
    b = CachedBatches(cache, split, 16, seed=3, n_views=2)
    picks = b.picks(0)
    assert picks.shape == (72, 2) and bool((picks[:, 0] != picks[:, 1]).all())
    x, y, idx = next(b.epoch(0))
    assert x.shape == (32, 17, 32) and torch.equal(idx[:16], idx[16:]) and b.batch_size == 32


# ----------------------------------------------------------------------------- batches
def test_cached_batches_order_views_and_resume(tmp_path):
    split = make_split()
    model = tiny()
    freeze_prefix(model, 1)
    cache = build_feature_cache(model, 1, split, split_checksum="s", train_tf=TRAIN_TF, eval_tf=EVAL_TF, views=4,
                                seed=5, cache_dir=tmp_path)
    cb = CachedBatches(cache, split, 16, seed=5)
    tb = TensorBatches(split, 16, TRAIN_TF, train=True, seed=5)
    assert len(cb) == len(tb) == 5 and cb.num_samples == 72 and cb.batch_size == 16
    for e in (0, 1):
        got = [idx for _, _, idx in cb.epoch(e)]
        want = [idx for _, _, idx in tb.epoch(e)]
        assert all(torch.equal(a, b) for a, b in zip(got, want))  # TensorBatches' seeded order
    p0, p1 = cb.picks(0), cb.picks(1)
    assert set(p0.flatten().tolist()) == {0, 1, 2, 3} and not torch.equal(p0, p1)  # a new view per epoch
    x, y, idx = next(cb.epoch(1))
    assert x.dtype == torch.float32 and torch.equal(y, split.labels[idx])
    assert torch.equal(x, torch.from_numpy(np.asarray(cache.tokens[p1[idx, 0].numpy(), idx.numpy()])).float())
    full = list(cb.epoch(1))
    tail = list(cb.epoch(1, start=3))
    assert len(tail) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(full[3:], tail))
    # augmented views differ from each other (random crop / flip) and are reproducible
    assert not np.array_equal(cache.tokens[0], cache.tokens[1])
    again = build_feature_cache(model, 1, split, split_checksum="s", train_tf=TRAIN_TF, eval_tf=EVAL_TF, views=4,
                                seed=5, cache_dir=tmp_path / "other")
    assert again.built and np.array_equal(np.asarray(again.tokens), np.asarray(cache.tokens))


# ----------------------------------------------------------------------------- key, safety
def test_cache_reused_only_for_the_same_key(tmp_path):
    split = make_split()
    model = tiny()
    freeze_prefix(model, 1)
    kw = dict(split_checksum="s", train_tf=TRAIN_TF, eval_tf=EVAL_TF, cache_dir=tmp_path)
    first = build_feature_cache(model, 1, split, **kw)
    assert first.built
    with torch.no_grad():
        model.hash_layers[0].fc.weight.add_(1.0)  # a trainable (non-frozen) weight: same cache
    again = build_feature_cache(model, 1, split, **kw)
    assert not again.built and again.path == first.path
    with torch.no_grad():
        model.backbone.model.blocks[0].mlp.fc1.weight[0, 0] += 1e-3  # the frozen weights changed: rebuilt
    changed = build_feature_cache(model, 1, split, **kw)
    assert changed.built and changed.path != first.path
    assert not np.array_equal(np.asarray(changed.tokens), np.asarray(first.tokens))
    model2 = copy.deepcopy(model)
    model2.frozen_blocks = 0
    freeze_prefix(model2, 2)
    deeper = build_feature_cache(model2, 2, split, **kw)  # another N: rebuilt
    assert deeper.built and deeper.path not in (first.path, changed.path)
    other_split = build_feature_cache(model, 1, split, **{**kw, "split_checksum": "t"})
    assert other_split.built and other_split.path != changed.path
    # a folder whose manifest is for another key is never trusted: rebuilt (with a warning)
    m = json.loads((first.path / "manifest.json").read_text())
    m["key"]["freeze_blocks"] = 3
    (changed.path / "manifest.json").write_text(json.dumps(m))
    with pytest.warns(UserWarning, match="another key"):
        rebuilt = build_feature_cache(model, 1, split, **kw)
    assert rebuilt.built and rebuilt.path == changed.path
    with pytest.raises(DataError, match="another key"):
        read_feature_cache(first.path, rebuilt.manifest["key"])


def test_full_disk_midway_leaves_nothing_trusted(tmp_path, monkeypatch):
    split = make_split()
    model = tiny()
    freeze_prefix(model, 1)
    kw = dict(split_checksum="s", train_tf=TRAIN_TF, eval_tf=EVAL_TF, cache_dir=tmp_path, chunk=16)
    calls = []

    def full_after_two(f, block):
        calls.append(len(block))
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        f.write(block.tobytes())

    monkeypatch.setattr(fc, "_write_block", full_after_two)
    with pytest.raises(DiskFullError) as err:
        build_feature_cache(model, 1, split, **kw)
    msg = str(err.value)
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert "disk is full" in msg and "feature cache" in msg and str(tmp_path) in msg
    assert f"{72 * 17 * 32 * 2 + 128:,} bytes needed" in msg
    assert list(tmp_path.iterdir()) == []  # neither a cache folder nor a temporary one
    monkeypatch.undo()
    ok = build_feature_cache(model, 1, split, **kw)
    assert ok.built and ok.tokens.shape == (1, 72, 17, 32)


def test_interrupted_build_is_not_trusted(tmp_path):
    split = make_split()
    model = tiny()
    freeze_prefix(model, 1)
    kw = dict(split_checksum="s", train_tf=TRAIN_TF, eval_tf=EVAL_TF, cache_dir=tmp_path)
    key = fc.cache_key(model, 1, split_checksum="s", train_tf=TRAIN_TF, eval_tf=EVAL_TF)
    folder = fc.cache_folder(tmp_path, key)
    good = build_feature_cache(model, 1, split, **kw)
    assert good.path == folder
    # a data file cut short (manifest says otherwise) or a missing manifest: rebuilt, never reused
    with open(folder / "tokens.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.warns(UserWarning, match="rebuilding"):
        assert build_feature_cache(model, 1, split, **kw).built
    (folder / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="no manifest.json"):
        assert build_feature_cache(model, 1, split, **kw).built
    stale = tmp_path / f".{folder.name}.tmp-1-deadbeef"  # the name of earlier versions
    stale.mkdir()
    assert fc.clean_stale_tmp(tmp_path) == [stale] and not stale.exists()
    # a killed build's folder (its pid is gone) is removed by the next build in the same cache_dir
    import subprocess
    import sys

    from hashlib_vit.utils import host_tag

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    killed = tmp_path / f".{folder.name}.{host_tag()}-{dead}-abcd1234.tmp"
    killed.mkdir()
    (killed / "tokens.npy").write_bytes(b"\0" * 5000)
    shutil.rmtree(folder)
    assert build_feature_cache(model, 1, split, **kw).built
    assert not killed.exists() and sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


def test_not_enough_disk_refused_before_writing(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    split = make_split()
    model = tiny()
    freeze_prefix(model, 1)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskFullError, match=r"not enough disk space .* needs 78464 bytes .*1000 bytes are free"):
        build_feature_cache(model, 1, split, split_checksum="s", train_tf=TRAIN_TF, eval_tf=EVAL_TF,
                            cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


# ----------------------------------------------------------------------------- through run_experiment
def test_run_experiment_with_the_cache(tmp_path):
    common = dict(backbone="vit32_test", bits=16, epochs=1, batch_size=64, progress=False, device="cpu",
                  freeze_blocks=1, feature_cache=True, cache_views=2, cache_dir=str(tmp_path / "cache"))
    a = run_experiment(**common, run_dir=str(tmp_path / "a"))
    info = json.loads((tmp_path / "a" / "feature_cache.json").read_text())
    assert info["built"] is True and info["shape"] == [2, 500, 17, 32]
    assert json.loads((tmp_path / "a" / "config.json").read_text())["model"]["cache_views"] == 2  # the model section
    b = run_experiment(**common, run_dir=str(tmp_path / "b"))
    assert json.loads((tmp_path / "b" / "feature_cache.json").read_text())["built"] is False  # reused
    assert np.array_equal(a.query_codes, b.query_codes) and a.metrics["final_loss"] == b.metrics["final_loss"]
    assert a.model.frozen_blocks == 1 and not a.model.backbone.model.blocks[0].attn.qkv.weight.requires_grad
    assert RunConfig(**{k: v for k, v in common.items()}).validate().cache_views == 2


def test_cached_training_resumes_exactly_from_a_checkpoint(tmp_path):
    split = make_split()
    base = tiny("hcl")
    freeze_prefix(base, 1)
    cache = build_feature_cache(base, 1, split, split_checksum="s", train_tf=TRAIN_TF, eval_tf=EVAL_TF, views=2,
                                seed=3, cache_dir=tmp_path / "cache")
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=3, checkpoint_every_steps=3)

    def fresh():
        torch.manual_seed(5)
        return PartialModel(copy.deepcopy(base), 1), build_loss("dpsh", 16, 4, False), CachedBatches(
            cache, split, 16, seed=3)

    m, loss, b = fresh()
    full = train(m, loss, b, cfg, progress=False, checkpoint_path=tmp_path / "a.pt")
    m2, loss2, b2 = fresh()
    train(m2, loss2, b2, cfg, progress=False, checkpoint_path=tmp_path / "b.pt", max_steps=7)  # "killed" at step 7
    m3, loss3, b3 = fresh()
    resumed = train(m3, loss3, b3, cfg, progress=False, checkpoint_path=tmp_path / "b.pt", resume=True)
    assert resumed["resumed_from"]["step"] == 6
    assert [s["loss"] for s in resumed["steps"]] == [s["loss"] for s in full["steps"][6:]]
    for (k, a), v in zip(m.state_dict().items(), m3.state_dict().values()):
        assert torch.equal(a, v), k


@pytest.mark.slow
def test_bench_cache_quick(tmp_path):
    import importlib.util

    from hashlib_vit.utils import project_root

    spec = importlib.util.spec_from_file_location("bench_cache", project_root() / "benchmarks" / "bench_cache.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--out", str(tmp_path / "cache.md")]) == 0
    r = json.loads((tmp_path / "cache.json").read_text())
    assert r["workload"]["frozen_blocks"] == 11 and r["cache_build"]["bytes"] == 16 * 17 * 192 * 2
    assert r["ratios"]["cached_over_frozen"] == pytest.approx(r["cached"]["images_per_s"] / r["frozen"]["images_per_s"])
    assert "cached / frozen-uncached" in (tmp_path / "cache.md").read_text()
