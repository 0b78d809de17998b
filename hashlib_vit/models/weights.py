"""Pretrained weights from every source users hold, for every backbone (DESIGN.md "Offline first").

One entry point, :func:`load_weights`, called by :func:`hashlib_vit.models.backbones.create_backbone`
right after the bare network is built and **before** any neck or hash layer is added (MGVT copies the
last block after this), so every model family gets the same weights the same way. Modules built into
the network that no checkpoint has (AE-ViT's AEM, marked ``added_module = True``) keep their own
initialisation: their keys are the only ones allowed to be missing from a file. Sources (``weights=``):

* ``None`` — random initialisation (``source="none"``);
* ``"hub"`` — the timm pretrained tag of the backbone name (``vit_tiny_patch16_224.augreg_in21k``,
  untagged = timm's default tag): the file named by timm's ``pretrained_cfg["hf_hub_id"]`` is looked up
  in the Hugging Face cache first (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``, read at call time; ``source="hf-cache"``) and downloaded only when
  ``HF_HUB_OFFLINE`` is not set (``source="hub"``);
* a local file (``source="file"``), its format detected from its content (magic bytes, zip members,
  keys), not from its extension:

  ============  =====================================================================================
  format        what it is
  ============  =====================================================================================
  timm          ``torch.save`` state dict with timm's keys (``.pth``/``.bin``; zip or legacy pickle),
                also wrapped as ``{"state_dict"|"model"|"module": {...}}``
  safetensors   the same keys in a safetensors file (e.g. a Hugging Face ``model.safetensors``)
  jax-npz       Google's original JAX ViT ``.npz`` (``embedding/kernel``, ``cls``,
                ``Transformer/encoderblock_N/...``: ``ViT-B_16.npz`` as loaded by TransHash / VTS),
                loaded by timm's own npz reader (``VisionTransformer.load_pretrained``)
  torchvision   a ``torchvision.models.vit_*`` state dict (``conv_proj``, ``class_token``,
                ``encoder.layers.encoder_layer_N...``), mapped here onto timm's ViT keys
  dinov2        a facebookresearch DINOv2 state dict (``mask_token``, ``blocks.N.ls1.gamma``, optional
                ``register_tokens``), converted by timm's ``_convert_dinov2``
  ============  =====================================================================================

The image size may differ from the checkpoint's: the absolute position embedding is resampled with
timm's ``resample_abs_pos_embed`` (bicubic; prefix tokens kept; Google npz: timm's npz loader,
bilinear). A different patch size, another architecture, an empty, truncated or unknown file each
raise one :class:`~hashlib_vit.errors.ConfigError` naming the file, the format found and what was
expected.

The result is a ``weights_info`` dict (kept on the Backbone and recorded by ``run_experiment``)::

    {"source": "none"|"hub"|"hf-cache"|"file", "name": backbone name, "format": ..., "container": ...,
     "path": file loaded or None, "sha256": of that file (streamed) or None, "pretrained_tag": timm tag,
     "hf_repo": ..., "mean": [r, g, b], "std": [r, g, b], "norm_source": where mean/std come from,
     "pos_embed_resampled_from": [h, w] patch grid of the checkpoint's position embedding, or None}
"""
from __future__ import annotations

import difflib
import math
import os
import re
import struct
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError, DataError
from ..utils import sha256_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # Google's JAX ViT checkpoints (and timm's augreg / orig_in21k tags)
INCEPTION_STD = (0.5, 0.5, 0.5)
FORMATS = ("timm", "safetensors", "jax-npz", "torchvision", "dinov2")
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a hf_hub_id repository
_WIDTH_NAMES = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge"}


# ----------------------------------------------------------------------------- small helpers
def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value (read at call time)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved at call time as huggingface_hub does at import time:
    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub`` or
    ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expanduser(os.environ["HF_HOME"])) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


file_sha256 = sha256_file  # hex sha256 of a file, streamed in 1 MiB pieces (hashlib_vit.utils)


def none_info(name: str, mean, std, norm_source: str) -> dict:
    """``weights_info`` of a randomly initialised backbone."""
    return {"source": "none", "name": name, "format": None, "container": None, "path": None, "sha256": None,
            "pretrained_tag": None, "hf_repo": None, "mean": [float(v) for v in mean],
            "std": [float(v) for v in std], "norm_source": norm_source, "pos_embed_resampled_from": None}


def split_tag(name: str) -> tuple[str, str | None]:
    """``"vit_tiny_patch16_224.augreg_in21k"`` -> ``("vit_tiny_patch16_224", "augreg_in21k")``."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


# ----------------------------------------------------------------------------- names
_NAME_CACHE: dict = {}


def _timm_names() -> tuple[set, set]:
    if not _NAME_CACHE:
        import timm

        _NAME_CACHE["models"] = set(timm.list_models())
        _NAME_CACHE["pretrained"] = set(timm.list_pretrained())
    return _NAME_CACHE["models"], _NAME_CACHE["pretrained"]


def check_timm_name(name: str, extra: tuple[str, ...] = ()) -> str:
    """Check a timm model name, with or without a pretrained tag; return it unchanged.

    Valid: an architecture of ``timm.list_models()`` (untagged) or ``arch.tag`` listed by
    ``timm.list_pretrained()``. Raises :class:`ConfigError`: for an unknown name, with close matches
    (``difflib`` over ``timm.list_models() + timm.list_pretrained()`` and ``extra``, e.g. the presets);
    for an unknown tag of a known architecture, with the tags that exist for it.
    """
    models, pretrained = _timm_names()
    if name in models or name in pretrained:
        return name
    arch, tag = split_tag(name)
    if tag is not None and arch in models:
        tags = sorted(n.split(".", 1)[1] for n in pretrained if n.startswith(arch + "."))
        raise ConfigError(f"backbone={name!r}: timm architecture {arch!r} has no pretrained tag {tag!r}; its tags: "
                          + (", ".join(tags) if tags else "none (no pretrained weights in timm)")
                          + f"; or use the untagged {arch!r}")
    close = difflib.get_close_matches(name, sorted(models | pretrained | set(extra)), n=5, cutoff=0.6)
    raise ConfigError(f"backbone={name!r} is not a known value; allowed: "
                      + (", ".join(extra) + ", " if extra else "")
                      + "any timm model name with or without a pretrained tag (timm.list_models(), "
                        "timm.list_pretrained()); "
                      + (f"close matches: {', '.join(close)}" if close else "no close match"))


# ----------------------------------------------------------------------------- format detection
def sniff_format(path: str | os.PathLike) -> tuple[str, str | None]:
    """Detect a checkpoint's container from its bytes: returns ``(container, problem)``.

    ``container``: ``"empty"``, ``"safetensors"``, ``"torch-zip"`` (``torch.save`` >= 1.6), ``"torch-pickle"``
    (legacy ``torch.save`` / a pickle), ``"npz"`` (numpy zip of ``.npy`` members), ``"zip"`` (another zip),
    ``"npy"``, ``"text"`` or ``"unknown"``. ``problem`` is None, or why the file cannot be read although
    its container was recognised (e.g. truncated).
    """
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        return "empty", "the file is empty (0 bytes)"
    with open(p, "rb") as f:
        head = f.read(64)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            # no readable central directory: look at the first member's name in its local header
            n = struct.unpack("<H", head[26:28])[0] if len(head) >= 30 else 0
            with open(p, "rb") as f:
                f.seek(30)
                first = f.read(n).decode("utf-8", "replace")
            kind = "npz" if first.endswith(".npy") else ("torch-zip" if "/" in first or first.endswith(".pkl")
                                                        else "zip")
            return kind, f"cannot read the zip archive ({err}): truncated or corrupt ({size} bytes)"
        if names and all(n.endswith(".npy") for n in names):
            return "npz", None
        if any(n.endswith("data.pkl") for n in names):
            return "torch-zip", None
        return "zip", None
    if head[:6] == b"\x93NUMPY":
        return "npy", None
    if head[:1] == b"\x80":
        return "torch-pickle", None
    if len(head) >= 9:
        n = struct.unpack("<Q", head[:8])[0]
        if head[8:9] == b"{" and 0 < n < (1 << 28):
            if 8 + n > size:
                return "safetensors", f"its header says {n} bytes of JSON but the file has {size} bytes: truncated"
            return "safetensors", None
    try:
        head.decode("utf-8")
        return "text", None
    except UnicodeDecodeError:
        return "unknown", None


def _unwrap(sd):
    for _ in range(3):
        if isinstance(sd, dict):
            for key in ("state_dict", "model", "module"):
                if key in sd and isinstance(sd[key], dict):
                    sd = sd[key]
                    break
            else:
                break
    if isinstance(sd, dict) and sd and all(k.startswith("module.") for k in sd):  # DataParallel / DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def read_state_dict(path: str | os.PathLike) -> tuple[dict, str]:
    """Read a torch or safetensors checkpoint: ``(state_dict, container)`` with tensors on the CPU.

    torch files load with ``weights_only=True``; ``{"state_dict"|"model"|"module": ...}`` wrappers and a
    ``module.`` prefix are removed. Raises :class:`ConfigError` (naming the file, the container found
    and what was expected) for an empty, truncated, unknown or non-state-dict file.
    """
    path = str(path)
    container, problem = sniff_format(path)
    expected = ("expected a torch state dict (.pth/.bin), a safetensors file or a Google JAX ViT .npz")
    if problem:
        raise ConfigError(f"weights file {path!r} (format found: {container}): {problem}; {expected}")
    if container == "safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(path)
        except Exception as err:
            raise ConfigError(f"weights file {path!r} (format found: safetensors) cannot be read: {err}; "
                              "truncated or corrupt?") from err
    elif container in ("torch-zip", "torch-pickle"):
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise ConfigError(f"weights file {path!r} (format found: {container}) cannot be loaded with "
                              f"torch.load(weights_only=True): {first}; truncated, corrupt or not a plain "
                              f"state dict? {expected}") from err
    else:
        raise ConfigError(f"weights file {path!r}: unknown format (found: {container}); {expected}")
    sd = _unwrap(sd)
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        what = type(sd).__name__ if not isinstance(sd, dict) else (
            "an empty dict" if not sd else f"a dict with non-tensor values (keys {list(sd)[:5]})")
        raise ConfigError(f"weights file {path!r} (format found: {container}) holds {what}, not a state dict "
                          "of tensors; " + expected)
    return sd, container


def state_dict_layout(sd: dict) -> str:
    """Key layout of a state dict: ``"torchvision"``, ``"dinov2"`` (facebookresearch), ``"timm"`` or ``"other"``."""
    if "conv_proj.weight" in sd or "encoder.pos_embedding" in sd or "class_token" in sd:
        return "torchvision"
    if "mask_token" in sd or "register_tokens" in sd:
        return "dinov2"
    if "patch_embed.proj.weight" in sd or any(k.startswith("blocks.") for k in sd):
        return "timm"
    return "other"


# ----------------------------------------------------------------------------- torchvision -> timm
_TV_BLOCK = {
    "ln_1": "norm1", "ln_2": "norm2",
    "self_attention.in_proj_weight": "attn.qkv.weight", "self_attention.in_proj_bias": "attn.qkv.bias",
    "self_attention.out_proj.weight": "attn.proj.weight", "self_attention.out_proj.bias": "attn.proj.bias",
    "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2", "mlp.linear_1": "mlp.fc1", "mlp.linear_2": "mlp.fc2",
}


def torchvision_to_timm(sd: dict) -> dict:
    """Map a ``torchvision.models.VisionTransformer`` state dict onto timm ``VisionTransformer`` keys.

    ``conv_proj`` -> ``patch_embed.proj``, ``class_token`` -> ``cls_token``, ``encoder.pos_embedding`` ->
    ``pos_embed``, ``encoder.layers.encoder_layer_{i}.{ln_1, self_attention.in_proj_*,
    self_attention.out_proj, ln_2, mlp.0, mlp.3}`` -> ``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2,
    mlp.fc1, mlp.fc2}`` (torchvision packs q, k, v in the same order as timm's ``qkv``; older
    ``mlp.linear_1/2`` names accepted), ``encoder.ln`` -> ``norm``, ``heads.head`` -> ``head``.
    Tensors are shared, not copied. Unknown keys are kept as they are (and then reported as unexpected).
    """
    out = {}
    for k, v in sd.items():
        if k.startswith("conv_proj."):
            out["patch_embed.proj." + k[len("conv_proj."):]] = v
        elif k == "class_token":
            out["cls_token"] = v
        elif k == "encoder.pos_embedding":
            out["pos_embed"] = v
        elif k.startswith("encoder.ln."):
            out["norm." + k[len("encoder.ln."):]] = v
        elif k.startswith("heads.head."):
            out["head." + k[len("heads.head."):]] = v
        elif (m := re.match(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)$", k)):
            rest = m.group(2)
            for src, dst in _TV_BLOCK.items():
                if rest == src or rest.startswith(src + "."):
                    rest = dst + rest[len(src):]
                    break
            out[f"blocks.{m.group(1)}.{rest}"] = v
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------- architecture description
def describe_vit_state(sd: dict) -> dict:
    """Depth, width, patch size, grid and a guessed timm name of a timm-layout ViT state dict (best effort)."""
    d: dict = {}
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if blocks:
        d["depth"] = max(blocks) + 1
    pw = sd.get("patch_embed.proj.weight")
    if isinstance(pw, torch.Tensor) and pw.ndim == 4:
        d["width"], d["patch"] = int(pw.shape[0]), int(pw.shape[-1])
    elif isinstance(sd.get("cls_token"), torch.Tensor):
        d["width"] = int(sd["cls_token"].shape[-1])
    pe = sd.get("pos_embed")
    if isinstance(pe, torch.Tensor) and pe.ndim == 3:
        for prefix in (1, 0, 5):
            g = math.isqrt(max(pe.shape[1] - prefix, 0))
            if g and g * g == pe.shape[1] - prefix:
                d["grid"] = g
                break
    if "patch" in d and "grid" in d:
        d["img_size"] = d["patch"] * d["grid"]
    size = _WIDTH_NAMES.get(d.get("width"))
    if size and "patch" in d and d.get("depth") in (12, 24, 32):
        d["timm_guess"] = f"vit_{size}_patch{d['patch']}_{d.get('img_size', 224)}"
    else:
        from .presets import VIT_PRESETS

        for pname, p in VIT_PRESETS.items():
            if (p.depth, p.embed_dim, p.patch_size) == (d.get("depth"), d.get("width"), d.get("patch")):
                d["timm_guess"] = pname
                break
    return d


def _describe(d: dict) -> str:
    parts = [f"{k} {d[k]}" for k in ("depth", "width", "patch", "img_size") if k in d]
    text = ", ".join(parts) or "unknown shape"
    return text + (f" (looks like {d['timm_guess']})" if "timm_guess" in d else "")


def _model_description(model: nn.Module) -> dict:
    d = {}
    if hasattr(model, "blocks"):
        d["depth"] = len(model.blocks)
    if hasattr(model, "embed_dim"):
        d["width"] = int(model.embed_dim)
    pe = getattr(model, "patch_embed", None)
    if pe is not None and hasattr(pe, "patch_size"):
        d["patch"] = int(pe.patch_size[0])
        d["img_size"] = int(pe.img_size[0]) if getattr(pe, "img_size", None) else None
    return d


def added_state_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the modules marked ``added_module = True`` (e.g. AEM): not in any checkpoint."""
    return {f"{name}.{k}" for name, m in model.named_modules() if getattr(m, "added_module", False)
            for k in m.state_dict()}


def _load_strict(model: nn.Module, sd: dict) -> None:
    """``load_state_dict`` that requires every key except those of added modules (checked before)."""
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or set(missing) - added_state_keys(model):
        raise ConfigError(f"state dict does not match the backbone: missing {sorted(missing)[:5]}, "
                          f"unexpected {sorted(unexpected)[:5]}")


def _mismatch_error(path, fmt: str, name: str, model: nn.Module, sd: dict) -> ConfigError | None:
    target = model.state_dict()
    added = added_state_keys(model)
    missing = [k for k in target if k not in sd and k not in added]
    unexpected = [k for k in sd if k not in target]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs backbone {tuple(target[k].shape)}"
              for k in target if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if shapes:
        parts.append("shapes differ: " + "; ".join(shapes[:3])
                     + (f" (+{len(shapes) - 3} more)" if len(shapes) > 3 else ""))
    if missing:
        parts.append(f"missing in the file: {missing[:4]}"
                     + (f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""))
    if unexpected:
        parts.append(f"not in the backbone: {unexpected[:4]}"
                     + (f" (+{len(unexpected) - 4} more)" if len(unexpected) > 4 else ""))
    found = describe_vit_state(sd) if hasattr(model, "blocks") else {}
    return ConfigError(
        f"weights file {str(path)!r} (format found: {fmt}) is for another architecture than backbone {name!r} "
        f"(expected {_describe(_model_description(model))}"
        + (f"; the file has {_describe(found)}" if found else "") + "): " + "; ".join(parts))


# ----------------------------------------------------------------------------- loading into a ViT
def _is_vit(model: nn.Module) -> bool:
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


def _check_patch(model, sd, path, fmt, name):
    pw = sd.get("patch_embed.proj.weight")
    want = tuple(model.patch_embed.proj.weight.shape[-2:])
    if isinstance(pw, torch.Tensor) and pw.ndim == 4 and tuple(pw.shape[-2:]) != want:
        raise ConfigError(
            f"weights file {str(path)!r} (format found: {fmt}) has patch size {tuple(pw.shape[-2:])} but backbone "
            f"{name!r} uses {want}: a different patch size is not resampled; pick the backbone with patch "
            f"{pw.shape[-1]} (the file has {_describe(describe_vit_state(sd))})")


def resample_pos_embed(model: nn.Module, sd: dict) -> list[int] | None:
    """Resample ``sd["pos_embed"]`` in place to the ViT's patch grid with timm's ``resample_abs_pos_embed``
    (bicubic, antialias, as timm's ``checkpoint_filter_fn``), keeping the prefix-token rows (none when
    ``model.no_embed_class``). Returns the checkpoint's ``[h, w]`` grid when it was resampled, else None.
    A non-square token count or a different width is left alone (reported by the architecture check)."""
    from timm.layers import resample_abs_pos_embed

    pe, target = sd.get("pos_embed"), getattr(model, "pos_embed", None)
    if not isinstance(pe, torch.Tensor) or target is None or pe.ndim != 3 or pe.shape == target.shape:
        return None
    if pe.shape[-1] != target.shape[-1]:
        return None
    npt = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 1))
    n = pe.shape[1] - npt
    g = math.isqrt(max(n, 0))
    if n <= 0 or g * g != n:
        return None
    sd["pos_embed"] = resample_abs_pos_embed(pe, new_size=list(model.patch_embed.grid_size), old_size=[g, g],
                                             num_prefix_tokens=npt)
    return [g, g]


def _drop_classifier(model: nn.Module, sd: dict) -> dict:
    """Remove the checkpoint's classifier (timm ``pretrained_cfg["classifier"]``, e.g. ``head``/``fc``) and
    representation layer when the backbone has none (built with ``num_classes=0``)."""
    target = model.state_dict()
    names = getattr(model, "pretrained_cfg", {}).get("classifier", "head") or "head"
    names = (names,) if isinstance(names, str) else tuple(names)
    drop = tuple(f"{n}." for n in names) + ("pre_logits.", "head.")
    return {k: v for k, v in sd.items() if k in target or not k.startswith(drop)}


def load_vit_state(model: nn.Module, sd: dict, *, path, fmt: str, name: str) -> list[int] | None:
    """Load a state dict of any supported layout into a timm ``VisionTransformer`` (in place, strict).

    Converts torchvision / DINOv2 / other timm-known layouts (timm's ``checkpoint_filter_fn``) to timm
    keys, refuses a different patch size, resamples ``pos_embed`` to the model's grid and then requires
    every key and shape to match. Returns the checkpoint's pos-embed grid ``[h, w]`` when resampled.
    Raises :class:`ConfigError` naming ``path``, ``fmt`` and the first differing keys/shapes.
    """
    layout = state_dict_layout(sd)
    if layout == "torchvision":
        sd = torchvision_to_timm(sd)
    elif layout == "dinov2":
        from timm.models.vision_transformer import _convert_dinov2

        sd = _convert_dinov2(dict(sd), model)
    elif layout == "other":  # e.g. OpenAI / OpenCLIP layouts that timm's own filter knows
        from timm.models.vision_transformer import checkpoint_filter_fn

        try:
            sd = checkpoint_filter_fn(dict(sd), model)
        except Exception:
            pass  # reported below as missing / unexpected keys
    sd = _drop_classifier(model, sd)
    _check_patch(model, sd, path, fmt, name)
    resampled = resample_pos_embed(model, sd)
    err = _mismatch_error(path, fmt, name, model, sd)
    if err is not None:
        raise err
    _load_strict(model, sd)
    return resampled


def _npz_keys(path) -> dict:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as w:
            return {k: tuple(w[k].shape) for k in w.files}
    except Exception as err:
        raise ConfigError(f"weights file {str(path)!r} (format found: npz) cannot be read: {err}; "
                          "truncated or corrupt?") from err


def load_jax_npz(model: nn.Module, path, *, name: str) -> list[int] | None:
    """Load a Google JAX ViT ``.npz`` with timm's npz loader (``model.load_pretrained(path)``).

    Before loading, the archive's shapes are checked against the model (timm's loader would otherwise
    resample a different patch size silently and ignore extra blocks): patch size, width, depth and
    heads (``query/kernel`` is ``(D, heads, D/heads)``). Returns the checkpoint's pos-embed grid when
    timm resampled it (bilinear, as timm's loader does for npz). Raises :class:`ConfigError`.
    """
    shapes = _npz_keys(path)
    prefix = next((p for p in ("", "opt/target/", "params/", "params/img/") if f"{p}embedding/kernel" in shapes), None)
    if prefix is None:
        raise ConfigError(f"weights file {str(path)!r} (format found: npz) has no 'embedding/kernel': not a Google "
                          f"JAX ViT checkpoint (keys: {sorted(shapes)[:5]}); expected the layout of ViT-B_16.npz "
                          "(embedding/kernel, cls, Transformer/encoderblock_N/...)")
    if not _is_vit(model):
        raise ConfigError(f"weights file {str(path)!r} (format found: jax-npz) is a ViT checkpoint but backbone "
                          f"{name!r} is not a timm VisionTransformer")
    kp, kw, kc, width = shapes[f"{prefix}embedding/kernel"]
    block_re = re.escape(prefix) + r"Transformer/encoderblock_(\d+)/"
    blocks = {int(m.group(1)) for k in shapes if (m := re.match(block_re, k))}
    q = [v for k, v in shapes.items() if re.search(r"encoderblock_0/MultiHeadDotProductAttention_\d/query/kernel$", k)]
    found = {"depth": max(blocks) + 1 if blocks else None, "width": width, "patch": kp}
    pos = shapes.get(f"{prefix}Transformer/posembed_input/pos_embedding") or shapes.get(f"{prefix}pos_embedding")
    grid = math.isqrt(pos[1] - 1) if pos and len(pos) == 3 and pos[1] > 1 else None
    if grid and grid * grid == pos[1] - 1:
        found["grid"], found["img_size"] = grid, grid * kp
    want = _model_description(model)
    heads = q[0][1] if q and len(q[0]) == 3 else None
    model_heads = model.blocks[0].attn.num_heads if len(model.blocks) else None
    bad = [f"{k} {found[k]} vs {want.get(k)}" for k in ("patch", "width", "depth") if found.get(k) != want.get(k)]
    if heads is not None and heads != model_heads:
        bad.append(f"heads {heads} vs {model_heads}")
    if bad:
        size = _WIDTH_NAMES.get(width)
        guess = (f" (looks like vit_{size}_patch{kp}_{found.get('img_size', 224)})"
                 if size and found["depth"] in (12, 24, 32) else "")
        raise ConfigError(f"weights file {str(path)!r} (format found: jax-npz) is for another architecture than "
                          f"backbone {name!r}: file vs backbone: {', '.join(bad)}{guess}")
    try:
        with torch.no_grad():
            model.load_pretrained(str(path))
    except Exception as err:
        raise ConfigError(f"weights file {str(path)!r} (format found: jax-npz) could not be loaded by timm's npz "
                          f"loader: {type(err).__name__}: {err}") from err
    return [grid, grid] if grid and list(model.patch_embed.grid_size) != [grid, grid] else None


def load_generic_state(model: nn.Module, sd: dict, *, path, fmt: str, name: str) -> None:
    """Strictly load a timm/torchvision-layout state dict into a non-ViT (CNN) model, classifier dropped."""
    sd = _drop_classifier(model, sd)
    err = _mismatch_error(path, fmt, name, model, sd)
    if err is not None:
        raise err
    _load_strict(model, sd)


# ----------------------------------------------------------------------------- normalisation
def _cfg_norm(model: nn.Module, fallback_mean, fallback_std):
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("mean") and cfg.get("std"):
        tag = cfg.get("tag")
        label = cfg.get("architecture", "?") + (f".{tag}" if tag else "")
        return tuple(cfg["mean"]), tuple(cfg["std"]), f"timm pretrained_cfg of {label}"
    return tuple(fallback_mean), tuple(fallback_std), "hashlib_vit default (no pretrained_cfg)"


def _json_cfg_norm(path: Path):
    """mean/std of a timm ``config.json`` next to a weights file (Hugging Face snapshot layout), if any.

    None when there is no config.json, or it has no ``pretrained_cfg`` (a config of another kind) or no
    mean/std in it. Raises DataError naming the file and the field when config.json is not a JSON object
    (:func:`hashlib_vit.utils.read_json`), ``pretrained_cfg`` is not an object, or its ``mean``/``std`` are
    not 3 numbers (std > 0): the normalisation the weights were trained with would otherwise be replaced
    silently by the default."""
    from ..utils import read_json

    cfg_file = path.parent / "config.json"
    if not cfg_file.is_file():
        return None
    where = f"config.json next to the weights file {cfg_file}"
    cfg = read_json(cfg_file, where).get("pretrained_cfg")
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        raise DataError(f"{where}: field 'pretrained_cfg' is {type(cfg).__name__}; expected a JSON object "
                        "(timm's pretrained_cfg with mean and std)")
    if cfg.get("mean") is None and cfg.get("std") is None:
        return None
    for key in ("mean", "std"):
        v = cfg.get(key)
        if (not isinstance(v, list) or len(v) != 3 or any(isinstance(x, bool) or not isinstance(x, (int, float))
                                                          for x in v)
                or (key == "std" and any(x <= 0 for x in v))):
            raise DataError(f"{where}: field 'pretrained_cfg.{key}' is {v!r}; expected 3 numbers (one per RGB "
                            f"channel{', each > 0' if key == 'std' else ''}); fix or remove the file")
    return tuple(cfg["mean"]), tuple(cfg["std"]), f"pretrained_cfg in {cfg_file}"


# ----------------------------------------------------------------------------- the hub
#: Seconds the network probe (:func:`network_problem`) waits for a name lookup and a TCP connection.
PROBE_TIMEOUT_S = 2.0


def network_problem(url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """A fast check that a download can start: one HTTP ``HEAD`` of ``url`` (default: ``$HF_ENDPOINT`` or
    https://huggingface.co), through ``$HTTPS_PROXY`` when set, bounded by ``timeout`` seconds in all
    (name lookup included). Any HTTP answer, even an error status, counts as reachable. Returns None when
    reachable, else why not (for the message): huggingface_hub's own retries take about a minute to give
    up on a network that is not there."""
    import threading
    import urllib.error
    import urllib.request

    url = url or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    via = f" through the HTTPS proxy {proxy}" if proxy else ""
    result: list = []

    def head():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            result.append(None)
        except urllib.error.HTTPError:  # the server answered
            result.append(None)
        except Exception as e:  # URLError (name lookup, refused), timeouts, TLS errors
            reason = getattr(e, "reason", e)
            result.append(f"{type(reason).__name__}: {getattr(reason, 'strerror', None) or reason}")

    t = threading.Thread(target=head, daemon=True)  # getaddrinfo itself has no time-out
    t.start()
    t.join(timeout + 0.5)
    if not result:
        return f"no answer from {url}{via} within {timeout:g} s"
    return None if result[0] is None else f"cannot connect to {url}{via}: {result[0]}"


def hub_error(name: str, why: str) -> ConfigError:
    """The 'no pretrained weights reachable' message: what was looked for, where, and how to give a file."""
    how = (f"torchvision.models.{name}(weights='DEFAULT')" if name == "alexnet"
           else f"timm.create_model({name!r}, pretrained=True)")
    return ConfigError(
        f"could not fetch pretrained weights for backbone {name!r} ({why}). Offline? Run {how} once on a "
        f"machine with network and copy its Hugging Face cache (HF_HUB_CACHE / HF_HOME) here, or save its "
        "state_dict and pass weights='/path/to/file.pth' (.pth/.bin/.safetensors, or a Google .npz), or use "
        "weights=None to train from scratch.")


def find_hub_file(model: nn.Module, name: str) -> tuple[Path, str, str]:
    """Locate the pretrained file of a timm model's ``pretrained_cfg``: ``(path, source, repo)``.

    Looks in the Hugging Face cache (:func:`hf_cache_dir`) with ``hf_hub_download(local_files_only=True)``
    for ``hf_hub_filename`` or ``model.safetensors`` / ``pytorch_model.bin`` of ``hf_hub_id``
    (``source="hf-cache"``); downloads only when not :func:`offline` and a quick probe
    (:func:`network_problem`, about 2 s at most) reaches the hub (``source="hub"``). For a
    ``pretrained_cfg`` with only a ``url``, the torch hub cache (``torch.hub.get_dir()/checkpoints``).
    Raises :class:`ConfigError` (:func:`hub_error`) naming the repo, files and cache looked at.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    hf_id = cfg.get("hf_hub_id")
    cache = hf_cache_dir()
    if hf_id:
        from huggingface_hub import hf_hub_download

        repo, _, revision = hf_id.partition("@")
        files = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HUB_FILES
        for fn in files:
            try:
                return Path(hf_hub_download(repo, fn, revision=revision or None, cache_dir=cache,
                                            local_files_only=True)), "hf-cache", repo
            except Exception:
                continue
        looked = f"{' or '.join(files)} of the Hugging Face repo {repo!r} in the cache {cache}"
        if offline():
            raise hub_error(name, f"HF_HUB_OFFLINE is set and {looked} was not found")
        problem = network_problem()
        if problem:
            raise hub_error(name, f"{looked} was not found, and the hub is not reachable: {problem}")
        errors = []
        for fn in files:
            try:
                return Path(hf_hub_download(repo, fn, revision=revision or None, cache_dir=cache)), "hub", repo
            except Exception as err:  # EntryNotFound -> try the next name; network errors reported below
                errors.append(f"{fn}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        raise hub_error(name, f"looked for {looked} and on the hub: " + "; ".join(errors))
    url = cfg.get("url")
    if not url:
        raise hub_error(name, f"timm has no pretrained weights for {name!r} (its pretrained_cfg names no hf_hub_id "
                              "and no url)")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if cached.is_file():
        return cached, "hf-cache", url
    if offline():
        raise hub_error(name, f"HF_HUB_OFFLINE is set and {cached} (from {url}) is not in the torch hub cache")
    problem = network_problem(url)
    if problem:
        raise hub_error(name, f"{cached} (from {url}) is not in the torch hub cache, and {problem}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached))
    except Exception as err:
        raise hub_error(name, f"downloading {url}: {type(err).__name__}: {err}") from err
    return cached, "hub", url


# ----------------------------------------------------------------------------- the one entry point
def load_weights(model: nn.Module, weights: str | os.PathLike | None, *, name: str,
                 default_mean=INCEPTION_MEAN, default_std=INCEPTION_STD) -> dict:
    """Load pretrained weights into a freshly built timm model (in place) and describe them.

    ``weights``: None, ``"hub"`` or a path (already checked to exist). ``name``: the backbone name as given
    (a preset, or a timm name with or without tag). ``default_mean/std``: the normalisation of a model
    without a timm ``pretrained_cfg`` (the presets).

    Returns ``weights_info`` (see the module docstring). ``mean``/``std`` (RGB, for images in [0, 1]) come
    from, in order: the convention of the format (Google JAX npz: 0.5/0.5 as in the code of Dosovitskiy
    et al., ICLR 2021; torchvision and DINOv2: ImageNet mean/std); the ``config.json`` next to a timm-layout
    file, as in a Hugging Face snapshot (the checkpoint's own timm ``pretrained_cfg``); timm's
    ``pretrained_cfg`` of the backbone name's tag (untagged: timm's default tag; augreg / orig_in21k:
    0.5/0.5); ``default_mean/std``. ``weights_info["norm_source"]`` says which. Raises
    :class:`ConfigError` for every unusable source (see the module docstring).
    """
    mean, std, norm_source = _cfg_norm(model, default_mean, default_std)
    arch, tag = split_tag(name)
    cfg_tag = (getattr(model, "pretrained_cfg", None) or {}).get("tag")
    if weights is None:
        return none_info(name, mean, std, norm_source)
    info = none_info(name, mean, std, norm_source)
    if weights == "hub":
        path, source, repo = find_hub_file(model, name)
        info.update(source=source, hf_repo=repo, pretrained_tag=tag or cfg_tag)
    else:
        path, source = Path(weights), "file"
        info.update(source="file", pretrained_tag=tag)
    container, problem = sniff_format(path)
    if problem:
        raise ConfigError(f"weights file {str(path)!r} (format found: {container}): {problem}; expected a torch "
                          "state dict (.pth/.bin), a safetensors file or a Google JAX ViT .npz")
    resampled = None
    with torch.no_grad():
        if container == "npz":
            fmt = "jax-npz"
            resampled = load_jax_npz(model, path, name=name)
            mean, std, norm_source = INCEPTION_MEAN, INCEPTION_STD, "Google JAX ViT convention (inputs in [-1, 1])"
        else:
            sd, container = read_state_dict(path)
            layout = state_dict_layout(sd)
            fmt = layout if layout in ("torchvision", "dinov2") else (
                "safetensors" if container == "safetensors" else "timm")
            if _is_vit(model):
                resampled = load_vit_state(model, sd, path=path, fmt=fmt, name=name)
            else:
                load_generic_state(model, sd, path=path, fmt=fmt, name=name)
            if layout in ("torchvision", "dinov2"):
                mean, std = IMAGENET_MEAN, IMAGENET_STD
                norm_source = f"{layout} convention (ImageNet mean/std)"
    from_json = _json_cfg_norm(path)
    if from_json is not None and fmt not in ("torchvision", "dinov2", "jax-npz"):
        mean, std, norm_source = from_json
    info.update(format=fmt, container=container, path=os.path.abspath(path), sha256=file_sha256(path),
                mean=[float(v) for v in mean], std=[float(v) for v in std], norm_source=norm_source,
                pos_embed_resampled_from=resampled)
    return info


__all__ = ["FORMATS", "IMAGENET_MEAN", "IMAGENET_STD", "check_timm_name", "describe_vit_state", "file_sha256",
           "find_hub_file", "hf_cache_dir", "hub_error", "load_jax_npz", "load_vit_state", "load_weights",
           "none_info", "offline", "read_state_dict", "resample_pos_embed", "sniff_format", "state_dict_layout",
           "torchvision_to_timm"]
