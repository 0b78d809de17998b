"""Backbones behind one interface (issue 5): CNNs through the same training loop, the VTS head's
parameter-count warning, and the offline message for hub weights."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from hashlib_vit.data import Split, TensorBatches, TensorTransform
from hashlib_vit.errors import ConfigError
from hashlib_vit.losses import build_loss
from hashlib_vit.models import build_model
from hashlib_vit.train import TrainConfig, train


def tiny_split(n, size, classes=3):
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
                 F.one_hot(torch.arange(n) % classes, classes).float())


@pytest.mark.parametrize("backbone,size,feat", [
    ("resnet18", 32, 512),
    pytest.param("resnet50", 32, 2048, marks=pytest.mark.slow),
    pytest.param("alexnet", 64, 4096, marks=pytest.mark.slow),  # AlexNet's pooling needs >= 63 px
])
def test_cnn_backbones_train_in_the_same_loop(backbone, size, feat):
    torch.manual_seed(0)
    model = build_model(backbone, bits=16, img_size=size)
    assert model.backbone.kind == "cnn" and model.backbone.feature_dim == feat and not model.backbone.pretrained
    assert model.img_size == size
    loss = build_loss("dpsh", 16, 3)
    batches = TensorBatches(tiny_split(8, size), 4, TensorTransform(size), train=True, seed=0)
    hist = train(model, loss, batches, TrainConfig(epochs=1, batch_size=4, lr=1e-4), progress=False)
    assert len(hist["steps"]) == 2 and all(math.isfinite(r["loss"]) for r in hist["steps"])
    model.eval()
    codes = model.encode(torch.rand(3, 3, size, size))
    assert codes.shape == (3, 16) and set(codes.unique().tolist()) <= {-1, 1}


def test_vts_mlp_head_warns_about_its_size():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the small preset: no warning
        small = build_model("vit32_test", bits=8, head="vts_mlp")
    assert small(torch.rand(2, 3, 32, 32)).u.shape == (2, 8)
    with pytest.warns(UserWarning, match=r"vts_mlp' has 21 M parameters \(20032 inputs -> 1024\)"):
        build_model("vit32_test", bits=8, head="vts_mlp", img_size=200)  # 625 patches of 8 px + CLS
    with pytest.raises(ValueError, match="needs a ViT"):
        build_model("resnet18", bits=8, head="vts_mlp", img_size=32)


@pytest.mark.parametrize("backbone", ["vit_tiny_patch16_224", "resnet18", "alexnet"])
def test_hub_weights_offline_give_a_clear_message(backbone, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch hub cache: nothing may be downloaded
    with pytest.raises(ConfigError, match=rf"backbone '{backbone}'.*Offline\?.*weights='/path/to/file.pth'"):
        build_model(backbone, bits=8, weights="hub")


def test_preset_has_no_hub_weights():
    with pytest.raises(ConfigError, match="no hub weights"):
        build_model("vit32_test", bits=8, weights="hub")
