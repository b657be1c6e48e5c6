"""Every vsd architecture through timm's factory, at digits (16x16x1) and CIFAR (32x32x3) sizes."""
import pytest
import timm
import torch

import vsd  # noqa: F401  (registers the models)
from vsd.models import create_model, list_vsd_models

EXPECTED = [
    "convnet_d1", "convnet_d2", "convnet_d3", "convnet_d4", "convnet_d5",
    "resnet18_cifar", "resnet32_cifar", "vit_tiny_patch4_32",
]
# small variants keep the tests fast; the defaults are checked in the per-family tests
SMALL = {
    "convnet_d1": dict(net_width=8),
    "convnet_d2": dict(net_width=8),
    "convnet_d3": dict(net_width=8),
    "convnet_d4": dict(net_width=8),
    "convnet_d5": dict(net_width=8),
    "resnet18_cifar": dict(),
    "resnet32_cifar": dict(),
    "vit_tiny_patch4_32": dict(depth=2),
}
SIZES = [(1, 16), (3, 32)]


def _build(name: str, in_chans: int, size: int, num_classes: int = 7) -> torch.nn.Module:
    return timm.create_model(name, in_chans=in_chans, img_size=size, num_classes=num_classes, **SMALL[name])


def test_list_vsd_models() -> None:
    names = list_vsd_models()
    assert set(EXPECTED) <= set(names) and names == sorted(names)
    assert "vgg11" not in names  # timm's own models are not listed
    assert all(timm.is_model(name) for name in EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_pretrained_cfg(name: str) -> None:
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    assert len(cfg["mean"]) == 3 and len(cfg["std"]) == 3
    assert cfg["input_size"] == (3, 32, 32) and cfg["num_classes"] == 10
    assert not cfg["url"]
    model = timm.create_model(name, **SMALL[name])
    assert model.pretrained_cfg["mean"] == cfg["mean"]
    assert model.num_classes == 10  # default from the cfg


@pytest.mark.parametrize("in_chans,size", SIZES)
@pytest.mark.parametrize("name", EXPECTED)
def test_shapes(name: str, in_chans: int, size: int) -> None:
    if name == "convnet_d5" and size == 16:
        with pytest.raises(ValueError, match="too small"):
            _build(name, in_chans, size)
        return
    model = _build(name, in_chans, size).eval()
    x = torch.randn(2, in_chans, size, size)
    assert model(x).shape == (2, 7)
    feats = model.forward_features(x)
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, model.num_features)
    assert torch.allclose(model.forward_head(feats), model(x), atol=1e-6)
    assert timm.models.get_model_input_config(model)["input_size"] == (in_chans, size, size)


@pytest.mark.parametrize("name", EXPECTED)
def test_reset_classifier(name: str) -> None:
    model = _build(name, 1, 16 if name != "convnet_d5" else 32).eval()
    size = 16 if name != "convnet_d5" else 32
    x = torch.randn(2, 1, size, size)
    model.reset_classifier(5)
    assert model.num_classes == 5 and model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    assert isinstance(model.get_classifier(), torch.nn.Module)


def test_create_model_known_name() -> None:
    model = create_model("convnet_d3", net_width=8, num_classes=3)
    assert model.num_classes == 3


def test_create_model_unknown_name() -> None:
    with pytest.raises(ValueError) as err:
        create_model("convnet_d33")
    msg = str(err.value)
    assert "unknown model 'convnet_d33'" in msg and "did you mean" in msg and "convnet_d3" in msg
    assert "resnet32_cifar" in msg and "vit_tiny_patch4_32" in msg  # lists vsd's models
