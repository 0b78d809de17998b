"""Stand-in pretrained checkpoints: random (seeded) values in the real key layout and file format.

No machine here can download ImageNet-pretrained weights (DESIGN.md, "Data available here"), so the
tests of the pretrained path, notebook 08, the GPU benchmark script and the end-to-end test build
their checkpoints here, in every format :mod:`hashlib_vit.models.weights` reads:

* :func:`standin_state_dict` — the timm-layout tensors (``patch_embed.proj.weight``, ``blocks.N.attn.qkv.weight``,
  ``pos_embed``, ...) of a timm architecture or preset at a given image size, every tensor drawn from
  ``N(0, 0.02^2)`` with a seeded generator (so no tensor equals its default initialisation). This is what
  a file written by :func:`write_standin_checkpoint` must load to (before any pos-embed resampling).
* :func:`write_standin_checkpoint` — that state dict written as ``fmt``:

  ===========  ===============================================================================================
  fmt          file
  ===========  ===============================================================================================
  pth          ``torch.save`` (zip) of the timm state dict
  bin          ``torch.save`` in the legacy (non-zip) pickle format, as old ``pytorch_model.bin`` files
  safetensors  ``safetensors.torch.save_file`` of the timm state dict
  npz          Google's JAX ViT layout (``embedding/kernel`` HWIO, ``cls``, ``Transformer/posembed_input/
               pos_embedding``, ``Transformer/encoderblock_N/{LayerNorm_0, MultiHeadDotProductAttention_1/
               {query,key,value}/kernel (D, heads, D/heads), out/kernel (heads, D/heads, D), LayerNorm_2,
               MlpBlock_3/Dense_{0,1}/kernel (in, out)}``, ``Transformer/encoder_norm``): the inverse of
               timm's ``vision_transformer._load_weights``
  torchvision  ``torchvision.models.VisionTransformer`` names (``conv_proj``, ``class_token``,
               ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_N.{ln_1, self_attention.in_proj_*,
               self_attention.out_proj, ln_2, mlp.0, mlp.3}``, ``encoder.ln``)
  dinov2       facebookresearch DINOv2 names (``cls_token``, ``pos_embed`` with the CLS row, ``mask_token``,
               ``register_tokens`` for ``*_reg`` archs, ``blocks.N.ls1.gamma``, ``mlp.w12/w3`` for SwiGLU)
  ===========  ===============================================================================================

* :func:`make_fake_hf_cache` — the Hugging Face cache layout of a timm pretrained tag
  (``models--timm--<repo>/{refs/main, blobs/<sha256>, snapshots/<commit>/{model.safetensors, config.json}}``)
  so that ``HF_HUB_OFFLINE=1 HF_HUB_CACHE=<dir>`` and ``create_backbone(name, weights="hub")`` load it.

No classifier is written (hashlib_vit never loads one). The values are random: a stand-in tests the
loading path, never accuracy.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .backbones import meta_network

STANDIN_FORMATS = ("pth", "bin", "safetensors", "npz", "torchvision", "dinov2")


def _is_scale(key: str, v: torch.Tensor) -> bool:
    """A multiplicative scale around 1: a norm's weight, a BatchNorm running variance, a layer-scale gamma."""
    leaf = key.rsplit(".", 2)
    return v.ndim == 1 and (key.endswith("running_var") or key.endswith(".gamma") or (
        key.endswith(".weight") and any(n in leaf[-2] for n in ("norm", "bn", "ln")) if len(leaf) > 1 else False))


def standin_state_dict(arch: str, seed: int = 0, img_size: int | None = None) -> dict[str, torch.Tensor]:
    """Seeded random timm-layout state dict of ``arch`` (a preset or a timm name) at ``img_size`` px.

    Every float tensor is ``0.02 * N(0, 1)`` from ``torch.Generator().manual_seed(seed)`` in the order of
    the model's ``state_dict()`` (float32, CPU; integer buffers: zeros), except the scales of the norms
    (LayerNorm / BatchNorm ``weight``, BatchNorm ``running_var``) and DINOv2's layer-scale ``gamma``, which
    are ``1 + 0.02 * N(0, 1)``: a network with its norms scaled by ~0 would map every image to nearly the
    same feature, so a stand-in behaves like a randomly initialised network, not like a broken one (no value
    equals timm's default initialisation either way). Same ``(arch, seed, img_size)`` -> same tensors. No head.
    """
    model = meta_network(arch, img_size)
    g = torch.Generator().manual_seed(int(seed))
    out = {}
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            t = torch.randn(v.shape, generator=g) * 0.02
            if _is_scale(k, v):
                t = t + 1.0
            out[k] = t.to(torch.float32).contiguous()
        else:  # integer buffers (e.g. BatchNorm's num_batches_tracked of a CNN): zeros
            out[k] = torch.zeros(v.shape, dtype=v.dtype)
    return out


def _vit_dims(sd: dict) -> tuple[int, int]:
    """(depth, width) of a timm ViT state dict."""
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    return depth, int(sd["patch_embed.proj.weight"].shape[0])


def _num_heads(arch: str, img_size) -> int:
    model = meta_network(arch, img_size)
    return int(model.blocks[0].attn.num_heads)


def to_jax_npz_arrays(sd: dict, num_heads: int) -> dict[str, np.ndarray]:
    """timm ViT state dict -> Google JAX ViT ``.npz`` arrays (float32), the inverse of timm's npz loader:
    conv kernel OIHW -> HWIO; ``qkv`` (3D, D) -> ``query/key/value/kernel`` (D, heads, D/heads) and bias
    (heads, D/heads); ``proj`` (D, D) -> ``out/kernel`` (heads, D/heads, D); ``fc`` (out, in) -> Dense
    kernel (in, out)."""
    depth, d = _vit_dims(sd)
    hd = d // num_heads
    a = {}

    def put(key, t):
        a[key] = t.detach().cpu().numpy().astype(np.float32)

    put("embedding/kernel", sd["patch_embed.proj.weight"].permute(2, 3, 1, 0))
    put("embedding/bias", sd["patch_embed.proj.bias"])
    put("cls", sd["cls_token"])
    put("Transformer/posembed_input/pos_embedding", sd["pos_embed"])
    put("Transformer/encoder_norm/scale", sd["norm.weight"])
    put("Transformer/encoder_norm/bias", sd["norm.bias"])
    for i in range(depth):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        m = p + "MultiHeadDotProductAttention_1/"
        put(p + "LayerNorm_0/scale", sd[b + "norm1.weight"])
        put(p + "LayerNorm_0/bias", sd[b + "norm1.bias"])
        qkv_w, qkv_b = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            put(m + f"{n}/kernel", qkv_w[j * d:(j + 1) * d].T.reshape(d, num_heads, hd))
            put(m + f"{n}/bias", qkv_b[j * d:(j + 1) * d].reshape(num_heads, hd))
        put(m + "out/kernel", sd[b + "attn.proj.weight"].reshape(d, num_heads, hd).permute(1, 2, 0))
        put(m + "out/bias", sd[b + "attn.proj.bias"])
        put(p + "LayerNorm_2/scale", sd[b + "norm2.weight"])
        put(p + "LayerNorm_2/bias", sd[b + "norm2.bias"])
        for r in range(2):
            put(p + f"MlpBlock_3/Dense_{r}/kernel", sd[b + f"mlp.fc{r + 1}.weight"].T)
            put(p + f"MlpBlock_3/Dense_{r}/bias", sd[b + f"mlp.fc{r + 1}.bias"])
    return a


def to_torchvision(sd: dict) -> dict[str, torch.Tensor]:
    """timm ViT state dict -> ``torchvision.models.VisionTransformer`` state dict (names only; same tensors)."""
    depth, _ = _vit_dims(sd)
    out = {"class_token": sd["cls_token"], "conv_proj.weight": sd["patch_embed.proj.weight"],
           "conv_proj.bias": sd["patch_embed.proj.bias"], "encoder.pos_embedding": sd["pos_embed"]}
    names = {"norm1": "ln_1", "norm2": "ln_2", "attn.qkv.weight": "self_attention.in_proj_weight",
             "attn.qkv.bias": "self_attention.in_proj_bias", "attn.proj": "self_attention.out_proj",
             "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
    for i in range(depth):
        for k, v in sd.items():
            if not k.startswith(f"blocks.{i}."):
                continue
            rest = k[len(f"blocks.{i}."):]
            for src, dst in names.items():
                if rest == src or rest.startswith(src + "."):
                    rest = dst + rest[len(src):]
                    break
            else:
                raise ConfigError(f"timm key {k!r} has no torchvision equivalent (torchvision ViTs have no "
                                  "layer scale / registers): pick a plain vit_* architecture for fmt='torchvision'")
            out[f"encoder.layers.encoder_layer_{i}.{rest}"] = v
    out["encoder.ln.weight"], out["encoder.ln.bias"] = sd["norm.weight"], sd["norm.bias"]
    return out


def to_dinov2(sd: dict, seed: int = 0, swiglu: bool = False) -> dict[str, torch.Tensor]:
    """timm ``vit_*_dinov2`` state dict -> facebookresearch DINOv2 names: adds ``mask_token`` (1, D);
    SwiGLU ``mlp.fc1/fc2`` -> ``mlp.w12/w3``; for register models (timm: ``reg_token``, ``no_embed_class``)
    ``register_tokens`` and a ``pos_embed`` with a CLS row ``p0`` (random) and ``cls_token - p0``, so that
    timm's ``_convert_dinov2`` gives back exactly ``sd``."""
    g = torch.Generator().manual_seed(int(seed) + 1)
    d = sd["cls_token"].shape[-1]
    out = {}
    for k, v in sd.items():
        if k in ("reg_token", "cls_token", "pos_embed"):
            continue
        out[k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3") if swiglu else k] = v
    if "reg_token" in sd:
        p0 = torch.randn((1, 1, d), generator=g) * 0.02
        out["register_tokens"] = sd["reg_token"]
        out["cls_token"] = sd["cls_token"] - p0
        out["pos_embed"] = torch.cat([p0, sd["pos_embed"]], dim=1)
    else:
        out["cls_token"], out["pos_embed"] = sd["cls_token"], sd["pos_embed"]
    out["mask_token"] = torch.randn((1, d), generator=g) * 0.02
    return out


def _is_swiglu(arch: str) -> bool:
    return "giant" in arch and "dinov2" in arch


def write_standin_checkpoint(arch: str, path: str | os.PathLike, fmt: str, *, img_size: int | None = None,
                             seed: int = 0) -> Path:
    """Write a stand-in checkpoint of ``arch`` (preset or timm ViT name) in format ``fmt`` (see the module
    docstring) to ``path``; returns the path. The tensors are :func:`standin_state_dict` ``(arch, seed,
    img_size)``. Raises :class:`ConfigError` for an unknown ``fmt`` or a format that cannot hold ``arch``
    (npz / torchvision need a plain ViT, dinov2 a ``*_dinov2`` architecture). The file is written to a
    temporary name and renamed."""
    if fmt not in STANDIN_FORMATS:
        raise ConfigError(f"fmt={fmt!r} is not a stand-in format; allowed: {', '.join(STANDIN_FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = standin_state_dict(arch, seed, img_size)
    tmp = path.with_name(path.name + ".tmp")
    plain = all(not k.endswith(("ls1.gamma", "ls2.gamma")) for k in sd) and "reg_token" not in sd
    if fmt in ("npz", "torchvision") and not plain:
        raise ConfigError(f"fmt={fmt!r} holds plain ViTs only; {arch!r} has layer scale / register tokens")
    if fmt == "dinov2" and "dinov2" not in arch:
        raise ConfigError(f"fmt='dinov2' needs a timm *_dinov2 architecture, got {arch!r}")
    if fmt == "pth":
        torch.save(sd, tmp)
    elif fmt == "bin":
        torch.save(sd, tmp, _use_new_zipfile_serialization=False)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(tmp))
    elif fmt == "npz":
        with open(tmp, "wb") as f:
            np.savez(f, **to_jax_npz_arrays(sd, _num_heads(arch, img_size)))
    elif fmt == "torchvision":
        torch.save(to_torchvision(sd), tmp)
    else:
        torch.save(to_dinov2(sd, seed, swiglu=_is_swiglu(arch)), tmp)
    os.replace(tmp, path)
    return path


def make_fake_hf_cache(cache_dir: str | os.PathLike, name_with_tag: str, *, seed: int = 0,
                       commit: str | None = None) -> Path:
    """Write the Hugging Face cache entry that timm's ``hf_hub_id`` of ``name_with_tag`` resolves to.

    Layout (huggingface_hub's cache): ``<cache_dir>/models--<org>--<repo>/refs/main`` (the commit hash),
    ``blobs/<sha256 of the file>`` and ``snapshots/<commit>/{model.safetensors, config.json}`` as symlinks
    to the blobs (copies where symlinks are not possible). ``model.safetensors`` holds
    :func:`standin_state_dict` ``(arch, seed)`` at the architecture's own image size; ``config.json`` is
    timm's hub config (``architecture``, ``num_features``, ``pretrained_cfg``). Use it with
    ``HF_HUB_CACHE=<cache_dir>`` (or ``HF_HOME=<dir>`` when ``cache_dir`` is ``<dir>/hub``) and
    ``HF_HUB_OFFLINE=1``. Returns the snapshot's ``model.safetensors`` path. Raises :class:`ConfigError`
    when the name has no ``hf_hub_id`` in timm.
    """
    from safetensors.torch import save_file

    model = meta_network(name_with_tag, None)
    cfg = dict(model.pretrained_cfg)
    hf_id = cfg.get("hf_hub_id")
    if not hf_id:
        raise ConfigError(f"{name_with_tag!r} has no hf_hub_id in timm's pretrained_cfg; nothing to put in a cache")
    repo = hf_id.partition("@")[0]
    filename = cfg.get("hf_hub_filename") or "model.safetensors"
    if not filename.endswith(".safetensors"):
        raise ConfigError(f"{name_with_tag!r}: timm loads {filename!r} from {repo}; only model.safetensors "
                          "repositories are faked")
    arch = cfg.get("architecture") or name_with_tag.split(".")[0]
    sd = standin_state_dict(name_with_tag, seed)
    root = Path(cache_dir) / ("models--" + repo.replace("/", "--"))
    commit = commit or hashlib.sha1(f"{repo}:{seed}".encode()).hexdigest()
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    tmp = root / "blobs" / "weights.tmp"
    save_file(sd, str(tmp), metadata={"format": "pt"})
    hub_cfg = {"architecture": arch, "num_classes": int(cfg.get("num_classes", 0) or 0),
               "num_features": int(model.num_features),
               "pretrained_cfg": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()
                                  if k not in ("hf_hub_id", "url", "file", "state_dict") and _jsonable(v)}}
    cfg_tmp = root / "blobs" / "config.tmp"
    cfg_tmp.write_text(json.dumps(hub_cfg, indent=2))
    for src, dst in ((tmp, snap / filename), (cfg_tmp, snap / "config.json")):
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        blob = root / "blobs" / digest
        os.replace(src, blob)
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        try:
            dst.symlink_to(os.path.relpath(blob, dst.parent))
        except OSError:
            import shutil

            shutil.copyfile(blob, dst)
    (root / "refs" / "main").write_text(commit)
    return snap / filename


def _jsonable(v) -> bool:
    try:
        json.dumps(list(v) if isinstance(v, tuple) else v)
        return True
    except (TypeError, ValueError):
        return False


__all__ = ["STANDIN_FORMATS", "make_fake_hf_cache", "standin_state_dict", "to_dinov2", "to_jax_npz_arrays",
           "to_torchvision", "write_standin_checkpoint"]
