"""Masked-autoencoder losses: MAE pixel reconstruction and the CLS self-distillation term of further
pre-training.

Pixel loss (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022; official code
github.com/facebookresearch/mae, ``forward_loss``)::

    t_i   = patch i of the image (flattened), or with norm_pix: (t_i - mean(t_i)) / sqrt(var(t_i) + 1e-6)
    l_i   = mean_j (pred_ij - t_ij)^2                      (per-patch mean over its p*p*C pixels)
    loss  = sum_i m_i * l_i / sum_i m_i                    (m_i = 1 for masked patches)

``var`` is the unbiased variance, as in the official code (``Tensor.var``).

CLS self-distillation (Lee et al., "Self-Distillation for Further Pre-training of Transformers", ICLR 2023;
official code github.com/seanie12/self-distillation, ``SelfPreTrainer``)::

    loss = sum_b ||h_s_b - h_t_b||^2 / B                   (h = final-norm CLS of the full, unmasked image)

i.e. ``MSELoss(reduction="sum") / batch``; the teacher side is detached.
"""
from __future__ import annotations

import torch
from torch import nn


def _check_pred_target(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
    if pred.dim() != 3 or pred.shape != target.shape:
        raise ValueError(f"pred and target must both be [batch, patches, pixels_per_patch] with equal shapes, "
                         f"got {tuple(pred.shape)} and {tuple(target.shape)}")
    if tuple(mask.shape) != tuple(pred.shape[:2]):
        raise ValueError(f"mask must be [batch, patches] = {tuple(pred.shape[:2])}, got {tuple(mask.shape)}")
    if float(mask.sum()) <= 0:
        raise ValueError("mask marks no patch as masked: the MAE loss is averaged over masked patches")


def normalize_pixels(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch standardisation of MAE's ``norm_pix_loss`` target (unbiased variance, ``eps`` inside the root)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps) ** 0.5


def mae_pixel_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                   norm_pix: bool = False) -> torch.Tensor:
    """MAE reconstruction loss: per-patch pixel MSE averaged over the masked patches.

    Args:
        pred: Predicted pixels [B, L, P].
        target: Image patches [B, L, P] (``MaskedAutoencoderViT.patchify(images)``).
        mask: [B, L], 1 for masked (scored) patches, 0 for visible ones.
        norm_pix: Standardise each target patch first (MAE's ``norm_pix_loss``).
    """
    _check_pred_target(pred, target, mask)
    if norm_pix:
        target = normalize_pixels(target)
    per_patch = (pred - target).pow(2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum()


class MAELoss(nn.Module):
    """Criterion form of :func:`mae_pixel_loss`: ``MAELoss(norm_pix=True)(pred, target, mask)``."""

    def __init__(self, norm_pix: bool = False) -> None:
        super().__init__()
        self.norm_pix = norm_pix

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mae_pixel_loss(pred, target, mask, self.norm_pix)


def cls_distillation_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    """Squared distance between student and (detached) teacher CLS features, summed and divided by the batch."""
    if student_cls.dim() != 2 or student_cls.shape != teacher_cls.shape:
        raise ValueError(f"student and teacher CLS features must both be [batch, width] with equal shapes, got "
                         f"{tuple(student_cls.shape)} and {tuple(teacher_cls.shape)}")
    return (student_cls - teacher_cls.detach()).pow(2).sum() / student_cls.shape[0]
