"""DINO cross-entropy between teacher and student prototype scores (as used by random-teacher distillation).

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021; Sarnthein et al.,
"Random Teachers are Good Teachers", ICML 2023 (official code github.com/safelix/dinopl). For teacher scores
``t`` and student scores ``s`` [B, K] of one pair of views::

    p_t  = softmax((t - c) / t_temp)          (detached; c = center, 0 without centering)
    loss = mean_b  - sum_k p_t[b, k] * log_softmax(s / s_temp)[b, k]

Multi-crop (DINO; dinopl ``multicrop_loss_clf``): the student sees ``S`` crops, the teacher the first ``T <= S``
of them (the global crops; crop ``i`` of the teacher is crop ``i`` of the student). The loss is the mean over the
pairs ``(i teacher crop, j student crop)`` selected by ``pairing``:

* ``opposite`` (DINO's default): ``i != j``: each student crop against every *other* global crop;
* ``same`` (the random-teacher configs of dinopl): ``i == j`` only;
* ``all``: every pair.

Each pair's term is the batch mean above (``mean over pairs of mean over b``, as dinopl). Centering (optional, off
by default as in the random-teacher paper): after the loss, ``c <- m * c + (1 - m) * mean_{teacher views, b} t``.
Defaults ``t_temp = s_temp = 1`` (the random-teacher setting).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

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


PAIRINGS = ("opposite", "same", "all")


def view_pairs(num_teacher: int, num_student: int, pairing: str) -> List[Tuple[int, int]]:
    """``(teacher crop i, student crop j)`` pairs of ``pairing`` (see the module docstring)."""
    if pairing not in PAIRINGS:
        raise ValueError(f"DINO pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    if num_teacher < 1 or num_student < num_teacher:
        raise ValueError(f"DINO needs 1 <= teacher views <= student views (the teacher sees the first, global "
                         f"crops), got {num_teacher} teacher and {num_student} student views")
    pairs = [(i, j) for i in range(num_teacher) for j in range(num_student)
             if pairing == "all" or (i == j) == (pairing == "same")]
    if not pairs:
        raise ValueError(f"pairing {pairing!r} leaves no (teacher, student) view pair with {num_teacher} teacher "
                         f"and {num_student} student views; with one view use pairing 'same'")
    return pairs


class DINOLoss(nn.Module):
    """DINO loss over views with optional teacher centering.

    Args:
        out_dim: Number of prototypes K.
        s_temp: Student temperature.
        t_temp: Teacher temperature.
        center_momentum: ``None`` disables centering; otherwise the EMA momentum of the center (DINO: 0.9).
        pairing: ``opposite`` (DINO), ``same`` (random teachers) or ``all``.
    """

    def __init__(self, out_dim: int, s_temp: float = 1.0, t_temp: float = 1.0,
                 center_momentum: Optional[float] = None, pairing: str = "opposite") -> None:
        super().__init__()
        if center_momentum is not None and not 0.0 <= center_momentum < 1.0:
            raise ValueError(f"center_momentum must lie in [0, 1) or be None, got {center_momentum}")
        if pairing not in PAIRINGS:
            raise ValueError(f"DINO pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
        self.s_temp, self.t_temp, self.center_momentum, self.pairing = s_temp, t_temp, center_momentum, pairing
        self.register_buffer("center", torch.zeros(out_dim))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """``student`` [S, B, K] and ``teacher`` [T, B, K] scores of S student and T <= S teacher views (or [B, K]
        for one view); teacher view ``i`` is the same crop as student view ``i``."""
        if student.dim() == 2:
            student = student.unsqueeze(0)
        if teacher.dim() == 2:
            teacher = teacher.unsqueeze(0)
        if student.dim() != 3 or teacher.dim() != 3 or student.shape[1:] != teacher.shape[1:]:
            raise ValueError(f"student and teacher scores must be [views, batch, prototypes] with equal batch and "
                             f"prototypes, got {tuple(student.shape)} and {tuple(teacher.shape)}")
        pairs = view_pairs(teacher.shape[0], student.shape[0], self.pairing)
        center = self.center if self.center_momentum is not None else None
        loss = torch.stack([dino_cross_entropy(student[j], teacher[i], self.s_temp, self.t_temp, center)
                            for i, j in pairs]).mean()
        if self.center_momentum is not None and self.training:
            with torch.no_grad():
                batch_center = teacher.detach().mean(dim=(0, 1))
                self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)
        return loss
