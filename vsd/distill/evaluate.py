"""Evaluation of a (distilled or real) training set: train K fresh networks on it, test each.

Protocol of MTT / DSA (``evaluate_synset``): SGD momentum 0.9, weight decay 5e-4, batch 256, DSA on the training
images, the learning rate divided by 10 at half of the epochs; report mean and standard deviation (population
std, as ``np.std``) of the test top-1 over the networks. Training targets may be class indices, soft targets
(probabilities) or regression targets: pass ``loss_fn`` for anything but the first two. ``amp``: an autocast
dtype (bfloat16) for the networks' forward passes; the loss is computed in float32.

Example:
    >>> import torch
    >>> make = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> x, y = torch.randn(8, 1, 2, 2), torch.tensor([0, 1] * 4)
    >>> out = evaluate_set(make, x, y, x, y, num_nets=2, epochs=2, lr=0.1, augment=None)
    >>> len(out["accs"])
    2
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from vsd.distill.augment import DSA
from vsd.distill.precision import autocast

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def default_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for class indices; soft cross-entropy ``-sum p log softmax(z)`` for [N, K] probabilities."""
    if target.dtype.is_floating_point:
        return torch.sum(-target * F.log_softmax(output, dim=1), dim=1).mean()
    return F.cross_entropy(output, target)


def train_network(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, epochs: int, lr: float,
                  batch_size: int = 256, momentum: float = 0.9, weight_decay: float = 5e-4,
                  augment: Optional[DSA] = None, loss_fn: LossFn = default_loss,
                  generator: Optional[torch.Generator] = None, amp: Optional[torch.dtype] = None) -> nn.Module:
    """Train ``model`` in place (lr x0.1 after ``epochs // 2`` epochs) and return it in eval mode."""
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"evaluation learning rate must be a positive finite number, got {lr}")
    if epochs < 1:
        raise ValueError(f"evaluation epochs must be >= 1, got {epochs}")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    model.train()
    n = images.shape[0]
    for epoch in range(epochs):
        if epoch == epochs // 2:
            for group in opt.param_groups:
                group["lr"] = lr * 0.1
        order = torch.randperm(n, generator=generator).to(images.device)  # CPU generator: same draws anywhere
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = images[idx]
            if augment is not None:
                x = augment(x, generator=generator)
            with autocast(amp, x.device):
                output = model(x)
            loss = loss_fn(output.float(), targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512,
             amp: Optional[torch.dtype] = None) -> float:
    """Top-1 accuracy in percent (counted on the images' device, one host sync at the end)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for start in range(0, images.shape[0], batch_size):
        with autocast(amp, images.device):
            pred = model(images[start:start + batch_size]).argmax(dim=1)
        correct += (pred == labels[start:start + batch_size]).sum()
    return 100.0 * int(correct) / max(1, images.shape[0])


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 512,
                          amp: Optional[torch.dtype] = None) -> nn.Module:
    """Set every BatchNorm's running statistics to the average of its batch statistics over ``images``
    (train-mode forward passes with ``momentum=None``); a no-op without BatchNorm. For parameters that come
    without their running statistics (expert trajectories store parameters only)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return model
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    for start in range(0, images.shape[0], batch_size):
        with autocast(amp, images.device):
            model(images[start:start + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.train(was_training)


def summarize(values: List[float]) -> Dict[str, object]:
    """``{'mean', 'std', 'accs'}`` with the population standard deviation."""
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std(unbiased=False)) if len(values) > 1 else 0.0,
            "accs": [float(v) for v in values]}


def evaluate_set(make_model: Callable[[], nn.Module], images: torch.Tensor, targets: torch.Tensor,
                 test_images: torch.Tensor, test_labels: torch.Tensor, *, num_nets: int = 5, epochs: int = 300,
                 lr: float = 0.01, batch_size: int = 256, augment: Optional[DSA] = None,
                 loss_fn: LossFn = default_loss, seed: int = 0, amp: Optional[torch.dtype] = None,
                 **train_kw) -> Dict[str, object]:
    """Train ``num_nets`` fresh networks (seeds ``seed + k``) on (images, targets); test top-1 mean and std."""
    accs = []
    for k in range(num_nets):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + k)
            model = make_model().to(images.device)
            generator = torch.Generator().manual_seed(seed + k)
            train_network(model, images, targets, epochs=epochs, lr=lr, batch_size=batch_size, augment=augment,
                          loss_fn=loss_fn, generator=generator, amp=amp, **train_kw)
        accs.append(accuracy(model, test_images, test_labels, amp=amp))
    return summarize(accs)
