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
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from vsd.distill.augment import DSA, DSAParams
from vsd.distill.flat import FlatModel

Target = Tuple[int, torch.Tensor]
BACKENDS = ("unroll", "constant_memory", "higher")


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


def inner_loss(fm: FlatModel, w: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, step: StepPlan,
               augment: Optional[DSA], ce_scale: float = 1.0) -> torch.Tensor:
    """``ce_scale * CE(f(DSA(images[idx]); w), labels[idx])``; float 2-d labels are soft-label logits."""
    x = images[step.indices]
    if augment is not None and step.aug is not None:
        x = augment(x, step.aug)
    return label_loss(fm(w, x), labels[step.indices]) * ce_scale


def label_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with class indices, or with ``softmax(y)`` targets when ``y`` holds soft-label logits."""
    if y.dtype.is_floating_point:
        return torch.sum(-F.softmax(y, dim=1) * F.log_softmax(logits, dim=1), dim=1).mean()
    return F.cross_entropy(logits, y)


def matching_loss(iterates: Dict[int, torch.Tensor], w0: torch.Tensor, targets: Sequence[Target]) -> torch.Tensor:
    """:math:`\\sum_k ||w_{s_k} - \\theta_k||^2 / ||w_0 - \\theta_k||^2` over ``targets = [(s_k, theta_k)]``."""
    total = w0.new_zeros(())
    for step, theta in targets:
        total = total + _term(iterates[step], w0, theta)
    return total


def _term(w: torch.Tensor, w0: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    denom = torch.sum((w0 - theta) ** 2)
    if not denom > 0:
        raise ValueError("the start and target expert parameters are identical: the matching loss is undefined "
                         "(an expert that did not train? check the buffer)")
    return torch.sum((w - theta) ** 2) / denom


def _check(targets: Sequence[Target], plan: Sequence[StepPlan], syn_lr: torch.Tensor) -> List[Target]:
    steps = [s for s, _ in targets]
    if not targets or any(not 1 <= s <= len(plan) for s in steps) or len(set(steps)) != len(steps):
        raise ValueError(f"matching targets must be distinct steps in [1, {len(plan)}], got {steps}")
    if syn_lr.dim() != 0:
        raise ValueError(f"syn_lr must be a scalar tensor, got shape {tuple(syn_lr.shape)}")
    return sorted(targets, key=lambda t: t[0])


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


def _unroll(fm, w0, targets, images, syn_lr, labels, plan, augment, momentum, ce_scale):
    wanted = {s for s, _ in targets}
    w = w0.detach().requires_grad_(True)
    b = torch.zeros_like(w)
    iterates: Dict[int, torch.Tensor] = {}
    for t, step in enumerate(plan):
        g = torch.autograd.grad(inner_loss(fm, w, images, labels, step, augment, ce_scale), w, create_graph=True)[0]
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


def _constant_memory(fm, w0, targets, images, syn_lr, labels, plan, augment, momentum, ce_scale, soft):
    theta = dict(targets)
    w0 = w0.detach()
    lr = syn_lr.detach()
    x_det, y_det = images.detach(), labels.detach()
    states: List[Tuple[torch.Tensor, Optional[torch.Tensor]]] = []
    w, b = w0, torch.zeros_like(w0)
    iterates: Dict[int, torch.Tensor] = {}
    for t, step in enumerate(plan):  # forward: keep (w_t, b_{t-1}) only; b only with momentum
        states.append((w, b if momentum else None))
        w_req = w.detach().requires_grad_(True)
        with torch.enable_grad():
            g = torch.autograd.grad(inner_loss(fm, w_req, x_det, y_det, step, augment, ce_scale), w_req)[0]
        b = momentum * b + g if momentum else g
        w = (w - lr * b).detach()
        if t + 1 in theta:
            iterates[t + 1] = w
    loss = matching_loss(iterates, w0, targets)

    def direct(step_index: int, w_s: torch.Tensor) -> torch.Tensor:  # d/dw of one matching term
        th = theta[step_index]
        return 2.0 * (w_s - th) / torch.sum((w0 - th) ** 2)

    adj_w = direct(len(plan), iterates[len(plan)]) if len(plan) in theta else torch.zeros_like(w0)
    adj_b = torch.zeros_like(w0)
    g_images, g_lr = torch.zeros_like(images), torch.zeros_like(syn_lr)
    g_labels = torch.zeros_like(labels) if soft else None
    for t in reversed(range(len(plan))):  # backward: one step's graph at a time
        w_t, b_prev = states[t]
        w_req = w_t.detach().requires_grad_(True)
        b_req = (b_prev if b_prev is not None else torch.zeros_like(w_t)).detach().requires_grad_(True)
        x_leaf, lr_leaf, y_leaf, _ = _leaves(images, syn_lr, labels)
        with torch.enable_grad():
            g = torch.autograd.grad(inner_loss(fm, w_req, x_leaf, y_leaf, plan[t], augment, ce_scale), w_req,
                                    create_graph=True)[0]
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


def matching_grads(backend: str, fm: FlatModel, w0: torch.Tensor, targets: Sequence[Target], images: torch.Tensor,
                   syn_lr: torch.Tensor, labels: torch.Tensor, plan: Sequence[StepPlan],
                   augment: Optional[DSA] = None, momentum: float = 0.0, ce_scale: float = 1.0,
                   inner_opt: str = "sgd") -> Tuple[torch.Tensor, Dict[str, Optional[torch.Tensor]]]:
    """The matching loss and its gradients ``{'images', 'syn_lr', 'labels'}`` (``labels`` None for hard labels).

    ``targets`` = ``[(step, theta)]`` with steps in ``1..len(plan)``; ``backend`` one of :data:`BACKENDS`;
    ``inner_opt`` (``'sgd'`` or ``'adam'``) is only used by the ``higher`` backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown matching backend {backend!r}; expected one of {BACKENDS}")
    targets = _check(targets, plan, syn_lr)
    if backend != "higher" and inner_opt != "sgd":
        raise ValueError(f"inner_opt={inner_opt!r} needs backend='higher' (the flat engines run SGD with momentum)")
    if backend == "constant_memory":
        return _constant_memory(fm, w0, targets, images, syn_lr, labels, plan, augment, momentum, ce_scale,
                                labels.dtype.is_floating_point)
    x, lr, y, soft = _leaves(images, syn_lr, labels)
    with torch.enable_grad():
        if backend == "unroll":
            loss = _unroll(fm, w0, targets, x, lr, y, plan, augment, momentum, ce_scale)
        else:
            loss = _higher(fm, w0, targets, x, lr, y, plan, augment, momentum, ce_scale, inner_opt)
        return _collect(loss, x, lr, y, soft)
