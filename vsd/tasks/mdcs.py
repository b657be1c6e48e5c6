"""``method.name: mdcs``: diverse experts with consistency self-distillation for long-tailed data.

The model (a timm ResNet or vsd ``resnet*_cifar``) is turned into :class:`vsd.wrappers.ExpertsWrapper`, which
is both the trained module and the eval model (mean of the expert logits). The loader yields two views of
each sample (``train_views = ["weak", "strong"]``); per-class counts come from the run's training set
(``ctx.class_counts``). See :mod:`vsd.losses.mdcs` for the math.

Epochs are 0-based here (``on_epoch_start(epoch)``, ``mdcs_loss(epoch=...)``) while the official trainer counts
from 1: the consistency ramp ``min((epoch + 1) / warmup_epochs, 1)`` at vsd epoch ``e`` equals the official
``min(e' / 20, 1)`` at its epoch ``e' = e + 1``.

The strong view is the official loader's (:data:`vsd.data.transforms.PRESETS` ``"strong"``): random crop ->
flip -> AutoAugment (CIFAR-10 policy) -> to float -> Cutout (1 hole, 16 px at 32 px) -> normalize.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from vsd.config import Config, ConfigError, MethodConfig
from vsd.losses.mdcs import DEFAULT_LAMBDAS, MDCSLoss
from vsd.tasks.base import TaskContext, VSDTask
from vsd.tasks.registry import register_task
from vsd.wrappers.experts import ExpertsWrapper


@dataclass
class MDCSConfig(MethodConfig):
    """MDCS settings (defaults: the official ones for K = 3 experts on CIFAR)."""

    name: str = "mdcs"
    num_experts: int = 3
    lambdas: List[float] = field(default_factory=lambda: list(DEFAULT_LAMBDAS))
    kl_weight: float = 0.6
    warmup_epochs: int = 20
    temperature: float = 1.0
    scale: float = 30.0
    shared_stages: int = 1


class MDCSTask(VSDTask):
    """``task([weak, strong], y) -> {'loss', 'output', 'mdcs_diversity', 'mdcs_consistency'}``.

    ``output`` is the mean expert logits on the weak view. :meth:`on_epoch_start` drives the warm-up.
    """

    train_views = ["weak", "strong"]

    def __init__(self, experts: ExpertsWrapper, criterion: MDCSLoss, device: Optional[torch.device] = None) -> None:
        super().__init__(device=device, verbose=False)
        self.trainable_module = experts
        self.criterion = criterion

    def forward(self, input: Sequence[torch.Tensor], target: torch.Tensor) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        if isinstance(input, torch.Tensor) and input.shape[0] == 2 * target.shape[0]:
            input = input.chunk(2)  # views concatenated along the batch (vsd.timm_scripts.mdcs_train_loader)
        if isinstance(input, torch.Tensor) or len(input) != 2:
            raise ValueError("MDCS expects two views per batch, [weak_view, strong_view] (train_views "
                             "['weak', 'strong']), got " + ("one tensor" if isinstance(input, torch.Tensor)
                                                            else f"{len(input)} views"))
        weak, strong = input
        output = self.trainable_module(torch.cat([weak, strong]))
        return {**self.criterion.terms(output, target), "output": output.logits[: weak.shape[0]]}

    def on_epoch_start(self, epoch: int) -> None:
        self.criterion.set_epoch(epoch)

    def get_task_state(self, module: Any = None, ema: bool = False) -> Dict[str, Any]:
        return {"epoch": self.criterion.epoch}

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Any = None,
                        ema: bool = False) -> None:
        if state:
            self.criterion.set_epoch(int(state["epoch"]))


@register_task("mdcs", MDCSConfig)
def build_mdcs(model: nn.Module, cfg: Config, ctx: TaskContext) -> MDCSTask:
    """MDCS task: experts built from ``model``, class counts from ``ctx.class_counts``."""
    m = cfg.method
    if len(ctx.class_counts) != ctx.num_classes:
        raise ConfigError(f"MDCS needs the training set's per-class counts ({ctx.num_classes} classes), got "
                          f"{len(ctx.class_counts)}; use a data set that reports class_counts (e.g. digits_lt)")
    if len(m.lambdas) != m.num_experts:
        raise ConfigError(f"config key 'method.lambdas': need one value per expert (method.num_experts = "
                          f"{m.num_experts}), got {m.lambdas}")
    experts = ExpertsWrapper(model, m.num_experts, m.shared_stages, m.scale)
    criterion = MDCSLoss(ctx.class_counts, m.lambdas, m.kl_weight, m.warmup_epochs, m.temperature)
    return MDCSTask(experts, criterion, device=ctx.device).to(ctx.device)
