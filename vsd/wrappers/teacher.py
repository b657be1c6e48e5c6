"""A frozen teacher next to the student (for NKD), loaded safely from a local checkpoint.

:func:`create_teacher` builds any timm (or vsd) model by name, or takes a module, loads its weights from

* a vsd checkpoint (``vsd.engine.checkpoint``; its ``model`` entry) or a plain ``.safetensors`` weight file, or
* a foreign PyTorch checkpoint (``.pth`` / ``.pt`` / ``.bin``), read with ``torch.load(weights_only=True)``
  only (nothing is unpickled); a nested ``state_dict`` / ``model`` entry and a DDP ``module.`` prefix are
  accepted,

checks that every key and shape matches (one error listing the missing, unexpected and mis-shaped keys), and
freezes it in eval mode. :class:`TeacherWrapper` returns ``(student_logits, teacher_logits)`` in train mode
and the student's logits in eval mode, so timm's validation sees the student only.

Example:
    >>> import timm, torch
    >>> model = TeacherWrapper(timm.create_model("resnet18", num_classes=10), "resnet18")
    >>> out = model(torch.randn(2, 3, 32, 32))
    >>> out.logits.shape == out.teacher_logits.shape
    True
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict, Mapping, NamedTuple, Optional, Union

import timm
import torch
from torch import nn

from vsd.engine.checkpoint import load_model_weights

__all__ = ["TeacherOutput", "TeacherWrapper", "create_teacher", "load_weights", "read_state_dict"]

_SAFE_SUFFIXES = (".safetensors",)
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class TeacherOutput(NamedTuple):
    """Train-mode output: student logits first (timm keeps ``output[0]``), then the teacher's."""

    logits: torch.Tensor
    teacher_logits: torch.Tensor


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read a model state dict from a vsd checkpoint, a ``.safetensors`` file or a foreign ``.pth`` (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher checkpoint {str(path)!r} does not exist")
    if path.suffix in _TORCH_SUFFIXES:
        try:
            obj: Any = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(f"teacher checkpoint {str(path)!r} holds objects other than tensors and plain "
                             f"containers; vsd loads foreign checkpoints with weights_only=True and will not "
                             f"unpickle them ({str(err).splitlines()[0]})") from None
        for key in ("state_dict", "model", "state_dict_ema"):
            if not _is_state_dict(obj) and isinstance(obj, Mapping) and _is_state_dict(obj.get(key)):
                obj = obj[key]
        if not _is_state_dict(obj):
            raise ValueError(f"teacher checkpoint {str(path)!r} holds no state dict of tensors (looked at the top "
                             f"level and the 'state_dict', 'model' and 'state_dict_ema' entries)")
        return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    if path.suffix not in _SAFE_SUFFIXES:
        raise ValueError(f"teacher checkpoint {str(path)!r}: expected a vsd checkpoint or .safetensors file, or a "
                         f"PyTorch file ending in {', '.join(_TORCH_SUFFIXES)}")
    return load_model_weights(path)


def _listing(keys: list, limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_weights(model: nn.Module, path: Union[str, Path]) -> None:
    """Load ``path`` into ``model`` strictly; one error lists missing, unexpected and mis-shaped keys."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(state)
                    if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        problems = [f"missing keys: {_listing(missing)}" if missing else "",
                    f"unexpected keys: {_listing(unexpected)}" if unexpected else "",
                    f"shape mismatches (checkpoint vs model): {_listing(shapes)}" if shapes else ""]
        raise ValueError(f"checkpoint {str(path)!r} does not fit {type(model).__name__}: "
                         + "; ".join(p for p in problems if p))
    model.load_state_dict(state)


def create_teacher(model: Union[str, nn.Module], checkpoint: Optional[Union[str, Path]] = None,
                   **model_kwargs: Any) -> nn.Module:
    """A frozen, eval-mode teacher: ``model`` is a timm/vsd model name (built with ``model_kwargs``) or a module;
    ``checkpoint`` an optional local weight file (see :func:`read_state_dict`)."""
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
        load_weights(teacher, checkpoint)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


class TeacherWrapper(nn.Module):
    """Student + frozen teacher: train mode returns :class:`TeacherOutput`, eval mode the student's logits.

    Args:
        student: the model being trained.
        teacher: a timm/vsd model name or a module (see :func:`create_teacher`).
        checkpoint: local weights for the teacher.
        teacher_kwargs: constructor arguments when ``teacher`` is a name; ``num_classes`` and ``in_chans``
            default to the student's.

    The teacher always stays in eval mode and runs under ``torch.no_grad``; both see the same input (use
    teachers trained with the student's normalisation).
    """

    def __init__(self, student: nn.Module, teacher: Union[str, nn.Module],
                 checkpoint: Optional[Union[str, Path]] = None, **teacher_kwargs: Any) -> None:
        super().__init__()
        if isinstance(teacher, str):
            for attr in ("num_classes", "in_chans"):
                if hasattr(student, attr):
                    teacher_kwargs.setdefault(attr, getattr(student, attr))
        self.student = student
        self.teacher = create_teacher(teacher, checkpoint, **teacher_kwargs)

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
