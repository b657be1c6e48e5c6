"""The cross-entropy baseline (``method.name: ce``): timm's own :class:`ClassificationTask`."""
from __future__ import annotations

from timm.task import ClassificationTask
from torch import nn

from vsd.config import Config
from vsd.losses.checks import check_logits_target
from vsd.tasks.base import TaskContext, VSDTask
from vsd.tasks.registry import register_task


class CETask(ClassificationTask, VSDTask):
    """Plain cross-entropy (with optional label smoothing) that validates targets at the boundary."""

    def forward(self, input, target):  # type: ignore[override]
        output = self.trainable_module(input)
        check_logits_target(output, target)
        return {"loss": self.criterion(output, target), "output": output}


@register_task("ce")
def build_ce(model: nn.Module, cfg: Config, ctx: TaskContext) -> CETask:
    """Cross-entropy baseline; ``train.label_smoothing`` sets timm's label smoothing."""
    return CETask(model, criterion=nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing),
                  device=ctx.device, verbose=False)
