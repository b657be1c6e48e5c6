"""Boundary checks shared by the losses: one readable error naming what was wrong and what was expected."""
from __future__ import annotations

import torch


def check_logits_target(logits: torch.Tensor, target: torch.Tensor, name: str = "logits") -> None:
    """Check ``logits`` is [B, C] and ``target`` is [B] class indices in [0, C) or [B, C] soft targets."""
    if logits.dim() != 2:
        raise ValueError(f"{name} must have shape [batch, classes], got {tuple(logits.shape)}")
    batch, classes = logits.shape
    if target.dim() == 2:
        if tuple(target.shape) != (batch, classes):
            raise ValueError(f"soft target must have shape {(batch, classes)} like {name}, got {tuple(target.shape)}")
        return
    if target.dim() != 1 or target.shape[0] != batch:
        raise ValueError(f"target must have shape [{batch}] (one class index per row of {name}), "
                         f"got {tuple(target.shape)}")
    if target.dtype.is_floating_point:
        raise ValueError(f"class-index target must be an integer tensor, got {target.dtype}")
    if batch and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise ValueError(f"target labels must lie in [0, {classes}) for {classes} classes, "
                         f"got values in [{int(target.min())}, {int(target.max())}]")
