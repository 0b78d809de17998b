"""MGVT (TransHash model, METHODS §2.2, §7 item 2): shapes, config errors, branches, weights, gradients."""
import copy

import pytest
import torch
import torch.nn.functional as F

from hashlib_vit.errors import ConfigError
from hashlib_vit.losses import build_loss
from hashlib_vit.models import build_model, create_backbone
from hashlib_vit.models.mgvt import MGVTNeck, MGVTOptions, load_vit_state_dict, rearrange_permutation


def _mgvt(bits=16, **kw):
    torch.manual_seed(0)
    return build_model("vit32_test", bits=bits, head="mgvt", **kw)


def test_head_shapes_k16_g2():
    m = _mgvt(16, groups=2).eval()
    out = m(torch.rand(3, 3, 32, 32))
    assert [tuple(h.shape) for h in out.heads] == [(3, 8), (3, 4), (3, 4)]
    assert out.u.shape == (3, 16) and torch.equal(out.u, torch.cat(out.heads, 1))
    codes = m.encode(torch.rand(3, 3, 32, 32))
    assert codes.shape == (3, 16) and set(codes.unique().tolist()) <= {-1, 1}


@pytest.mark.parametrize("bits,groups,match", [
    (16, 3, "bits=16 with groups=3"),  # not divisible by 2G
    (16, 4, "bits=16 with groups=4 gives 2 bits per local head"),  # < 4 bits per local head
    (12, 2, "bits=12 with groups=2"),  # 3 bits per local head
    (16, -1, "groups=-1"),
])
def test_bits_groups_config_errors(bits, groups, match):
    with pytest.raises(ConfigError, match=match):
        _mgvt(bits, groups=groups)


def test_needs_a_vit_backbone():
    with pytest.raises(ConfigError, match="needs a ViT backbone"):
        build_model("resnet18", bits=16, head="mgvt", img_size=32)


def test_wo_p_global_head_emits_all_bits():
    m = _mgvt(12, local_stream=False)  # 12 bits would fail the local rule; w/o P has no local heads
    out = m(torch.rand(2, 3, 32, 32))
    assert len(out.heads) == 1 and out.u.shape == (2, 12)
    assert not hasattr(m.neck, "local_block")
    m0 = _mgvt(12, groups=0)  # G = 0 is the same ablation
    assert not m0.neck.local_stream and m0(torch.rand(2, 3, 32, 32)).u.shape == (2, 12)


def test_global_and_local_features_follow_the_definition():
    m = _mgvt(16, groups=2).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z = m.backbone(m.normalize(x))  # the trunk: the backbone without its last block
        assert z.shape == (2, 17, 32)
        f_g = m.neck.global_norm(m.neck.global_block(z))[:, 0]
        s1 = torch.cat([z[:, :1], z[:, 1:9]], 1)
        s2 = torch.cat([z[:, :1], z[:, 9:]], 1)
        f1 = m.neck.local_norm(m.neck.local_block(s1))[:, 0]
        f2 = m.neck.local_norm(m.neck.local_block(s2))[:, 0]
        want = torch.cat([m.hash_layers[0].fc(f_g), m.hash_layers[1].fc(f1), m.hash_layers[2].fc(f2)], 1)
        assert torch.allclose(m(x).u, want, atol=1e-5)


def test_unequal_groups_loop_matches_tensor_split():
    m = _mgvt(24, groups=3).eval()  # 16 patches / 3 groups -> 6, 5, 5 tokens
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z = m.backbone(m.normalize(x))  # the trunk: the backbone without its last block
        feats = m.neck.local_features(z)
        bounds = [(1, 7), (7, 12), (12, 17)]
        for f, (a, b) in zip(feats, bounds):
            want = m.neck.local_norm(m.neck.local_block(torch.cat([z[:, :1], z[:, a:b]], 1)))[:, 0]
            assert torch.allclose(f, want, atol=1e-5)
        assert m(x).u.shape == (2, 24)


def test_local_rearrange_permutes_tokens():
    perm = rearrange_permutation(8, shift=2, shuffle_groups=2)
    assert perm.tolist() == [2, 6, 3, 7, 4, 0, 5, 1]
    assert sorted(rearrange_permutation(49, 5, 2).tolist()) == list(range(49))
    m = _mgvt(16, local_rearrange=True)
    m0 = _mgvt(16)
    x = torch.rand(2, 3, 32, 32)
    assert not torch.allclose(m.eval()(x).heads[1], m0.eval()(x).heads[1])
    assert torch.allclose(m(x).heads[0], m0(x).heads[0])  # global stream unchanged


def test_branches_start_as_copies_of_the_last_block():
    torch.manual_seed(0)
    bb = create_backbone("vit32_test")
    last = copy.deepcopy(bb.model.blocks[-1].state_dict())
    norm = copy.deepcopy(bb.model.norm.state_dict())
    neck = MGVTNeck(bb, MGVTOptions(groups=2))
    assert len(bb.model.blocks) == 1 and neck.depth == 2 and isinstance(bb.model.norm, torch.nn.Identity)
    m = torch.nn.Module()
    m.neck = neck
    for blk in (m.neck.global_block, m.neck.local_block):
        for k, v in blk.state_dict().items():
            assert torch.equal(v, last[k]), k
    for nrm in (m.neck.global_norm, m.neck.local_norm):
        for k, v in nrm.state_dict().items():
            assert torch.equal(v, norm[k]), k
    assert m.neck.global_block.attn.qkv.weight.data_ptr() != m.neck.local_block.attn.qkv.weight.data_ptr()  # separate copies


def test_parameter_groups_backbone_has_trunk_and_branches():
    m = _mgvt(16)
    bb = {id(p) for p in m.backbone_parameters()}
    new = {id(p) for p in m.new_parameters()}
    assert new == {id(p) for p in m.hash_layers.parameters()}
    for mod in (m.backbone, m.neck.global_block, m.neck.global_norm, m.neck.local_block, m.neck.local_norm):
        assert {id(p) for p in mod.parameters()} <= bb
    assert bb | new == {id(p) for p in m.parameters()} and not bb & new


def _vit_state_dict(seed=1):
    torch.manual_seed(seed)
    vit = create_backbone("vit32_test").model
    return vit.state_dict()


def test_state_dict_loading_fills_both_branches():
    sd = _vit_state_dict()
    m = _mgvt(16)
    load_vit_state_dict(m, sd)
    for blk in (m.neck.global_block, m.neck.local_block):
        for k, v in blk.state_dict().items():
            assert torch.equal(v, sd[f"blocks.1.{k}"]), k
    for nrm in (m.neck.global_norm, m.neck.local_norm):
        for k, v in nrm.state_dict().items():
            assert torch.equal(v, sd[f"norm.{k}"]), k
    assert torch.equal(m.backbone.model.blocks[0].mlp.fc1.weight, sd["blocks.0.mlp.fc1.weight"])
    assert torch.equal(m.backbone.model.pos_embed, sd["pos_embed"])
    with pytest.raises(ConfigError, match="does not match MGVT"):
        load_vit_state_dict(m, {k: v for k, v in sd.items() if k != "blocks.1.attn.qkv.weight"})


def test_weights_file_fills_both_branches(tmp_path):
    sd = _vit_state_dict(seed=3)
    path = tmp_path / "vit.pth"
    torch.save(sd, path)
    m = build_model("vit32_test", bits=16, head="mgvt", weights=str(path))
    assert m.backbone.pretrained
    for blk in (m.neck.global_block, m.neck.local_block):
        assert torch.equal(blk.mlp.fc2.weight, sd["blocks.1.mlp.fc2.weight"])
    assert torch.equal(m.neck.local_norm.weight, sd["norm.weight"])


def test_gradients_reach_every_branch():
    m = _mgvt(16).train()
    x = torch.rand(6, 3, 32, 32)
    y = F.one_hot(torch.tensor([0, 1, 0, 1, 2, 2]), 3).float()
    build_loss("transhash", 16, 3)(m(x), y).total.backward()
    named = {
        "patch_embed": m.backbone.model.patch_embed.proj.weight,
        "trunk": m.backbone.model.blocks[0].attn.qkv.weight,
        "global_block": m.neck.global_block.mlp.fc2.weight,
        "global_norm": m.neck.global_norm.weight,
        "local_block": m.neck.local_block.mlp.fc2.weight,
        "local_norm": m.neck.local_norm.weight,
        "global_fc": m.hash_layers[0].fc.weight,
        "local_fc0": m.hash_layers[1].fc.weight,
        "local_fc1": m.hash_layers[2].fc.weight,
    }
    for name, p in named.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    unused = [n for n, p in m.named_parameters() if p.grad is None]
    assert not unused, unused


@pytest.mark.parametrize("name,depth", [
    ("vit_tiny_patch16_224", 12),
    pytest.param("vit_base_patch32_224", 12, marks=pytest.mark.slow),  # ~10 s to initialise 88 M parameters
])
def test_timm_vit_names_construct_at_small_input(name, depth):
    # a timm ViT by name at a reduced input size (64 px -> 16 or 4 patches); ViT-L/32 is never built in tests
    torch.manual_seed(0)
    m = build_model(name, bits=16, head="mgvt", img_size=64)
    assert m.neck.depth == depth and len(m.backbone.model.blocks) == depth - 1
    out = m.eval()(torch.rand(1, 3, 64, 64))
    assert [h.shape[1] for h in out.heads] == [8, 4, 4]


@pytest.mark.parametrize("head", ["cls_linear", "mgvt", "hcl"])
def test_aem_parameters_get_the_head_learning_rate_on_every_head(head):
    """Every trainable parameter is in exactly one group; AEM's (added before the encoder) are new and get
    ``lr``, the ViT's own get ``backbone_lr`` (MGVT used to give AEM the backbone's)."""
    from hashlib_vit.losses import build_loss
    from hashlib_vit.models import build_model
    from hashlib_vit.train import TrainConfig, param_groups

    model = build_model("vit32_test", 16, head, aem="all")
    loss = build_loss("csq", 16, 10)
    groups = param_groups(model, loss, TrainConfig(lr=1e-3, backbone_lr=1e-5))
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in list(model.parameters()) + list(loss.parameters()) if p.requires_grad]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in trainable}
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    aem = list(model.backbone.added_parameters())
    assert aem and all(lr_of[id(p)] == 1e-3 for p in aem)
    aem_ids = {id(p) for p in aem}
    vit_own = [p for p in model.backbone.parameters() if id(p) not in aem_ids]
    assert vit_own and all(lr_of[id(p)] == 1e-5 for p in vit_own)
