"""Trajectory matching: the three engines agree, the loss matches a hand computation, gradients match finite
differences."""
import platform
import resource
import sys

import numpy as np
import pytest
import torch
from torch import nn

from vsd.distill.augment import DSA
from vsd.distill import matching
from vsd.distill.flat import FlatModel
from vsd.distill.matching import (Segment, batched_matching_grads, choose_backend, keep_freed_memory, make_plan,
                                  matching_grads, matching_loss, unroll_bytes)
from vsd.models import create_model


def _tiny_convnet():
    torch.manual_seed(0)
    return create_model("convnet_d1", num_classes=3, in_chans=1, img_size=8, net_width=4).double()


def _problem(soft=False, n=6):
    fm = FlatModel(_tiny_convnet())
    w0 = fm.flatten_module()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 1, 8, 8, dtype=torch.float64, generator=g)
    y = torch.randn(n, 3, dtype=torch.float64, generator=g) if soft else torch.arange(n) % 3
    targets = [(2, w0 + 0.05 * torch.randn(w0.shape, dtype=torch.float64, generator=g)),
               (5, w0 + 0.1 * torch.randn(w0.shape, dtype=torch.float64, generator=g))]
    return fm, w0, x, y, targets


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("soft", [False, True])
def test_engines_give_the_same_hypergradient(momentum, soft):
    fm, w0, x, y, targets = _problem(soft)
    aug = DSA()
    plan = make_plan(len(x), 5, 4, aug, 8, 8, torch.Generator().manual_seed(1))
    lr = torch.tensor(0.05, dtype=torch.float64)
    out = {b: matching_grads(b, fm, w0, targets, x, lr, y, plan, aug, momentum=momentum, ce_scale=1.3)
           for b in ("unroll", "constant_memory", "higher")}
    ref_loss, ref = out["unroll"]
    keys = ["images", "syn_lr"] + (["labels"] if soft else [])
    for backend in ("constant_memory", "higher"):
        loss, grads = out[backend]
        assert abs(float(loss - ref_loss)) < 1e-12
        for k in keys:
            assert _rel(grads[k], ref[k]) < 1e-6, (backend, k)
    assert ref["images"].abs().sum() > 0 and ref["syn_lr"].abs() > 0


def test_gradient_matches_finite_differences():
    fm, w0, x, y, targets = _problem(n=3)
    x = x[:, :, :6, :6].contiguous()
    fm = FlatModel(create_model("convnet_d1", num_classes=3, in_chans=1, img_size=6, net_width=2).double())
    w0 = fm.flatten_module()
    targets = [(3, w0 + 0.1 * torch.sin(torch.arange(len(w0), dtype=torch.float64)))]
    plan = make_plan(3, 3, 0, None, 6, 6, torch.Generator().manual_seed(0))
    lr = torch.tensor(0.1, dtype=torch.float64)
    _, grads = matching_grads("constant_memory", fm, w0, targets, x, lr, y, plan, momentum=0.5)

    def f(images, rate):
        return matching_grads("unroll", fm, w0, targets, images, rate, y, plan, momentum=0.5)[0]

    eps = 1e-6
    for idx in [(0, 0, 2, 3), (1, 0, 0, 0), (2, 0, 5, 1)]:
        xp, xm = x.clone(), x.clone()
        xp[idx] += eps
        xm[idx] -= eps
        numeric = float(f(xp, lr) - f(xm, lr)) / (2 * eps)
        assert abs(numeric - float(grads["images"][idx])) < 1e-6 * max(1.0, abs(numeric))
    numeric_lr = float(f(x, lr + eps) - f(x, lr - eps)) / (2 * eps)
    assert abs(numeric_lr - float(grads["syn_lr"])) < 1e-6 * max(1.0, abs(numeric_lr))


def test_matching_loss_against_hand_computation():
    """One SGD step of softmax regression, written out in NumPy."""
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    X, Y = rng.normal(size=(5, 4)), np.array([0, 1, 2, 1, 0])
    lr = 0.3
    target = rng.normal(size=15)
    z = X @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = (p - np.eye(3)[Y]) / len(Y)
    w0 = np.concatenate([W.ravel(), b])
    w1 = w0 - lr * np.concatenate([(d.T @ X).ravel(), d.sum(0)])
    expected = np.sum((w1 - target) ** 2) / np.sum((w0 - target) ** 2)

    lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    fm = FlatModel(lin)
    w0_t = torch.tensor(w0)
    x = torch.tensor(X).view(5, 1, 2, 2)
    plan = make_plan(5, 1, 0, None, 2, 2)
    for backend in ("unroll", "constant_memory", "higher"):
        lr_t = torch.tensor(lr, dtype=torch.float64)
        loss, _ = matching_grads(backend, fm, w0_t, [(1, torch.tensor(target))], x, lr_t,
                                 torch.tensor(Y), plan)
        assert abs(float(loss) - expected) < 1e-12


def test_matching_loss_sums_normalised_terms():
    w0 = torch.zeros(2)
    loss = matching_loss({1: torch.tensor([1.0, 0.0]), 2: torch.tensor([0.0, 3.0])}, w0,
                         [(1, torch.tensor([0.0, 2.0])), (2, torch.tensor([0.0, 1.0]))])
    assert float(loss) == pytest.approx((1 + 4) / 4 + 4 / 1)


def test_adam_inner_optimizer_through_higher():
    fm, w0, x, y, targets = _problem()
    plan = make_plan(len(x), 5, 0, None, 8, 8, torch.Generator().manual_seed(1))
    loss, grads = matching_grads("higher", fm, w0, targets, x, torch.tensor(1e-3, dtype=torch.float64), y, plan,
                                 inner_opt="adam")
    assert torch.isfinite(loss) and grads["images"].abs().sum() > 0
    with pytest.raises(ValueError, match="needs backend='higher'"):
        matching_grads("unroll", fm, w0, targets, x, torch.tensor(1e-3, dtype=torch.float64), y, plan,
                       inner_opt="adam")


def test_bad_targets_and_backend():
    fm, w0, x, y, _ = _problem()
    plan = make_plan(len(x), 3, 0, None, 8, 8)
    lr = torch.tensor(0.1, dtype=torch.float64)
    with pytest.raises(ValueError, match="distinct steps in"):
        matching_grads("unroll", fm, w0, [(4, w0)], x, lr, y, plan)
    with pytest.raises(ValueError, match="unknown matching backend"):
        matching_grads("tesla", fm, w0, [(3, w0)], x, lr, y, plan)
    with pytest.raises(ValueError, match="identical"):
        matching_grads("unroll", fm, w0, [(3, w0)], x, lr, y, plan)


def test_plan_cycles_through_the_set_like_mtt():
    plan = make_plan(10, 5, 4, None, 8, 8, torch.Generator().manual_seed(0))
    sizes = [len(p.indices) for p in plan]
    assert sizes[:3] == [2, 4, 4]  # chunks of one permutation popped from the end
    assert sorted(torch.cat([p.indices for p in plan[:3]]).tolist()) == list(range(10))


def _segments(fm, w0, k, steps=4, batch=4, aug=None, scaled=True):
    """K segments with their own start points, targets, minibatches, DSA draws and CE scales."""
    g = torch.Generator().manual_seed(7)
    out = []
    for i in range(k):
        start = w0 + 0.02 * torch.randn(w0.shape, dtype=w0.dtype, generator=g)
        targets = [(2, start + 0.05 * torch.randn(w0.shape, dtype=w0.dtype, generator=g)),
                   (steps, start + 0.1 * torch.randn(w0.shape, dtype=w0.dtype, generator=g))]
        plan = make_plan(6, steps, batch, aug, 8, 8, g)
        out.append(Segment(start, targets, plan, ce_scale=1.0 + 0.3 * i if scaled else 1.0))
    return out


@pytest.mark.parametrize("backend", ["unroll", "constant_memory"])
@pytest.mark.parametrize("momentum,soft,scaled", [(0.0, False, False), (0.5, True, True), (0.0, True, False)])
def test_batched_segments_equal_the_sequential_average(backend, momentum, soft, scaled):
    """One vmap-ed inner loop over K=3 segments gives the mean of the K single-segment results (float64)."""
    fm, w0, x, y, _ = _problem(soft)
    aug = DSA()
    segments = _segments(fm, w0, 3, aug=aug, scaled=scaled)
    lr = torch.tensor(0.05, dtype=torch.float64)
    singles = [matching_grads(backend, fm, s.w0, s.targets, x, lr, y, s.plan, aug, momentum, s.ce_scale)
               for s in segments]
    loss, grads = batched_matching_grads(backend, fm, segments, x, lr, y, aug, momentum, vectorize=True)
    assert abs(float(loss) - sum(float(l) for l, _ in singles) / 3) < 1e-12
    for key in ["images", "syn_lr"] + (["labels"] if soft else []):
        average = sum(g[key] for _, g in singles) / 3
        assert _rel(grads[key], average) < 1e-10, key
        assert _rel(singles[0][1][key], average) > 1e-3  # the segments really differ
    seq_loss, seq = batched_matching_grads(backend, fm, segments, x, lr, y, aug, momentum, vectorize=False)
    assert _rel(seq["images"], grads["images"]) < 1e-10 and abs(float(seq_loss - loss)) < 1e-12


def test_segments_must_share_steps():
    fm, w0, x, y, _ = _problem()
    a, b = _segments(fm, w0, 2)
    b.targets = b.targets[1:]
    with pytest.raises(ValueError, match="share their target steps"):
        batched_matching_grads("unroll", fm, [a, b], x, torch.tensor(0.1, dtype=torch.float64), y)


def test_choose_backend_takes_the_faster_engine_or_respects_the_budget():
    import time as _time

    calls = []

    def call(backend):
        calls.append(backend)
        end = _time.process_time() + (0.05 if backend == "unroll" else 0.0)  # busy: the probe counts CPU time
        while _time.process_time() < end:
            pass
        return torch.tensor(float(len(backend))), {}

    backend, result, reason = choose_backend(call, steps_bytes=2 ** 20, budget_bytes=2 ** 30)
    assert backend == "constant_memory" and float(result[0]) == len("constant_memory")
    assert calls == ["constant_memory", "unroll", "unroll", "constant_memory"] and "timed probe" in reason
    calls.clear()
    backend, _, reason = choose_backend(call, steps_bytes=2 ** 31, budget_bytes=2 ** 30)
    assert backend == "constant_memory" and calls == ["constant_memory"] and "budget 1.00 GB" in reason
    calls.clear()  # fits the budget, but not with the backward's temporaries on top
    backend, _, reason = choose_backend(call, steps_bytes=int(0.9 * 2 ** 30), budget_bytes=2 ** 30)
    assert backend == "constant_memory" and calls == ["constant_memory"] and "x1.25" in reason


def test_unroll_bytes_grows_with_steps_and_segments():
    fm, w0, x, y, _ = _problem()
    one = unroll_bytes(fm, _segments(fm, w0, 1, steps=4), x, y)
    assert unroll_bytes(fm, _segments(fm, w0, 1, steps=8), x, y) == 2 * one
    assert unroll_bytes(fm, _segments(fm, w0, 3, steps=4), x, y) > 2 * one
    assert unroll_bytes(fm, _segments(fm, w0, 3, steps=4), x, y, vectorize=False) == one



@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"), reason="glibc only")
def test_cpu_engine_keeps_freed_memory_for_reuse(monkeypatch):
    """An engine call on CPU sets the allocator up once; then blocks freed at the end of an iteration are reused
    without page faults (by default glibc gives the freed 128 MB back to the OS and the next round faults its
    32768 pages in again, as an unroll's activations were every iteration)."""
    calls = []
    monkeypatch.setattr(matching, "keep_freed_memory", lambda: calls.append(1) or True)
    fm, w0, x, y, targets = _problem()
    plan = make_plan(len(x), 5, 0, None, 8, 8)
    matching_grads("unroll", fm, w0, targets, x, torch.tensor(0.05, dtype=torch.float64), y, plan)
    assert calls
    monkeypatch.undo()
    assert keep_freed_memory() is True
    faults = []
    for _ in range(6):  # the first rounds may place the block anew (heap layout); then it is reused
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.ones(4 * 2 ** 20) for _ in range(8)]  # 8 x 16 MB
        del blocks
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    assert sum(faults[3:]) < 1000, faults


def _saved_peak(fn):
    """Peak bytes of distinct storages saved for backward and alive at once while ``fn`` runs (independent of
    :func:`unroll_bytes`, which counts the first step's storages)."""
    live, refs = {"now": 0, "peak": 0}, {}

    class Held:
        def __init__(self, t):
            self.t, self.key = t, t.untyped_storage().data_ptr()
            if refs.get(self.key, 0) == 0:
                live["now"] += t.untyped_storage().nbytes()
                live["peak"] = max(live["peak"], live["now"])
            refs[self.key] = refs.get(self.key, 0) + 1

        def __del__(self):
            refs[self.key] -= 1
            if refs[self.key] == 0:
                live["now"] -= self.t.untyped_storage().nbytes()

    with torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t):
        fn()
    return live["peak"]


def test_unroll_bytes_predicts_the_unrolls_saved_memory():
    """The estimate auto compares with the budget follows a real unroll's saved memory: the same growth per step
    (within 5%) and at least 85% of the peak (the rest is the matching loss's share, which does not grow with the
    steps). Without DSA: at this tiny size its share of a step, which varies with the family drawn for the step,
    is as large as the network's own (at CIFAR size it is a few percent)."""
    fm, w0, x, y, _ = _problem()
    aug = None
    lr = torch.tensor(0.05, dtype=torch.float64)
    peak, estimate = {}, {}
    for steps in (8, 16):
        (seg,) = _segments(fm, w0, 1, steps=steps, batch=6, aug=aug)
        peak[steps] = _saved_peak(lambda: matching_grads("unroll", fm, seg.w0, seg.targets, x, lr, y, seg.plan, aug))
        estimate[steps] = unroll_bytes(fm, [seg], x, y, aug)
        assert 0.85 * peak[steps] <= estimate[steps] <= peak[steps], (steps, estimate, peak)
    assert abs((estimate[16] - estimate[8]) / (peak[16] - peak[8]) - 1) < 0.05, (estimate, peak)
