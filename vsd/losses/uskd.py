"""USKD: universal self-knowledge distillation (teacher-free NKD with customized soft labels).

Yang, Zeng, Yuan, Li, "From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach with
Normalized Loss and Customized Soft Labels", ICCV 2023 (https://arxiv.org/abs/2303.13005); official code
yzd-v/cls_KD, ``mmcls/models/dis_losses/uskd.py``.

With logits ``z`` [B, C], label ``y``, ``s = softmax(z)``, ``ls = log_softmax(z)`` and the weak logits
``w_logits = W f_mid + b`` of a Linear head on a mid-level feature (``w = softmax(w_logits)``), in the
official code's order:

1. target term: ``p_y = s_y^2 + 1 - mean_batch(s_y^2)`` (detached); ``loss_target = -mean_b p_y * ls_y``.
2. weak supervision: ``q = 0.9 * onehot(y) + 0.1 / C``; ``loss_weak = -mu * mean_b sum_c q_c log w_c``
   (gradients flow into the weak head and, through ``f_mid``, into the backbone).
3. non-target term: ``rank_c = w_c / (1 - w_y) + ls_c / (1 - ls_y)``; class c at 0-based position r of
   the descending rank gets the Zipf weight ``1 / (r + 1)``; the target column is removed and the weights
   renormalised to ``zipf_nt`` (detached); ``loss_non_target = -mean_b sum_j zipf_nt_j * log_softmax(z_nt)_j``.
4. ``loss = alpha * loss_target + beta * loss_non_target + loss_weak``; the full USKD objective adds the plain
   cross-entropy (:func:`uskd_loss` returns the USKD terms only, :class:`USKDLoss` adds the CE).

Soft targets (Mixup/CutMix), as the official code: the top-2 classes of the soft target are the labels with
their values ``v``: ``p = s_label^2 + v - mean_batch(s_label^2)`` per column (0 where ``v == 0``), the target
term sums over both columns, the weak target is ``0.9 * soft + 0.1 / C``, and both label columns are
removed for the non-target term.

Quirk kept from the official code: in the rank, ``ls`` is the LOG-softmax of ``z`` (the official variable
already holds log-probabilities at that line), not the softmax the paper describes. The ``1e-6`` in the
rank denominators is also the official one. Defaults are the official ImageNet ones (alpha=1, beta=0.1,
mu=0.005); CIFAR-100 uses alpha=0.1, beta=0.1, mu=0.1.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from vsd.losses.checks import check_logits_target
from vsd.losses.nkd import at_least_float32, drop_columns

__all__ = ["uskd_loss", "uskd_terms", "zipf_soft_labels", "USKDLoss"]


class _Labels(NamedTuple):
    columns: torch.Tensor  # [B, k] label columns (k = 1 for hard targets, 2 for soft)
    values: torch.Tensor  # [B, k] their weights (1 for hard targets)
    weak_target: torch.Tensor  # [B, C] 0.9 * (one-hot or soft) + 0.1 / C


def _labels(logits: torch.Tensor, target: torch.Tensor) -> _Labels:
    check_logits_target(logits, target)
    batch, classes = logits.shape
    if target.dim() == 2:
        if classes < 3:
            raise ValueError(f"USKD with soft targets needs at least 3 classes, got {classes}")
        target = target.to(logits.dtype)
        values, columns = torch.sort(target, dim=1, descending=True)
        return _Labels(columns[:, :2], values[:, :2], 0.9 * target + 0.1 / classes)
    if classes < 2:
        raise ValueError(f"USKD needs at least 2 classes, got {classes}")
    columns = target.view(batch, 1)
    onehot = torch.zeros_like(logits).scatter_(1, columns, 1.0)
    return _Labels(columns, torch.ones(batch, 1, dtype=logits.dtype, device=logits.device),
                   0.9 * onehot + 0.1 / classes)


def zipf_soft_labels(logits: torch.Tensor, weak_logits: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Detached Zipf soft labels over the non-target classes [B, C - k] (step 3 of the module docstring)."""
    with torch.no_grad():
        weak_p = F.softmax(weak_logits, dim=1)
        logp = F.log_softmax(logits, dim=1)  # the official quirk: log-probabilities, not probabilities
        rank = (weak_p / (1 - weak_p.gather(1, columns).sum(1, keepdim=True) + 1e-6)
                + logp / (1 - logp.gather(1, columns).sum(1, keepdim=True) + 1e-6))
        order = torch.argsort(rank, dim=1, descending=True)
        positions = torch.arange(logits.shape[1], device=logits.device, dtype=logits.dtype)
        zipf = torch.empty_like(logits).scatter_(1, order, (1.0 / (positions + 1)).expand_as(logits).contiguous())
        zipf = drop_columns(zipf, columns)
        return zipf / zipf.sum(dim=1, keepdim=True)


def uskd_terms(logits: torch.Tensor, weak_logits: torch.Tensor, target: torch.Tensor,
               alpha: float = 1.0, beta: float = 0.1, mu: float = 0.005) -> Dict[str, torch.Tensor]:
    """The weighted USKD terms: ``{'uskd_target': alpha * .., 'uskd_non_target': beta * .., 'uskd_weak': ..}``."""
    if weak_logits.shape != logits.shape:
        raise ValueError(f"weak_logits (the weak head's output) must have the logits' shape {tuple(logits.shape)}, "
                         f"got {tuple(weak_logits.shape)}")
    logits, weak_logits = at_least_float32(logits, weak_logits.to(logits.dtype))
    labels = _labels(logits, target)
    logp = F.log_softmax(logits, dim=1)
    with torch.no_grad():
        p_sq = F.softmax(logits, dim=1).gather(1, labels.columns) ** 2
        p_target = (p_sq + labels.values - p_sq.mean(dim=0, keepdim=True)) * (labels.values != 0)
    loss_target = -(p_target * logp.gather(1, labels.columns)).sum(dim=1).mean()

    loss_weak = -(mu * labels.weak_target * F.log_softmax(weak_logits, dim=1)).sum(dim=1).mean()

    zipf = zipf_soft_labels(logits, weak_logits, labels.columns)
    loss_non = -(zipf * F.log_softmax(drop_columns(logits, labels.columns), dim=1)).sum(dim=1).mean()
    return {"uskd_target": alpha * loss_target, "uskd_non_target": beta * loss_non, "uskd_weak": loss_weak}


def uskd_loss(logits: torch.Tensor, weak_logits: torch.Tensor, target: torch.Tensor,
              alpha: float = 1.0, beta: float = 0.1, mu: float = 0.005) -> torch.Tensor:
    """USKD loss WITHOUT the plain cross-entropy (see the module docstring for the formula).

    Args:
        logits: final logits [B, C].
        weak_logits: the weak head's output on the mid-level feature [B, C]; its loss term is included.
        target: class indices [B] or soft targets [B, C] (top-2 classes used, as the official code).
        alpha, beta, mu: weights of the target, non-target and weak terms.

    Example:
        >>> z, w = torch.randn(4, 10, requires_grad=True), torch.randn(4, 10, requires_grad=True)
        >>> uskd_loss(z, w, torch.tensor([0, 1, 2, 3])).backward()
    """
    return sum(uskd_terms(logits, weak_logits, target, alpha, beta, mu).values())  # type: ignore[return-value]


class USKDLoss(nn.Module):
    """Criterion for a timm loop: ``loss_fn((logits, weak_logits), target)`` = CE + USKD.

    ``output`` is what :class:`vsd.wrappers.USKDWrapper` returns in train mode: the final logits and the weak
    head's logits on the mid-level feature. The weak head lives in that wrapper (not here, unlike the official
    code), so the model's optimizer, DDP, EMA and checkpoints include it; this criterion has no parameters.
    ``label_smoothing`` applies to the CE term (timm's ``--smoothing``).

    Example:
        >>> loss_fn = USKDLoss()
        >>> loss_fn((torch.randn(4, 10), torch.randn(4, 10)), torch.tensor([0, 1, 2, 3])).shape
        torch.Size([])
    """

    def __init__(self, alpha: float = 1.0, beta: float = 0.1, mu: float = 0.005, label_smoothing: float = 0.0
                 ) -> None:
        super().__init__()
        self.alpha, self.beta, self.mu = alpha, beta, mu
        self.label_smoothing = label_smoothing

    def terms_from_logits(self, logits: torch.Tensor, weak_logits: torch.Tensor, target: torch.Tensor
                          ) -> Dict[str, torch.Tensor]:
        """``{'loss', 'ce', 'uskd_target', 'uskd_non_target', 'uskd_weak'}``."""
        parts = uskd_terms(logits, weak_logits, target, self.alpha, self.beta, self.mu)
        ce = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        return {"loss": ce + sum(parts.values()), "ce": ce, **parts}

    def terms(self, output: Union[Sequence[torch.Tensor], torch.Tensor], target: torch.Tensor
              ) -> Dict[str, torch.Tensor]:
        """Components from ``output = (logits, weak_logits)``."""
        logits, weak_logits = _split_output(output)
        return self.terms_from_logits(logits, weak_logits, target)

    def forward(self, output: Union[Sequence[torch.Tensor], torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return self.terms(output, target)["loss"]


def _split_output(output: Union[Sequence[torch.Tensor], torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    if isinstance(output, torch.Tensor) or len(output) < 2:
        raise ValueError("USKDLoss expects (logits, weak_logits), the train-mode output of "
                         "vsd.wrappers.USKDWrapper; got a single tensor")
    logits, weak_logits = output[0], output[1]
    if weak_logits.shape != logits.shape:
        raise ValueError(f"weak_logits must have the logits' shape {tuple(logits.shape)}, got "
                         f"{tuple(weak_logits.shape)}; wrap the model in vsd.wrappers.USKDWrapper (it holds the "
                         f"weak head and returns its logits)")
    return logits, weak_logits
