"""MidFeatureWrapper: the penultimate stage (CNN) or the mid CLS token (ViT), checked with forward hooks."""
import pytest
import timm
import torch

import vsd  # noqa: F401  (registers vsd models)
from vsd.wrappers import MidFeatureWrapper


def _hooked(module):
    seen = {}
    module.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    return seen


def test_timm_resnet_penultimate_stage_pooled():
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=5)
    wrapper = MidFeatureWrapper(model)
    seen = _hooked(model.layer3)
    x = torch.randn(2, 3, 32, 32)
    out = wrapper.train()(x)  # no dropout in resnet10t; batch-norm in train mode on both paths
    assert wrapper.mid_channels == 256
    assert torch.allclose(out.mid_feature, seen["out"].mean(dim=(2, 3)))
    model.train()
    assert torch.allclose(out.logits, model(x), atol=1e-6)
    wrapper.eval()
    assert not model.training and torch.allclose(wrapper(x), model(x))


@pytest.mark.parametrize("name,kwargs,stage", [
    ("resnet32_cifar", {}, "layers.1"),
    ("convnet_d3", {"in_chans": 1, "img_size": 16, "net_width": 16}, "blocks.1"),
])
def test_vsd_cnns(name, kwargs, stage):
    model = timm.create_model(name, num_classes=4, **kwargs)
    wrapper = MidFeatureWrapper(model).train()
    seen = _hooked(model.get_submodule(stage))
    size = kwargs.get("img_size", 32)
    out = wrapper(torch.randn(2, kwargs.get("in_chans", 3), size, size))
    assert out.mid_feature.shape == (2, model.feature_info[-2]["num_chs"])
    assert torch.allclose(out.mid_feature, seen["out"].mean(dim=(2, 3)))


def test_vit_cls_token_after_middle_block():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch4_32", num_classes=4, img_size=16, in_chans=1, depth=4)
    wrapper = MidFeatureWrapper(model).train()
    seen = _hooked(model.blocks[1])  # depth 4 -> block depth // 2 - 1 = 1 (0-based), as the official mid_token
    x = torch.randn(2, 1, 16, 16)
    out = wrapper(x)
    assert wrapper.mid_index == 1 and wrapper.mid_channels == 192
    assert torch.allclose(out.mid_feature, seen["out"][:, 0])
    model.eval()
    assert torch.allclose(wrapper.eval()(x), model(x))


def test_errors():
    with pytest.raises(TypeError, match="forward_intermediates"):
        MidFeatureWrapper(torch.nn.Linear(3, 3))
    vit = timm.create_model("vit_tiny_patch4_32", num_classes=4, img_size=16, depth=2, class_token=False,
                            global_pool="avg")
    with pytest.raises(ValueError, match="no class token"):
        MidFeatureWrapper(vit)
