"""DMAE feature distillation loss.

Bai et al., "Masked Autoencoders Enable Efficient Knowledge Distillers", CVPR 2023
(https://arxiv.org/abs/2208.12256), official code github.com/UCSC-VLAA/DMAE (``models_mae_distill.py``,
``forward_distillation_loss_embedding``). For each aligned pair of blocks (student block ``b_s``, teacher block
``b_t``), with ``S`` the student's and ``T`` the frozen teacher's tokens (CLS + the SAME visible patches, taken
after the block and before the final norm)::

    u = normalize(T), v = normalize(h_k(S))                    (L2-normalize over the width d)
    loss_k = mean_{b, n, d} |u - v|          (distance "l1", the official default, nn.L1Loss)
    loss_k = mean_{b, n, d} (u - v)^2        (distance "l2", the official "L2" option, nn.MSELoss)
    loss   = sum_k loss_k

The projection head ``h_k`` (one per pair, trainable) is one of the official ``aligned_feature_projection_mode``
values:

* ``fc-1layer`` (default): ``Linear(d_s, d_t)``;
* ``mlp-1layer``: timm ``Mlp(d_s, hidden d_t, out d_t)`` = ``Linear(d_s, d_t) -> GELU -> Linear(d_t, d_t)``;
* ``mlp-2layer``: two such Mlps in a row, ``Mlp(d_s, d_t, d_t) -> Mlp(d_t, d_t, d_t)``.

The heads keep PyTorch's default initialisation (the official code creates them after its weight init). The mean
runs over every element, as in the official code; the per-block terms are summed and added with weight 1 to the
MAE pixel loss. Without a projection the two widths must be equal.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

HEADS = ("fc-1layer", "mlp-1layer", "mlp-2layer")
DISTANCES = ("l1", "l2")


def dmae_feature_loss(student: torch.Tensor, teacher: torch.Tensor, distance: str = "l1") -> torch.Tensor:
    """``mean |normalize(teacher) - normalize(student)|`` (``l1``) or the mean squared difference (``l2``) over
    all elements; the teacher side is detached.

    Args:
        student: Projected student tokens [B, N, D].
        teacher: Teacher tokens [B, N, D] at the same positions.
        distance: ``"l1"`` or ``"l2"``.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student (projected) and teacher features must have equal shapes, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    if distance not in DISTANCES:
        raise ValueError(f"DMAE distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    diff = F.normalize(teacher.detach(), dim=-1) - F.normalize(student, dim=-1)
    return diff.abs().mean() if distance == "l1" else diff.pow(2).mean()


def projection_head(kind: str, student_width: int, teacher_width: int) -> nn.Module:
    """One DMAE projection head (see the module docstring)."""
    if kind == "fc-1layer":
        return nn.Linear(student_width, teacher_width)
    if kind == "mlp-1layer":
        return Mlp(student_width, teacher_width, teacher_width, act_layer=nn.GELU)
    if kind == "mlp-2layer":
        return nn.Sequential(Mlp(student_width, teacher_width, teacher_width, act_layer=nn.GELU),
                             Mlp(teacher_width, teacher_width, teacher_width, act_layer=nn.GELU))
    raise ValueError(f"DMAE projection head must be one of {', '.join(HEADS)}, got {kind!r}")


class DMAEFeatureLoss(nn.Module):
    """Sum of :func:`dmae_feature_loss` over aligned block pairs, with one trainable projection per pair.

    Args:
        student_width: Student token width.
        teacher_width: Teacher token width.
        num_pairs: Number of aligned (student block, teacher block) pairs.
        projection: Project student features with ``head``; without it the widths must be equal.
        head: ``fc-1layer``, ``mlp-1layer`` or ``mlp-2layer``.
        distance: ``l1`` or ``l2``.
    """

    def __init__(self, student_width: int, teacher_width: int, num_pairs: int = 1, projection: bool = True,
                 head: str = "fc-1layer", distance: str = "l1") -> None:
        super().__init__()
        if num_pairs < 1:
            raise ValueError(f"DMAE needs at least one aligned block pair, got {num_pairs}")
        if not projection and student_width != teacher_width:
            raise ValueError(f"student width {student_width} differs from teacher width {teacher_width}: enable the "
                             f"projection (method.projection=true) or pick a teacher of width {student_width}")
        if distance not in DISTANCES:
            raise ValueError(f"method.distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
        self.distance = distance
        self.projections = nn.ModuleList(
            [projection_head(head, student_width, teacher_width) if projection else nn.Identity()
             for _ in range(num_pairs)])

    def forward(self, student: Sequence[torch.Tensor],
                teacher: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Return ``(total, per_pair)``."""
        if len(student) != len(self.projections) or len(teacher) != len(self.projections):
            raise ValueError(f"expected {len(self.projections)} student and teacher feature maps, got "
                             f"{len(student)} and {len(teacher)}")
        terms = [dmae_feature_loss(proj(s), t, self.distance)
                 for proj, s, t in zip(self.projections, student, teacher)]
        return torch.stack(terms).sum(), terms
