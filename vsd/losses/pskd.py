"""PS-KD: progressive self-knowledge distillation (Kim et al., "Self-Knowledge Distillation with Progressive
Refinement of Targets", ICCV 2021; official code github.com/lgcnsai/PS-KD-Pytorch).

The model is trained against a mixture of the label and its own prediction for the same sample from the
previous epoch; the weight of the prediction grows linearly over training:

    q_t = (1 - alpha_t) * onehot(y) + alpha_t * p_prev(x),      alpha_t = alpha_T * (epoch + 1) / epochs
    loss = -(1/B) * sum_b sum_c q_t[b, c] * log_softmax(z)[b, c]

There is no temperature. Where ``p_prev`` comes from (a per-sample probability bank, or a frozen copy of the
model from the end of the previous epoch) is the job of :mod:`vsd.wrappers.prob_bank` and
:mod:`vsd.wrappers.snapshot`; this module is only the math.

Example:
    >>> import torch
    >>> logits, y = torch.randn(4, 10), torch.tensor([0, 3, 9, 1])
    >>> prev = torch.softmax(torch.randn(4, 10), 1)
    >>> loss = pskd_loss(logits, y, prev, alpha=pskd_alpha(epoch=4, epochs=10))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from vsd.losses.checks import check_logits_target

__all__ = ["PSKDOutput", "PSKDLoss", "pskd_alpha", "pskd_loss", "pskd_targets"]


def pskd_alpha(epoch: int, epochs: int, alpha_T: float = 0.8) -> float:
    """The PS-KD schedule ``alpha_t = alpha_T * (epoch + 1) / epochs`` for 0-based ``epoch``.

    Deliberate difference from the official code: epochs past the schedule (e.g. timm's cool-down epochs)
    keep ``alpha_T`` instead of growing beyond it.
    """
    if epochs < 1:
        raise ValueError(f"PS-KD needs epochs >= 1 to schedule alpha, got epochs={epochs}")
    if epoch < 0:
        raise ValueError(f"PS-KD epoch must be >= 0 (0-based), got {epoch}")
    if not 0.0 <= alpha_T <= 1.0:
        raise ValueError(f"PS-KD alpha_T must lie in [0, 1], got {alpha_T}")
    return min(alpha_T, alpha_T * (epoch + 1) / epochs)


def pskd_targets(target: torch.Tensor, prev_probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """Soft targets ``(1 - alpha) * onehot(target) + alpha * prev_probs`` ([B, C], the dtype of ``prev_probs``).

    ``target`` is [B] class indices or a [B, C] soft target (e.g. from mixup), used in place of the one-hot.
    """
    if target.dim() == 1:
        target = F.one_hot(target, prev_probs.shape[1])
    return (1.0 - alpha) * target.to(prev_probs.dtype) + alpha * prev_probs


def _check_prev(logits: torch.Tensor, prev_probs: torch.Tensor, alpha: float) -> None:
    if tuple(prev_probs.shape) != tuple(logits.shape):
        raise ValueError(f"prev_probs must have the shape of logits {tuple(logits.shape)} (one probability "
                         f"vector per sample), got {tuple(prev_probs.shape)}")
    if not prev_probs.dtype.is_floating_point:
        raise ValueError(f"prev_probs must be floating-point probabilities, got {prev_probs.dtype}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"PS-KD alpha must lie in [0, 1], got {float(alpha)}")


def pskd_loss(logits: torch.Tensor, target: torch.Tensor, prev_probs: Optional[torch.Tensor],
              alpha: float) -> torch.Tensor:
    """Soft cross-entropy of ``logits`` [B, C] against ``(1 - alpha) * onehot(target) + alpha * prev_probs``.

    Formula: ``-(q * log_softmax(logits)).sum(1).mean()`` with ``q = pskd_targets(target, prev_probs, alpha)``
    (the official ``Custom_CrossEntropy_PSKD`` computes ``(-q * log_p).mean(0).sum()``, the same number).
    ``prev_probs=None`` means "no previous prediction yet" and gives the plain cross-entropy, which is what the
    official code computes in the first epoch (its bank holds the one-hot labels then). ``target`` may be a
    [B, C] soft target (a vsd extension; the official code supports only class indices).
    """
    check_logits_target(logits, target)
    if prev_probs is None:
        return F.cross_entropy(logits, target)
    _check_prev(logits, prev_probs, alpha)
    log_probs = F.log_softmax(logits, dim=1)
    soft = pskd_targets(target, prev_probs.detach(), alpha).to(log_probs.dtype)
    return -(soft * log_probs).sum(dim=1).mean()


@dataclass
class PSKDOutput:
    """What a PS-KD wrapper returns in train mode: the logits, the previous-epoch probabilities for the same
    samples (``None`` in the first epoch) and the current ``alpha_t``."""

    logits: torch.Tensor
    prev_probs: Optional[torch.Tensor]
    alpha: float


class PSKDLoss(nn.Module):
    """Criterion ``loss_fn(output, target)`` for a :class:`PSKDOutput` (see :func:`pskd_loss`).

    Example (plain timm loop, see :class:`vsd.wrappers.PSKDSnapshot`):
        >>> import timm, torch
        >>> from vsd.wrappers import PSKDSnapshot
        >>> model = PSKDSnapshot(timm.create_model("resnet18", num_classes=10), epochs=2)
        >>> loss_fn = PSKDLoss()
        >>> output = model(torch.randn(2, 3, 32, 32))
        >>> loss_fn(output, torch.tensor([1, 2])).backward()
    """

    def forward(self, output: PSKDOutput, target: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, PSKDOutput):
            raise TypeError(f"PSKDLoss expects the PSKDOutput of a PS-KD wrapper in train mode (e.g. "
                            f"vsd.wrappers.PSKDSnapshot), got {type(output).__name__}; for plain logits use "
                            f"pskd_loss(logits, target, prev_probs, alpha)")
        return pskd_loss(output.logits, target, output.prev_probs, output.alpha)
