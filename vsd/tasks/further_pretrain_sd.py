"""Further pre-training with self-distillation (``method.name: further_pretrain_sd``), both stages in one run.

Lee et al., "Self-Distillation for Further Pre-training of Transformers", ICLR 2023, official code
github.com/seanie12/self-distillation (``stage pretrain`` then ``stage self-pretrain``).

* Stage 1 (epochs ``[0, switch_epoch)``): a copy of the ORIGINAL model (``model.name`` with
  ``model.checkpoint``, typically an MAE pre-trained elsewhere) is further pre-trained with the MAE loss on the
  target data: this is the teacher.
* Stage 2 (epochs ``[switch_epoch, epochs)``): the teacher is frozen; the student, still holding the original
  weights (it is not touched in stage 1), trains with
  ``MAE loss + distill_weight * sum_b ||h_s_b - h_t_b||^2 / B`` where ``h`` is the final-norm CLS feature of the
  full, unmasked image (:func:`vsd.losses.mae.cls_distillation_loss`).

The stage follows from the epoch, so a resumed run continues in the right stage; the teacher's weights are part
of the trainable module and hence of every checkpoint. ``model.safetensors`` at the end is the student, ready for
fine-tuning with a normal ``tools/train.py`` run (``model.checkpoint``). With ``teacher_checkpoint`` set, stage 1
is skipped and the teacher is loaded from that file.

Deliberate differences: the student and teacher live side by side in one optimizer (parameters without a
gradient are skipped, so the student starts stage 2 with fresh optimizer moments, as in the official two
runs, and the teacher is frozen in stage 2 by running it under ``no_grad``), but the learning-rate schedule spans both stages (the official code restarts a linear decay per stage).
Defaults: mask ratio 0.75, normalized-pixel targets, distillation weight 1 (official scripts).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from vsd.config import Config
from vsd.losses.mae import cls_distillation_loss
from vsd.tasks.base import TaskContext, classifier_parameters
from vsd.tasks.mae import MAEConfig, MAETask, probe_due
from vsd.tasks.registry import register_task
from vsd.wrappers.truncated_teacher import load_teacher_weights


@dataclass
class FurtherPretrainSDConfig(MAEConfig):
    """Further pre-training with self-distillation. ``switch_epoch`` (default: half the epochs) starts stage 2;
    ``teacher_checkpoint`` skips stage 1."""

    name: str = "further_pretrain_sd"
    switch_epoch: Optional[int] = None
    distill_weight: float = 1.0
    teacher_checkpoint: str = ""


class _Pair(nn.Module):
    """The two trained networks: ``student`` (the run's model) and ``teacher`` (its further-pre-trained copy)."""

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher


class FurtherPretrainSDTask(MAETask):
    """Two-stage further pre-training (see module docstring)."""

    def __init__(self, model: nn.Module, cfg: FurtherPretrainSDConfig, epochs: int,
                 device: Optional[torch.device] = None) -> None:
        super().__init__(model, cfg, epochs, device)
        switch = (0 if cfg.teacher_checkpoint else epochs // 2) if cfg.switch_epoch is None else cfg.switch_epoch
        if not 0 <= switch < epochs:
            raise ValueError(f"method.switch_epoch must lie in [0, train.epochs) = [0, {epochs}) so that stage 2 "
                             f"runs, got {switch}")
        if cfg.teacher_checkpoint and switch != 0:
            raise ValueError("method.teacher_checkpoint replaces stage 1: leave method.switch_epoch unset (or 0)")
        teacher = copy.deepcopy(self.mae)
        if cfg.teacher_checkpoint:
            load_teacher_weights(teacher, cfg.teacher_checkpoint)
        self.switch_epoch = switch
        self.trainable_module = _Pair(self.mae, teacher)
        self.stage = 1
        self.on_epoch_start(0)

    @property
    def teacher(self) -> nn.Module:
        return self.trainable_module.teacher

    def on_epoch_start(self, epoch: int) -> None:
        """Set the stage of ``epoch``; in stage 2 the teacher runs in eval mode without gradients.

        Both networks stay ``requires_grad`` (the optimizer is built once, before stage 1); the network a stage
        does not train gets no gradient, and optimizers skip parameters without one."""
        self.stage = 1 if epoch < self.switch_epoch else 2
        self.teacher.train(self.stage == 1 and self.training)

    def idle_parameters(self) -> List[nn.Parameter]:
        """The network this stage does not train (the student in stage 1, the frozen teacher in stage 2) and
        the trained network's classifier (no loss reads it)."""
        trained, idle = (self.teacher, self.mae) if self.stage == 1 else (self.mae, self.teacher)
        return list(idle.parameters()) + classifier_parameters(trained)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        if self.stage == 1:
            pixel, out = self.masked_step(self.teacher, input)
            return {"loss": pixel, "output": out.pred, "pixel": pixel.detach(), "stage": pixel.new_tensor(1.0)}
        pixel, out = self.masked_step(self.mae, input)
        with torch.no_grad():
            teacher_cls = self.teacher.forward_features(input)[:, 0]
        distill = cls_distillation_loss(self.mae.forward_features(input)[:, 0], teacher_cls)
        loss = pixel + self.cfg.distill_weight * distill
        return {"loss": loss, "output": out.pred, "pixel": pixel.detach(), "distill": distill.detach(),
                "stage": pixel.new_tensor(2.0)}

    def get_eval_model(self, module: Optional[nn.Module] = None, ema: bool = False) -> nn.Module:
        """The network being trained in the current stage (teacher in stage 1, student in stage 2)."""
        if module is not None:
            return module
        return self.teacher if self.stage == 1 else self.mae

    def evaluate(self, loaders: Any, epoch: int) -> Dict[str, float]:
        """Probe accuracies of the network trained in this stage (``probe_teacher_*`` in stage 1, ``probe_*`` in
        stage 2), when due and always at the end of stage 1."""
        if not (probe_due(epoch, self.epochs, self.cfg.probe_every) or epoch + 1 == self.switch_epoch):
            return {}
        return self.probe(self.get_eval_model(), loaders, "probe_teacher_" if self.stage == 1 else "probe_")

    def get_task_state(self, module: Any = None, ema: bool = False) -> Dict[str, Any]:
        return {"stage": self.stage, "switch_epoch": self.switch_epoch}

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Any = None,
                        ema: bool = False) -> None:
        if state and int(state.get("switch_epoch", self.switch_epoch)) != self.switch_epoch:
            raise ValueError(f"checkpoint was written with method.switch_epoch={state['switch_epoch']}, "
                             f"this run uses {self.switch_epoch}")


@register_task("further_pretrain_sd", FurtherPretrainSDConfig)
def build_further_pretrain_sd(model: nn.Module, cfg: Config, ctx: TaskContext) -> FurtherPretrainSDTask:
    """Stage 1 (teacher = further-pre-trained copy) then stage 2 (student from the original weights)."""
    return FurtherPretrainSDTask(model, cfg.method, ctx.epochs, ctx.device)  # type: ignore[arg-type]
