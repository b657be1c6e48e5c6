"""DMAE: MAE pre-training distilled from a frozen teacher's intermediate features (``method.name: dmae``).

Bai et al., "Masked Autoencoders Enable Efficient Knowledge Distillers", CVPR 2023, official code
github.com/UCSC-VLAA/DMAE. One random masking per step is shared: the student MAE and the teacher see the SAME
visible patches. ``loss = MAE pixel loss + feature_weight * sum_k mean|norm(T_k) - norm(W_k S_k)|``
(:mod:`vsd.losses.dmae`) at ``student_blocks`` / ``teacher_blocks`` (0-based, block outputs before the final
norm). The teacher (``teacher_model``, e.g. a larger vsd MAE trained by a recipe, or any timm ViT) is loaded from
the local ``teacher_checkpoint`` and runs only up to its deepest aligned block
(:class:`vsd.wrappers.truncated_teacher.TruncatedTeacher`).

Defaults follow the official ViT-B <- ViT-L recipe: student block 8 (of 12), teacher block at the same relative
depth (``teacher_blocks: null`` maps block ``b`` of a depth-``d_s`` student to ``round((b+1) d_t / d_s) - 1``,
i.e. 17 of 24), L1 on L2-normalized features, ``Linear`` projection, weight 1, mask ratio 0.75, raw-pixel
targets (the official ``norm_pix_loss`` default is off). The official code's other projection heads
(``projection_head: mlp-1layer | mlp-2layer``) and its L2 distance (``distance: l2``) are selectable.
Deliberate difference: the official code also runs the teacher's remaining blocks and its decoder every step
(unused by the loss with its default ``original_img`` target); here they are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from vsd.config import Config
from vsd.losses.dmae import DMAEFeatureLoss
from vsd.losses.nkd import at_least_float32
from vsd.models import create_model
from vsd.tasks.base import TaskContext
from vsd.tasks.mae import MAEConfig, MAETask
from vsd.tasks.registry import register_task
from vsd.wrappers.truncated_teacher import TruncatedTeacher, load_teacher_weights


@dataclass
class DMAEConfig(MAEConfig):
    """DMAE (see module docstring). ``teacher_checkpoint`` is required."""

    name: str = "dmae"
    norm_pix_loss: bool = False
    teacher_model: str = "mae_vit_small_patch4_32"
    teacher_kwargs: Dict[str, Any] = field(default_factory=dict)
    teacher_checkpoint: str = ""
    student_blocks: List[int] = field(default_factory=lambda: [8])
    teacher_blocks: Optional[List[int]] = None
    projection: bool = True
    projection_head: str = "fc-1layer"
    distance: str = "l1"
    feature_weight: float = 1.0


def align_blocks(student_blocks: List[int], student_depth: int, teacher_depth: int) -> List[int]:
    """Teacher blocks at the same relative depth: ``round((b + 1) * d_t / d_s) - 1``."""
    return [max(0, round((b + 1) * teacher_depth / student_depth) - 1) for b in student_blocks]


class _Student(nn.Module):
    """What the optimizer trains: the student MAE and the feature projections."""

    def __init__(self, mae: nn.Module, criterion: DMAEFeatureLoss) -> None:
        super().__init__()
        self.mae = mae
        self.criterion = criterion


class DMAETask(MAETask):
    """Student MAE + frozen, truncated teacher on the same visible tokens."""

    def __init__(self, model: nn.Module, teacher: nn.Module, cfg: DMAEConfig, epochs: int,
                 device: Optional[torch.device] = None) -> None:
        super().__init__(model, cfg, epochs, device)
        depth = len(self.mae.blocks)
        bad = [b for b in cfg.student_blocks if not 0 <= b < depth]
        if not cfg.student_blocks or bad:
            raise ValueError(f"method.student_blocks {cfg.student_blocks} must be non-empty block indices below the "
                             f"student's depth {depth} (valid 0..{depth - 1})")
        teacher_blocks = cfg.teacher_blocks if cfg.teacher_blocks is not None else \
            align_blocks(cfg.student_blocks, depth, len(teacher.blocks))
        if len(teacher_blocks) != len(cfg.student_blocks):
            raise ValueError(f"method.teacher_blocks {teacher_blocks} must pair one-to-one with method.student_blocks "
                             f"{cfg.student_blocks}")
        self.teacher = TruncatedTeacher(teacher, teacher_blocks)
        self.student_blocks = list(cfg.student_blocks)
        criterion = DMAEFeatureLoss(self.mae.embed_dim, teacher.embed_dim, len(teacher_blocks), cfg.projection,
                                    cfg.projection_head, cfg.distance)
        self.trainable_module = _Student(self.mae, criterion)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        pixel, out = self.masked_step(self.mae, input, collect=self.student_blocks)
        teacher_feats = self.teacher(input, out.masking.ids_keep)
        with torch.autocast(input.device.type, enabled=False):  # projection + normalised L1 in float32
            feature, _ = self.trainable_module.criterion(at_least_float32(*out.intermediates),
                                                         at_least_float32(*teacher_feats))
        loss = pixel + self.cfg.feature_weight * feature
        return {"loss": loss, "output": out.pred, "pixel": pixel.detach(), "feature": feature.detach()}


@register_task("dmae", DMAEConfig)
def build_dmae(model: nn.Module, cfg: Config, ctx: TaskContext) -> DMAETask:
    """DMAE with the teacher ``method.teacher_model`` loaded from ``method.teacher_checkpoint``."""
    mcfg: DMAEConfig = cfg.method  # type: ignore[assignment]
    if not mcfg.teacher_checkpoint:
        raise ValueError("method dmae needs method.teacher_checkpoint: a local checkpoint of method.teacher_model "
                         "(e.g. the model.safetensors of an MAE run, see zoo/dmae/README.md)")
    kwargs = dict(num_classes=ctx.num_classes, in_chans=ctx.in_chans, img_size=ctx.image_size)
    kwargs.update(mcfg.teacher_kwargs)
    teacher = create_model(mcfg.teacher_model, **kwargs)
    load_teacher_weights(teacher, mcfg.teacher_checkpoint)
    return DMAETask(model, teacher.to(ctx.device), mcfg, ctx.epochs, ctx.device)
