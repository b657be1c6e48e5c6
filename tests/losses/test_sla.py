"""SLA math: the joint label/logit layout against the official strided indexing, hand computations,
gradients (float64) and boundary errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from vsd.losses import SLALoss, SLAOutput, SLASDLoss, sla_aggregate, sla_loss, sla_sd_loss
from vsd.losses.sla import sla_joint_target


def _official_labels(labels, n):
    return torch.stack([labels * n + i for i in range(n)], 1).view(-1)


def _official_aggregate(preds, n):
    agg = 0
    for i in range(n):
        agg = agg + preds[i::n, i::n] / n
    return agg


def test_joint_target_layout():
    assert sla_joint_target(torch.tensor([2, 0]), 4).tolist() == [8, 9, 10, 11, 0, 1, 2, 3]
    labels = torch.randint(0, 10, (6,))
    assert torch.equal(sla_joint_target(labels, 3), _official_labels(labels, 3))


def test_aggregate_hand_example():
    # B=1, C=2, M=2: rows = (rotation 0, rotation 1); columns = (c0k0, c0k1, c1k0, c1k1)
    joint = torch.tensor([[1.0, 2.0, 3.0, 4.0],
                          [5.0, 6.0, 7.0, 8.0]])
    # class 0: (row0,col0 + row1,col1)/2 = (1 + 6)/2; class 1: (row0,col2 + row1,col3)/2 = (3 + 8)/2
    assert sla_aggregate(joint, 2).tolist() == [[3.5, 5.5]]


@pytest.mark.parametrize("m", [1, 2, 4])
def test_aggregate_matches_official_strided_loop(m):
    joint = torch.randn(3 * m, 5 * m)
    assert torch.allclose(sla_aggregate(joint, m), _official_aggregate(joint, m))


def test_loss_hand_computation():
    joint = torch.tensor([[1.0, 2.0, 3.0, 4.0],
                          [5.0, 6.0, 7.0, 8.0]])
    # label 1 -> joint labels (1*2+0, 1*2+1) = (2, 3)
    rows = [(joint[0].tolist(), 2), (joint[1].tolist(), 3)]
    hand = sum(math.log(sum(math.exp(v) for v in z)) - z[y] for z, y in rows) / 2
    assert sla_loss(joint, torch.tensor([1]), 2).item() == pytest.approx(hand, rel=1e-6)


def test_loss_matches_official_formulation():
    joint, labels = torch.randn(8, 12), torch.tensor([0, 2])
    assert torch.allclose(sla_loss(joint, labels, 4), F.cross_entropy(joint, _official_labels(labels, 4)))


def test_sd_loss_against_explicit_formula():
    m, t = 4, 2.0
    joint, single, labels = torch.randn(3 * m, 5 * m), torch.randn(3, 5), torch.tensor([4, 0, 2])
    p = torch.softmax(_official_aggregate(joint, m) / t, 1)
    log_q = torch.log_softmax(single / t, 1)
    kl = (p * (p.log() - log_q)).sum(1).mean()
    expected = (F.cross_entropy(joint, _official_labels(labels, m)) + F.cross_entropy(single, labels)
                + t ** 2 * kl)
    assert torch.allclose(sla_sd_loss(joint, single, labels, m, t), expected, atol=1e-6)


def test_gradcheck_float64():
    labels = torch.tensor([1, 0])
    joint = torch.randn(8, 12, dtype=torch.float64, requires_grad=True)
    single = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda j: sla_loss(j, labels, 4), (joint,))
    # the teacher (aggregate) is detached, so finite differences in the joint logits would see a dependence the
    # loss deliberately cuts: check the single head here and the joint gradient in the next test
    assert torch.autograd.gradcheck(lambda s: sla_sd_loss(joint.detach(), s, labels, 4, 1.5), (single,))


def test_distillation_term_does_not_reach_the_joint_head():
    joint = torch.randn(8, 12, requires_grad=True)
    single, labels = torch.randn(2, 3, requires_grad=True), torch.tensor([1, 2])
    (sla_sd_loss(joint, single, labels) - sla_loss(joint, labels)).backward()
    assert torch.count_nonzero(joint.grad) == 0
    assert torch.count_nonzero(single.grad) > 0


def test_criteria_read_wrapper_output():
    joint, single, labels = torch.randn(8, 12), torch.randn(2, 3), torch.tensor([1, 2])
    out = SLAOutput(joint, None, 4)
    assert torch.allclose(SLALoss()(out, labels), sla_loss(joint, labels))
    assert torch.allclose(SLALoss(large_loss=True)(out, labels), 4 * sla_loss(joint, labels))
    sd = SLAOutput(joint, single, 4)
    assert torch.allclose(SLASDLoss()(sd, labels), sla_sd_loss(joint, single, labels))
    terms = SLASDLoss(temperature=1.0).terms(sd, labels)
    assert set(terms) == {"joint", "single", "kd"}
    assert torch.allclose(terms["single"], F.cross_entropy(single, labels))
    assert torch.allclose(out.logits(), sla_aggregate(joint)) and sd.logits() is single


@pytest.mark.parametrize("criterion,output,match", [
    (SLALoss(), torch.randn(8, 12), "SLAOutput"),
    (SLASDLoss(), SLAOutput(torch.randn(8, 12), None, 4), "self_distill=True"),
    (SLALoss(), SLAOutput(torch.randn(8, 12), torch.randn(2, 3), 4), "untrained"),
])
def test_criterion_errors(criterion, output, match):
    with pytest.raises((TypeError, ValueError), match=match):
        criterion(output, torch.tensor([0, 1]))


@pytest.mark.parametrize("joint,labels,match", [
    (torch.randn(7, 12), torch.tensor([0, 1]), "multiples of num_transforms"),
    (torch.randn(8, 12), torch.tensor([0, 3]), r"\[0, 3\)"),
    (torch.randn(8, 12), torch.tensor([0, 1, 2]), "shape \\[2\\]"),
    (torch.randn(8, 12), torch.rand(2, 3), "class-index targets"),
    (torch.randn(8), torch.tensor([0, 1]), "joint_logits must have shape"),
])
def test_shape_and_label_errors(joint, labels, match):
    with pytest.raises(ValueError, match=match):
        sla_loss(joint, labels, 4)


def test_single_head_shape_error():
    with pytest.raises(ValueError, match=r"single_logits must have shape \(2, 3\)"):
        sla_sd_loss(torch.randn(8, 12), torch.randn(2, 4), torch.tensor([0, 1]))
