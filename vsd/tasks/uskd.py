"""``method.name: uskd``: universal self-knowledge distillation (CE + USKD terms, no teacher).

The trainable module is :class:`vsd.wrappers.USKDWrapper`: the classifier plus the weak head on its mid-level
feature, so that an optimizer, DDP or EMA built on ``task.get_trainable_module()`` (as timm's ``train.py`` does)
covers the weak head too, and vsd's checkpoints (the trainable module) hold it. The eval model is the plain
classifier; the weak head is also saved in the task state, so checkpoints that hold only the eval model
(timm's ``state_dict`` / ``state_dict_ema`` with ``task_state`` / ``task_state_ema``) resume exactly. See
:mod:`vsd.losses.uskd` for the math.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from timm.utils.model import unwrap_model
from torch import nn

from vsd.config import Config, MethodConfig
from vsd.losses.uskd import USKDLoss
from vsd.tasks.base import TaskContext, VSDTask
from vsd.tasks.registry import register_task
from vsd.wrappers.mid_feature import USKDWrapper


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
        self.trainable_module = USKDWrapper(model)
        self.criterion = USKDLoss(alpha, beta, mu, label_smoothing)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        output = self.trainable_module(input)
        terms = self.criterion.terms_from_logits(output.logits, output.weak_logits, target)
        return {**terms, "output": output.logits}

    def get_eval_model(self, module: Optional[nn.Module] = None, ema: bool = False) -> Optional[nn.Module]:
        """The plain classifier inside the trainable module (or inside its EMA copy when ``ema``)."""
        eval_model = super().get_eval_model(module, ema)
        inner = unwrap_model(eval_model) if eval_model is not None else None
        return inner.model if isinstance(inner, USKDWrapper) else eval_model

    def _wrapper(self, ema: bool) -> USKDWrapper:
        module = self.get_trainable_module(ema=ema)
        if module is None:
            raise RuntimeError("the USKD task has no EMA copy: call setup_ema() first")
        return unwrap_model(module)

    def get_task_state(self, module: Any = None, ema: bool = False) -> Dict[str, Any]:
        """The weak head (of the EMA copy with ``ema``): what timm's eval-model checkpoints lack."""
        head = self._wrapper(ema).weak_head
        return {"weak_head": {k: v.detach().clone() for k, v in head.state_dict().items()}}

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Any = None,
                        ema: bool = False) -> None:
        if not state:
            if strict:
                raise ValueError("USKD task state is empty: the checkpoint holds no weak-head weights")
            return
        self._wrapper(ema).weak_head.load_state_dict(state["weak_head"])


@register_task("uskd", USKDConfig)
def build_uskd(model: nn.Module, cfg: Config, ctx: TaskContext) -> USKDTask:
    """USKD task around ``model``; CE uses ``train.label_smoothing``."""
    m = cfg.method
    return USKDTask(model, m.alpha, m.beta, m.mu, cfg.train.label_smoothing, device=ctx.device).to(ctx.device)
