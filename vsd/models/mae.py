"""Masked autoencoders (MAE) on vsd's small Vision Transformers.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (https://arxiv.org/abs/2111.06377),
official code github.com/facebookresearch/mae. An image is cut into patches; a random ``mask_ratio`` of them
(default 0.75) is dropped per sample; the encoder (a plain timm ``VisionTransformer``) sees the CLS token and the
visible patches only; a light decoder gets the encoded visible tokens plus a shared mask token at every dropped
position and predicts the pixels of every patch; the loss (:mod:`vsd.losses.mae`) is the pixel MSE on the
masked patches.

:class:`MaskedAutoencoderViT` *is* a timm ``VisionTransformer`` with decoder modules added: its encoder keys are
those of the matching plain ViT (``mae_vit_tiny_patch4_32`` <-> ``vit_tiny_patch4_32``), its ``forward`` is the
plain classification forward (so an MAE checkpoint fine-tunes like any timm model and its eval forward returns
logits), and :meth:`MaskedAutoencoderViT.forward_mae` is the masked pre-training forward.

As in the official code the encoder and decoder position embeddings are fixed 2-D sin-cos tables (frozen during
pre-training); the encoder's table stays a ``pos_embed`` parameter, so fine-tuning may unfreeze it. The weights
are initialised as in the official ``initialize_weights`` (xavier-uniform linear layers and patch projection,
normal(0.02) tokens; see :meth:`MaskedAutoencoderViT._init_official`). :func:`patchify` / :func:`unpatchify`
work on plain tensors, without a model.

:func:`encode_visible` runs the patch embedding and the first blocks of *any* compatible timm ViT on a given
subset of patch tokens; the DMAE teacher (:mod:`vsd.wrappers.truncated_teacher`) uses it so that student and
teacher see exactly the same visible tokens.

Example:
    >>> import timm, torch, vsd
    >>> mae = timm.create_model("mae_vit_tiny_patch4_32", img_size=16, in_chans=1, num_classes=10, depth=2)
    >>> out = mae.forward_mae(torch.randn(2, 1, 16, 16), mask_ratio=0.75)
    >>> out.pred.shape, out.masking.ids_keep.shape
    (torch.Size([2, 16, 16]), torch.Size([2, 4]))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from vsd.models._helpers import cifar_cfg

__all__ = ["MaskedAutoencoderViT", "Masking", "MAEOutput", "random_masking", "check_mask_ratio",
           "encode_visible", "check_vit_compatible", "sincos_pos_embed_2d", "encoder_state_dict", "patchify",
           "unpatchify"]


# --------------------------------------------------------------------------------------------- masking
@dataclass
class Masking:
    """One random masking of a batch. ``mask`` is 1 for dropped patches and 0 for kept ones (as in MAE)."""

    ids_keep: torch.Tensor     # [B, K] indices of the visible patches (in the shuffled order)
    ids_restore: torch.Tensor  # [B, L] inverse permutation: puts the shuffled sequence back in place
    mask: torch.Tensor         # [B, L] float, 1 = masked

    @property
    def num_visible(self) -> int:
        return int(self.ids_keep.shape[1])


def check_mask_ratio(mask_ratio: float, num_patches: int) -> int:
    """Validate ``mask_ratio`` and return the number of kept patches ``int(L * (1 - mask_ratio))``."""
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) or not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be a number strictly between 0 and 1, got {mask_ratio!r}")
    keep = int(num_patches * (1.0 - mask_ratio))
    if keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} keeps no patch out of {num_patches}; "
                         f"use a ratio below {1.0 - 1.0 / num_patches:.4f}")
    return keep


def random_masking(batch: int, num_patches: int, mask_ratio: float, device: Optional[torch.device] = None,
                   generator: Optional[torch.Generator] = None) -> Masking:
    """Per-sample uniform random masking (MAE): argsort uniform noise, keep the first ``int(L*(1-r))``."""
    keep = check_mask_ratio(mask_ratio, num_patches)
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return Masking(ids_keep=ids_shuffle[:, :keep], ids_restore=ids_restore, mask=mask)


# --------------------------------------------------------------------------------------------- encoder
def check_vit_compatible(vit: nn.Module, role: str = "model") -> None:
    """Raise a readable error unless ``vit`` is a timm ViT with a CLS token and a position table covering it."""
    needed = ("patch_embed", "blocks", "norm", "cls_token", "pos_embed")
    missing = [name for name in needed if getattr(vit, name, None) is None]
    if missing:
        raise TypeError(f"{role} must be a timm VisionTransformer with a class token and a learned/fixed position "
                        f"embedding (missing: {', '.join(missing)}); got {type(vit).__name__}")
    if getattr(vit, "num_prefix_tokens", 1) != 1 or getattr(vit, "no_embed_class", False) \
            or getattr(vit, "dynamic_img_size", False):
        raise TypeError(f"{role}: only ViTs with exactly one prefix (CLS) token, position embedding over the CLS "
                        f"token and a fixed image size are supported")


def encode_visible(vit: nn.Module, x: torch.Tensor, ids_keep: Optional[torch.Tensor] = None,
                   collect: Sequence[int] = (), depth: Optional[int] = None,
                   final_norm: bool = True) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Run a timm ViT on the CLS token + the patches ``ids_keep`` (all patches when ``None``).

    Args:
        vit: A timm ``VisionTransformer`` (see :func:`check_vit_compatible`).
        x: Images [B, C, H, W].
        ids_keep: [B, K] patch indices to keep, or ``None``.
        collect: Block indices (0-based) whose outputs (before the final norm) are returned.
        depth: Run only ``blocks[:depth]`` (default: all); the final norm is applied only after the last block.
        final_norm: Apply the final norm when every block ran.

    Returns:
        ``(tokens, collected)``: the last tokens [B, 1 + K, D] and the collected block outputs, in ``collect``
        order.
    """
    num_blocks = len(vit.blocks)
    depth = num_blocks if depth is None else depth
    for index in collect:
        if not 0 <= index < depth:
            raise ValueError(f"block index {index} is out of range: the model runs {depth} of {num_blocks} blocks "
                             f"(valid indices 0..{depth - 1})")
    tokens = vit.patch_embed(x)
    if tokens.dim() == 4:  # NHWC patch embeddings
        tokens = tokens.flatten(1, 2)
    pos = vit.pos_embed
    tokens = tokens + pos[:, 1:, :]
    if ids_keep is not None:
        tokens = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    cls = (vit.cls_token + pos[:, :1, :]).expand(tokens.shape[0], -1, -1)
    tokens = vit.norm_pre(vit.pos_drop(torch.cat([cls, tokens], dim=1)))
    collected: List[Optional[torch.Tensor]] = [None] * len(collect)
    for index in range(depth):
        tokens = vit.blocks[index](tokens)
        for slot, want in enumerate(collect):
            if want == index:
                collected[slot] = tokens
    if final_norm and depth == num_blocks:
        tokens = vit.norm(tokens)
    return tokens, collected  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------- model
def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sin-cos position table [1, (1 +) H*W, dim] (MAE): half the channels encode the row, half the
    column; each half is ``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000^(-k / (dim / 4))``; the CLS
    row is zero."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64),
                                torch.arange(grid_w, dtype=torch.float64), indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode(rows), encode(cols)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=torch.float64), table], dim=0)
    return table.float().unsqueeze(0)


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, L, p*p*C]: patches row-major, pixels inside a patch ordered (row, col, channel), as the
    official MAE ``patchify``; usable without a model."""
    p = patch_size
    if imgs.dim() != 4 or imgs.shape[2] % p or imgs.shape[3] % p:
        raise ValueError(f"images must be [B, C, H, W] with H and W multiples of the patch size {p}, "
                         f"got {tuple(imgs.shape)}")
    b, c, h, w = imgs.shape
    x = imgs.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, in_chans: int,
               grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Inverse of :func:`patchify`: [B, L, p*p*C] -> [B, C, gh*p, gw*p]; ``grid`` = (gh, gw), square by default."""
    p, c = patch_size, in_chans
    b, length, dim = patches.shape
    if grid is None:
        side = int(round(length ** 0.5))
        grid = (side, side)
    gh, gw = grid
    if gh * gw != length or dim != p * p * c:
        raise ValueError(f"patches must be [B, {gh * gw}, {p * p * c}] for a {gh}x{gw} grid of {p}x{p}x{c} "
                         f"patches, got {tuple(patches.shape)}")
    x = patches.reshape(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, gh * p, gw * p)


@dataclass
class MAEOutput:
    """What :meth:`MaskedAutoencoderViT.forward_mae` returns."""

    pred: torch.Tensor              # [B, L, p*p*C] predicted pixels of every patch
    masking: Masking
    latent: torch.Tensor            # [B, 1 + K, D] encoder output (final-normed)
    intermediates: List[torch.Tensor]  # outputs of the requested encoder blocks (before the final norm)


class MaskedAutoencoderViT(VisionTransformer):
    """A timm ``VisionTransformer`` (the MAE encoder) plus MAE's light decoder.

    Args:
        decoder_embed_dim: Decoder width.
        decoder_depth: Number of decoder transformer blocks.
        decoder_num_heads: Decoder attention heads.
        **kwargs: ``VisionTransformer`` arguments (``img_size``, ``patch_size``, ``in_chans``, ``embed_dim``,
            ``depth``, ``num_heads``, ``num_classes``, ...).
    """

    def __init__(self, decoder_embed_dim: int = 128, decoder_depth: int = 2, decoder_num_heads: int = 4,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_vit_compatible(self, "MaskedAutoencoderViT")
        grid_h, grid_w = self.patch_embed.grid_size
        patch_h, patch_w = self.patch_embed.patch_size
        if patch_h != patch_w:
            raise ValueError(f"MAE needs square patches, got {patch_h}x{patch_w}")
        self.patch_size = patch_h
        self.num_patches = grid_h * grid_w
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed_2d(self.embed_dim, grid_h, grid_w))
        self.pos_embed.requires_grad_(False)

        self.decoder_embed = nn.Linear(self.embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer("decoder_pos_embed", sincos_pos_embed_2d(decoder_embed_dim, grid_h, grid_w),
                             persistent=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio=4.0, qkv_bias=True)
            for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.patch_size ** 2 * self.in_chans)
        self._init_official()

    def _init_official(self) -> None:
        """The official MAE initialisation (``initialize_weights``): every ``nn.Linear`` (encoder, decoder, head)
        xavier-uniform with zero bias, the patch-embedding convolution xavier-uniform on its flattened
        ``[D, C*p*p]`` view (like a linear layer), LayerNorm weight 1 / bias 0, CLS and mask tokens normal(0.02);
        the position embeddings stay the fixed sin-cos tables."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        w = self.patch_embed.proj.weight
        with torch.no_grad():
            w.copy_(nn.init.xavier_uniform_(torch.empty(w.shape[0], w[0].numel())).view_as(w))
        if self.patch_embed.proj.bias is not None:
            nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set:
        return super().no_weight_decay() | {"mask_token"}

    # ----------------------------------------------------------------------------------------- pixels
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, L, p*p*C] (see the module-level :func:`patchify`), shape-checked for this model."""
        p = self.patch_size
        b, c, h, w = imgs.shape
        if c != self.in_chans or h % p or w % p or (h // p) * (w // p) != self.num_patches:
            raise ValueError(f"images must be [B, {self.in_chans}, H, W] with {self.num_patches} patches of "
                             f"{p}x{p}, got {tuple(imgs.shape)}")
        return patchify(imgs, p)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify`."""
        return unpatchify(patches, self.patch_size, self.in_chans, tuple(self.patch_embed.grid_size))

    # ----------------------------------------------------------------------------------------- forward
    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Decode [B, 1 + K, D] encoder tokens into pixel predictions [B, L, p*p*C] for every patch."""
        x = self.decoder_embed(latent)
        batch, length = ids_restore.shape
        fill = self.mask_token.expand(batch, length - (x.shape[1] - 1), -1)
        patches = torch.cat([x[:, 1:, :], fill], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1, :], patches], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def forward_mae(self, imgs: torch.Tensor, mask_ratio: float = 0.75, masking: Optional[Masking] = None,
                    collect: Sequence[int] = (), generator: Optional[torch.Generator] = None) -> MAEOutput:
        """Masked forward: mask (or use ``masking``), encode the visible patches, decode every patch."""
        if masking is None:
            masking = random_masking(imgs.shape[0], self.num_patches, mask_ratio, imgs.device, generator)
        latent, collected = encode_visible(self, imgs, masking.ids_keep, collect=collect)
        pred = self.forward_decoder(latent, masking.ids_restore)
        return MAEOutput(pred=pred, masking=masking, latent=latent, intermediates=collected)


def encoder_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drop the decoder entries of an MAE state dict (what a plain ViT of the same size loads)."""
    return {k: v for k, v in state.items() if not (k.startswith("decoder_") or k == "mask_token")}


# --------------------------------------------------------------------------------------------- registry
def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return cifar_cfg("patch_embed.proj", "head", interpolation="bicubic", fixed_input_size=True,
                     license="apache-2.0", **kwargs)


default_cfgs = generate_default_cfgs({"mae_vit_tiny_patch4_32": _cfg(), "mae_vit_small_patch4_32": _cfg()})


def _create_mae(variant: str, pretrained: bool = False, **kwargs: Any) -> MaskedAutoencoderViT:
    return build_model_with_cfg(MaskedAutoencoderViT, variant, pretrained, **kwargs)


@register_model
def mae_vit_tiny_patch4_32(pretrained: bool = False, **kwargs: Any) -> MaskedAutoencoderViT:
    """MAE with the ``vit_tiny_patch4_32`` encoder (embed 192, depth 12, 3 heads) and a 128-wide, 2-block
    decoder (4 heads)."""
    args = dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0,
                decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)
    return _create_mae("mae_vit_tiny_patch4_32", pretrained, **dict(args, **kwargs))


@register_model
def mae_vit_small_patch4_32(pretrained: bool = False, **kwargs: Any) -> MaskedAutoencoderViT:
    """MAE with a ViT-Small/4 encoder (embed 384, depth 12, 6 heads): the larger DMAE teacher for the tiny
    student; 128-wide, 2-block decoder."""
    args = dict(img_size=32, patch_size=4, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0,
                decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)
    return _create_mae("mae_vit_small_patch4_32", pretrained, **dict(args, **kwargs))
