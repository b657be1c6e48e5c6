"""SLA wrapper: rotations + joint (and single) heads around any timm classifier.

Train mode: the input [B, ...] is expanded to the sample-major batch [B * M, ...] of its M rotations (row
``b * M + k`` = sample b rotated by ``k * 360 / M`` degrees), the backbone's pooled features
(``forward_head(forward_features(x), pre_logits=True)``) feed a joint head ``Linear(D, C * M)`` and, for SLA+SD,
a single head ``Linear(D, C)`` on the unrotated rows; the wrapper returns an :class:`~vsd.losses.sla.SLAOutput`
for :class:`~vsd.losses.SLALoss` / :class:`~vsd.losses.SLASDLoss`.

Eval mode returns logits [B, C]: the single head alone for SLA+SD (no extra inference cost), else the aggregated
joint logits over the M rotations (``sla_aggregate``; M forward passes' worth of compute).

The backbone's own classifier is unused by SLA; it is removed with ``reset_classifier(0)`` when the model has
that method (every timm model does), so DDP sees no unused parameters. timm's model contract is passed on to the
backbone (:class:`vsd.wrappers.contract.TimmContract`), except the classifier, which is the wrapper's:
``get_classifier()`` is the single head (SLA+SD) or the joint head, ``reset_classifier(n)`` rebuilds both heads.
``state_dict`` keys: ``model.*`` (backbone), ``joint_head.*``, ``single_head.*`` (SLA+SD).

Example:
    >>> import timm, torch
    >>> from vsd.losses import SLASDLoss
    >>> model = SLAWrapper(timm.create_model("resnet18", num_classes=10), self_distill=True)
    >>> loss = SLASDLoss()(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2]))
    >>> model.eval()(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from vsd.losses.sla import SLAOutput, sla_aggregate
from vsd.wrappers.contract import TimmContract

__all__ = ["SLAWrapper", "rotate_batch"]


def rotate_batch(x: torch.Tensor, num_transforms: int = 4) -> torch.Tensor:
    """[B, C, H, W] -> [B * M, C, H, W], row ``b * M + k`` = ``rot90(x[b], k * 4 // M)`` (M in 1, 2, 4; M = 2 is
    the official ``rotation2``: 0 and 180 degrees)."""
    if num_transforms not in (1, 2, 4):
        raise ValueError(f"SLA rotations support num_transforms in (1, 2, 4), got {num_transforms}")
    if x.dim() != 4:
        raise ValueError(f"SLA expects image batches [batch, channels, height, width], got {tuple(x.shape)}")
    if num_transforms == 4 and x.shape[-1] != x.shape[-2]:
        raise ValueError(f"SLA's 90-degree rotations need square images, got height {x.shape[-2]} and width "
                         f"{x.shape[-1]}")
    step = 4 // num_transforms
    rotated = torch.stack([torch.rot90(x, k * step, dims=(2, 3)) for k in range(num_transforms)], dim=1)
    return rotated.reshape(-1, *x.shape[1:])


class SLAWrapper(TimmContract, nn.Module):
    """Make a timm classifier train with SLA (``self_distill=False``) or SLA+SD (``self_distill=True``).

    Args:
        model: a timm-style classifier with ``forward_features`` and ``forward_head(x, pre_logits=True)``.
        num_classes: C; defaults to ``model.num_classes``.
        num_transforms: M rotations (4 in the paper).
        self_distill: add the single head (SLA+SD); eval then uses it alone.
    """

    num_classes: int = 0  # the wrapper's own (not the backbone's, whose classifier is removed)

    def __init__(self, model: nn.Module, num_classes: Optional[int] = None, num_transforms: int = 4,
                 self_distill: bool = False) -> None:
        super().__init__()
        for attr in ("forward_features", "forward_head"):
            if not hasattr(model, attr):
                raise TypeError(f"SLAWrapper needs a timm-style model with forward_features and forward_head, "
                                f"{type(model).__name__} has no {attr}")
        rotate_batch(torch.zeros(1, 1, 2, 2), num_transforms)  # validates num_transforms
        num_classes = int(num_classes if num_classes is not None else getattr(model, "num_classes", 0))
        if num_classes < 2:
            raise ValueError(f"SLAWrapper needs num_classes >= 2 (pass it when the model has no num_classes), "
                             f"got {num_classes}")
        features = int(getattr(model, "head_hidden_size", None) or model.num_features)
        if hasattr(model, "reset_classifier"):
            model.reset_classifier(0)
        self.model = model
        self.num_classes = num_classes
        self.num_transforms = num_transforms
        self.self_distill = self_distill
        self._build_heads(features)

    def _build_heads(self, features: int) -> None:
        self.joint_head = nn.Linear(features, self.num_classes * self.num_transforms)
        self.single_head = nn.Linear(features, self.num_classes) if self.self_distill else None

    def get_classifier(self) -> nn.Module:
        """The head eval mode uses: the single head (SLA+SD) or the joint head (SLA, aggregated)."""
        return self.single_head if self.single_head is not None else self.joint_head

    def reset_classifier(self, num_classes: int, *args, **kwargs) -> None:
        """New joint (and single) heads for ``num_classes`` classes (on the old heads' device and dtype)."""
        if num_classes < 2:
            raise ValueError(f"SLAWrapper needs num_classes >= 2, got {num_classes}")
        old = self.joint_head.weight
        self.num_classes = int(num_classes)
        self._build_heads(old.shape[1])
        self.to(device=old.device, dtype=old.dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features [N, D]."""
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, SLAOutput]:
        if not self.training and self.single_head is not None:
            return self.single_head(self.features(x))
        feats = self.features(rotate_batch(x, self.num_transforms))
        joint = self.joint_head(feats)
        if not self.training:
            return sla_aggregate(joint, self.num_transforms)
        single = self.single_head(feats[:: self.num_transforms]) if self.single_head is not None else None
        return SLAOutput(joint_logits=joint, single_logits=single, num_transforms=self.num_transforms)
