"""train/optim.py: the learning-rate schedule, parameter groups (every trainable parameter in exactly
one group, with the right lr and weight decay), the optimiser and the autocast dtype."""
import math

import pytest
import torch

from hashlib_vit.config import TrainConfig
from hashlib_vit.errors import ConfigError
from hashlib_vit.losses import build_loss
from hashlib_vit.models import build_model
from hashlib_vit.train import amp_dtype, apply_lr, lr_factor, make_optimizer, param_groups


def test_warmup_then_cosine():
    cfg = TrainConfig(warmup_steps=4, schedule="cosine")
    f = [lr_factor(s, 104, 10, cfg) for s in range(104)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and f[4] == 1.0  # linear warm-up, then cosine from the top
    assert f[54] == pytest.approx(0.5)
    assert f[103] == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)), abs=1e-12)
    assert all(a >= b for a, b in zip(f[4:], f[5:]))
    assert lr_factor(500, 104, 10, cfg) == 0.0  # past the end: stays at the bottom


def test_step_and_constant_schedules():
    step = TrainConfig(warmup_steps=0, schedule="step", step_epochs=2, step_gamma=0.5)
    # 10 steps per epoch: epochs 0-1 -> 1, epochs 2-3 -> 0.5, epochs 4-5 -> 0.25
    assert [lr_factor(s, 60, 10, step) for s in (0, 19, 20, 39, 40, 59)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    const = TrainConfig(warmup_steps=2, schedule="constant")
    assert [lr_factor(s, 60, 10, const) for s in (0, 1, 2, 59)] == [0.5, 1.0, 1.0, 1.0]


def _model_and_loss():
    torch.manual_seed(0)
    model = build_model("vit32_test", 8, "cls_linear")
    return model, build_loss("greedyhash", 8, 4)  # GreedyHash owns a classifier: a loss parameter


def test_param_groups_backbone_vs_new_and_decay():
    model, loss = _model_and_loss()
    groups = {g["name"]: g for g in param_groups(model, loss, TrainConfig(weight_decay=0.05, backbone_lr=1e-4, lr=1e-3))}
    assert set(groups) == {"backbone", "backbone_nodecay", "new", "new_nodecay"}
    assert groups["backbone"]["weight_decay"] == 0.05 and groups["backbone_nodecay"]["weight_decay"] == 0.0
    assert groups["new"]["weight_decay"] == 0.05 and groups["new_nodecay"]["weight_decay"] == 0.0
    assert groups["backbone"]["lr"] == groups["backbone_nodecay"]["lr"] == 1e-4
    assert groups["new"]["lr"] == groups["new_nodecay"]["lr"] == 1e-3
    assert all(p.ndim >= 2 for g in ("backbone", "new") for p in groups[g]["params"])  # norms / biases never decayed
    # every trainable parameter in exactly one group; backbone = model.backbone_parameters()
    ids = [id(p) for g in groups.values() for p in g["params"]]
    trainable = [p for p in list(model.parameters()) + list(loss.parameters()) if p.requires_grad]
    assert len(ids) == len(set(ids)) == len(trainable)
    backbone = {id(p) for p in model.backbone_parameters()}
    assert {id(p) for g in ("backbone", "backbone_nodecay") for p in groups[g]["params"]} == backbone
    assert {id(p) for p in loss.parameters()} <= {id(p) for p in groups["new"]["params"] + groups["new_nodecay"]["params"]}
    pos = model.backbone.pos_embed if hasattr(model.backbone, "pos_embed") else None
    if pos is not None:
        assert any(p is pos for p in groups["backbone_nodecay"]["params"])  # tokens: no decay


def test_param_groups_skip_frozen_and_default_backbone_lr():
    model, loss = _model_and_loss()
    frozen = next(iter(model.backbone_parameters()))
    frozen.requires_grad_(False)
    groups = param_groups(model, loss, TrainConfig(lr=3e-3))
    assert all(p is not frozen for g in groups for p in g["params"])
    assert {g["lr"] for g in groups} == {3e-3}  # backbone_lr None: the same lr


def test_apply_lr_scales_every_group_from_its_base():
    model, loss = _model_and_loss()
    cfg = TrainConfig(lr=1e-3, backbone_lr=1e-4)
    opt = make_optimizer(param_groups(model, loss, cfg), cfg, torch.device("cpu"))
    base = [g["lr"] for g in opt.param_groups]
    first = apply_lr(opt, base, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [b * 0.5 for b in base] and first == base[0] * 0.5
    apply_lr(opt, base, 1.0)  # from the base, not compounded
    assert [g["lr"] for g in opt.param_groups] == base


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                      ("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop)])
def test_make_optimizer(name, cls):
    model, loss = _model_and_loss()
    cfg = TrainConfig(optimizer=name, momentum=0.7, weight_decay=0.01)
    opt = make_optimizer(param_groups(model, loss, cfg), cfg, torch.device("cpu"))
    assert type(opt) is cls and len(opt.param_groups) == 4
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.0, 0.01, 0.01]
    if name == "sgd":
        assert all(g["momentum"] == 0.7 for g in opt.param_groups)


def test_amp_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype(TrainConfig(amp="auto"), cpu) is None and amp_dtype(TrainConfig(amp="auto"), cuda) is torch.bfloat16
    assert amp_dtype(TrainConfig(amp="off"), cuda) is None
    assert amp_dtype(TrainConfig(amp="fp16"), cpu) is torch.float16
    assert amp_dtype(TrainConfig(amp="bf16"), cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="amp='fp8'"):
        TrainConfig(amp="fp8").validate()
