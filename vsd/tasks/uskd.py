"""``method.name: uskd``: universal self-knowledge distillation (CE + USKD terms, no teacher).

The trainable module is :class:`USKDModel`: the classifier behind :class:`vsd.wrappers.MidFeatureWrapper` plus
the weak head of the criterion (:class:`vsd.losses.USKDLoss`, the same ``nn.Linear`` object), so that an
optimizer or DDP built on ``task.get_trainable_module()`` (as timm's ``train.py`` does) covers the weak head
too. The eval model is the plain classifier; the weak head is also saved in the task state, so checkpoints
that hold only the eval model (timm's) resume exactly. See :mod:`vsd.losses.uskd` for the math.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, NamedTuple, Optional, Union

import torch
from timm.utils.model import unwrap_model
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


class USKDOutput(NamedTuple):
    """Train-mode output of :class:`USKDModel`: final logits and the weak head's logits."""

    logits: torch.Tensor
    weak_logits: torch.Tensor


class USKDModel(nn.Module):
    """Classifier + weak head: train mode ``(logits, weak_head(mid_feature))``, eval mode the logits."""

    def __init__(self, model: nn.Module, weak_head: nn.Linear) -> None:
        super().__init__()
        self.wrapper = MidFeatureWrapper(model)
        self.weak_head = weak_head

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, USKDOutput]:
        out = self.wrapper(x)
        if not self.training:
            return out
        return USKDOutput(out.logits, self.weak_head(out.mid_feature))


class USKDTask(VSDTask):
    """``task(x, y) -> {'loss', 'output', 'ce', 'uskd_target', 'uskd_non_target', 'uskd_weak'}``."""

    def __init__(self, model: nn.Module, alpha: float = 1.0, beta: float = 0.1, mu: float = 0.005,
                 label_smoothing: float = 0.0, device: Optional[torch.device] = None) -> None:
        super().__init__(device=device, verbose=False)
        num_classes = int(getattr(model, "num_classes", 0))
        if num_classes < 2:
            raise ValueError(f"USKD needs a classifier with num_classes >= 2, got {num_classes}")
        mid_channels = MidFeatureWrapper(model).mid_channels
        self.criterion = USKDLoss(mid_channels, num_classes, alpha, beta, mu, label_smoothing)
        self.trainable_module = USKDModel(model, self.criterion.weak_head)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        output = self.trainable_module(input)
        terms = self.criterion.terms_from_logits(output.logits, output.weak_logits, target)
        return {**terms, "output": output.logits}

    def get_eval_model(self, module: Optional[nn.Module] = None, ema: bool = False) -> Optional[nn.Module]:
        """The plain classifier inside the trainable module (or inside its EMA copy when ``ema``)."""
        eval_model = super().get_eval_model(module, ema)
        inner = unwrap_model(eval_model) if eval_model is not None else None
        return inner.wrapper.model if isinstance(inner, USKDModel) else eval_model

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
