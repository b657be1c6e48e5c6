"""Small Vision Transformers for 32-pixel (and smaller) images.

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR 2021
(https://arxiv.org/abs/2010.11929). ``vit_tiny_patch4_32`` is ViT-Tiny (embed 192, depth 12, 3 heads, MLP
ratio 4, CLS token, learned position embedding) with 4x4 patches: a 32x32 image gives an 8x8 grid (64 patch
tokens + CLS), the 16x16 ``digits`` a 4x4 grid. It *is* timm's ``VisionTransformer`` (built with timm's
builder and a vsd ``pretrained_cfg``), so every timm ViT API works; ``img_size``, ``in_chans``,
``num_classes`` and any other ``VisionTransformer`` argument (e.g. ``depth=6``, ``drop_path_rate=0.1``)
can be passed to ``timm.create_model``.

Attributes others build on (timm's names): ``patch_embed`` (``patch_embed.proj`` is the patch conv,
``patch_embed.grid_size`` the token grid), ``cls_token`` [1, 1, D], ``pos_embed`` [1, 1 + N, D] (CLS first),
``_pos_embed(x)`` (adds CLS and position embedding), ``blocks`` (``nn.Sequential`` of ``depth`` transformer
blocks), ``norm`` (final LayerNorm), ``head``; ``num_prefix_tokens == 1``, ``embed_dim == num_features``.

Reading a mid-level feature: the CLS token after block ``k`` (0-based) is::

    tokens = model.forward_intermediates(x, indices=[k], output_fmt="NLC", return_prefix_tokens=True,
                                         intermediates_only=True)[0]   # (patch tokens [B, N, D], prefix [B, 1, D])
    cls_k = tokens[1][:, 0]                                              # [B, D]

(pass ``norm=True`` to apply the final LayerNorm); with the default ``output_fmt="NCHW"`` the intermediates are
patch-token maps ``[B, D, H/4, W/4]``. ``forward_features`` returns the normed tokens ``[B, 1 + N, D]`` and
``forward_head(..., pre_logits=True)`` the CLS token ``[B, D]``.

Example:
    >>> import timm, torch, vsd
    >>> model = timm.create_model("vit_tiny_patch4_32", img_size=16, in_chans=1, num_classes=10)
    >>> model(torch.randn(2, 1, 16, 16)).shape
    torch.Size([2, 10])
"""
from typing import Any, Dict, List

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from vsd.models._helpers import cifar_cfg

__all__: List[str] = []  # register_model appends the model names


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return cifar_cfg("patch_embed.proj", "head", interpolation="bicubic", fixed_input_size=True,
                     license="apache-2.0", **kwargs)


default_cfgs = generate_default_cfgs({"vit_tiny_patch4_32": _cfg()})


def _create_vit(variant: str, pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        VisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


@register_model
def vit_tiny_patch4_32(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Tiny/4 for 32x32 images: embed 192, depth 12, 3 heads, MLP ratio 4, CLS token, learned pos-embed."""
    model_args = dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0)
    return _create_vit("vit_tiny_patch4_32", pretrained, **dict(model_args, **kwargs))
