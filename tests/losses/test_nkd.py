"""NKD: hand computation, the target-column exclusion (Oct 2023 fix), soft targets, gradients, errors, timm loop."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from vsd.losses import NKDLoss, nkd_loss
from vsd.losses.nkd import nkd_terms
from vsd.wrappers import TeacherWrapper


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def reference_nkd(z, t, y, temperature, gamma):
    """Independent pure-Python NKD (loops over rows; the target column dropped by list comprehension)."""
    batch = len(z)
    loss_t = loss_non = 0.0
    for b in range(batch):
        c = y[b]
        loss_t += -_softmax(t[b])[c] * math.log(_softmax(z[b])[c])
        zs = [z[b][j] / temperature for j in range(len(z[b])) if j != c]
        ts = [t[b][j] / temperature for j in range(len(t[b])) if j != c]
        q, p = _softmax(ts), _softmax(zs)
        loss_non += sum(qj * math.log(pj) for qj, pj in zip(q, p))
    return loss_t / batch - gamma * temperature ** 2 * loss_non / batch


def test_single_row_by_hand():
    # z = [0, ln 2, ln 3] -> softmax(z) = [1/6, 2/6, 3/6]; t = [ln 3, 0, ln 2] -> softmax(t) = [3/6, 1/6, 2/6]
    z = torch.tensor([[0.0, math.log(2), math.log(3)]])
    t = torch.tensor([[math.log(3), 0.0, math.log(2)]])
    terms = nkd_terms(z, t, torch.tensor([0]), temperature=1.0, gamma=1.0)
    # target: -(1/2) * log(1/6); non-target over classes {1, 2}: student [2/5, 3/5], teacher [1/3, 2/3]
    assert terms["nkd_target"].item() == pytest.approx(-0.5 * math.log(1 / 6))
    expected_non = -(1 / 3 * math.log(2 / 5) + 2 / 3 * math.log(3 / 5))
    assert terms["nkd_non_target"].item() == pytest.approx(expected_non)


@pytest.mark.parametrize("temperature,gamma", [(1.0, 1.5), (3.0, 3.5)])
def test_matches_reference(temperature, gamma):
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(5, 7, generator=g) * 2, torch.randn(5, 7, generator=g) * 2
    y = torch.tensor([0, 6, 3, 3, 1])
    got = nkd_loss(z, t, y, temperature, gamma).item()
    assert got == pytest.approx(reference_nkd(z.tolist(), t.tolist(), y.tolist(), temperature, gamma), rel=1e-5)


def test_target_column_is_excluded_from_non_target_term():
    g = torch.Generator().manual_seed(1)
    z, t = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    y = torch.tensor([2, 0, 5, 2])
    base = nkd_terms(z, t, y, 2.0, 1.5)
    z2, t2 = z.clone(), t.clone()
    rows = torch.arange(4)
    z2[rows, y] += 5.0  # move only the target logits of student and teacher
    t2[rows, y] -= 5.0
    moved = nkd_terms(z2, t2, y, 2.0, 1.5)
    assert torch.allclose(moved["nkd_non_target"], base["nkd_non_target"], atol=1e-6)
    assert not torch.allclose(moved["nkd_target"], base["nkd_target"])
    # the pre-Oct-2023 official mask (target column kept) gives a different value
    buggy = -1.5 * 4.0 * (F.softmax(t / 2, 1) * F.log_softmax(z / 2, 1)).sum(1).mean()
    assert not torch.allclose(buggy, base["nkd_non_target"])


def test_soft_target_uses_argmax():
    g = torch.Generator().manual_seed(2)
    z, t = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    y = torch.tensor([4, 1, 0])
    soft = 0.7 * F.one_hot(y, 5).float() + 0.3 * F.one_hot(torch.tensor([0, 2, 3]), 5).float()
    assert torch.allclose(nkd_loss(z, t, soft), nkd_loss(z, t, y))


def test_gradcheck_and_teacher_detached():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([1, 3, 0])
    assert torch.autograd.gradcheck(lambda a: nkd_loss(a, t, y, 2.0, 1.5), (z,))
    nkd_loss(z, t, y).backward()
    assert t.grad is None


def test_errors_are_readable():
    z, t = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        nkd_loss(z, t, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="teacher_logits must have the student's shape"):
        nkd_loss(z, torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"shape \[batch, classes\]"):
        nkd_loss(torch.randn(2, 3, 1), t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        nkd_loss(z, t, torch.tensor([0, 1]), temperature=0.0)
    with pytest.raises(ValueError, match="expects \\(student_logits, teacher_logits\\)"):
        NKDLoss()(z, torch.tensor([0, 1]))


def test_criterion_adds_cross_entropy():
    z, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    terms = NKDLoss(3.0, 3.5).terms((z, t), y)
    assert torch.allclose(terms["ce"], F.cross_entropy(z, y))
    assert torch.allclose(terms["loss"], F.cross_entropy(z, y) + nkd_loss(z, t, y, 3.0, 3.5))


def test_plain_timm_loop_with_wrapper():
    torch.manual_seed(0)
    student = timm.create_model("resnet10t", num_classes=4)
    model = TeacherWrapper(student, timm.create_model("resnet10t", num_classes=4))
    loss_fn = NKDLoss()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    teacher_before = [p.clone() for p in model.teacher.parameters()]
    model.train()
    output = model(x)
    loss = loss_fn(output, y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, model.teacher.parameters()))
    assert not model.teacher.training
    model.eval()
    assert model(x).shape == (4, 4)  # timm validation sees plain logits
