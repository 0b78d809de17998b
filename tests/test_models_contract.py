"""Contract tests over the model registries: every neck x {a small ViT (AEM off and on), a CNN where the
neck applies}: output shapes, +-1 codes, one optimiser group per parameter with the right learning rate,
state-dict round trip, a run saved and its model reloaded; the errors at the new seams; old checkpoints."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hashlib_vit.errors import ConfigError
from hashlib_vit.losses import build_loss
from hashlib_vit.models import HASH_LAYERS, MODELS, NECKS, build_model, resolve_model
from hashlib_vit.models.aem import AEM
from hashlib_vit.models.hashmodel import upgrade_state_dict
from hashlib_vit.train import TrainConfig, param_groups

BITS = 16
# (backbone, head, model_params): every neck on the ViT preset; the necks that take pooled features on a CNN
VIT_CASES = [
    ("cls_linear", {}),  # neck cls + linear
    ("cls_bn", {}),  # neck cls + bn_linear (AE-ViT + HSC's preset, the backbone study, the loss zoo)
    ("hcl", {"hcl_attention": False}),  # neck cls + bn_linear (OrthoHash's head)
    ("vts_mlp", {"hidden": 32}),  # neck tokens + mlp
    ("hcl", {}),  # neck hcl + bn_linear
    ("mgvt", {}),  # neck mgvt + linear (G = 2)
    ("mgvt", {"groups": 0}),  # mgvt w/o P
]
CASES = ([("vit32_test", h, p) for h, p in VIT_CASES]
         + [("vit32_test", h, {**p, "aem": "all"}) for h, p in VIT_CASES]
         + [("resnet18", "cls_linear", {}), ("resnet18", "cls_bn", {}),
            ("resnet18", "hcl", {"hcl_attention": False, "pooling": "cls"})])
IDS = [f"{b}-{h}-{'-'.join(f'{k}={v}' for k, v in p.items()) or 'default'}" for b, h, p in CASES]


def _build(backbone, head, params, seed=0):
    torch.manual_seed(seed)
    return build_model(backbone, BITS, head, img_size=32, **params)


def _x(n=4, seed=123):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g)


def test_every_registered_neck_and_hash_layer_is_covered():
    necks = {resolve_model(h, BITS, p).neck for _, h, p in CASES}
    layers = {resolve_model(h, BITS, p).hash_layer for _, h, p in CASES}
    assert necks == set(NECKS.names()) and layers == set(HASH_LAYERS.names())
    assert {h for _, h, _ in CASES} == set(MODELS.names())


@pytest.mark.parametrize("backbone,head,params", CASES, ids=IDS)
def test_shapes_and_codes(backbone, head, params):
    m = _build(backbone, head, params).eval()
    out = m(_x())
    split = resolve_model(head, BITS, params).bits_split
    assert out.u.shape == (4, BITS) and out.u.dtype == torch.float32
    assert [h.shape for h in out.heads] == [(4, b) for b in split] and sum(split) == BITS
    assert len(m.hash_layers) == len(split) == len(m.neck.out_dims)
    assert torch.equal(out.u, torch.cat(out.heads, 1))
    assert out.features is not None and out.features.shape[0] == 4
    codes = m.encode(_x())
    assert codes.dtype == torch.int8 and codes.shape == (4, BITS)
    assert set(codes.unique().tolist()) <= {-1, 1}
    assert torch.equal(codes, torch.where(out.u >= 0, 1, -1).to(torch.int8))
    if params.get("aem"):
        assert isinstance(m.backbone.model.patch_embed.aem, AEM)


def _expected_backbone_ids(m) -> set[int]:
    """From the structure, independent of HashModel.backbone_parameters: the backbone network's own
    parameters (not AEM's) and MGVT's branch copies of the last block / final norm."""
    aem = {id(p) for mod in m.backbone.modules() if isinstance(mod, AEM) for p in mod.parameters()}
    own = {id(p) for p in m.backbone.parameters()} - aem
    copies = {id(p) for name, mod in m.neck.named_children() if name in ("global_block", "global_norm", "local_block",
                                                                          "local_norm") for p in mod.parameters()}
    return own | copies


@pytest.mark.parametrize("backbone,head,params", CASES, ids=IDS)
def test_every_parameter_in_one_group_with_the_right_lr(backbone, head, params):
    m = _build(backbone, head, params)
    loss = build_loss("csq", BITS, 10)
    groups = param_groups(m, loss, TrainConfig(lr=1e-3, backbone_lr=1e-5))
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in list(m.parameters()) + list(loss.parameters()) if p.requires_grad]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in trainable}
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    want_bb = _expected_backbone_ids(m)
    for name, p in m.named_parameters():
        assert lr_of[id(p)] == (1e-5 if id(p) in want_bb else 1e-3), name
    assert all(lr_of[id(p)] == 1e-3 for p in m.hash_layers.parameters())
    assert {id(p) for p in m.backbone_parameters()} == want_bb
    assert {id(p) for p in m.new_parameters()} == {id(p) for p in m.parameters()} - want_bb


@pytest.mark.parametrize("backbone,head,params", CASES, ids=IDS)
def test_state_dict_round_trip(backbone, head, params):
    m = _build(backbone, head, params, seed=0)
    with torch.no_grad():  # move AEM away from identity so that its state matters
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    fresh = _build(backbone, head, params, seed=1)
    x = _x()
    assert not torch.allclose(fresh.eval()(x).u, m.eval()(x).u)
    missing, unexpected = fresh.load_state_dict(m.state_dict(), strict=True)
    assert not missing and not unexpected
    assert torch.equal(fresh.eval()(x).u, m.eval()(x).u)


RUN_CASES = [("vit32_test", "mgvt", {"aem": "all"}),
             pytest.param("vit32_test", "hcl", {}, marks=pytest.mark.slow),
             pytest.param("resnet18", "cls_linear", {}, marks=pytest.mark.slow)]  # ResNet-18 encodes 1,800 images


@pytest.mark.parametrize("backbone,head,params", RUN_CASES, ids=["vit-mgvt-aem", "vit-hcl", "resnet18-cls_linear"])
def test_run_saved_and_model_reloaded_gives_the_same_codes(tmp_path, backbone, head, params):
    from hashlib_vit.data import make_batches
    from hashlib_vit.experiment import run_experiment, transforms_for
    from hashlib_vit.results.run_model import load_run_model
    from hashlib_vit.retrieval import encode

    run_dir = tmp_path / "run"
    res = run_experiment(protocol="digits", backbone=backbone, head=head, model_params=params, bits=BITS,
                         img_size=32, epochs=1, batch_size=128, device="cpu", progress=False, run_dir=str(run_dir),
                         checkpoint_every_epochs=1, save_codes=True, loss="csq")
    saved = np.load(run_dir / "codes.npz")["query_codes"]
    model = load_run_model(run_dir)
    assert type(model.neck) is type(res.model.neck)
    _, ev_tf = transforms_for(res.data.protocol, model)
    codes, _ = encode(model, make_batches(res.data.query, 256, ev_tf, train=False, device=torch.device("cpu")),
                      device=torch.device("cpu"))
    assert codes.shape == saved.shape == (len(res.data.query), BITS)
    np.testing.assert_array_equal(np.asarray(codes), saved)
    with pytest.raises(Exception, match="does not exist"):
        load_run_model(tmp_path / "run", checkpoint=tmp_path / "nothing.pt")


# ------------------------------------------------------------------------------------------ errors
def test_unknown_head_lists_the_heads():
    with pytest.raises(ConfigError, match=r"head='nope'.*cls_linear, hcl, mgvt, vts_mlp"):
        build_model("vit32_test", BITS, "nope")


def test_unknown_option_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"\['attention'\] are not known for head='hcl'.*allowed: .*aem.*"
                                          r"hcl_attention.*pooling.*init_std"):
        resolve_model("hcl", BITS, {"attention": True})
    with pytest.raises(ConfigError, match=r"\['hidden'\] are not known for head='mgvt'.*groups"):
        build_model("vit32_test", BITS, "mgvt", hidden=8)


@pytest.mark.parametrize("head,params,match", [
    ("mgvt", {"groups": "2"}, "groups='2'.*must be int"),
    ("mgvt", {"local_stream": 1}, "local_stream=1.*must be bool"),
    ("hcl", {"mlp_ratio": "4"}, "mlp_ratio='4'.*must be float"),
    ("vts_mlp", {"hidden": 1.5}, "hidden=1.5.*must be int"),
    ("cls_linear", {"aem_reduction": True}, "aem_reduction=True.*must be int"),
    ("hcl", {"pooling": "avg"}, "pooling='avg'"),
    ("mgvt", {"groups": 3}, "bits=16 with groups=3"),
])
def test_wrong_option_value_names_the_option(head, params, match):
    with pytest.raises(ConfigError, match=match):
        resolve_model(head, BITS, params)


def test_aem_and_token_necks_on_a_cnn():
    with pytest.raises(ConfigError, match="aem='all' needs a ViT backbone; backbone='resnet18' is a CNN"):
        resolve_model("cls_linear", BITS, {"aem": "all"}, backbone="resnet18")
    with pytest.raises(ConfigError, match="aem='all' needs a ViT backbone"):
        build_model("resnet18", BITS, "cls_linear", img_size=32, aem="all")
    for head in ("vts_mlp", "mgvt", "hcl"):
        with pytest.raises(ConfigError, match="needs a ViT backbone|hcl_attention=False"):
            resolve_model(head, BITS, {}, backbone="resnet18")
        with pytest.raises(ConfigError, match="needs a ViT|hcl_attention=False"):
            build_model("resnet18", BITS, head, img_size=32)


def test_runconfig_validate_uses_the_model_check():
    from hashlib_vit.config import RunConfig

    with pytest.raises(ConfigError, match=r"\['foo'\] are not known for head='cls_linear'"):
        RunConfig(model_params={"foo": 1}).validate()
    with pytest.raises(ConfigError, match="aem='all' needs a ViT backbone"):
        RunConfig(backbone="resnet18", model_params={"aem": "all"}).validate()


# ------------------------------------------------------------------- state dicts of the old layout
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "old_model_layout.json").read_text())


@pytest.mark.parametrize("case", sorted(FIXTURE["cases"]))
def test_old_layout_state_dict_loads_and_computes_the_same(case):
    """``fixtures/old_model_layout.json`` was written by main b7f6713 (one class per head): the state-dict
    keys with shapes and value sums of a ``vit32_test`` model built at seed 0, and its outputs ``u`` on a
    fixed input. A model of today at seed 0 has the same weights (same init order) under new names; an
    old-layout state dict made from them loads into a model built at another seed and gives main's ``u``."""
    c = FIXTURE["cases"][case]
    old = [(k, tuple(shape), total) for k, shape, total in c["keys"]]
    new_names = upgrade_state_dict({k: k for k, _, _ in old})  # old key -> new key, values are the old keys
    ref = _build("vit32_test", c["head"], c["model_params"], seed=0).state_dict()
    assert set(new_names) == set(ref)  # every old key maps onto exactly the keys of today's model
    old_sd = {}
    for new_key, old_key in new_names.items():
        shape, total = next((s, t) for k, s, t in old if k == old_key)
        t = ref[new_key]
        assert tuple(t.shape) == shape, old_key
        if ".aem." not in old_key:  # AEM is drawn from a forked stream (at another point than main's); it is
            assert float(t.double().sum()) == pytest.approx(total, abs=1e-4), old_key  # identity at init
        old_sd[old_key] = t.clone()
    m = _build("vit32_test", c["head"], c["model_params"], seed=7).eval()
    m.load_state_dict(old_sd, strict=True)
    torch.manual_seed(123)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        u = m(x).u
    assert torch.allclose(u, torch.tensor(c["u"]), atol=1e-5)
