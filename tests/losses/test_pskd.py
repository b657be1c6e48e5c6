"""PS-KD math: hand computations, the alpha schedule, gradients (float64) and boundary errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from vsd.losses import PSKDLoss, PSKDOutput, pskd_alpha, pskd_loss
from vsd.losses.pskd import pskd_targets


def _hand_soft_ce(logits, label, prev, alpha):
    """Soft cross-entropy of one row with plain Python floats."""
    norm = math.log(sum(math.exp(z) for z in logits))
    q = [(1 - alpha) * (c == label) + alpha * p for c, p in enumerate(prev)]
    return -sum(qc * (z - norm) for qc, z in zip(q, logits))


def test_hand_computation_two_rows():
    rows = [([1.0, 2.0, 0.0], 1, [0.2, 0.5, 0.3]), ([0.5, -1.0, 3.0], 0, [0.1, 0.1, 0.8])]
    alpha = 0.35
    expected = sum(_hand_soft_ce(z, y, p, alpha) for z, y, p in rows) / len(rows)
    logits = torch.tensor([r[0] for r in rows])
    target = torch.tensor([r[1] for r in rows])
    prev = torch.tensor([r[2] for r in rows])
    assert pskd_loss(logits, target, prev, alpha).item() == pytest.approx(expected, rel=1e-6)


def test_targets_mix_label_and_previous_prediction():
    prev = torch.tensor([[0.2, 0.5, 0.3]])
    q = pskd_targets(torch.tensor([1]), prev, 0.5)
    assert torch.allclose(q, torch.tensor([[0.1, 0.75, 0.15]]))
    assert torch.allclose(q.sum(1), torch.ones(1))


def test_reduces_to_cross_entropy():
    logits, target = torch.randn(5, 7), torch.randint(0, 7, (5,))
    ce = F.cross_entropy(logits, target)
    prev = torch.softmax(torch.randn(5, 7), 1)
    assert torch.allclose(pskd_loss(logits, target, None, 0.8), ce)       # first epoch: no previous prediction
    assert torch.allclose(pskd_loss(logits, target, prev, 0.0), ce)       # alpha = 0
    onehot = F.one_hot(target, 7).float()
    assert torch.allclose(pskd_loss(logits, target, onehot, 0.6), ce)     # official epoch 0: bank holds one-hot


def test_soft_target_replaces_onehot():
    logits, prev = torch.randn(3, 4), torch.softmax(torch.randn(3, 4), 1)
    soft = torch.softmax(torch.randn(3, 4), 1)
    q = 0.7 * soft + 0.3 * prev
    expected = -(q * torch.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(pskd_loss(logits, soft, prev, 0.3), expected)


def test_gradient_is_softmax_minus_target_and_gradcheck():
    logits = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    target, prev = torch.tensor([0, 4, 2, 2]), torch.softmax(torch.randn(4, 5, dtype=torch.float64), 1)
    pskd_loss(logits, target, prev, 0.4).backward()
    q = 0.6 * F.one_hot(target, 5).double() + 0.4 * prev
    assert torch.allclose(logits.grad, (torch.softmax(logits.detach(), 1) - q) / 4)
    assert torch.autograd.gradcheck(lambda z: pskd_loss(z, target, prev, 0.4), (logits.detach().requires_grad_(),))


def test_previous_probabilities_get_no_gradient():
    prev = torch.softmax(torch.randn(2, 3), 1).requires_grad_()
    pskd_loss(torch.randn(2, 3, requires_grad=True), torch.tensor([0, 1]), prev, 0.5).backward()
    assert prev.grad is None


def test_alpha_schedule():
    assert pskd_alpha(0, 10) == pytest.approx(0.08)
    assert pskd_alpha(4, 10, 0.5) == pytest.approx(0.25)
    assert pskd_alpha(9, 10) == pytest.approx(0.8)
    assert pskd_alpha(12, 10) == pytest.approx(0.8)  # cool-down epochs keep alpha_T
    with pytest.raises(ValueError, match="epochs >= 1"):
        pskd_alpha(0, 0)
    with pytest.raises(ValueError, match="alpha_T"):
        pskd_alpha(0, 10, 1.5)


def test_criterion_reads_wrapper_output():
    logits, target = torch.randn(3, 4), torch.tensor([0, 1, 3])
    prev = torch.softmax(torch.randn(3, 4), 1)
    assert torch.allclose(PSKDLoss()(PSKDOutput(logits, prev, 0.3), target), pskd_loss(logits, target, prev, 0.3))
    with pytest.raises(TypeError, match="PSKDOutput"):
        PSKDLoss()(logits, target)


@pytest.mark.parametrize("prev,target,alpha,match", [
    (torch.rand(3, 5), torch.tensor([0, 1, 2]), 0.5, "shape of logits"),
    (torch.rand(3, 4), torch.tensor([0, 1, 4]), 0.5, r"\[0, 4\)"),
    (torch.rand(3, 4), torch.tensor([0, 1]), 0.5, "target must have shape"),
    (torch.rand(3, 4), torch.tensor([0, 1, 2]), 1.5, r"alpha must lie in \[0, 1\]"),
    (torch.ones(3, 4, dtype=torch.long), torch.tensor([0, 1, 2]), 0.5, "floating-point"),
])
def test_errors_are_clear(prev, target, alpha, match):
    with pytest.raises(ValueError, match=match):
        pskd_loss(torch.randn(3, 4), target, prev, alpha)
