"""SLA: self-supervised label augmentation (Lee, Hwang & Shin, "Self-supervised Label Augmentation via Input
Transformations", ICML 2020; official code github.com/hankook/SLA).

Every image is shown in M transformed versions (M = 4 rotations by ``k * 90`` degrees) and a joint head
classifies the pair (class, transformation) among C * M joint labels. Layout, as in the official code:

* rows of ``joint_logits`` [B * M, C * M] are sample-major: row ``b * M + k`` is sample b transformed k times;
* columns are class-major: column ``c * M + k`` is the joint label (class c, transformation k);
* the joint label of row ``b * M + k`` is ``y_b * M + k``.

Losses (T = temperature, default 1):

    sla_loss     = CE(joint_logits, joint labels)                               (mean over B * M rows)
    aggregate    = (1/M) sum_k joint_logits[k::M, k::M]                         ([B, C], "SLA+AG" inference)
    sla_sd_loss  = sla_loss + CE(single, y) + T^2 * KL(softmax(aggregate.detach() / T) || softmax(single / T))

with the KL averaged over the batch ("batchmean"). ``single`` is a second head on the untransformed view
(SLA+SD), which is used alone at inference.

Example:
    >>> import torch
    >>> joint = torch.randn(2 * 4, 10 * 4)
    >>> loss = sla_loss(joint, torch.tensor([3, 7]))
    >>> sla_aggregate(joint).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from vsd.losses.checks import check_logits_target

__all__ = ["SLAOutput", "SLALoss", "SLASDLoss", "sla_aggregate", "sla_joint_target", "sla_loss", "sla_sd_loss"]


def _check_joint(joint_logits: torch.Tensor, num_transforms: int) -> None:
    if num_transforms < 1:
        raise ValueError(f"num_transforms must be >= 1, got {num_transforms}")
    if joint_logits.dim() != 2:
        raise ValueError(f"joint_logits must have shape [batch * num_transforms, classes * num_transforms], "
                         f"got {tuple(joint_logits.shape)}")
    rows, cols = joint_logits.shape
    if rows % num_transforms or cols % num_transforms:
        raise ValueError(f"joint_logits shape {tuple(joint_logits.shape)} is not [batch * {num_transforms}, "
                         f"classes * {num_transforms}] (both sizes must be multiples of num_transforms)")


def _check_target(joint_logits: torch.Tensor, target: torch.Tensor, num_transforms: int) -> None:
    _check_joint(joint_logits, num_transforms)
    if target.dim() != 1 or target.dtype.is_floating_point:
        raise ValueError(f"SLA needs class-index targets of shape [batch] (soft mixup/cutmix targets are not "
                         f"supported), got {target.dtype} of shape {tuple(target.shape)}")
    batch = joint_logits.shape[0] // num_transforms
    # the [B, C] view of the joint logits lets the shared check name the batch size and the class range
    check_logits_target(joint_logits.new_empty(batch, joint_logits.shape[1] // num_transforms), target,
                        name=f"joint_logits (as [batch, classes] with num_transforms={num_transforms})")


def sla_joint_target(target: torch.Tensor, num_transforms: int = 4) -> torch.Tensor:
    """Joint labels [B * M]: entry ``b * M + k`` is ``target[b] * M + k``."""
    shifts = torch.arange(num_transforms, device=target.device, dtype=target.dtype)
    return (target[:, None] * num_transforms + shifts[None, :]).reshape(-1)


def sla_loss(joint_logits: torch.Tensor, target: torch.Tensor, num_transforms: int = 4) -> torch.Tensor:
    """Cross-entropy of ``joint_logits`` [B * M, C * M] against the joint labels, mean over the B * M rows.

    Same as the official ``create_sla_trainer`` without ``--with-large-loss`` (the criterion :class:`SLALoss`
    has ``large_loss=True`` for the summed variant the official README suggests for ImageNet).
    """
    _check_target(joint_logits, target, num_transforms)
    return F.cross_entropy(joint_logits, sla_joint_target(target, num_transforms))


def sla_aggregate(joint_logits: torch.Tensor, num_transforms: int = 4) -> torch.Tensor:
    """Aggregated logits [B, C]: ``mean_k joint_logits[k::M, k::M]``, i.e. for sample b and class c the average
    over k of the logit of joint label (c, k) on the k-times transformed input (apply softmax for probabilities,
    as the official code does through its cross-entropy/accuracy metrics)."""
    _check_joint(joint_logits, num_transforms)
    rows, cols = joint_logits.shape
    # [B, M, C, M] -> diagonal over the two transformation axes -> [B, C, M] -> mean over k
    blocks = joint_logits.reshape(rows // num_transforms, num_transforms, cols // num_transforms, num_transforms)
    return blocks.diagonal(dim1=1, dim2=3).mean(dim=-1)


def _sla_sd_terms(joint_logits: torch.Tensor, single_logits: torch.Tensor, target: torch.Tensor,
                  num_transforms: int, temperature: float) -> Dict[str, torch.Tensor]:
    _check_target(joint_logits, target, num_transforms)
    check_logits_target(single_logits, target, name="single_logits")
    expected = (joint_logits.shape[0] // num_transforms, joint_logits.shape[1] // num_transforms)
    if tuple(single_logits.shape) != expected:
        raise ValueError(f"single_logits must have shape {expected} (the untransformed rows of joint_logits "
                         f"{tuple(joint_logits.shape)}), got {tuple(single_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"SLA+SD temperature must be > 0, got {temperature}")
    teacher = F.softmax(sla_aggregate(joint_logits, num_transforms).detach() / temperature, dim=1)
    kd = F.kl_div(F.log_softmax(single_logits / temperature, dim=1), teacher, reduction="batchmean")
    return {
        "joint": F.cross_entropy(joint_logits, sla_joint_target(target, num_transforms)),
        "single": F.cross_entropy(single_logits, target),
        "kd": kd * temperature ** 2,
    }


def sla_sd_loss(joint_logits: torch.Tensor, single_logits: torch.Tensor, target: torch.Tensor,
                num_transforms: int = 4, temperature: float = 1.0) -> torch.Tensor:
    """SLA+SD: ``sla_loss + CE(single, y) + T^2 * KL(softmax(agg.detach() / T) || softmax(single / T))``.

    ``single_logits`` [B, C] are the single head's logits on the untransformed inputs. The official code runs
    the single head on all B * M rows and keeps rows ``::M``; vsd runs it on those rows only (same numbers).
    """
    return sum(_sla_sd_terms(joint_logits, single_logits, target, num_transforms, temperature).values())


@dataclass
class SLAOutput:
    """What :class:`vsd.wrappers.SLAWrapper` returns in train mode."""

    joint_logits: torch.Tensor
    single_logits: Optional[torch.Tensor]
    num_transforms: int

    def logits(self) -> torch.Tensor:
        """[B, C] logits for training metrics: the single head's when present, else the aggregated joint ones."""
        if self.single_logits is not None:
            return self.single_logits
        return sla_aggregate(self.joint_logits.detach(), self.num_transforms)


def _check_output(output: object, criterion: str, wants_single: bool) -> SLAOutput:
    if not isinstance(output, SLAOutput):
        raise TypeError(f"{criterion} expects the SLAOutput of vsd.wrappers.SLAWrapper in train mode, got "
                        f"{type(output).__name__}")
    if wants_single and output.single_logits is None:
        raise ValueError(f"{criterion} needs the single head: wrap the model with SLAWrapper(..., "
                         f"self_distill=True)")
    if not wants_single and output.single_logits is not None:
        raise ValueError(f"{criterion} would leave the single head of SLAWrapper(self_distill=True) untrained; "
                         f"use SLASDLoss, or SLAWrapper(..., self_distill=False)")
    return output


class SLALoss(nn.Module):
    """Criterion ``loss_fn(output, target)`` for SLA (see :func:`sla_loss`); ``large_loss=True`` multiplies by
    M (the official ``--with-large-loss``: sum instead of mean over transformations)."""

    def __init__(self, large_loss: bool = False) -> None:
        super().__init__()
        self.large_loss = large_loss

    def terms(self, output: SLAOutput, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The loss components (here only ``joint``); their sum is the loss."""
        output = _check_output(output, "SLALoss", wants_single=False)
        joint = sla_loss(output.joint_logits, target, output.num_transforms)
        return {"joint": joint * output.num_transforms if self.large_loss else joint}

    def forward(self, output: SLAOutput, target: torch.Tensor) -> torch.Tensor:
        return sum(self.terms(output, target).values())


class SLASDLoss(nn.Module):
    """Criterion ``loss_fn(output, target)`` for SLA+SD (see :func:`sla_sd_loss`); ``large_loss=True`` multiplies
    the joint term by M as the official ``--with-large-loss`` does."""

    def __init__(self, temperature: float = 1.0, large_loss: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.large_loss = large_loss

    def terms(self, output: SLAOutput, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The loss components ``joint``, ``single`` and ``kd`` (already scaled by T^2); their sum is the loss."""
        output = _check_output(output, "SLASDLoss", wants_single=True)
        terms = _sla_sd_terms(output.joint_logits, output.single_logits, target, output.num_transforms,
                              self.temperature)
        if self.large_loss:
            terms["joint"] = terms["joint"] * output.num_transforms
        return terms

    def forward(self, output: SLAOutput, target: torch.Tensor) -> torch.Tensor:
        return sum(self.terms(output, target).values())
