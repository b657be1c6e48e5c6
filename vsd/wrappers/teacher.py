"""A frozen teacher next to the student (for NKD), loaded safely from a local checkpoint.

:func:`create_teacher` builds any timm (or vsd) model by name, or takes a module, loads its weights from

a vsd checkpoint, a ``.safetensors`` file or a PyTorch file such as the ``model_best.pth.tar`` timm's training
scripts write (read with ``torch.load(weights_only=True)``; its EMA weights with ``ema=True``; see
:mod:`vsd.models.weights`), checks that every key and shape matches (one error listing the missing, unexpected
and mis-shaped keys), and freezes it in eval mode.

:class:`TeacherWrapper` returns ``(student_logits, teacher_logits)`` in train mode and the student's logits in
eval mode, so timm's validation sees the student only. It passes timm's model contract on to the student
(:class:`vsd.wrappers.contract.TimmContract`). ``state_dict`` keys: ``student.*`` (the trained model) and
``teacher.*`` (frozen); the student alone is ``unwrap_model(model).student``.

Example:
    >>> import timm, torch
    >>> model = TeacherWrapper(timm.create_model("resnet18", num_classes=10), "resnet18")
    >>> out = model(torch.randn(2, 3, 32, 32))
    >>> out.logits.shape == out.teacher_logits.shape
    True
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import timm
import torch
from torch import nn

from vsd.models.weights import load_weights

from vsd.wrappers.contract import TimmContract

__all__ = ["TeacherOutput", "TeacherWrapper", "create_teacher"]


class TeacherOutput(NamedTuple):
    """Train-mode output: student logits first (timm keeps ``output[0]``), then the teacher's."""

    logits: torch.Tensor
    teacher_logits: torch.Tensor


def create_teacher(model: Union[str, nn.Module], checkpoint: Optional[Union[str, Path]] = None, ema: bool = False,
                   **model_kwargs: Any) -> nn.Module:
    """A frozen, eval-mode teacher: ``model`` is a timm/vsd model name (built with ``model_kwargs``) or a module;
    ``checkpoint`` an optional local weight file (:func:`vsd.models.weights.read_state_dict`), ``ema`` reads its
    EMA weights."""
    if isinstance(model, str):
        import vsd.models  # noqa: F401  (registers vsd's architectures with timm)

        teacher = timm.create_model(model, **model_kwargs)
    elif isinstance(model, nn.Module):
        if model_kwargs:
            raise ValueError(f"model keyword arguments {sorted(model_kwargs)} only apply to a model name, "
                             f"not to a module")
        teacher = model
    else:
        raise TypeError(f"teacher must be a timm model name or an nn.Module, got {type(model).__name__}")
    if checkpoint is not None:
        load_weights(teacher, checkpoint, ema=ema)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


class TeacherWrapper(TimmContract, nn.Module):
    """Student + frozen teacher: train mode returns :class:`TeacherOutput`, eval mode the student's logits.

    Args:
        student: the model being trained.
        teacher: a timm/vsd model name or a module (see :func:`create_teacher`).
        checkpoint: local weights for the teacher (e.g. timm's ``model_best.pth.tar``).
        ema: read the EMA weights of ``checkpoint`` (timm's ``state_dict_ema``).
        teacher_kwargs: constructor arguments when ``teacher`` is a name; ``num_classes`` and ``in_chans``
            default to the student's.

    The teacher always stays in eval mode and runs under ``torch.no_grad``; both see the same input (use
    teachers trained with the student's normalisation).
    """

    wrapped_attr = "student"

    def __init__(self, student: nn.Module, teacher: Union[str, nn.Module],
                 checkpoint: Optional[Union[str, Path]] = None, ema: bool = False, **teacher_kwargs: Any) -> None:
        super().__init__()
        if isinstance(teacher, str):
            for attr in ("num_classes", "in_chans"):
                if hasattr(student, attr):
                    teacher_kwargs.setdefault(attr, getattr(student, attr))
        self.student = student
        self.teacher = create_teacher(teacher, checkpoint, ema, **teacher_kwargs)

    def train(self, mode: bool = True) -> "TeacherWrapper":
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, TeacherOutput]:
        logits = self.student(x)
        if not self.training:
            return logits
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        if teacher_logits.shape != logits.shape:
            raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} do not match the student's "
                             f"{tuple(logits.shape)}; build the teacher with the student's num_classes")
        return TeacherOutput(logits, teacher_logits)
