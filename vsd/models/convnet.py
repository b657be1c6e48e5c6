"""ConvNet-D{n}: the standard backbone of dataset distillation.

The network of Dataset Condensation (Zhao et al., "Dataset Condensation with Gradient Matching", ICLR 2021,
https://arxiv.org/abs/2006.05929) reused by Matching Training Trajectories (Cazenavette et al., "Dataset
Distillation by Matching Training Trajectories", CVPR 2022, https://arxiv.org/abs/2203.11932) and most later
dataset-distillation papers. It follows the official ``ConvNet`` of VICO-UoE/DatasetCondensation and
GeorgeCazenavette/mtt-distillation (``networks.py``):

* ``depth`` blocks of ``Conv3x3(padding=1, bias) -> norm -> act -> pool(2)``, all ``net_width`` channels wide;
* the classifier is one ``Linear`` on the **flattened** final feature map, so ``num_features = net_width * h * w``
  depends on ``img_size`` (32 px and depth 3 give ``128 * 4 * 4 = 2048``);
* default setting (``get_default_convnet_setting`` in the official code): width 128, depth 3, ReLU,
  instance norm, average pooling;
* the parameter order (conv weight, conv bias, norm weight, norm bias per block, then classifier weight and
  bias) equals the official one, so flattened parameter vectors (MTT expert trajectories) line up.

Deliberate differences from the official code:

* activations are not in-place, so the model works under ``torch.func.functional_call`` / ``torch.func.vmap``
  (the official code uses ``ReLU(inplace=True)`` and a custom ``ReparamModule`` instead);
* the official 1-channel rule (first conv padded by 3 and the size taken as 32, meant for 28x28 MNIST) is
  applied only to 1-channel 28x28 inputs, the one case where the official code runs; any other 1-channel input
  (e.g. the 16x16 ``digits``) uses padding 1 like the 3-channel network.

Reading a mid-level feature: ``model.blocks[i]`` is block ``i`` (``conv``, ``norm``, ``act``, ``pool``), and
``model.forward_intermediates(x, indices=[i], intermediates_only=True)[0]`` is its output, ``[B, net_width, h_i,
w_i]``; the last block's output equals ``model.forward_features(x)``.

Example:
    >>> import timm, torch, vsd
    >>> model = timm.create_model("convnet_d3", num_classes=10)
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> model.forward_head(model.forward_features(torch.randn(2, 3, 32, 32)), pre_logits=True).shape
    torch.Size([2, 2048])
"""
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

import torch
from torch import nn

from timm.layers import to_2tuple
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from vsd.models._helpers import cifar_cfg, match_device_dtype

__all__ = ["ConvNet", "ConvNetBlock"]

NormName = Literal["instancenorm", "batchnorm", "layernorm", "groupnorm", "none"]
ActName = Literal["relu", "leakyrelu", "sigmoid"]
PoolName = Literal["avgpooling", "maxpooling", "none"]


def _make_norm(net_norm: str, width: int, size: Tuple[int, int]) -> nn.Module:
    """The official ``_get_normlayer``: ``size`` is the conv output's (H, W), used by 'layernorm' only."""
    if net_norm == "instancenorm":
        return nn.GroupNorm(width, width, affine=True)
    if net_norm == "batchnorm":
        return nn.BatchNorm2d(width, affine=True)
    if net_norm == "layernorm":
        # statistics over (C, H, W) like GroupNorm(1, C), but an affine weight per element, as official
        return nn.LayerNorm((width, *size), elementwise_affine=True)
    if net_norm == "groupnorm":
        return nn.GroupNorm(4, width, affine=True)
    if net_norm == "none":
        return nn.Identity()
    raise ValueError(
        f"Unknown net_norm {net_norm!r}; expected one of instancenorm, batchnorm, layernorm, groupnorm, none."
    )


def _make_act(net_act: str) -> nn.Module:
    if net_act == "relu":
        return nn.ReLU()
    if net_act == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    if net_act == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"Unknown net_act {net_act!r}; expected one of relu, leakyrelu, sigmoid.")


def _make_pool(net_pooling: str) -> nn.Module:
    if net_pooling == "avgpooling":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if net_pooling == "maxpooling":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if net_pooling == "none":
        return nn.Identity()
    raise ValueError(f"Unknown net_pooling {net_pooling!r}; expected one of avgpooling, maxpooling, none.")


class ConvNetBlock(nn.Module):
    """``Conv3x3(bias) -> norm -> act -> pool``; ``out_size`` is the (H, W) this block outputs.

    Args:
        in_chans: Input channels.
        width: Output channels.
        in_size: Input (H, W); needed because the official 'layernorm' has an affine weight per position.
        net_norm, net_act, net_pooling: As in :class:`ConvNet`.
        padding: Padding of the 3x3 convolution (1, or 3 for the official 28x28 1-channel rule).
    """

    def __init__(
            self,
            in_chans: int,
            width: int,
            in_size: Tuple[int, int],
            net_norm: NormName = "instancenorm",
            net_act: ActName = "relu",
            net_pooling: PoolName = "avgpooling",
            padding: int = 1,
    ) -> None:
        super().__init__()
        conv_size = (in_size[0] + 2 * padding - 2, in_size[1] + 2 * padding - 2)
        self.conv = nn.Conv2d(in_chans, width, kernel_size=3, padding=padding, bias=True)
        self.norm = _make_norm(net_norm, width, conv_size)
        self.act = _make_act(net_act)
        self.pool = _make_pool(net_pooling)
        self.out_size = conv_size if net_pooling == "none" else (conv_size[0] // 2, conv_size[1] // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class ConvNet(nn.Module):
    """The dataset-distillation ConvNet (DC / DSA / DM / MTT); see the module docstring.

    Args:
        depth: Number of conv blocks (``convnet_d1`` .. ``convnet_d5``; 3 is the standard ConvNet).
        net_width: Channels of every block (128 in the papers).
        net_norm: 'instancenorm' (``GroupNorm(width, width)``, default), 'batchnorm', 'layernorm'
            (``LayerNorm((C, H, W))``), 'groupnorm' (``GroupNorm(4, width)``) or 'none'.
        net_act: 'relu' (default), 'leakyrelu' (slope 0.01) or 'sigmoid'.
        net_pooling: 'avgpooling' (default), 'maxpooling' or 'none' (2x2, stride 2).
        img_size: Input size (int or (H, W)); it fixes the classifier's input width.
        in_chans: Input channels.
        num_classes: Classifier outputs; 0 gives ``nn.Identity`` (``forward`` returns the flattened feature).

    Attributes:
        blocks: ``nn.Sequential`` of :class:`ConvNetBlock`; block ``i`` outputs ``feature_info[i]``.
        classifier: ``nn.Linear(num_features, num_classes)`` on the flattened feature map.
        num_features: ``net_width * h * w`` of the final map; ``feature_size``: that map's (h, w).

    Notes:
        Pure functional forward (no in-place ops, no state written in ``forward`` except BatchNorm's running
        statistics), so ``torch.func.functional_call`` / ``vmap`` work with every ``net_norm`` but
        'batchnorm' in train mode (use ``torch.func.replace_all_batch_norm_modules_`` for that case).
    """

    def __init__(
            self,
            depth: int = 3,
            net_width: int = 128,
            net_norm: NormName = "instancenorm",
            net_act: ActName = "relu",
            net_pooling: PoolName = "avgpooling",
            img_size: Union[int, Tuple[int, int]] = 32,
            in_chans: int = 3,
            num_classes: int = 10,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"ConvNet depth must be >= 1, got {depth}.")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.img_size = to_2tuple(img_size)
        # official rule for 1-channel 28x28 (MNIST-like): pad the first conv by 3, i.e. work at 32x32
        first_padding = 3 if in_chans == 1 and self.img_size == (28, 28) else 1

        blocks: List[ConvNetBlock] = []
        self.feature_info: List[Dict[str, Any]] = []
        size, chans, reduction = self.img_size, in_chans, 1
        for i in range(depth):
            block = ConvNetBlock(
                chans, net_width, size, net_norm, net_act, net_pooling, padding=first_padding if i == 0 else 1
            )
            if min(block.out_size) < 1:
                raise ValueError(
                    f"img_size {self.img_size} is too small for a depth-{depth} ConvNet with {net_pooling!r}: "
                    f"block {i} would output {block.out_size}; use a larger img_size or a smaller depth."
                )
            blocks.append(block)
            size, chans = block.out_size, net_width
            reduction *= 1 if net_pooling == "none" else 2
            self.feature_info.append(dict(num_chs=net_width, reduction=reduction, module=f"blocks.{i}"))
        self.blocks = nn.Sequential(*blocks)
        self.feature_size: Tuple[int, int] = size
        self.num_features = self.head_hidden_size = net_width * size[0] * size[1]
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        """The classifier module (or its attribute name)."""
        return "classifier" if name_only else self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier with a fresh ``Linear(num_features, num_classes)`` (Identity if 0).

        ``global_pool`` exists for timm compatibility; this network flattens instead of pooling, so only
        ``None`` or ``''`` are accepted.
        """
        if global_pool not in (None, ""):
            raise ValueError(f"ConvNet flattens its feature map and has no global pool; got {global_pool!r}.")
        self.num_classes = num_classes
        classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.classifier = match_device_dtype(classifier, self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map ``[B, net_width, h, w]``."""
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Flatten the feature map (``pre_logits=True`` returns ``[B, num_features]``) and classify."""
        x = x.flatten(1)
        return x if pre_logits else self.classifier(x)

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
        """Block outputs, timm style.

        Args:
            x: Input images ``[B, C, H, W]``.
            indices: Blocks to return: None = all, int n = the last n, list = these (negative from the end).
            norm: Unused (the ConvNet has no final norm); kept for timm's signature.
            stop_early: Stop after the last requested block (then the returned final map is that block's).
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the list of intermediates.

        Returns:
            ``(final_feature_map, [block outputs])`` or just the list.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"ConvNet intermediates are NCHW only, got output_fmt={output_fmt!r}.")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            x = block(x)
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
        """Drop the blocks after the last requested one; the flattened-feature classifier goes with them."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        prune_end = max_index < len(self.blocks) - 1
        if prune_end:
            self.blocks = self.blocks[: max_index + 1]
            self.feature_size = self.blocks[-1].out_size
            chans = self.feature_info[max_index]["num_chs"]
            self.num_features = self.head_hidden_size = chans * self.feature_size[0] * self.feature_size[1]
        if prune_head or prune_end:
            self.reset_classifier(0)
        return take_indices


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return cifar_cfg("blocks.0.conv", "classifier", fixed_input_size=True, **kwargs)


default_cfgs = generate_default_cfgs({f"convnet_d{d}": _cfg() for d in range(1, 6)})


def _create_convnet(variant: str, depth: int, pretrained: bool = False, **kwargs: Any) -> ConvNet:
    return build_model_with_cfg(
        ConvNet,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls="getter", out_indices=tuple(range(depth))),
        depth=depth,
        **kwargs,
    )


@register_model
def convnet_d1(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    """ConvNet-D1 (one conv block)."""
    return _create_convnet("convnet_d1", 1, pretrained, **kwargs)


@register_model
def convnet_d2(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    """ConvNet-D2 (two conv blocks)."""
    return _create_convnet("convnet_d2", 2, pretrained, **kwargs)


@register_model
def convnet_d3(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    """ConvNet-D3: the standard ConvNet of DC / DSA / DM / MTT (32x32 -> 128x4x4 -> Linear)."""
    return _create_convnet("convnet_d3", 3, pretrained, **kwargs)


@register_model
def convnet_d4(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    """ConvNet-D4 (used for 64x64 inputs, e.g. Tiny ImageNet, in MTT)."""
    return _create_convnet("convnet_d4", 4, pretrained, **kwargs)


@register_model
def convnet_d5(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    """ConvNet-D5 (used for 128x128 inputs, e.g. ImageNette subsets, in MTT)."""
    return _create_convnet("convnet_d5", 5, pretrained, **kwargs)
