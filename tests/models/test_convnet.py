"""ConvNet-D{n} of dataset distillation: official layout, parameter count, torch.func, float64."""
import copy

import pytest
import timm
import torch
from torch.func import functional_call, grad, vmap

import vsd  # noqa: F401
from vsd.models.convnet import ConvNet


def _param_count(depth: int, width: int, size: int, in_chans: int, classes: int, norm: str) -> int:
    """Hand formula: conv (3x3, bias) + norm affine per block, Linear on the flattened final map."""
    total, chans, side = 0, in_chans, size
    for _ in range(depth):
        total += chans * width * 9 + width
        if norm in ("instancenorm", "groupnorm", "batchnorm"):
            total += 2 * width
        elif norm == "layernorm":
            total += 2 * width * side * side  # per-element affine at the pre-pool resolution
        chans, side = width, side // 2
    return total + width * side * side * classes + classes


@pytest.mark.parametrize("norm", ["instancenorm", "batchnorm", "layernorm", "groupnorm", "none"])
@pytest.mark.parametrize("depth,size", [(1, 16), (3, 32)])
def test_param_count(norm: str, depth: int, size: int) -> None:
    model = timm.create_model(f"convnet_d{depth}", net_width=8, net_norm=norm, img_size=size, num_classes=10)
    n = sum(p.numel() for p in model.parameters())
    assert n == _param_count(depth, 8, size, 3, 10, norm)


def test_default_convnet_d3() -> None:
    model = timm.create_model("convnet_d3")
    assert model.num_features == 128 * 4 * 4
    assert sum(p.numel() for p in model.parameters()) == _param_count(3, 128, 32, 3, 10, "instancenorm")
    block = model.blocks[0]
    assert isinstance(block.norm, torch.nn.GroupNorm) and block.norm.num_groups == 128
    assert isinstance(block.pool, torch.nn.AvgPool2d) and isinstance(block.act, torch.nn.ReLU)
    assert block.conv.bias is not None and block.conv.padding == (1, 1)
    # official parameter order: conv w, conv b, norm w, norm b per block, then the classifier
    names = [n for n, _ in model.named_parameters()]
    assert names[:4] == ["blocks.0.conv.weight", "blocks.0.conv.bias", "blocks.0.norm.weight", "blocks.0.norm.bias"]
    assert names[-2:] == ["classifier.weight", "classifier.bias"]


def test_official_mnist_rule() -> None:
    # 1-channel 28x28: the official code pads the first conv by 3 and works at 32x32
    model = timm.create_model("convnet_d3", in_chans=1, img_size=28, net_width=8)
    assert model.blocks[0].conv.padding == (3, 3) and model.feature_size == (4, 4)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("act,pool", [("leakyrelu", "maxpooling"), ("sigmoid", "none")])
def test_options(act: str, pool: str) -> None:
    model = timm.create_model("convnet_d2", net_width=4, net_act=act, net_pooling=pool, img_size=8)
    side = 8 if pool == "none" else 2
    assert model.num_features == 4 * side * side
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("kwarg", [dict(net_norm="bn"), dict(net_act="gelu"), dict(net_pooling="avg")])
def test_bad_options(kwarg: dict) -> None:
    with pytest.raises(ValueError, match="Unknown"):
        ConvNet(**kwarg)


def test_forward_intermediates() -> None:
    model = timm.create_model("convnet_d3", net_width=4).eval()
    x = torch.randn(2, 3, 32, 32)
    final, inter = model.forward_intermediates(x)
    assert [t.shape[-1] for t in inter] == [16, 8, 4]
    assert torch.equal(inter[-1], model.forward_features(x)) and torch.equal(final, inter[-1])
    mid = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
    assert len(mid) == 1 and torch.equal(mid[0], inter[1])
    kept = model.prune_intermediate_layers([1])
    assert kept == [1] and len(model.blocks) == 2 and model.num_features == 4 * 8 * 8
    assert model(x).shape == (2, model.num_features)


def test_functional_call_vmap_two_parameter_sets() -> None:
    model_a = timm.create_model("convnet_d2", net_width=4, img_size=8, num_classes=3)
    model_b = timm.create_model("convnet_d2", net_width=4, img_size=8, num_classes=3)
    x = torch.randn(5, 3, 8, 8)
    params_a, params_b = dict(model_a.named_parameters()), dict(model_b.named_parameters())
    stacked = {k: torch.stack([params_a[k], params_b[k]]).detach() for k in params_a}
    base = copy.deepcopy(model_a)

    def run(params: dict, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(base, params, (inputs,))

    out = vmap(run, in_dims=(0, None))(stacked, x)
    assert out.shape == (2, 5, 3)
    assert torch.allclose(out[0], model_a(x), atol=1e-6)
    assert torch.allclose(out[1], model_b(x), atol=1e-6)


def test_unrolled_step_gradient_reaches_images() -> None:
    # the trajectory-matching pattern: one functional SGD step on synthetic images, then d(loss)/d(images)
    model = timm.create_model("convnet_d1", net_width=4, img_size=8, num_classes=3)
    params = {k: v.detach() for k, v in model.named_parameters()}
    images = torch.randn(4, 3, 8, 8, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0])

    def loss_fn(p: dict, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(functional_call(model, p, (x,)), labels)

    grads = grad(loss_fn)(params, images)
    stepped = {k: params[k] - 0.1 * grads[k] for k in params}
    loss_fn(stepped, torch.randn(4, 3, 8, 8)).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_float64_and_gradcheck() -> None:
    model = timm.create_model("convnet_d1", net_width=2, in_chans=1, img_size=4, num_classes=2).double()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert model(x).dtype == torch.float64
    assert torch.autograd.gradcheck(model, (x,))
    model.reset_classifier(3)
    assert model.classifier.weight.dtype == torch.float64
