"""``method.name: nkd``: normalized knowledge distillation from a frozen teacher (CE + NKD terms).

The teacher is any timm/vsd model name built for the run's classes, channels and image size (plus
``method.teacher_kwargs``), with weights from ``method.teacher_checkpoint`` (a vsd checkpoint, e.g. the
``checkpoint-last.safetensors`` or ``model.safetensors`` of a zoo run, a ``.safetensors`` file, or a PyTorch
file such as timm's ``model_best.pth.tar``, read with ``weights_only=True``; its EMA weights with
``method.teacher_checkpoint_ema``). See :mod:`vsd.losses.nkd` for the math.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Dict, Optional

import torch
from torch import nn

from vsd.config import Config, ConfigError, MethodConfig, ModelConfig
from vsd.losses.nkd import NKDLoss
from vsd.tasks.base import TaskContext, VSDTask
from vsd.tasks.registry import register_task
from vsd.models import build_model
from vsd.models.weights import load_weights
from vsd.wrappers.teacher import TeacherOutput, create_teacher


@dataclass
class NKDConfig(MethodConfig):
    """NKD hyper-parameters (defaults: the official ImageNet ones; CIFAR-100 uses temperature 3, gamma 3.5)."""

    name: str = "nkd"
    teacher: str = ""
    teacher_kwargs: Dict[str, Any] = field(default_factory=dict)
    teacher_checkpoint: Optional[str] = None
    teacher_checkpoint_ema: bool = False
    temperature: float = 1.0
    gamma: float = 1.5


class NKDTask(VSDTask):
    """``task(x, y) -> {'loss', 'output', 'ce', 'nkd_target', 'nkd_non_target'}``; the teacher stays frozen.

    ``trainable_module`` (and so the eval model, the optimizer of timm's ``train.py`` and the checkpoint's
    ``model`` entry) is the student alone; the teacher is rebuilt from the config, as in timm's
    ``LogitDistillationTask``.
    """

    def __init__(self, model: nn.Module, teacher: nn.Module, criterion: NKDLoss,
                 device: Optional[torch.device] = None) -> None:
        super().__init__(device=device, verbose=False)
        self.trainable_module = model
        self.teacher = create_teacher(teacher)
        self.criterion = criterion

    def train(self, mode: bool = True) -> "NKDTask":
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        logits = self.trainable_module(input)
        with torch.no_grad():
            teacher_logits = self.teacher(input)
        return {**self.criterion.terms(TeacherOutput(logits, teacher_logits), target), "output": logits}


def build_teacher(cfg: Config, ctx: TaskContext) -> nn.Module:
    """The frozen teacher of ``cfg.method`` for the run described by ``ctx``."""
    method = cfg.method
    if not method.teacher:
        raise ConfigError("config key 'method.teacher': NKD needs a teacher model name, e.g. resnet18_cifar, "
                          "and usually method.teacher_checkpoint (the teacher's trained weights)")
    teacher_cfg = dataclasses.replace(cfg, model=ModelConfig(name=method.teacher, kwargs=dict(method.teacher_kwargs)))
    info = SimpleNamespace(num_classes=ctx.num_classes, in_chans=ctx.in_chans, image_size=ctx.image_size)
    teacher = build_model(teacher_cfg, info)
    if method.teacher_checkpoint:
        load_weights(teacher, method.teacher_checkpoint, ema=method.teacher_checkpoint_ema)
    return teacher.to(ctx.device)


@register_task("nkd", NKDConfig)
def build_nkd(model: nn.Module, cfg: Config, ctx: TaskContext) -> NKDTask:
    """NKD task: student ``model``, teacher from ``cfg.method``; CE uses ``train.label_smoothing``."""
    method = cfg.method
    criterion = NKDLoss(method.temperature, method.gamma, label_smoothing=cfg.train.label_smoothing)
    return NKDTask(model, build_teacher(cfg, ctx), criterion, device=ctx.device)
