"""DINO cross-entropy between teacher and student prototype scores (as used by random-teacher distillation).

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021; Sarnthein et al.,
"Random Teachers are Good Teachers", ICML 2023 (official code github.com/safelix/dinopl). For teacher scores
``t`` and student scores ``s`` [B, K] of one pair of views::

    p_t  = softmax((t - c) / t_temp)          (detached; c = center, 0 without centering)
    loss = mean_b  - sum_k p_t[b, k] * log_softmax(s / s_temp)[b, k]

With several views the loss averages over pairs: views ``i != j`` when there are several (DINO's pairing),
the single pair ``(0, 0)`` with one view (the random-teacher default: one view, no augmentation).
Centering (optional, off by default as in the random-teacher paper): after the loss,
``c <- m * c + (1 - m) * mean_{views, b} t``. Defaults ``t_temp = s_temp = 1`` (the random-teacher setting).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def dino_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, s_temp: float = 1.0, t_temp: float = 1.0,
                       center: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy of one view pair: ``mean_b -sum_k softmax((t - c)/t_temp) * log_softmax(s/s_temp)``."""
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(f"student and teacher scores must both be [batch, prototypes] with equal shapes, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    if s_temp <= 0 or t_temp <= 0:
        raise ValueError(f"temperatures must be positive, got s_temp={s_temp}, t_temp={t_temp}")
    teacher = teacher.detach()
    if center is not None:
        teacher = teacher - center
    target = F.softmax(teacher / t_temp, dim=-1)
    return -(target * F.log_softmax(student / s_temp, dim=-1)).sum(dim=-1).mean()


class DINOLoss(nn.Module):
    """DINO loss over views with optional teacher centering.

    Args:
        out_dim: Number of prototypes K.
        s_temp: Student temperature.
        t_temp: Teacher temperature.
        center_momentum: ``None`` disables centering; otherwise the EMA momentum of the center (DINO: 0.9).
    """

    def __init__(self, out_dim: int, s_temp: float = 1.0, t_temp: float = 1.0,
                 center_momentum: Optional[float] = None) -> None:
        super().__init__()
        if center_momentum is not None and not 0.0 <= center_momentum < 1.0:
            raise ValueError(f"center_momentum must lie in [0, 1) or be None, got {center_momentum}")
        self.s_temp, self.t_temp, self.center_momentum = s_temp, t_temp, center_momentum
        self.register_buffer("center", torch.zeros(out_dim))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """``student``/``teacher``: [V, B, K] scores of V views (or [B, K] for one view)."""
        if student.dim() == 2:
            student, teacher = student.unsqueeze(0), teacher.unsqueeze(0)
        if student.dim() != 3 or student.shape != teacher.shape:
            raise ValueError(f"student and teacher scores must be [views, batch, prototypes] with equal shapes, "
                             f"got {tuple(student.shape)} and {tuple(teacher.shape)}")
        views = student.shape[0]
        pairs = [(i, j) for i in range(views) for j in range(views) if i != j] if views > 1 else [(0, 0)]
        center = self.center if self.center_momentum is not None else None
        loss = torch.stack([dino_cross_entropy(student[j], teacher[i], self.s_temp, self.t_temp, center)
                            for i, j in pairs]).mean()
        if self.center_momentum is not None and self.training:
            with torch.no_grad():
                batch_center = teacher.detach().mean(dim=(0, 1))
                self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)
        return loss
