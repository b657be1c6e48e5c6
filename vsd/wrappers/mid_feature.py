"""Expose a mid-level feature of any timm classifier in train mode (for USKD's weak supervision).

* CNNs (any model with timm's ``feature_info`` and ``forward_intermediates``: ResNets, vsd's ConvNets and CIFAR
  ResNets, ...): the globally average-pooled output of the penultimate stage (``feature_info[-2]``), as the
  official USKD code (``neck(backbone_stage[-2])``, i.e. global average pooling).
* Vision Transformers (``blocks`` and a class token): the raw CLS token after block ``depth // 2 - 1``
  (0-based, no final norm), as the official code's ``mid_token``.

In train mode :class:`MidFeatureWrapper` returns :class:`MidFeatureOutput` ``(logits, mid_feature)``;
:class:`USKDWrapper` adds USKD's weak head ``Linear(mid_channels, num_classes)`` on the mid feature and returns
:class:`USKDOutput` ``(logits, weak_logits)`` for :class:`vsd.losses.USKDLoss`. In eval mode both return the
plain logits, so timm's validation works unchanged. Both pass timm's model contract on to the wrapped model
(:class:`vsd.wrappers.contract.TimmContract`).

``state_dict`` keys of :class:`MidFeatureWrapper`: ``model.*``. The weak head lives in the wrapper (the official
code keeps it in the loss module): so an optimizer, DDP, an EMA
copy and a checkpoint built on the model all include it. ``state_dict`` keys of :class:`USKDWrapper`:
``model.*`` (the classifier; ``unwrap_model(wrapper).model`` is the plain classifier) and ``weak_head.weight``,
``weak_head.bias``.

Example:
    >>> import timm, torch
    >>> model = USKDWrapper(timm.create_model("resnet18", num_classes=10))
    >>> out = model(torch.randn(2, 3, 32, 32))
    >>> out.logits.shape, out.weak_logits.shape, model.mid_channels
    (torch.Size([2, 10]), torch.Size([2, 10]), 256)
"""
from __future__ import annotations

from typing import NamedTuple, Union

import torch
from torch import nn

from vsd.wrappers.contract import TimmContract

__all__ = ["MidFeatureOutput", "MidFeatureWrapper", "USKDOutput", "USKDWrapper"]


class MidFeatureOutput(NamedTuple):
    """Train-mode output: logits first (timm keeps ``output[0]``), then the mid-level feature [B, D]."""

    logits: torch.Tensor
    mid_feature: torch.Tensor


def _is_vit(model: nn.Module) -> bool:
    return all(hasattr(model, attr) for attr in ("blocks", "embed_dim", "num_prefix_tokens"))


class USKDOutput(NamedTuple):
    """Train-mode output of :class:`USKDWrapper`: final logits first, then the weak head's logits [B, C]."""

    logits: torch.Tensor
    weak_logits: torch.Tensor


class MidFeatureWrapper(TimmContract, nn.Module):
    """Wrap ``model`` so that train-mode forward returns ``(logits, mid_feature)``; see the module docstring.

    Attributes:
        model: the wrapped classifier (its state dict is what a plain checkpoint holds).
        mid_channels: width D of the mid-level feature (the weak head's ``in_features``).
        mid_index: the intermediate index read (a stage for CNNs, a block for ViTs).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not (hasattr(model, "forward_intermediates") and hasattr(model, "forward_head")):
            raise TypeError(f"MidFeatureWrapper needs a timm-style model with forward_intermediates and "
                            f"forward_head, got {type(model).__name__}")
        self.model = model
        self.is_vit = _is_vit(model)
        if self.is_vit:
            if getattr(model, "cls_token", None) is None:
                raise ValueError(f"{type(model).__name__} has no class token; USKD reads the CLS token of a ViT")
            depth = len(model.blocks)
            if depth < 2:
                raise ValueError(f"a ViT needs at least 2 blocks for a mid-level feature, got {depth}")
            self.mid_index = depth // 2 - 1
            self.mid_channels = int(model.embed_dim)
        else:
            info = list(getattr(model, "feature_info", []) or [])
            if len(info) < 2:
                raise ValueError(f"{type(model).__name__} must list at least 2 stages in feature_info to expose "
                                 f"a penultimate stage, got {len(info)}")
            self.mid_index = len(info) - 2
            self.mid_channels = int(info[self.mid_index]["num_chs"])

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, MidFeatureOutput]:
        if not self.training:
            return self.model(x)
        if self.is_vit:
            final, (tokens,) = self.model.forward_intermediates(
                x, indices=[self.mid_index], return_prefix_tokens=True, output_fmt="NLC")
            mid = tokens[1][:, 0]
        else:
            final, (stage,) = self.model.forward_intermediates(x, indices=[self.mid_index])
            mid = stage.mean(dim=(2, 3))
        return MidFeatureOutput(self.model.forward_head(final), mid)


class USKDWrapper(MidFeatureWrapper):
    """:class:`MidFeatureWrapper` plus USKD's weak head: train mode ``(logits, weak_head(mid_feature))``.

    Args:
        model: a timm-style classifier (see :class:`MidFeatureWrapper`) with ``num_classes >= 2``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        num_classes = int(getattr(model, "num_classes", 0))
        if num_classes < 2:
            raise ValueError(f"USKD needs a classifier with num_classes >= 2, got {num_classes}")
        self.weak_head = nn.Linear(self.mid_channels, num_classes)

    def reset_classifier(self, num_classes: int, *args, **kwargs) -> None:
        """Reset the model's classifier and the weak head to ``num_classes`` (both predict the same classes)."""
        super().reset_classifier(num_classes, *args, **kwargs)
        self.weak_head = nn.Linear(self.mid_channels, num_classes, device=self.weak_head.weight.device,
                                   dtype=self.weak_head.weight.dtype)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, USKDOutput]:
        out = super().forward(x)
        if not self.training:
            return out
        return USKDOutput(out.logits, self.weak_head(out.mid_feature))
