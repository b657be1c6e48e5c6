r"""Trajectory matching (MTT) with three interchangeable engines that give the same hypergradient.

Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022
(official code: GeorgeCazenavette/mtt-distillation, ``distill.py``), with the refinements of Shen et al.,
"AST: Alignment with Smooth Expert" (shenjiyuan123/AST-Alignment-with-Smooth-Expert): inner momentum and
intermediate matching.

Inner loop, from an expert snapshot :math:`w_0=\theta^*_s`, for :math:`t = 0..T-1` (``T = syn_steps``):

.. math::
    g_t = \nabla_w\, c\,\mathrm{CE}(f(\mathrm{DSA}(X_{B_t}); w_t), Y_{B_t}),\quad
    b_t = \mu\, b_{t-1} + g_t\ (b_{-1}=0),\quad w_{t+1} = w_t - \alpha\, b_t

with the learnable synthetic learning rate :math:`\alpha` (``syn_lr``), inner momentum :math:`\mu` (0 = MTT's plain
SGD), CE scale :math:`c` (AST's start-epoch balance), minibatches :math:`B_t` and DSA parameters fixed in a
:class:`StepPlan` list. The matching loss sums over the matched steps :math:`(s_k, \theta^*_k)` (the final step
:math:`T` against :math:`\theta^*_{s+E}`, optionally intermediate steps against intermediate expert epochs):

.. math::
    L = \sum_k \frac{\lVert w_{s_k} - \theta^*_k\rVert^2}{\lVert w_0 - \theta^*_k\rVert^2}

Engines (all return ``(loss, grads)`` with the gradients of ``L`` for images, ``syn_lr`` and soft labels):

* ``"unroll"``: the plain unroll with ``create_graph=True`` (memory grows with ``T``), as in MTT.
* ``"constant_memory"``: exact reverse-mode in constant activation memory. The forward pass keeps only
  :math:`(w_t, b_{t-1})` per step; the backward pass re-computes one step's graph at a time, in reverse, and
  propagates the adjoint :math:`(\bar w, \bar b)` with vector-Jacobian products. The gradient equals the
  unroll's to float precision (TESLA's released code approximates it instead).
* ``"higher"``: the unroll through ``higher.innerloop_ctx`` with a differentiable torch optimizer (``sgd``, with
  momentum, or ``adam``), ``syn_lr`` overriding the optimizer's lr.

Batched segments (:func:`batched_matching_grads`): the ``K`` (expert, start) segments of one outer iteration
share the synthetic set; the engines run them as one inner loop over stacked ``[K, P]`` parameters, one
``torch.func.vmap``-ed model call per step with each segment's own minibatch and DSA draw. The step loss
:math:`\sum_k c_k \mathrm{CE}_k` separates over ``k``, so its gradient with respect to the stacked parameters is
the stack of the segments' own gradients, and the loss is the mean of the segments' matching losses: the
hypergradient equals the average of running the segments one after another.

Engine choice (:func:`choose_backend`, used by ``distill.backend: auto``): the unroll is taken only when its
estimated activation memory (:func:`unroll_bytes`) fits the budget and it wins a timed probe of the first
iteration against the constant-memory engine.

CPU memory: the engines' first call on CPU keeps freed memory in the process
(:func:`vsd.distill.cpu_memory.keep_freed_memory`); the distiller also serves large blocks from the heap where
the memory budget has room (:func:`vsd.distill.cpu_memory.large_blocks_policy`). Both remove page faults that
re-fetched an iteration's activations from the OS in every iteration; the module says what each costs.

Labels are ``[N]`` class indices, or ``[N, K]`` learnable soft-label *logits* (targets ``softmax(labels)``, a
DATM-style option). Deliberate differences from the official code: the denominators use the actual start point
(after weight perturbation, as AST does); intermediate targets are matched at step
``(T // E) * k`` like AST's ``agg_middle_loss``.

Example:
    >>> import torch
    >>> from vsd.distill.flat import FlatModel
    >>> fm = FlatModel(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))
    >>> x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1] * 3)
    >>> w0 = fm.flatten_module()
    >>> plan = make_plan(6, 3, 0, None, 2, 2)
    >>> loss, grads = matching_grads("unroll", fm, w0, [(3, w0 + 0.1)], x, torch.tensor(0.01), y, plan)
    >>> grads["images"].shape
    torch.Size([6, 1, 2, 2])
"""
from __future__ import annotations

from dataclasses import dataclass
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.func import vmap

from vsd.distill.augment import DSA, DSAParams
from vsd.distill.cpu_memory import keep_freed_memory
from vsd.distill.flat import FlatModel

Target = Tuple[int, torch.Tensor]
BACKENDS = ("unroll", "constant_memory", "higher")
# the unroll's peak over its saved activations (final backward's temporaries; measured 1.1-1.3x on CPU)
UNROLL_HEADROOM = 1.25


@dataclass
class StepPlan:
    """One inner step's minibatch indices and augmentation parameters (fixed before the unroll)."""

    indices: torch.Tensor
    aug: Optional[DSAParams] = None


def make_plan(n_syn: int, syn_steps: int, batch_syn: int, augment: Optional[DSA], height: int, width: int,
              generator: Optional[torch.Generator] = None) -> List[StepPlan]:
    """Minibatches as MTT draws them (a random permutation cut into ``batch_syn`` chunks, refreshed when used up;
    ``batch_syn <= 0`` = the whole set) and, when ``augment`` is given, DSA parameters for each step."""
    if syn_steps < 1:
        raise ValueError(f"syn_steps must be >= 1, got {syn_steps}")
    batch = n_syn if batch_syn <= 0 else min(batch_syn, n_syn)
    plan: List[StepPlan] = []
    chunks: List[torch.Tensor] = []
    for _ in range(syn_steps):
        if not chunks:
            chunks = list(torch.split(torch.randperm(n_syn, generator=generator), batch))
        idx = chunks.pop()
        aug = augment.sample(len(idx), height, width, generator) if augment is not None else None
        plan.append(StepPlan(idx, aug))
    return plan


def _inputs(images: torch.Tensor, labels: torch.Tensor, plans: Sequence[Sequence[StepPlan]], t: int,
            augment: Optional[DSA]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Step ``t``'s minibatch of every segment, stacked: ``[K, B, C, H, W]`` images (augmented with each
    segment's own DSA draw) and ``[K, B]`` (or ``[K, B, classes]``) labels; unstacked for one segment."""
    xs, ys = [], []
    for plan in plans:
        step = plan[t]
        x = images[step.indices]
        if augment is not None and step.aug is not None:
            x = augment(x, step.aug)
        xs.append(x)
        ys.append(labels[step.indices])
    if len(xs) == 1:
        return xs[0], ys[0]
    return torch.stack(xs), torch.stack(ys)


def _step_loss(fm: FlatModel, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               scales: Optional[torch.Tensor]) -> torch.Tensor:
    """:math:`\sum_k c_k\,\mathrm{CE}_k` of ``K`` parameter vectors ``w [K, P]`` on their own minibatches
    ``x [K, B, ...]``, one vectorised model call (``torch.func.vmap``); without scales (all ``c_k = 1``) one
    cross-entropy over the ``K * B`` rows times ``K`` (the minibatches are equally large). One segment
    (``w [P]``, ``x [B, ...]``) runs exactly the plain step: model call and cross-entropy."""
    if w.dim() == 1:
        loss = label_loss(fm(w, x), y)
        return loss if scales is None else loss * scales[0]
    logits = vmap(fm)(w, x)
    if scales is not None:
        return torch.sum(scales * label_losses(logits, y))
    return label_loss(logits.reshape(-1, logits.shape[-1]), y.reshape(-1, *y.shape[2:])) * len(w)


def label_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-segment mean cross-entropy of ``[K, B, classes]`` logits: with ``[K, B]`` class indices, or with
    ``softmax(y)`` targets when ``y`` holds ``[K, B, classes]`` soft-label logits."""
    if y.dtype.is_floating_point:
        return torch.sum(-F.softmax(y, dim=-1) * F.log_softmax(logits, dim=-1), dim=-1).mean(dim=-1)
    k, b = y.shape
    return F.cross_entropy(logits.reshape(k * b, -1), y.reshape(-1), reduction="none").view(k, b).mean(dim=1)


def label_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``[B, classes]`` logits with class indices, or with ``softmax(y)`` targets when ``y`` holds
    soft-label logits (one segment's :func:`label_losses`)."""
    if y.dtype.is_floating_point:
        return torch.sum(-F.softmax(y, dim=1) * F.log_softmax(logits, dim=1), dim=1).mean()
    return F.cross_entropy(logits, y)


def matching_loss(iterates: Dict[int, torch.Tensor], w0: torch.Tensor, targets: Sequence[Target]) -> torch.Tensor:
    """:math:`\\sum_k ||w_{s_k} - \\theta_k||^2 / ||w_0 - \\theta_k||^2` over ``targets = [(s_k, theta_k)]``;
    with stacked ``[K, P]`` vectors, the mean of the ``K`` segments' losses."""
    terms = [_term(iterates[step], w0, theta) for step, theta in targets]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total.mean() if total.dim() else total


def _term(w: torch.Tensor, w0: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    denom = torch.sum((w0 - theta) ** 2, dim=-1)
    if not bool((denom > 0).all()):
        raise ValueError("the start and target expert parameters are identical: the matching loss is undefined "
                         "(an expert that did not train? check the buffer)")
    return torch.sum((w - theta) ** 2, dim=-1) / denom


@dataclass
class Segment:
    """One (expert, start) segment to match: start point ``w0 [P]``, ``targets = [(step, theta [P])]``, the
    inner steps' :class:`StepPlan` list and the inner cross-entropy scale."""

    w0: torch.Tensor
    targets: Sequence[Target]
    plan: Sequence[StepPlan]
    ce_scale: float = 1.0


def _check(targets: Sequence[Target], plan: Sequence[StepPlan]) -> List[Target]:
    steps = [s for s, _ in targets]
    if not targets or any(not 1 <= s <= len(plan) for s in steps) or len(set(steps)) != len(steps):
        raise ValueError(f"matching targets must be distinct steps in [1, {len(plan)}], got {steps}")
    return sorted(targets, key=lambda t: t[0])


def _stack(segments: Sequence[Segment]):
    """``w0 [K, P]``, targets ``[(step, theta [K, P])]`` (``[P]`` vectors for one segment), the plans and ``[K]``
    CE scales (None when all are 1) of segments that share their matched steps and minibatch sizes (as the
    segments of one outer iteration do)."""
    if not segments:
        raise ValueError("matching needs at least one segment")
    checked = [_check(s.targets, s.plan) for s in segments]
    steps = [s for s, _ in checked[0]]
    sizes = [len(p.indices) for p in segments[0].plan]
    for seg, targets in zip(segments[1:], checked[1:]):
        if [s for s, _ in targets] != steps or [len(p.indices) for p in seg.plan] != sizes:
            raise ValueError("segments matched together must share their target steps and minibatch sizes")
    if len(segments) == 1:  # one segment: plain [P] vectors
        w0, targets = segments[0].w0.detach(), [(s, th.detach()) for s, th in checked[0]]
    else:
        w0 = torch.stack([s.w0.detach() for s in segments])
        targets = [(step, torch.stack([t[i][1].detach() for t in checked])) for i, step in enumerate(steps)]
    scales = None
    if any(float(s.ce_scale) != 1.0 for s in segments):
        scales = torch.tensor([float(s.ce_scale) for s in segments], dtype=w0.dtype, device=w0.device)
    return w0, targets, [s.plan for s in segments], scales


def _leaves(images: torch.Tensor, syn_lr: torch.Tensor, labels: torch.Tensor):
    images = images.detach().requires_grad_(True)
    syn_lr = syn_lr.detach().requires_grad_(True)
    soft = labels.dtype.is_floating_point
    labels = labels.detach().requires_grad_(True) if soft else labels.detach()
    return images, syn_lr, labels, soft


def _collect(loss: torch.Tensor, images: torch.Tensor, syn_lr: torch.Tensor, labels: torch.Tensor,
             soft: bool) -> Tuple[torch.Tensor, Dict[str, Optional[torch.Tensor]]]:
    inputs = [images, syn_lr] + ([labels] if soft else [])
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
    return loss.detach(), {"images": grads[0], "syn_lr": grads[1], "labels": grads[2] if soft else None}


def _unroll(fm, w0, targets, images, syn_lr, labels, plans, augment, momentum, scales):
    wanted = {s for s, _ in targets}
    w = w0.detach().requires_grad_(True)
    b = torch.zeros_like(w) if momentum else None
    iterates: Dict[int, torch.Tensor] = {}
    for t in range(len(plans[0])):
        x, y = _inputs(images, labels, plans, t, augment)
        g = torch.autograd.grad(_step_loss(fm, w, x, y, scales), w, create_graph=True)[0]
        b = momentum * b + g if momentum else g
        w = w - syn_lr * b
        if t + 1 in wanted:
            iterates[t + 1] = w
    return matching_loss(iterates, w0.detach(), targets)


def _higher(fm, w0, targets, images, syn_lr, labels, plan, augment, momentum, ce_scale, inner_opt):
    import higher

    wanted = {s for s, _ in targets}
    fm.load_into_module(w0)
    params = list(fm.model.parameters())
    if inner_opt == "sgd":
        opt = torch.optim.SGD(params, lr=1.0, momentum=momentum)
    elif inner_opt == "adam":
        opt = torch.optim.Adam(params, lr=1.0)
    else:
        raise ValueError(f"inner_opt must be 'sgd' or 'adam', got {inner_opt!r}")
    iterates: Dict[int, torch.Tensor] = {}
    names = [n for n, _ in fm.model.named_parameters()]
    with higher.innerloop_ctx(fm.model, opt, copy_initial_weights=True, override={"lr": [syn_lr]}) as (fmodel, dopt):
        for t, step in enumerate(plan):
            x = images[step.indices]
            if augment is not None and step.aug is not None:
                x = augment(x, step.aug)
            dopt.step(label_loss(fmodel(x), labels[step.indices]) * ce_scale)
            if t + 1 in wanted:
                fast = dict(zip(names, fmodel.parameters()))
                iterates[t + 1] = torch.cat([fast[n].reshape(-1) for n in fm.names])
    return matching_loss(iterates, w0.detach(), targets)


def _constant_memory(fm, w0, targets, images, syn_lr, labels, plans, augment, momentum, scales, soft):
    theta = dict(targets)
    k = w0.shape[0] if w0.dim() == 2 else 1
    lr = syn_lr.detach()
    x_det, y_det = images.detach(), labels.detach()
    states: List[Tuple[torch.Tensor, Optional[torch.Tensor]]] = []
    w, b = w0, torch.zeros_like(w0)
    iterates: Dict[int, torch.Tensor] = {}
    steps = len(plans[0])
    for t in range(steps):  # forward: keep (w_t, b_{t-1}) only; b only with momentum
        states.append((w, b if momentum else None))
        w_req = w.detach().requires_grad_(True)
        x, y = _inputs(x_det, y_det, plans, t, augment)
        with torch.enable_grad():
            g = torch.autograd.grad(_step_loss(fm, w_req, x, y, scales), w_req)[0]
        b = momentum * b + g if momentum else g
        w = (w - lr * b).detach()
        if t + 1 in theta:
            iterates[t + 1] = w
    loss = matching_loss(iterates, w0, targets)

    def direct(step_index: int, w_s: torch.Tensor) -> torch.Tensor:  # d/dw of one matching term (mean over K)
        th = theta[step_index]
        return 2.0 * (w_s - th) / (k * torch.sum((w0 - th) ** 2, dim=-1, keepdim=True))

    adj_w = direct(steps, iterates[steps]) if steps in theta else torch.zeros_like(w0)
    adj_b = torch.zeros_like(w0)
    g_images, g_lr = torch.zeros_like(images), torch.zeros_like(syn_lr)
    g_labels = torch.zeros_like(labels) if soft else None
    for t in reversed(range(steps)):  # backward: one step's graph at a time
        w_t, b_prev = states[t]
        w_req = w_t.detach().requires_grad_(True)
        b_req = (b_prev if b_prev is not None else torch.zeros_like(w_t)).detach().requires_grad_(True)
        x_leaf, lr_leaf, y_leaf, _ = _leaves(images, syn_lr, labels)
        with torch.enable_grad():
            x, y = _inputs(x_leaf, y_leaf, plans, t, augment)
            g = torch.autograd.grad(_step_loss(fm, w_req, x, y, scales), w_req, create_graph=True)[0]
            b_t = momentum * b_req + g if momentum else g
            w_next = w_req - lr_leaf * b_t
            outputs, adjoints = [w_next], [adj_w]
            if momentum:
                outputs.append(b_t)
                adjoints.append(adj_b)
            inputs = [w_req, b_req, x_leaf, lr_leaf] + ([y_leaf] if soft else [])
            vjp = torch.autograd.grad(outputs, inputs, adjoints, allow_unused=True)
        vjp = [torch.zeros_like(i) if v is None else v for i, v in zip(inputs, vjp)]
        adj_w, adj_b = vjp[0], vjp[1]
        g_images += vjp[2]
        g_lr += vjp[3]
        if soft:
            g_labels += vjp[4]
        if t in theta:
            adj_w = adj_w + direct(t, w_t)
    return loss, {"images": g_images, "syn_lr": g_lr, "labels": g_labels}


Grads = Tuple[torch.Tensor, Dict[str, Optional[torch.Tensor]]]


def matching_grads(backend: str, fm: FlatModel, w0: torch.Tensor, targets: Sequence[Target], images: torch.Tensor,
                   syn_lr: torch.Tensor, labels: torch.Tensor, plan: Sequence[StepPlan],
                   augment: Optional[DSA] = None, momentum: float = 0.0, ce_scale: float = 1.0,
                   inner_opt: str = "sgd") -> Grads:
    """The matching loss and its gradients ``{'images', 'syn_lr', 'labels'}`` (``labels`` None for hard labels).

    ``targets`` = ``[(step, theta)]`` with steps in ``1..len(plan)``; ``backend`` one of :data:`BACKENDS`;
    ``inner_opt`` (``'sgd'`` or ``'adam'``) is only used by the ``higher`` backend.
    """
    return batched_matching_grads(backend, fm, [Segment(w0, targets, plan, ce_scale)], images, syn_lr, labels,
                                  augment, momentum, inner_opt)


def batched_matching_grads(backend: str, fm: FlatModel, segments: Sequence[Segment], images: torch.Tensor,
                           syn_lr: torch.Tensor, labels: torch.Tensor, augment: Optional[DSA] = None,
                           momentum: float = 0.0, inner_opt: str = "sgd", vectorize: bool = True) -> Grads:
    """The mean over ``segments`` of the matching loss and of its gradients (the synthetic set is shared).

    ``vectorize=True`` runs the ``K`` segments as one inner loop over stacked ``[K, P]`` parameters (one
    ``vmap``-ed model call per step, each segment with its own minibatches and DSA draws); ``False`` runs them
    one after another. Both give the same numbers up to float rounding. ``higher`` always runs them in turn.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown matching backend {backend!r}; expected one of {BACKENDS}")
    if syn_lr.dim() != 0:
        raise ValueError(f"syn_lr must be a scalar tensor, got shape {tuple(syn_lr.shape)}")
    if backend != "higher" and inner_opt != "sgd":
        raise ValueError(f"inner_opt={inner_opt!r} needs backend='higher' (the flat engines run SGD with momentum)")
    if images.device.type == "cpu":
        keep_freed_memory()
    if len(segments) > 1 and (backend == "higher" or not vectorize):
        outs = [batched_matching_grads(backend, fm, [s], images, syn_lr, labels, augment, momentum, inner_opt)
                for s in segments]
        return _mean(outs)
    w0, targets, plans, scales = _stack(segments)
    if backend == "constant_memory":
        return _constant_memory(fm, w0, targets, images, syn_lr, labels, plans, augment, momentum, scales,
                                labels.dtype.is_floating_point)
    x, lr, y, soft = _leaves(images, syn_lr, labels)
    with torch.enable_grad():
        if backend == "unroll":
            loss = _unroll(fm, w0, targets, x, lr, y, plans, augment, momentum, scales)
        else:
            seg = segments[0]
            loss = _higher(fm, w0, targets, x, lr, y, seg.plan, augment, momentum, seg.ce_scale, inner_opt)
        return _collect(loss, x, lr, y, soft)


def _mean(outs: Sequence[Grads]) -> Grads:
    n = len(outs)
    loss = sum(o[0] for o in outs) / n
    grads = {key: (None if outs[0][1][key] is None else sum(o[1][key] for o in outs) / n) for key in outs[0][1]}
    return loss, grads


def unroll_bytes(fm: FlatModel, segments: Sequence[Segment], images: torch.Tensor, labels: torch.Tensor,
                 augment: Optional[DSA] = None, vectorize: bool = True) -> int:
    """Estimated activation bytes of the ``unroll`` engine: the distinct storages autograd saves for one inner
    step with ``create_graph=True`` (the first step, all segments at once when ``vectorize``) times the number
    of steps; the unroll keeps every step's graph until the final backward. Measured on CPU: the per-step growth
    of the real unroll's saved storages within 5%; the process's heap peak exceeds the estimate by the final
    backward's temporaries (CIFAR ConvNet-D3 ipc 1: +0.04 GB at 8 steps; digits ipc 10: +0.09 GB). DSA's share
    varies with the family drawn for each step (a few percent at CIFAR size)."""
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        except (RuntimeError, NotImplementedError):
            seen[id(t)] = t.numel() * t.element_size()
        return t

    w0, _, plans, scales = _stack(segments if vectorize else segments[:1])
    x, _, y, _ = _leaves(images, torch.zeros((), device=images.device), labels)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        w = w0.detach().requires_grad_(True)
        xb, yb = _inputs(x, y, plans, 0, augment)
        torch.autograd.grad(_step_loss(fm, w, xb, yb, scales), w, create_graph=True)
    return sum(seen.values()) * len(plans[0])


def choose_backend(call: Callable[[str], Grads], steps_bytes: Optional[int], budget_bytes: Optional[int],
                   device: Optional[torch.device] = None) -> Tuple[str, Grads, str]:
    """Pick ``'unroll'`` or ``'constant_memory'`` for a run: ``(backend, result of call(backend), reason)``.

    ``call(backend)`` computes one iteration's matching gradients; the two engines give the same numbers, so the
    probe's result is that iteration's result. When the unroll's estimated activation memory ``steps_bytes``
    (:func:`unroll_bytes`) times :data:`UNROLL_HEADROOM` (the final backward's temporaries on top of the saved
    activations) exceeds ``budget_bytes`` the constant-memory engine is taken without timing; otherwise both
    engines are timed on the same iteration in the order constant_memory, unroll, unroll, constant_memory (so
    warm-up and drifting load hit both alike) and the faster total wins. Time is wall time on CUDA
    (synchronised) and this process's CPU time on CPU, which other processes' load on shared cores does not
    inflate.
    """
    gb = 2 ** 30
    if steps_bytes is not None and budget_bytes is not None and steps_bytes * UNROLL_HEADROOM > budget_bytes:
        return "constant_memory", call("constant_memory"), (
            f"unroll would need ~{steps_bytes / gb:.2f} GB of activations (x{UNROLL_HEADROOM} with the backward's "
            f"temporaries) > budget {budget_bytes / gb:.2f} GB")
    best, result, reason = time_options(call, ("constant_memory", "unroll"), device)
    memory = "" if steps_bytes is None else f"; unroll ~{steps_bytes / gb:.2f} GB of activations" + (
        "" if budget_bytes is None else f" within budget {budget_bytes / gb:.2f} GB")
    return best, result, reason + memory


def time_options(call: Callable[[Any], Grads], options: Sequence[Any],
                 device: Optional[torch.device] = None) -> Tuple[Any, Grads, str]:
    """Time ``call(option)`` for each option on the same inputs, in order and then in reverse order (so warm-up
    and drifting load hit all alike); return the fastest option, its result and a one-line summary. Wall time on
    CUDA (synchronised), this process's CPU time on CPU (other processes' load on shared cores does not count)."""
    cuda = device is not None and device.type == "cuda"
    clock = time.perf_counter if cuda else time.process_time
    seconds = {o: 0.0 for o in options}
    results: Dict[Any, Grads] = {}
    for option in list(options) + list(options)[::-1]:
        start = clock()
        results[option] = call(option)
        if cuda:
            torch.cuda.synchronize(device)
        seconds[option] += clock() - start
    best = min(options, key=lambda o: seconds[o])
    summary = ", ".join(f"{o} {seconds[o] / 2:.3g} s/it" for o in options)
    return best, results[best], f"timed probe ({'wall' if cuda else 'CPU'} time): {summary}"
