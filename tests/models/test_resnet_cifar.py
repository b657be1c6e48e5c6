"""CIFAR ResNets: official sizes, shortcut types, stage attributes for multi-expert models."""
import copy

import timm
import torch
from torch import nn

import vsd  # noqa: F401
from vsd.models.resnet_cifar import PadShortcut


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet18_cifar_matches_kuangliu() -> None:
    model = timm.create_model("resnet18_cifar")
    assert _count(model) == 11_173_962  # kuangliu/pytorch-cifar ResNet18, 10 classes
    assert model.stem.conv.stride == (1, 1) and model.stem.conv.kernel_size == (3, 3)
    assert len(model.layers) == 4 and [len(s) for s in model.layers] == [2, 2, 2, 2]
    assert isinstance(model.layers[1][0].shortcut, nn.Sequential)  # option B


def test_resnet32_cifar_matches_ldam() -> None:
    model = timm.create_model("resnet32_cifar")
    assert abs(_count(model) - 0.46e6) < 0.01e6  # "ResNet32 | 0.46M" (LDAM-DRW / RIDE / MDCS)
    assert [len(s) for s in model.layers] == [5, 5, 5] and model.num_features == 64
    assert isinstance(model.layers[1][0].shortcut, PadShortcut)  # option A, no parameters
    assert model.feature_info[-1]["reduction"] == 4


def test_option_a_shortcut() -> None:
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2]) and y[:, :8].abs().sum() == 0


def test_reduced_widths() -> None:
    model = timm.create_model("resnet32_cifar", widths=(16, 24, 48), num_classes=5)
    assert model.num_features == 48 and model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_shared_stem_and_expert_stages() -> None:
    model = timm.create_model("resnet32_cifar", in_chans=1).eval()
    x = torch.randn(2, 1, 16, 16)
    shared = nn.Sequential(model.stem, model.layers[:1])
    expert = copy.deepcopy(model.layers[1:])
    assert torch.allclose(expert(shared(x)), model.forward_features(x))


def test_forward_intermediates_and_prune() -> None:
    model = timm.create_model("resnet18_cifar", in_chans=1).eval()
    x = torch.randn(2, 1, 16, 16)
    final, inter = model.forward_intermediates(x)
    assert [t.shape[1:] for t in inter] == [(64, 16, 16), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    assert [f["num_chs"] for f in model.feature_info] == [t.shape[1] for t in inter]
    assert torch.equal(inter[-1], model.forward_features(x)) and torch.equal(final, inter[-1])
    mid = model.forward_intermediates(x, indices=[2], stop_early=True, intermediates_only=True)
    assert torch.equal(mid[0], inter[2])
    model.prune_intermediate_layers([2])  # as timm: the head goes, forward returns the last kept map
    assert len(model.layers) == 2 and model.num_features == 128 and model(x).shape == (2, 128, 8, 8)


def test_float64_and_drop_rate() -> None:
    model = timm.create_model("resnet32_cifar", drop_rate=0.5).double()
    out = model(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64
    model.reset_classifier(4)
    assert model.fc.weight.dtype == torch.float64
