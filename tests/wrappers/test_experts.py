"""ExpertsWrapper: shared stem, K re-initialised experts with cosine heads, the train/eval faces, checkpoints."""
import pytest
import timm
import torch
from torch import nn

import vsd  # noqa: F401  (registers vsd models)
from vsd.engine.checkpoint import load_checkpoint, save_checkpoint
from vsd.wrappers import ExpertsWrapper
from vsd.wrappers.experts import CosineClassifier, split_stages


def test_split_reproduces_forward_features():
    for model in (timm.create_model("resnet10t", num_classes=3), timm.create_model("resnet32_cifar", num_classes=3)):
        model.eval()
        stem, stages = split_stages(model)
        x = torch.randn(2, 3, 32, 32)
        y = stem(x)
        for stage in stages:
            y = stage(y)
        assert torch.allclose(y, model.forward_features(x))


def test_cifar_resnet32_three_experts():
    torch.manual_seed(0)
    model = timm.create_model("resnet32_cifar", num_classes=4)
    wrapper = ExpertsWrapper(model, num_experts=3, shared_stages=1)
    assert wrapper.shared[0] is model.stem and wrapper.shared[1] is model.layers[0]  # stem + stage 1 shared
    assert len(wrapper.experts) == 3 and len(wrapper.experts[0]) == 2  # stages 2 and 3 per expert
    # experts 1, 2 are freshly initialised copies: same shapes, different weights
    w0, w1 = (list(e.parameters())[0] for e in wrapper.experts[:2])
    assert w0.shape == w1.shape and not torch.equal(w0, w1)
    x = torch.randn(3, 3, 32, 32)
    out = wrapper.train()(x)
    assert len(out.expert_logits) == 3
    assert torch.allclose(out.logits, torch.stack(out.expert_logits).mean(0))
    assert all(e.abs().max() <= 30.0 + 1e-4 for e in out.expert_logits)  # cosine classifier with scale 30
    wrapper.eval()
    assert torch.allclose(wrapper(x), torch.stack(wrapper.forward_experts(x)).mean(0))


def test_cosine_classifier_by_hand():
    head = CosineClassifier(2, 2, scale=30.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
    out = head(torch.tensor([[3.0, 0.0]]))
    assert torch.allclose(out, torch.tensor([[30.0, 30.0 / 2 ** 0.5]]))


def test_timm_resnet_zero_init_last_kept_on_new_experts():
    wrapper = ExpertsWrapper(timm.create_model("resnet10t", num_classes=3), num_experts=2, shared_stages=2)
    bn2 = wrapper.experts[1][-1][-1].bn2  # timm zero-initialises the last BN of each block
    assert torch.count_nonzero(bn2.weight) == 0
    assert len(wrapper.experts[0]) == 2  # layer3, layer4


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    wrapper = ExpertsWrapper(timm.create_model("resnet32_cifar", num_classes=3)).eval()
    save_checkpoint(tmp_path / "m.safetensors", {"model": wrapper.state_dict()})
    torch.manual_seed(1)
    other = ExpertsWrapper(timm.create_model("resnet32_cifar", num_classes=3)).eval()
    other.load_state_dict(load_checkpoint(tmp_path / "m.safetensors")["model"])
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(other(x), wrapper(x))


class _Twisted(nn.Module):
    """Has layer1/layer2 but its forward does something else: the split must be refused."""

    num_classes, num_features, in_chans = 3, 4, 3

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Conv2d(4, 4, 3, padding=1)
        self.layer2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward_features(self, x):
        return self.layer2(self.conv1(x))


def test_errors():
    with pytest.raises(ValueError, match="not a ResNet-like model"):
        ExpertsWrapper(timm.create_model("convnet_d3", num_classes=3, net_width=8))
    with pytest.raises(ValueError, match=r"shared_stages must be in \[0, 2\]"):
        ExpertsWrapper(timm.create_model("resnet32_cifar", num_classes=3), shared_stages=3)
    with pytest.raises(ValueError, match="do not reproduce forward_features"):
        ExpertsWrapper(_Twisted())
    with pytest.raises(ValueError, match="num_experts must be >= 1"):
        ExpertsWrapper(timm.create_model("resnet32_cifar", num_classes=3), num_experts=0)
