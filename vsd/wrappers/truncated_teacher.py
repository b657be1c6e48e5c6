"""A frozen ViT teacher that runs only up to the deepest block a feature loss reads.

DMAE's official code runs the whole teacher encoder (and its decoder) every step although the loss reads one
intermediate block; :class:`TruncatedTeacher` stops after ``max(blocks)``, e.g. 9 of 12 blocks for DMAE's
default, and never builds a graph (frozen, eval mode, ``no_grad``). Given the same ``ids_keep`` the student
uses, it sees exactly the same visible tokens.

:func:`load_teacher_weights` fills a teacher from a local checkpoint (a vsd checkpoint, a ``.safetensors`` file,
or a PyTorch file such as timm's ``model_best.pth.tar``, read with ``torch.load(weights_only=True)``; see
:mod:`vsd.models.weights`) and lists every mismatched key.

Example:
    >>> import timm, torch, vsd
    >>> vit = timm.create_model("vit_tiny_patch4_32", img_size=16, in_chans=1, depth=4)
    >>> teacher = TruncatedTeacher(vit, blocks=[1])
    >>> [f.shape for f in teacher(torch.randn(2, 1, 16, 16))]
    [torch.Size([2, 17, 192])]
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from vsd.models.mae import check_vit_compatible, encode_visible
from vsd.models.weights import read_state_dict

#: State-dict entries a feature teacher never reads (classifier head, MAE decoder).
_UNUSED_PREFIXES = ("head.", "fc_norm.", "decoder_", "mask_token")


class TruncatedTeacher(nn.Module):
    """Frozen ViT returning the token outputs of ``blocks`` (before the final norm), running no further block.

    Args:
        vit: A timm ``VisionTransformer`` (or vsd MAE).
        blocks: 0-based block indices to return, each < ``len(vit.blocks)``.
    """

    def __init__(self, vit: nn.Module, blocks: Sequence[int]) -> None:
        super().__init__()
        check_vit_compatible(vit, "teacher")
        depth = len(vit.blocks)
        if not blocks:
            raise ValueError("TruncatedTeacher needs at least one block index")
        bad = [b for b in blocks if not 0 <= int(b) < depth]
        if bad:
            raise ValueError(f"teacher block index {bad} is beyond the teacher's depth {depth} "
                             f"(valid indices 0..{depth - 1})")
        self.vit = vit
        self.blocks = [int(b) for b in blocks]
        self.run_depth = max(self.blocks) + 1
        self.vit.requires_grad_(False)
        self.vit.eval()

    def train(self, mode: bool = True) -> "TruncatedTeacher":
        """The teacher always stays in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, ids_keep: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """Token outputs [B, 1 + K, D] of the requested blocks, for the patches ``ids_keep`` (all if ``None``)."""
        _, collected = encode_visible(self.vit, x, ids_keep, collect=self.blocks, depth=self.run_depth)
        return collected


def load_teacher_weights(model: nn.Module, path: Union[str, Path], role: str = "teacher", ema: bool = False) -> None:
    """Load ``path`` (any format of :func:`vsd.models.weights.read_state_dict`; its EMA weights with ``ema``) into
    ``model``; entries the teacher never reads (head, decoder) may be absent or differ.

    Raises:
        ValueError: listing every missing key and every key whose shape differs from the model's.
    """
    state = read_state_dict(path, ema)
    own = model.state_dict()
    needed = {k: v for k, v in own.items() if not k.startswith(_UNUSED_PREFIXES)}
    missing = sorted(k for k in needed if k not in state)
    mismatched = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                        for k, v in needed.items() if k in state and tuple(state[k].shape) != tuple(v.shape))
    if missing or mismatched:
        lines = [f"{role} checkpoint {str(path)!r} does not match the {role} model {type(model).__name__}:"]
        if mismatched:
            lines.append("  mismatched shapes: " + "; ".join(mismatched))
        if missing:
            lines.append("  missing keys: " + ", ".join(missing))
        raise ValueError("\n".join(lines))
    usable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(usable, strict=False)
