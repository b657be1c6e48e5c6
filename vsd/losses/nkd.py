"""NKD: normalized knowledge distillation.

Yang, Zeng, Yuan, Li, "From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach with
Normalized Loss and Customized Soft Labels", ICCV 2023 (https://arxiv.org/abs/2303.13005); official code
yzd-v/cls_KD, ``mmcls/models/dis_losses/nkd.py``.

With student logits ``z``, teacher logits ``t``, label ``y``, temperature ``T`` and weight ``gamma``:

    loss_target     = -mean_b [ softmax(t)_y * log_softmax(z)_y ]                  (teacher prob detached)
    loss_non_target = -gamma * T^2 * mean_b sum_{j != y} softmax(t_nt / T)_j * log_softmax(z_nt / T)_j

where ``z_nt`` / ``t_nt`` are the logits with the target column REMOVED, so both softmaxes run over the
C - 1 non-target classes (the normalisation that gives the method its name). The full NKD objective adds the
plain cross-entropy; :func:`nkd_loss` returns the two NKD terms only, :class:`NKDLoss` adds the CE.

Differences from the official code (deliberate):

* The official mask kept the target column until the fix of Oct 2023 (commit 9466b3f); this is the fixed
  behaviour, and the tests check that the target column is excluded.
* The teacher logits are detached here; the official code gets the same effect by running the teacher under
  ``torch.no_grad``.
* Soft targets (Mixup/CutMix) use their argmax as the label, as the official code does.
"""
from __future__ import annotations

from typing import Dict, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from vsd.losses.checks import check_logits_target

__all__ = ["nkd_loss", "nkd_terms", "NKDLoss", "at_least_float32", "drop_columns", "hard_labels"]


def at_least_float32(*tensors: torch.Tensor) -> tuple:
    """Cast half/bfloat16 tensors (autocast outputs) to float32 for the loss math; keep float32/float64."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors)


def hard_labels(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Validate ``target`` against ``logits`` and return class indices [B] (argmax of a soft target)."""
    check_logits_target(logits, target)
    return target.argmax(dim=1) if target.dim() == 2 else target


def drop_columns(x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Remove, from each row of ``x`` [B, C], the columns listed in ``columns`` [B, k] -> [B, C - k]."""
    keep = torch.ones_like(x, dtype=torch.bool).scatter_(1, columns, False)
    return x[keep].reshape(x.shape[0], x.shape[1] - columns.shape[1])


def nkd_terms(logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              temperature: float = 1.0, gamma: float = 1.5) -> Dict[str, torch.Tensor]:
    """The two NKD terms as scalars: ``{'nkd_target': ..., 'nkd_non_target': ...}`` (see the module docstring)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    label = hard_labels(logits, target)
    if teacher_logits.shape != logits.shape:
        raise ValueError(f"teacher_logits must have the student's shape {tuple(logits.shape)}, "
                         f"got {tuple(teacher_logits.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(f"NKD needs at least 2 classes, got logits of shape {tuple(logits.shape)}")
    logits, teacher_logits = at_least_float32(logits, teacher_logits.detach().to(logits.dtype))
    column = label.view(-1, 1)
    student_logp_target = F.log_softmax(logits, dim=1).gather(1, column)
    teacher_p_target = F.softmax(teacher_logits, dim=1).gather(1, column)
    loss_target = -(teacher_p_target * student_logp_target).mean()

    student_non = F.log_softmax(drop_columns(logits, column) / temperature, dim=1)
    teacher_non = F.softmax(drop_columns(teacher_logits, column) / temperature, dim=1)
    loss_non = -gamma * temperature ** 2 * (teacher_non * student_non).sum(dim=1).mean()
    return {"nkd_target": loss_target, "nkd_non_target": loss_non}


def nkd_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
             temperature: float = 1.0, gamma: float = 1.5) -> torch.Tensor:
    """NKD loss WITHOUT the plain cross-entropy: ``loss_target + loss_non_target``.

    Args:
        logits: student logits [B, C].
        teacher_logits: teacher logits [B, C] (detached inside).
        target: class indices [B] or soft targets [B, C] (argmax used, as the official code).
        temperature: T for the non-target term (official: 1 on ImageNet, 3 on CIFAR-100).
        gamma: weight of the non-target term (official: 1.5 on ImageNet, 3.5 on CIFAR-100).

    Example:
        >>> z, t = torch.randn(4, 10, requires_grad=True), torch.randn(4, 10)
        >>> nkd_loss(z, t, torch.tensor([0, 1, 2, 3])).backward()
    """
    terms = nkd_terms(logits, teacher_logits, target, temperature, gamma)
    return terms["nkd_target"] + terms["nkd_non_target"]


class NKDLoss(nn.Module):
    """Criterion for a timm loop: ``loss_fn((logits, teacher_logits), target)`` = CE + NKD.

    ``output`` is what :class:`vsd.wrappers.TeacherWrapper` returns in train mode (a tuple whose first two
    items are the student's and the teacher's logits). The plain cross-entropy accepts class indices or soft
    (Mixup/CutMix) targets; the NKD terms use the argmax of a soft target.

    Example:
        >>> loss_fn = NKDLoss(temperature=1.0, gamma=1.5)
        >>> loss_fn((torch.randn(4, 10), torch.randn(4, 10)), torch.tensor([0, 1, 2, 3])).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 1.0, gamma: float = 1.5, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.gamma = gamma
        self.label_smoothing = label_smoothing

    def terms(self, output: Union[Sequence[torch.Tensor], torch.Tensor], target: torch.Tensor
              ) -> Dict[str, torch.Tensor]:
        """``{'loss', 'ce', 'nkd_target', 'nkd_non_target'}``; ``loss`` is the sum of the others."""
        if isinstance(output, torch.Tensor) or len(output) < 2:
            raise ValueError("NKDLoss expects (student_logits, teacher_logits), e.g. the train-mode output of "
                             "vsd.wrappers.TeacherWrapper; got a single tensor")
        logits, teacher_logits = output[0], output[1]
        parts = nkd_terms(logits, teacher_logits, target, self.temperature, self.gamma)
        ce = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        return {"loss": ce + parts["nkd_target"] + parts["nkd_non_target"], "ce": ce, **parts}

    def forward(self, output: Union[Sequence[torch.Tensor], torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return self.terms(output, target)["loss"]
