"""DMAE feature distillation loss.

Bai et al., "Masked Autoencoders Enable Efficient Knowledge Distillers", CVPR 2023
(https://arxiv.org/abs/2208.12256), official code github.com/UCSC-VLAA/DMAE
(``forward_distillation_loss_embedding``). For each aligned pair of blocks (student block ``b_s``, teacher block
``b_t``), with ``S`` the student's and ``T`` the frozen teacher's tokens (CLS + the SAME visible patches, taken
after the block and before the final norm)::

    loss_k = mean_{b, n, d} | normalize(T)_{bnd} - normalize(W_k S + c_k)_{bnd} |     (L2-normalize over d)
    loss   = sum_k loss_k

``W_k, c_k`` is a trainable ``Linear(student_width, teacher_width)`` (the official ``fc-1layer`` projection).
The mean runs over every element (``nn.L1Loss()``), as in the official code; the per-block terms are summed and
added with weight 1 to the MAE pixel loss. Without a projection the two widths must be equal.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def dmae_feature_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean |normalize(teacher) - normalize(student)|`` over all elements; the teacher side is detached.

    Args:
        student: Projected student tokens [B, N, D].
        teacher: Teacher tokens [B, N, D] at the same positions.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student (projected) and teacher features must have equal shapes, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    return (F.normalize(teacher.detach(), dim=-1) - F.normalize(student, dim=-1)).abs().mean()


class DMAEFeatureLoss(nn.Module):
    """Sum of :func:`dmae_feature_loss` over aligned block pairs, with one trainable projection per pair.

    Args:
        student_width: Student token width.
        teacher_width: Teacher token width.
        num_pairs: Number of aligned (student block, teacher block) pairs.
        projection: Project student features with ``Linear(student_width, teacher_width)``; without it the
            widths must be equal.
    """

    def __init__(self, student_width: int, teacher_width: int, num_pairs: int = 1, projection: bool = True) -> None:
        super().__init__()
        if num_pairs < 1:
            raise ValueError(f"DMAE needs at least one aligned block pair, got {num_pairs}")
        if not projection and student_width != teacher_width:
            raise ValueError(f"student width {student_width} differs from teacher width {teacher_width}: enable the "
                             f"projection (method.projection=true) or pick a teacher of width {student_width}")
        self.projections = nn.ModuleList(
            [nn.Linear(student_width, teacher_width) if projection else nn.Identity() for _ in range(num_pairs)])

    def forward(self, student: Sequence[torch.Tensor],
                teacher: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Return ``(total, per_pair)``."""
        if len(student) != len(self.projections) or len(teacher) != len(self.projections):
            raise ValueError(f"expected {len(self.projections)} student and teacher feature maps, got "
                             f"{len(student)} and {len(teacher)}")
        terms = [dmae_feature_loss(proj(s), t) for proj, s, t in zip(self.projections, student, teacher)]
        return torch.stack(terms).sum(), terms
