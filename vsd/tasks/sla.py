"""SLA training task (``method.name: sla``): rotations + joint head, optionally SLA+SD (``self_distill: true``).

The trainer's batch of B images becomes B * M rotated images inside the wrapper (the effective batch is B * M).
Components logged: ``joint`` (and ``single``, ``kd`` for SLA+SD). The eval model is the wrapper: aggregated
joint logits for SLA, the single head for SLA+SD.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from vsd.config import Config, ConfigError, MethodConfig
from vsd.losses.nkd import at_least_float32
from vsd.losses.sla import SLALoss, SLAOutput, SLASDLoss
from vsd.tasks.base import TaskContext, VSDTask
from vsd.tasks.registry import register_task
from vsd.wrappers.sla import SLAWrapper

__all__ = ["SLAConfig", "SLATask", "build_sla"]


@dataclass
class SLAConfig(MethodConfig):
    """``method.name: sla``. ``self_distill``: SLA+SD (single head used alone at inference);
    ``num_transforms``: rotations M (4 in the paper; 2 = 0/180 degrees); ``temperature``: T of the SD term;
    ``large_loss``: sum instead of mean over the M transformations (official ``--with-large-loss``)."""

    name: str = "sla"
    self_distill: bool = False
    num_transforms: int = 4
    temperature: float = 1.0
    large_loss: bool = False

    def __post_init__(self) -> None:
        if self.num_transforms not in (2, 4):
            raise ConfigError(f"config key 'method.num_transforms': expected 2 or 4 rotations, got "
                              f"{self.num_transforms}")
        if self.temperature <= 0:
            raise ConfigError(f"config key 'method.temperature': expected a value > 0, got {self.temperature}")


class SLATask(VSDTask):
    """``task(x, y)`` -> ``{'loss', 'output' ([B, C] logits), 'joint'[, 'single', 'kd']}``."""

    def __init__(self, model: nn.Module, num_classes: Optional[int] = None, num_transforms: int = 4,
                 self_distill: bool = False, temperature: float = 1.0, large_loss: bool = False,
                 device: Optional[torch.device] = None, verbose: bool = False) -> None:
        super().__init__(device=device, verbose=verbose)
        self.trainable_module = SLAWrapper(model, num_classes, num_transforms, self_distill).to(self.device)
        self.criterion = (SLASDLoss(temperature, large_loss) if self_distill else SLALoss(large_loss))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        output = self.trainable_module(input)
        if not isinstance(output, SLAOutput):  # eval mode returns logits
            return {"loss": F.cross_entropy(output, target), "output": output}
        (joint,) = at_least_float32(output.joint_logits)  # softmax / KL terms in float32 under autocast
        single = None if output.single_logits is None else at_least_float32(output.single_logits)[0]
        output = SLAOutput(joint, single, output.num_transforms)
        terms = self.criterion.terms(output, target)
        return {"loss": sum(terms.values()), "output": output.logits(), **terms}


@register_task("sla", SLAConfig)
def build_sla(model: nn.Module, cfg: Config, ctx: TaskContext) -> SLATask:
    """Build the SLA task of ``cfg.method`` (an :class:`SLAConfig`); the head size comes from ``ctx``."""
    method: SLAConfig = cfg.method  # type: ignore[assignment]
    return SLATask(model, ctx.num_classes, method.num_transforms, method.self_distill, method.temperature,
                   method.large_loss, device=ctx.device)
