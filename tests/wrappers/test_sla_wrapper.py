"""SLA wrapper: rotation layout, heads on pooled timm features, train/eval outputs, plain timm loop, errors."""
import pytest
import timm
import torch
from torch import nn

from vsd.losses import SLALoss, SLAOutput, SLASDLoss, sla_aggregate
from vsd.wrappers import SLAWrapper, rotate_batch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _model():
    return timm.create_model("test_resnet", num_classes=5)


def test_rotate_batch_is_sample_major():
    x = torch.randn(2, 3, 4, 4)
    rot = rotate_batch(x, 4)
    assert rot.shape == (8, 3, 4, 4)
    for b in range(2):
        for k in range(4):
            assert torch.equal(rot[b * 4 + k], torch.rot90(x[b], k, dims=(1, 2)))
    half = rotate_batch(x, 2)  # the official 'rotation2': 0 and 180 degrees
    assert torch.equal(half[1], torch.rot90(x[0], 2, dims=(1, 2))) and torch.equal(half[2], x[1])


def test_train_output_rows_are_rotated_samples():
    wrapper = SLAWrapper(_model(), self_distill=True).train()
    wrapper.model.eval()  # fixed batch-norm statistics so that rows can be recomputed one by one
    x = torch.randn(2, 3, 16, 16)
    out = wrapper(x)
    assert isinstance(out, SLAOutput) and out.num_transforms == 4
    assert out.joint_logits.shape == (8, 20) and out.single_logits.shape == (2, 5)
    for b, k in [(0, 0), (1, 3), (1, 2)]:
        feats = wrapper.features(torch.rot90(x[b:b + 1], k, dims=(2, 3)))
        assert torch.allclose(out.joint_logits[b * 4 + k], wrapper.joint_head(feats)[0], atol=1e-5)
    assert torch.allclose(out.single_logits, wrapper.single_head(wrapper.features(x)), atol=1e-5)


def test_eval_returns_aggregated_or_single_head_logits():
    x = torch.randn(3, 3, 16, 16)
    sla = SLAWrapper(_model()).eval()
    joint = torch.stack([sla.joint_head(sla.features(torch.rot90(x, k, dims=(2, 3)))) for k in range(4)], 1)
    assert torch.allclose(sla(x), sla_aggregate(joint.reshape(12, 20)), atol=1e-5)
    sd = SLAWrapper(_model(), self_distill=True).eval()
    assert torch.allclose(sd(x), sd.single_head(sd.features(x)), atol=1e-6)
    assert sd(x).shape == (3, 5)


def test_backbone_classifier_is_dropped():
    wrapper = SLAWrapper(_model())
    assert wrapper.num_classes == 5 and wrapper.model.num_classes == 0
    assert wrapper.joint_head.out_features == 20 and wrapper.single_head is None


@pytest.mark.parametrize("self_distill,loss_fn", [(False, SLALoss()), (True, SLASDLoss())])
def test_plain_timm_loop(self_distill, loss_fn):
    model = SLAWrapper(_model(), self_distill=self_distill)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 4])
    model.train()
    output = model(x)
    loss = loss_fn(output, y)
    optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # nothing unused (DDP-friendly)
    optimizer.step()
    assert model.eval()(x).shape == (4, 5)


def test_errors():
    with pytest.raises(ValueError, match="square images"):
        SLAWrapper(_model()).train()(torch.randn(2, 3, 16, 12))
    with pytest.raises(ValueError, match="num_transforms in"):
        SLAWrapper(_model(), num_transforms=3)
    with pytest.raises(TypeError, match="forward_features"):
        SLAWrapper(nn.Linear(4, 4), num_classes=4)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        SLAWrapper(timm.create_model("test_resnet", num_classes=0))
