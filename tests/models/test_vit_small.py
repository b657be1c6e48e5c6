"""vit_tiny_patch4_32: timm's VisionTransformer with a vsd config; CLS after block k for MAE / probes."""
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

import vsd  # noqa: F401


def test_defaults() -> None:
    model = timm.create_model("vit_tiny_patch4_32")
    assert isinstance(model, VisionTransformer)
    assert model.embed_dim == model.num_features == 192 and len(model.blocks) == 12
    assert model.blocks[0].attn.num_heads == 3 and model.patch_embed.grid_size == (8, 8)
    assert model.pos_embed.shape == (1, 65, 192) and model.num_prefix_tokens == 1


def test_digits_and_cls_after_block() -> None:
    model = timm.create_model("vit_tiny_patch4_32", img_size=16, in_chans=1, depth=3, num_classes=10).eval()
    x = torch.randn(2, 1, 16, 16)
    assert model(x).shape == (2, 10)
    k = 1
    patches, prefix = model.forward_intermediates(
        x, indices=[k], output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True
    )[0]
    assert patches.shape == (2, 16, 192) and prefix.shape == (2, 1, 192)
    tokens = model.norm_pre(model._pos_embed(model.patch_embed(x)))
    manual = model.blocks[: k + 1](tokens)
    assert torch.allclose(prefix[:, 0], manual[:, 0], atol=1e-5)


def test_last_intermediate_matches_forward_features() -> None:
    model = timm.create_model("vit_tiny_patch4_32", depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    patches, prefix = model.forward_intermediates(
        x, indices=1, norm=True, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True
    )[0]
    assert torch.allclose(torch.cat([prefix, patches], dim=1), model.forward_features(x), atol=1e-5)
    pre = model.forward_head(model.forward_features(x), pre_logits=True)
    assert pre.shape == (2, 192)
