"""CIFAR ResNets: ``resnet18_cifar`` and ``resnet32_cifar``.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (https://arxiv.org/abs/1512.03385).
Both use a 3x3 stride-1 stem and no max-pool, so 32x32 (and 16x16) inputs keep enough resolution.

* ``resnet18_cifar``: the kuangliu/pytorch-cifar ResNet-18, used as the CIFAR backbone by many
  self-distillation papers: BasicBlocks [2, 2, 2, 2], widths 64/128/256/512, strides 1/2/2/2, projection
  shortcut (1x1 conv + BN, "option B") where the shape changes, PyTorch default init. PS-KD (Kim et al.,
  ICCV 2021) reports a *pre-activation* ResNet-18 on CIFAR-100; this one is the post-activation original.
* ``resnet32_cifar``: the 6n+2 CIFAR ResNet of the paper (n = 5) as in LDAM-DRW (Cao et al., NeurIPS 2019),
  RIDE (Wang et al., ICLR 2021) and MDCS (Zhao et al., ICCV 2023): BasicBlocks [5, 5, 5], widths 16/32/64,
  strides 1/2/2, parameter-free "option A" shortcut (subsample by the stride, zero-pad the new channels) and
  ``kaiming_normal_`` init of conv and linear weights, as in their ``resnet_cifar.py``. ``shortcut="B"``
  switches to projection shortcuts; ``widths=(16, 24, 48)`` gives RIDE/MDCS's ``reduce_dimension`` width.
  (Option A there pads ``(planes - in_planes) // 2`` on each side; here an odd difference puts the extra
  channel last, and the subsampling follows the stride, which only matters for non-default widths.)

Stages for multi-expert models (RIDE / MDCS share the stem and the first stage; each expert owns a copy of the
later stages and its own classifier)::

    model.stem          # Sequential(conv, bn, act): 3x3 conv, stride 1
    model.layers        # Sequential of stages; model.layers[i] is stage i+1 (a Sequential of BasicBlocks)
    model.global_pool   # timm SelectAdaptivePool2d ('avg' by default)
    model.fc            # Linear(num_features, num_classes)
    shared = nn.Sequential(model.stem, model.layers[:1])
    expert = copy.deepcopy(model.layers[1:])  # per expert; then its own pool + Linear(num_features, ...)

Reading a mid-level feature: ``model.forward_intermediates(x, indices=[k], intermediates_only=True)[0]`` is
the stem's output for ``k = 0`` and stage ``k``'s output (``model.layers[k - 1]``) for ``k >= 1`` (timm's
ResNet convention); ``model.feature_info[k]`` gives its channels and stride. The last one equals
``model.forward_features(x)``.

Example:
    >>> import timm, torch, vsd
    >>> model = timm.create_model("resnet32_cifar", num_classes=100)
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 100])
"""
from collections import OrderedDict
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import create_classifier, to_2tuple
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from vsd.models._helpers import cifar_cfg, match_device_dtype

__all__ = ["CifarResNet", "BasicBlock", "PadShortcut"]

ShortcutType = Literal["A", "B"]


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the extra channels (no parameters)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_before = (out_chs - in_chs) // 2
        self.pad_after = out_chs - in_chs - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class BasicBlock(nn.Module):
    """Post-activation basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, shortcut: ShortcutType = "B") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        if stride == 1 and in_chs == out_chs:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_chs, out_chs, stride)
        elif shortcut == "B":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_chs)
            )
        else:
            raise ValueError(f"Unknown shortcut {shortcut!r}; expected 'A' (zero-pad) or 'B' (1x1 conv + BN).")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with a 3x3 stride-1 stem and no max-pool, for 32x32 (or smaller) images.

    Args:
        layers: BasicBlocks per stage.
        widths: Channels per stage; the stem outputs ``widths[0]``.
        strides: Stride of each stage's first block (default 1, then 2).
        shortcut: 'A' (zero-pad, no parameters) or 'B' (1x1 conv + BN) where the shape changes.
        kaiming_init: ``kaiming_normal_`` on conv and linear weights (LDAM/RIDE/MDCS); else PyTorch default.
        in_chans: Input channels.
        img_size: Nominal input size, recorded for timm's input config only (the network takes any size >= 8
            for ResNet-18, e.g. 16x16 digits or 32x32 CIFAR), so one ``img_size`` kwarg fits all vsd models.
        num_classes: Classifier outputs (0: no classifier, ``forward`` returns pooled features).
        global_pool: timm pool type ('avg', 'max', 'avgmax', ... or '' for none).
        drop_rate: Dropout before the classifier.

    Attributes: ``stem``, ``layers`` (stages), ``global_pool``, ``fc``, ``feature_info``; see the module docstring.
    """

    def __init__(
            self,
            layers: Sequence[int],
            widths: Sequence[int],
            strides: Optional[Sequence[int]] = None,
            shortcut: ShortcutType = "B",
            kaiming_init: bool = False,
            in_chans: int = 3,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            num_classes: int = 10,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} must have the same length.")
        strides = [1] + [2] * (len(layers) - 1) if strides is None else list(strides)
        self.in_chans = in_chans
        self.img_size = None if img_size is None else to_2tuple(img_size)
        self.num_classes = num_classes
        self.drop_rate = drop_rate

        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_chans, widths[0], kernel_size=3, stride=1, padding=1, bias=False),
            bn=nn.BatchNorm2d(widths[0]),
            act=nn.ReLU(),
        ))
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=widths[0], reduction=1, module="stem")]
        stages, in_chs, reduction = [], widths[0], 1
        for i, (depth, width, stride) in enumerate(zip(layers, widths, strides)):
            blocks = [BasicBlock(in_chs if j == 0 else width, width, stride if j == 0 else 1, shortcut)
                      for j in range(depth)]
            stages.append(nn.Sequential(*blocks))
            in_chs, reduction = width, reduction * stride
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"layers.{i}"))
        self.layers = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = widths[-1]
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        if kaiming_init:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight)

    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        """The classifier module (or its attribute name)."""
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (and optionally the pool type) with a fresh one."""
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        global_pool, fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.global_pool, self.fc = global_pool, match_device_dtype(fc, self)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last stage's feature map ``[B, num_features, h, w]``."""
        return self.layers(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (``pre_logits=True`` returns ``[B, num_features]``), dropout, classify."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stem and stage outputs, timm style (index 0 = stem, index k = ``layers[k - 1]``).

        Args:
            x: Input images ``[B, C, H, W]``.
            indices: None = all, int n = the last n, list = these (negative from the end).
            norm: Unused (no final norm); kept for timm's signature.
            stop_early: Stop after the last requested feature.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the list of intermediates.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"CifarResNet intermediates are NCHW only, got output_fmt={output_fmt!r}.")
        take_indices, max_index = feature_take_indices(len(self.layers) + 1, indices)
        intermediates = []
        x = self.stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        stages = self.layers[:max_index] if stop_early else self.layers
        for i, stage in enumerate(stages, start=1):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last requested feature (and the head if asked or if stages went)."""
        take_indices, max_index = feature_take_indices(len(self.layers) + 1, indices)
        prune_end = max_index < len(self.layers)
        if prune_end:
            self.layers = self.layers[:max_index]
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return cifar_cfg("stem.conv", "fc", **{"pool_size": (4, 4), **kwargs})


default_cfgs = generate_default_cfgs({
    "resnet18_cifar": _cfg(),
    "resnet32_cifar": _cfg(pool_size=(8, 8)),
})


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    num_feats = len(kwargs["layers"]) + 1
    return build_model_with_cfg(
        CifarResNet,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls="getter", out_indices=tuple(range(num_feats))),
        **kwargs,
    )


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-18 for CIFAR (kuangliu/pytorch-cifar): [2, 2, 2, 2] x 64..512, option-B shortcuts."""
    model_args = dict(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), shortcut="B", kaiming_init=False)
    return _create_cifar_resnet("resnet18_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 for CIFAR (LDAM-DRW / RIDE / MDCS): [5, 5, 5] x 16/32/64, option-A shortcuts, Kaiming init."""
    model_args = dict(layers=(5, 5, 5), widths=(16, 32, 64), shortcut="A", kaiming_init=True)
    return _create_cifar_resnet("resnet32_cifar", pretrained, **dict(model_args, **kwargs))
