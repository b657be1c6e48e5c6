"""USKD: independent reference, Zipf labels by hand, the log-softmax rank quirk, soft targets, gradients, errors."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from vsd.losses import USKDLoss, uskd_loss
from vsd.losses.uskd import uskd_terms, zipf_soft_labels
from vsd.wrappers import USKDWrapper


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def _zipf(z_row, w_row, cols):
    """Zipf weights per class from the official rank (log-probabilities of z, probabilities of w)."""
    wp, lp = _softmax(w_row), [math.log(p) for p in _softmax(z_row)]
    wy, ly = sum(wp[c] for c in cols), sum(lp[c] for c in cols)
    rank = [wp[c] / (1 - wy + 1e-6) + lp[c] / (1 - ly + 1e-6) for c in range(len(z_row))]
    order = sorted(range(len(z_row)), key=lambda c: -rank[c])
    return [1.0 / (order.index(c) + 1) for c in range(len(z_row))]


def reference_uskd(z, w, y, alpha, beta, mu):
    """Independent pure-Python USKD for class-index targets."""
    batch, classes = len(z), len(z[0])
    s_y = [_softmax(z[b])[y[b]] for b in range(batch)]
    mean_sq = sum(s ** 2 for s in s_y) / batch
    loss_t = -sum((s ** 2 + 1 - mean_sq) * math.log(s) for s in s_y) / batch
    loss_w = loss_non = 0.0
    for b in range(batch):
        logw = [math.log(p) for p in _softmax(w[b])]
        q = [0.9 * (c == y[b]) + 0.1 / classes for c in range(classes)]
        loss_w += -mu * sum(qc * lc for qc, lc in zip(q, logw))
        zipf = _zipf(z[b], w[b], [y[b]])
        keep = [c for c in range(classes) if c != y[b]]
        total = sum(zipf[c] for c in keep)
        logp = [math.log(p) for p in _softmax([z[b][c] for c in keep])]
        loss_non += -sum(zipf[c] / total * lp for c, lp in zip(keep, logp))
    return alpha * loss_t + beta * loss_non / batch + loss_w / batch


@pytest.mark.parametrize("alpha,beta,mu", [(1.0, 0.1, 0.005), (0.1, 0.1, 0.1)])
def test_matches_reference(alpha, beta, mu):
    g = torch.Generator().manual_seed(0)
    z, w = torch.randn(6, 5, generator=g) * 2, torch.randn(6, 5, generator=g) * 2
    y = torch.tensor([0, 4, 2, 2, 1, 3])
    got = uskd_loss(z, w, y, alpha, beta, mu).item()
    assert got == pytest.approx(reference_uskd(z.tolist(), w.tolist(), y.tolist(), alpha, beta, mu), rel=1e-5)


def test_zipf_labels_by_hand():
    # uniform weak head; log-probabilities order the classes like z: 1 > 3 > 2 > 0 (0 is the target)
    z = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    zipf = zipf_soft_labels(z, torch.zeros(1, 4), torch.tensor([[0]]))
    # positions 0, 2, 1 for classes 1, 2, 3 -> weights 1, 1/3, 1/2, renormalised by 11/6
    assert torch.allclose(zipf, torch.tensor([[6 / 11, 2 / 11, 3 / 11]]))


def test_rank_uses_log_softmax_quirk():
    # target 0; non-target softmax of z favours class 1 by 0.24, the weak head favours class 2 by tanh(0.215)
    z = torch.tensor([[0.0, 1.0, 0.5]])
    w = torch.tensor([[0.0, 0.0, 0.43]])
    ours = zipf_soft_labels(z, w, torch.tensor([[0]]))
    # official rank (log-probabilities of z): the weak head wins, class 2 first -> [1/2, 1] / 1.5
    assert torch.allclose(ours, torch.tensor([[1 / 3, 2 / 3]]))
    # with probabilities (the paper's wording) class 1 would rank first
    p, wp = F.softmax(z, 1), F.softmax(w, 1)
    paper = wp / (1 - wp[:, :1]) + p / (1 - p[:, :1])
    assert paper[0, 1] > paper[0, 2]


def test_target_term_soft_label():
    # hard labels: p_y = s_y^2 + 1 - mean(s_y^2); a batch of identical rows gives p_y = 1 -> loss_t = -log s_y
    z = torch.tensor([[2.0, 0.0, 0.0]]).repeat(3, 1)
    terms = uskd_terms(z, torch.zeros(3, 3), torch.tensor([0, 0, 0]), alpha=1.0)
    assert terms["uskd_target"].item() == pytest.approx(-math.log(F.softmax(z[0], 0)[0].item()), rel=1e-6)


def test_soft_targets_use_top2():
    z, w = torch.randn(2, 5), torch.randn(2, 5)
    soft = torch.tensor([[0.6, 0.0, 0.4, 0.0, 0.0], [0.0, 0.0, 0.0, 0.3, 0.7]])
    terms = uskd_terms(z, w, soft, 1.0, 0.1, 0.005)
    s = F.softmax(z, 1)
    cols = torch.tensor([[0, 2], [4, 3]])
    vals = torch.tensor([[0.6, 0.4], [0.7, 0.3]])
    sq = s.gather(1, cols) ** 2
    p = sq + vals - sq.mean(0, keepdim=True)
    expected_t = -(p * F.log_softmax(z, 1).gather(1, cols)).sum(1).mean()
    assert torch.allclose(terms["uskd_target"], expected_t)
    expected_w = -(0.005 * (0.9 * soft + 0.02) * F.log_softmax(w, 1)).sum(1).mean()
    assert torch.allclose(terms["uskd_weak"], expected_w)
    # a one-hot soft target gives a zero second value: its column is dropped from the target term
    onehot = F.one_hot(torch.tensor([1, 3]), 5).float()
    t1 = uskd_terms(z, w, onehot, 1.0, 0.1, 0.005)["uskd_target"]
    s1 = s.gather(1, torch.tensor([[1], [3]]))
    p1 = s1 ** 2 + 1 - (s1 ** 2).mean(0, keepdim=True)
    assert torch.allclose(t1, -(p1 * s1.log()).sum(1).mean())


def test_gradcheck():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([1, 4, 0])
    # the Zipf labels are piecewise constant in (z, w), so the non-target and weak terms pass a plain gradcheck

    def smooth_terms(a, b):
        terms = uskd_terms(a, b, y, 0.5, 0.3, 0.1)
        return terms["uskd_non_target"] + terms["uskd_weak"]

    assert torch.autograd.gradcheck(smooth_terms, (z, w))
    # the target term's soft label p_y is detached: d/dz = -alpha * p_y * (onehot - softmax(z)) / B
    uskd_terms(z, w, y, 0.5, 0.3, 0.1)["uskd_target"].backward()
    with torch.no_grad():
        s_y = F.softmax(z, 1).gather(1, y.view(-1, 1))
        p_y = s_y ** 2 + 1 - (s_y ** 2).mean()
        expected = -0.5 * p_y * (F.one_hot(y, 5) - F.softmax(z, 1)) / 3
    assert torch.allclose(z.grad, expected)


def test_errors_are_readable():
    z = torch.randn(2, 4)
    with pytest.raises(ValueError, match="weak_logits .* must have the logits' shape"):
        uskd_loss(z, torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        uskd_loss(z, z, torch.tensor([0, -1]))
    loss_fn = USKDLoss()
    with pytest.raises(ValueError, match=r"weak_logits must have the logits' shape \(2, 4\), got \(2, 7\); wrap"):
        loss_fn((z, torch.randn(2, 7)), torch.tensor([0, 1]))  # e.g. a mid feature instead of the weak logits
    with pytest.raises(ValueError, match="expects \\(logits, weak_logits\\)"):
        loss_fn(z, torch.tensor([0, 1]))


def test_plain_timm_loop_trains_backbone_through_weak_head():
    torch.manual_seed(0)
    model = USKDWrapper(timm.create_model("resnet10t", num_classes=4))
    loss_fn = USKDLoss(alpha=1.0, beta=0.1, mu=0.1)
    assert not list(loss_fn.parameters())  # the weak head is the model's: one optimizer, DDP, EMA, checkpoint
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    model.train()
    output = model(x)
    terms = loss_fn.terms(output, y)
    terms["uskd_weak"].backward(retain_graph=True)
    stage3 = sum(p.grad.abs().sum() for p in model.model.layer3.parameters() if p.grad is not None)
    assert stage3 > 0  # weak supervision reaches the backbone ...
    assert all(p.grad is None for p in model.model.layer4.parameters())  # ... but not the stages after it
    opt.zero_grad()
    loss_fn(output, y).backward()
    opt.step()
    assert model.weak_head.weight.grad is not None
    assert {"weak_head.weight", "weak_head.bias"} <= set(model.state_dict())
    model.eval()
    assert model(x).shape == (4, 4)


def test_half_precision_inputs_use_float32_math():
    # under autocast logits arrive in bfloat16; the Zipf positions (up to C = 1000) must not be rounded
    g = torch.Generator().manual_seed(5)
    z, w = torch.randn(3, 1000, generator=g).bfloat16(), torch.randn(3, 1000, generator=g).bfloat16()
    y = torch.tensor([0, 500, 999])
    got = uskd_loss(z, w, y)
    assert got.dtype == torch.float32
    assert torch.equal(got, uskd_loss(z.float(), w.float(), y))
