"""Pretrained weights from every source (issue 15): formats, families, resampling, hub cache, errors, records.

Every check reads the stand-in file back with its own reader (torch.load / safetensors / numpy) and
applies the format's layout change written out here, independently of the loader's code.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hashlib_vit.errors import ConfigError
from hashlib_vit.models import build_model
from hashlib_vit.models.backbones import check_backbone_name, create_backbone
from hashlib_vit.models.standin import make_fake_hf_cache, standin_state_dict, write_standin_checkpoint
from hashlib_vit.models.weights import hf_cache_dir, sniff_format

PRESET = "vit32_test"  # 32 px, patch 8, width 32, 2 blocks, 2 heads, MLP 64
TINY = "vit_tiny_patch16_224"  # width 192, 12 blocks, 3 heads; used at 32 px
TAGGED = "vit_tiny_patch16_224.augreg_in21k"


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def expected_from_file(path, fmt: str, depth_block: int = 1) -> dict[str, torch.Tensor]:
    """The four tensors the loaded model must hold, read from the file and transformed per format."""
    if fmt in ("pth", "bin", "dinov2"):
        sd = torch.load(path, map_location="cpu", weights_only=True)
    elif fmt == "safetensors":
        sd = load_file(str(path))
    elif fmt == "torchvision":
        sd = torch.load(path, map_location="cpu", weights_only=True)
        blk = f"encoder.layers.encoder_layer_{depth_block}."
        return {"patch_embed.proj.weight": sd["conv_proj.weight"], f"blocks.{depth_block}.attn.qkv.weight":
                sd[blk + "self_attention.in_proj_weight"], "pos_embed": sd["encoder.pos_embedding"],
                "norm.weight": sd["encoder.ln.weight"]}
    elif fmt == "npz":
        w = np.load(path)
        mha = f"Transformer/encoderblock_{depth_block}/MultiHeadDotProductAttention_1/"
        d = w["embedding/kernel"].shape[-1]
        qkv = np.concatenate([w[mha + f"{n}/kernel"].reshape(d, d).T for n in ("query", "key", "value")])
        return {"patch_embed.proj.weight": torch.from_numpy(w["embedding/kernel"].transpose(3, 2, 0, 1).copy()),
                f"blocks.{depth_block}.attn.qkv.weight": torch.from_numpy(qkv),
                "pos_embed": torch.from_numpy(w["Transformer/posembed_input/pos_embedding"]),
                "norm.weight": torch.from_numpy(w["Transformer/encoder_norm/scale"])}
    keys = ("patch_embed.proj.weight", f"blocks.{depth_block}.attn.qkv.weight", "pos_embed", "norm.weight")
    return {k: sd[k] for k in keys}


def assert_holds(model_sd: dict, expected: dict):
    for k, v in expected.items():
        assert model_sd[k].shape == v.shape, k
        assert torch.allclose(model_sd[k], v.to(model_sd[k].dtype), atol=1e-7), k


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return {fmt: write_standin_checkpoint(PRESET, d / f"{PRESET}.{fmt}", fmt, seed=3)
            for fmt in ("pth", "bin", "safetensors", "npz", "torchvision")}


# ----------------------------------------------------------------------------- formats (plain family)
@pytest.mark.parametrize("fmt,format_name,container,mean", [
    ("pth", "timm", "torch-zip", 0.5), ("bin", "timm", "torch-pickle", 0.5),
    ("safetensors", "safetensors", "safetensors", 0.5), ("npz", "jax-npz", "npz", 0.5),
    ("torchvision", "torchvision", "torch-zip", 0.485)])
def test_every_format_loads_into_the_plain_family(files, fmt, format_name, container, mean):
    path = files[fmt]
    model = build_model(PRESET, bits=8, head="cls_linear", weights=str(path))
    bb = model.backbone
    assert_holds(bb.model.state_dict(), expected_from_file(path, fmt))
    info = bb.weights_info
    assert (info["source"], info["format"], info["container"]) == ("file", format_name, container)
    assert info["sha256"] == sha256(path) and info["name"] == PRESET and info["pos_embed_resampled_from"] is None
    assert bb.pretrained and bb.mean[0] == pytest.approx(mean) and info["mean"][0] == pytest.approx(mean)
    # every tensor of the backbone (not only the four above) is the stand-in's
    ref = standin_state_dict(PRESET, seed=3)
    assert all(torch.allclose(bb.model.state_dict()[k], v, atol=1e-7) for k, v in ref.items())


def test_format_is_detected_from_content_not_extension(files, tmp_path):
    for fmt, want in (("safetensors", "safetensors"), ("npz", "npz"), ("pth", "torch-zip"), ("bin", "torch-pickle")):
        odd = tmp_path / f"weights_{fmt}.dat"
        odd.write_bytes(files[fmt].read_bytes())
        assert sniff_format(odd) == (want, None)
        bb = create_backbone(PRESET, weights=str(odd))
        assert_holds(bb.model.state_dict(), expected_from_file(files[fmt], fmt))


@pytest.mark.parametrize("key", ["state_dict", "model", "module"])
def test_wrapped_state_dicts(files, tmp_path, key):
    sd = torch.load(files["pth"], weights_only=True)
    path = tmp_path / "wrapped.pth"
    torch.save({key: sd, "epoch": torch.tensor(3)}, path)
    bb = create_backbone(PRESET, weights=str(path))
    assert_holds(bb.model.state_dict(), expected_from_file(files["pth"], "pth"))


def test_torchvision_file_is_torchvisions_layout_and_computes_the_same(files):
    """The stand-in loads strictly into torchvision's own ViT, and both networks give the same tokens."""
    import torchvision

    tv = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                              hidden_dim=32, mlp_dim=64, num_classes=10)
    sd = torch.load(files["torchvision"], weights_only=True)
    missing, unexpected = tv.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) == {"heads.head.weight", "heads.head.bias"}
    bb = create_backbone(PRESET, weights=str(files["torchvision"])).eval()
    tv.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        seq = tv._process_input(x)
        seq = torch.cat([tv.class_token.expand(2, -1, -1), seq], dim=1)
        ref = tv.encoder(seq)
        out = bb(x)
    assert out.shape == ref.shape == (2, 17, 32)
    assert torch.allclose(out, ref, atol=1e-5)


def test_jax_npz_of_a_timm_architecture(tmp_path):
    """ViT-B_16.npz-style file for a timm name (the TransHash / VTS path that failed with hasRecord('version'))."""
    path = write_standin_checkpoint(TINY, tmp_path / "ViT-Ti_16.npz", "npz", img_size=32, seed=1)
    w = np.load(path)
    assert w["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"].shape == (192, 3, 64)
    assert w["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel"].shape == (3, 64, 192)
    assert w["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"].shape == (192, 768)
    bb = create_backbone(TINY, img_size=32, weights=str(path))
    msd = bb.model.state_dict()
    assert_holds(msd, expected_from_file(path, "npz", depth_block=1))
    out = w["Transformer/encoderblock_11/MultiHeadDotProductAttention_1/out/kernel"]  # (heads, hd, D) -> (D, D)
    assert torch.allclose(msd["blocks.11.attn.proj.weight"], torch.from_numpy(out.transpose(2, 0, 1).reshape(192, 192)))
    fc2 = w["Transformer/encoderblock_11/MlpBlock_3/Dense_1/kernel"]
    assert torch.allclose(msd["blocks.11.mlp.fc2.weight"], torch.from_numpy(fc2.T.copy()))
    assert bb.weights_info["format"] == "jax-npz" and bb.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("arch", ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"])
def test_dinov2_facebookresearch_layout(tmp_path, arch):
    path = write_standin_checkpoint(arch, tmp_path / "dinov2.pth", "dinov2", img_size=28, seed=2)
    fb = torch.load(path, weights_only=True)
    assert "mask_token" in fb and "blocks.3.ls1.gamma" in fb and fb["pos_embed"].shape[1] == 1 + 4
    bb = create_backbone(arch, img_size=28, weights=str(path))
    msd = bb.model.state_dict()
    for k in ("patch_embed.proj.weight", "blocks.1.attn.qkv.weight", "blocks.3.ls1.gamma", "norm.weight"):
        assert torch.equal(msd[k], fb[k]), k
    if "register_tokens" in fb:  # timm: no_embed_class, the CLS position folded into the CLS token
        assert torch.equal(msd["reg_token"], fb["register_tokens"])
        assert torch.allclose(msd["cls_token"], fb["cls_token"] + fb["pos_embed"][:, :1])
        assert torch.equal(msd["pos_embed"], fb["pos_embed"][:, 1:])
    else:
        assert torch.equal(msd["cls_token"], fb["cls_token"]) and torch.equal(msd["pos_embed"], fb["pos_embed"])
    info = bb.weights_info
    assert info["format"] == "dinov2" and bb.mean == pytest.approx((0.485, 0.456, 0.406))


def test_cnn_state_dict_and_standin_determinism(tmp_path):
    a, b = standin_state_dict(PRESET, seed=0), standin_state_dict(PRESET, seed=1)
    assert torch.equal(a["pos_embed"], standin_state_dict(PRESET, seed=0)["pos_embed"])
    assert not torch.equal(a["pos_embed"], b["pos_embed"])
    path = tmp_path / "r18.pth"  # a CNN checkpoint with its 1000-class classifier, wrapped as {"model": ...}
    sd = standin_state_dict("resnet18", seed=2)
    torch.save({"model": {**sd, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}}, path)
    bb = create_backbone("resnet18", img_size=32, weights=str(path))
    msd = bb.model.state_dict()
    assert torch.equal(msd["conv1.weight"], sd["conv1.weight"]) and torch.equal(msd["layer4.1.bn2.bias"],
                                                                             sd["layer4.1.bn2.bias"])
    assert bb.kind == "cnn" and bb.weights_info["format"] == "timm" and "fc.weight" not in msd


# ----------------------------------------------------------------------------- model families
def test_mgvt_branches_start_from_the_loaded_last_block(files):
    path = files["npz"]
    model = build_model(PRESET, bits=16, head="mgvt", weights=str(path))
    w = np.load(path)
    last = "Transformer/encoderblock_1/"
    mha = last + "MultiHeadDotProductAttention_1/"
    qkv = torch.from_numpy(np.concatenate([w[mha + f"{n}/kernel"].reshape(32, 32).T
                                           for n in ("query", "key", "value")]))
    fc1 = torch.from_numpy(w[last + "MlpBlock_3/Dense_0/kernel"].T.copy())
    norm = torch.from_numpy(w["Transformer/encoder_norm/scale"])
    for blk, nrm in ((model.neck.global_block, model.neck.global_norm), (model.neck.local_block, model.neck.local_norm)):
        assert torch.allclose(blk.attn.qkv.weight, qkv) and torch.allclose(blk.mlp.fc1.weight, fc1)
        assert torch.allclose(nrm.weight, norm)
    assert len(model.backbone.model.blocks) == 1  # the trunk: block 0 of the file
    assert_holds({"blocks.0.attn.qkv.weight": model.backbone.model.blocks[0].attn.qkv.weight},
                 {k: v for k, v in expected_from_file(path, "npz", depth_block=0).items() if "blocks" in k})
    assert model.backbone.weights_info["format"] == "jax-npz"


def test_hcl_family_gets_the_same_weights(files):
    model = build_model(PRESET, bits=16, head="hcl", weights=str(files["safetensors"]))
    assert_holds(model.backbone.model.state_dict(), expected_from_file(files["safetensors"], "safetensors"))
    assert model(torch.rand(2, 3, 32, 32)).u.shape == (2, 16)


def test_aem_is_added_after_loading(files):
    path = files["torchvision"]
    model = build_model(PRESET, bits=8, weights=str(path), aem="all")
    plain = build_model(PRESET, bits=8, weights=str(path))
    msd = model.backbone.model.state_dict()
    assert any(k.startswith("patch_embed.aem.") for k in msd)  # new module, not from the file
    assert_holds(msd, expected_from_file(path, "torchvision"))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # AEM is the identity at initialisation: same tokens as the plain loaded ViT
        assert torch.allclose(model.backbone(x), plain.backbone(x), atol=1e-6)


# ----------------------------------------------------------------------------- image size
def test_preset_checkpoint_at_32px_loads_at_64px(tmp_path):
    """The bug: vit32_tiny trained at 32 px, loaded at 64 px raised 'size mismatch for pos_embed'."""
    from timm.layers import resample_abs_pos_embed

    path = write_standin_checkpoint("vit32_tiny", tmp_path / "tiny32.pth", "pth", seed=5)
    bb = create_backbone("vit32_tiny", img_size=64, weights=str(path))
    file_pe = torch.load(path, weights_only=True)["pos_embed"]
    assert file_pe.shape == (1, 1 + 8 * 8, 96)
    pe = bb.model.state_dict()["pos_embed"]
    assert pe.shape == (1, 1 + 16 * 16, 96)
    assert torch.equal(pe[:, :1], file_pe[:, :1])  # the CLS row is kept, only the grid is resampled
    assert torch.allclose(pe, resample_abs_pos_embed(file_pe, new_size=[16, 16], num_prefix_tokens=1), atol=1e-7)
    assert bb.weights_info["pos_embed_resampled_from"] == [8, 8]
    assert bb(torch.rand(1, 3, 64, 64)).shape == (1, 257, 96)


def test_timm_vit_at_64px_from_a_32px_safetensors(tmp_path):
    from timm.layers import resample_abs_pos_embed

    path = write_standin_checkpoint(TINY, tmp_path / "tiny32.safetensors", "safetensors", img_size=32)
    bb = create_backbone(TINY, img_size=64, weights=str(path))
    file_pe = load_file(str(path))["pos_embed"]
    want = resample_abs_pos_embed(file_pe, new_size=[4, 4], num_prefix_tokens=1)
    assert bb.model.pos_embed.shape == (1, 17, 192)
    assert torch.allclose(bb.model.pos_embed.detach(), want, atol=1e-7)
    assert bb.weights_info["pos_embed_resampled_from"] == [2, 2]


def test_jax_npz_resampled_by_timms_npz_loader(files):
    from timm.layers import resample_abs_pos_embed

    bb = create_backbone(PRESET, img_size=64, weights=str(files["npz"]))
    file_pe = torch.from_numpy(np.load(files["npz"])["Transformer/posembed_input/pos_embedding"])
    want = resample_abs_pos_embed(file_pe, new_size=[8, 8], num_prefix_tokens=1, interpolation="bilinear",
                                  antialias=False)
    assert torch.allclose(bb.model.pos_embed.detach(), want, atol=1e-6)
    assert bb.weights_info["pos_embed_resampled_from"] == [4, 4]


# ----------------------------------------------------------------------------- hub and HF cache
def test_fake_hf_cache_is_what_huggingface_hub_and_timm_find(tmp_path, monkeypatch):
    import timm
    from huggingface_hub import hf_hub_download

    cache = tmp_path / "hub"
    snap_file = make_fake_hf_cache(cache, TAGGED, seed=4)
    found = hf_hub_download("timm/" + TAGGED, "model.safetensors", cache_dir=cache, local_files_only=True)
    assert sha256(found) == sha256(snap_file)
    assert json.loads((snap_file.parent / "config.json").read_text())["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5]
    # timm's own pretrained path, offline, from that cache
    ref = timm.create_model(TAGGED, pretrained=True, num_classes=0, cache_dir=cache).state_dict()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert hf_cache_dir() == cache
    bb = create_backbone(TAGGED, weights="hub")
    msd = bb.model.state_dict()
    assert all(torch.equal(msd[k], ref[k]) for k in ref)
    assert torch.equal(msd["blocks.1.attn.qkv.weight"], load_file(str(snap_file))["blocks.1.attn.qkv.weight"])
    info = bb.weights_info
    assert info["source"] == "hf-cache" and info["name"] == TAGGED and info["pretrained_tag"] == "augreg_in21k"
    assert info["sha256"] == sha256(snap_file) and info["hf_repo"] == "timm/" + TAGGED
    assert bb.mean == (0.5, 0.5, 0.5) and info["pos_embed_resampled_from"] is None


def test_hf_home_cache_at_another_image_size(tmp_path, monkeypatch):
    home = tmp_path / "hf_home"
    snap_file = make_fake_hf_cache(home / "hub", TAGGED)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bb = create_backbone(TAGGED, img_size=32, weights="hub")
    assert bb.weights_info["source"] == "hf-cache" and bb.weights_info["pos_embed_resampled_from"] == [14, 14]
    assert torch.equal(bb.model.patch_embed.proj.weight, load_file(str(snap_file))["patch_embed.proj.weight"])


def test_hub_offline_without_cache_says_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ConfigError) as e:
        create_backbone(TAGGED, img_size=32, weights="hub")
    msg = str(e.value)
    for part in (f"backbone '{TAGGED}'", "HF_HUB_OFFLINE", "model.safetensors", f"'timm/{TAGGED}'",
                 str(tmp_path / "empty"), "weights='/path/to/file.pth'"):
        assert part in msg, part


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", [TAGGED, "vit_small_patch14_dinov2.lvd142m", TINY, "vit32_tiny", "resnet50",
                                  "alexnet"])
def test_backbone_names_with_and_without_tags_are_valid(name):
    from hashlib_vit.experiment import RunConfig
    from hashlib_vit.runner import _registry_check

    assert check_backbone_name(name) == name
    RunConfig(backbone=name).validate()
    assert _registry_check("backbone", name) is None


def test_unknown_backbone_names_get_close_matches_and_tags():
    from hashlib_vit.experiment import RunConfig
    from hashlib_vit.runner import _registry_check

    with pytest.raises(ConfigError, match=r"backbone='vit_tiny_patch16_244'.*close matches: .*vit_tiny_patch16_224"):
        check_backbone_name("vit_tiny_patch16_244")
    with pytest.raises(ConfigError, match=r"has no pretrained tag 'in22k'.*augreg_in21k"):
        RunConfig(backbone="vit_tiny_patch16_224.in22k").validate()
    with pytest.raises(ConfigError, match=r"close matches: .*vit32_tiny"):
        create_backbone("vit32_tin")
    assert "close matches" in _registry_check("backbone", "vit_smal_patch16_224")


# ----------------------------------------------------------------------------- bad inputs
def _raises(path, match, name=PRESET, **kw):
    with pytest.raises(ConfigError) as e:
        create_backbone(name, weights=str(path), **kw)
    msg = str(e.value)
    assert str(path) in msg
    for m in match:
        assert m in msg, (m, msg)
    return msg


def test_empty_truncated_and_unknown_files(files, tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    _raises(empty, ["format found: empty", "0 bytes", "expected a torch state dict"])
    for fmt, kind in (("pth", "torch-zip"), ("safetensors", "safetensors"), ("npz", "npz")):
        data = files[fmt].read_bytes()
        cut = tmp_path / f"cut.{fmt}"
        cut.write_bytes(data[: len(data) // 2])
        _raises(cut, [f"format found: {kind}", "truncated"])
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(7, 250)) * 4)
    _raises(junk, ["unknown format", "expected a torch state dict"])
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    _raises(text, ["unknown format (found: text)"])
    other = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], other)
    _raises(other, ["holds list, not a state dict"])
    npz = tmp_path / "other.npz"
    np.savez(npz, a=np.zeros(3))
    _raises(npz, ["no 'embedding/kernel'", "ViT-B_16.npz"])


def test_file_for_another_architecture(tmp_path):
    small = write_standin_checkpoint("vit32_small", tmp_path / "small.pth", "pth")  # patch 4 like vit32_tiny
    msg = _raises(small, ["another architecture than backbone 'vit32_tiny'", "expected depth 4, width 96, patch 4",
                          "the file has depth 6, width 192, patch 4, img_size 32 (looks like vit32_small)",
                          "patch_embed.proj.weight: file (192, 3, 4, 4) vs backbone (96, 3, 4, 4)",
                          "not in the backbone: ['blocks.4."], name="vit32_tiny")
    assert "format found: timm" in msg
    npz = write_standin_checkpoint("vit32_small", tmp_path / "small.npz", "npz")
    _raises(npz, ["format found: jax-npz", "another architecture", "width 192 vs 96", "depth 6 vs 4"],
            name="vit32_tiny")
    tiny = write_standin_checkpoint(TINY, tmp_path / "tiny.safetensors", "safetensors", img_size=32)
    _raises(tiny, ["format found: safetensors", "patch size (16, 16)", "uses (8, 8)",
                   "depth 12, width 192, patch 16, img_size 32 (looks like vit_tiny_patch16_32)"])
    tiny_npz = write_standin_checkpoint(TINY, tmp_path / "tiny.npz", "npz", img_size=32)
    _raises(tiny_npz, ["format found: jax-npz", "patch 16 vs 8", "width 192 vs 32", "depth 12 vs 2", "heads 3 vs 2",
                       "looks like vit_tiny_patch16_32"])


def test_preset_with_hub_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="local preset with no hub weights"):
        create_backbone(PRESET, weights="hub")
    with pytest.raises(ConfigError, match=r"weights='.*nope.pth': no such file"):
        create_backbone(PRESET, weights=str(tmp_path / "nope.pth"))


# ----------------------------------------------------------------------------- run directory
def test_run_directory_records_the_weights(files, tmp_path):
    from hashlib_vit.experiment import run_experiment

    path = str(files["safetensors"])
    res = run_experiment(protocol="digits", backbone=PRESET, bits=8, epochs=1, batch_size=64, weights=path,
                         run_dir=str(tmp_path / "run"), progress=False, save_codes=False, device="cpu")
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    env = json.loads((run / "env.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config["model"]["weights"] == path  # config.json is sectioned (hashlib_vit.config)
    assert env["weights_info"]["sha256"] == sha256(path) and env["weights_info"]["format"] == "safetensors"
    assert env["weights_info"]["mean"] == [0.5, 0.5, 0.5]
    assert metrics["pretrained"] is True
    assert metrics["weights"] == {"source": "file", "name": PRESET, "sha256": sha256(path)}
    assert res.metrics["weights"]["sha256"] == sha256(path)


def test_bad_weights_fail_before_the_run_directory_is_written(files, tmp_path):
    from hashlib_vit.experiment import run_experiment

    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError, match="format found: empty"):
        run_experiment(protocol="digits", backbone=PRESET, bits=8, epochs=1, batch_size=64, weights=str(empty),
                       run_dir=str(tmp_path / "run"), progress=False, device="cpu")
    assert not (tmp_path / "run").exists()
