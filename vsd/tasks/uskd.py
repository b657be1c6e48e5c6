"""``method.name: uskd``: universal self-knowledge distillation (CE + USKD terms, no teacher).

The model is wrapped by :class:`vsd.wrappers.MidFeatureWrapper`; the weak head lives in the criterion
(:class:`vsd.losses.USKDLoss`), is trained with the model, and is saved in the checkpoint's task state. The
eval model and the checkpoint's ``model`` entry are the plain classifier. See :mod:`vsd.losses.uskd`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import nn

from vsd.config import Config, MethodConfig
from vsd.losses.uskd import USKDLoss
from vsd.tasks.base import TaskContext, VSDTask
from vsd.tasks.registry import register_task
from vsd.wrappers.mid_feature import MidFeatureWrapper


@dataclass
class USKDConfig(MethodConfig):
    """USKD weights (defaults: the official ImageNet ones; CIFAR-100 uses alpha 0.1, beta 0.1, mu 0.1)."""

    name: str = "uskd"
    alpha: float = 1.0
    beta: float = 0.1
    mu: float = 0.005


class USKDTask(VSDTask):
    """``task(x, y) -> {'loss', 'output', 'ce', 'uskd_target', 'uskd_non_target', 'uskd_weak'}``."""

    def __init__(self, model: nn.Module, alpha: float = 1.0, beta: float = 0.1, mu: float = 0.005,
                 label_smoothing: float = 0.0, device: Optional[torch.device] = None) -> None:
        super().__init__(device=device, verbose=False)
        self.wrapper = MidFeatureWrapper(model)
        self.trainable_module = model
        num_classes = int(getattr(model, "num_classes", 0))
        if num_classes < 2:
            raise ValueError(f"USKD needs a classifier with num_classes >= 2, got {num_classes}")
        self.criterion = USKDLoss(self.wrapper.mid_channels, num_classes, alpha, beta, mu, label_smoothing)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        output = self.wrapper(input)
        return {**self.criterion.terms(output, target), "output": output.logits}

    def get_task_state(self, module: Any = None, ema: bool = False) -> Dict[str, Any]:
        return {"weak_head": {k: v.detach().clone() for k, v in self.criterion.weak_head.state_dict().items()}}

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Any = None,
                        ema: bool = False) -> None:
        if not state:
            if strict:
                raise ValueError("USKD task state is empty: the checkpoint holds no weak-head weights")
            return
        self.criterion.weak_head.load_state_dict(state["weak_head"])


@register_task("uskd", USKDConfig)
def build_uskd(model: nn.Module, cfg: Config, ctx: TaskContext) -> USKDTask:
    """USKD task around ``model``; CE uses ``train.label_smoothing``."""
    m = cfg.method
    return USKDTask(model, m.alpha, m.beta, m.mu, cfg.train.label_smoothing, device=ctx.device).to(ctx.device)
