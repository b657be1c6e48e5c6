"""MDCS: independent reference, confident instance sampling, warm-up, gradients, errors, timm loop with experts."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from vsd.losses import MDCSLoss, mdcs_loss
from vsd.losses.mdcs import mdcs_terms
from vsd.wrappers import ExpertsWrapper


def _log_softmax(xs):
    m = max(xs)
    lse = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - lse for x in xs]


def reference_mdcs(weak, strong, y, counts, epoch, lambdas=(-0.5, 1.0, 2.5), kl_weight=0.6, warmup=20):
    """Independent pure-Python MDCS (official order: adjust, CE on both views, KL on confident samples)."""
    batch = len(y)
    ce = kl = 0.0
    for k, lam in enumerate(lambdas):
        prior = [math.log(n ** lam + 1e-9) for n in counts]
        adj_w = [[v + p for v, p in zip(row, prior)] for row in weak[k]]
        adj_s = [[v + p for v, p in zip(row, prior)] for row in strong[k]]
        ce += -sum(_log_softmax(adj_w[b])[y[b]] + _log_softmax(adj_s[b])[y[b]] for b in range(batch)) / (2 * batch)
        kept = [b for b in range(batch) if max(range(len(counts)), key=lambda c: adj_w[b][c]) == y[b]]
        if kept:
            total = 0.0
            for b in kept:
                lt, ls = _log_softmax(adj_w[b]), _log_softmax(adj_s[b])
                total += sum(math.exp(a) * (a - s) for a, s in zip(lt, ls))
            kl += total / len(kept)
    return ce + kl_weight * min((epoch + 1) / warmup, 1.0) * kl


def _logits(seed, experts=3, batch=6, classes=4, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, classes, generator=g) * scale for _ in range(experts)]


@pytest.mark.parametrize("epoch", [0, 9, 19, 40])
def test_matches_reference(epoch):
    weak, strong = _logits(0), _logits(1)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    counts = [50, 20, 8, 2]
    got = mdcs_loss(weak, strong, y, counts, epoch).item()
    ref = reference_mdcs([w.tolist() for w in weak], [s.tolist() for s in strong], y.tolist(), counts, epoch)
    assert got == pytest.approx(ref, rel=1e-5)


def test_warmup_ramp_and_official_one_based_epochs():
    weak, strong, y, counts = _logits(2), _logits(3), torch.tensor([0, 1, 2, 3, 0, 1]), [9, 5, 3, 1]
    full = mdcs_terms(weak, strong, y, counts, epoch=19)["mdcs_consistency"]
    assert full > 0
    # official: min(epoch / 20, 1) with epochs counted from 1 -> 0-based epoch 0 gets 1/20
    assert torch.allclose(mdcs_terms(weak, strong, y, counts, epoch=0)["mdcs_consistency"], full / 20)
    assert torch.allclose(mdcs_terms(weak, strong, y, counts, epoch=99)["mdcs_consistency"], full)


def test_only_confident_samples_are_distilled():
    counts = [1, 1, 1]  # log(1 + 1e-9) ~ 0: no prior shift, easy to reason about
    weak = [torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])]
    strong = [torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])]
    y = torch.tensor([0, 2])  # row 0: weak argmax 0 == label (kept); row 1: argmax 1 != label 2 (dropped)
    base = mdcs_terms(weak, strong, y, counts, 30, lambdas=[1.0])["mdcs_consistency"]
    moved = [strong[0].clone()]
    moved[0][1] += torch.tensor([3.0, -2.0, 1.0])
    assert torch.allclose(mdcs_terms(weak, moved, y, counts, 30, lambdas=[1.0])["mdcs_consistency"], base)
    # kept row by hand: KL(softmax([5, 0, 0]) || softmax([0, 1, 0])), batchmean over the 1 kept row, * 0.6
    t, s = F.softmax(weak[0][0], 0), F.log_softmax(strong[0][0], 0)
    assert base.item() == pytest.approx(0.6 * (t * (t.log() - s)).sum().item(), rel=1e-5)
    none_kept = mdcs_terms(weak, strong, torch.tensor([1, 0]), counts, 30, lambdas=[1.0])["mdcs_consistency"]
    assert none_kept.item() == 0.0


def test_logit_adjustment_per_expert():
    # one sample, two classes with counts (4, 1): expert k's logits get lambda_k * log(4) on class 0
    weak = [torch.zeros(1, 2) for _ in range(3)]
    terms = mdcs_terms(weak, weak, torch.tensor([1]), [4, 1], epoch=0)
    expected = sum(math.log(1 + math.exp(lam * math.log(4))) for lam in (-0.5, 1.0, 2.5))
    assert terms["mdcs_diversity"].item() == pytest.approx(expected, rel=1e-6)


def test_gradients():
    g = torch.Generator().manual_seed(4)
    weak = [torch.randn(4, 3, dtype=torch.float64, generator=g) * 2 for _ in range(3)]
    strong = [torch.randn(4, 3, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(3)]
    y = torch.tensor([0, 1, 2, 0])
    assert torch.autograd.gradcheck(lambda *s: mdcs_loss(weak, list(s), y, [10, 4, 1], 25), tuple(strong))
    # the weak view is the (detached) teacher of the KL: its gradient comes from the CE terms only
    weak = [w.requires_grad_() for w in weak]
    mdcs_loss(weak, [s.detach() for s in strong], y, [10, 4, 1], 25).backward()
    prior = torch.log(torch.tensor([10.0, 4.0, 1.0], dtype=torch.float64).pow(torch.tensor([[-0.5], [1.0], [2.5]],
                                                                                         dtype=torch.float64)) + 1e-9)
    for k in range(3):
        expected = (F.softmax(weak[k].detach() + prior[k], 1) - F.one_hot(y, 3)) / 8
        assert torch.allclose(weak[k].grad, expected)


def test_errors_are_readable():
    weak, y = _logits(5, batch=2, classes=3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="one count per class \\(3 classes\\)"):
        mdcs_loss(weak, weak, y, [5, 1], 0)
    with pytest.raises(ValueError, match="must all be > 0"):
        mdcs_loss(weak, weak, y, [5, 0, 1], 0)
    with pytest.raises(ValueError, match="one prior exponent per expert \\(3 experts\\)"):
        mdcs_loss(weak, weak, y, [5, 2, 1], 0, lambdas=(1.0, 2.0))
    with pytest.raises(ValueError, match="one \\[B, C\\] tensor per expert"):
        mdcs_loss(weak, weak[:2], y, [5, 2, 1], 0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        mdcs_loss(weak, weak, torch.tensor([0, 7]), [5, 2, 1], 0)
    loss_fn = MDCSLoss([5, 2, 1])
    experts = _logits(6, batch=3, classes=3)
    with pytest.raises(ValueError, match="even number of rows"):
        loss_fn((experts[0], experts), torch.tensor([0, 1, 2]))
    experts = _logits(6, batch=4, classes=3)
    with pytest.raises(ValueError, match="must repeat the labels"):
        loss_fn((experts[0], experts), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="expects \\(mean_logits"):
        loss_fn(experts[0], torch.tensor([0, 1]))


def test_criterion_accepts_b_or_2b_labels():
    experts, y = _logits(7, batch=6, classes=3), torch.tensor([0, 1, 2])
    loss_fn = MDCSLoss([5, 2, 1])
    loss_fn.set_epoch(4)
    a = loss_fn((experts[0], experts), y)
    b = loss_fn((experts[0], experts), torch.cat([y, y]))
    direct = mdcs_loss([e[:3] for e in experts], [e[3:] for e in experts], y, [5, 2, 1], 4)
    assert torch.allclose(a, b) and torch.allclose(a, direct)


def test_plain_timm_loop_with_experts():
    torch.manual_seed(0)
    model = ExpertsWrapper(timm.create_model("resnet10t", num_classes=3), num_experts=3)
    loss_fn = MDCSLoss(class_counts=[30, 10, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    weak, strong, y = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    model.train()
    loss_fn.set_epoch(0)
    output = model(torch.cat([weak, strong]))
    loss = loss_fn(output, y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(c.weight.grad is not None for c in model.classifiers)
    model.eval()
    assert model(weak).shape == (4, 3)
