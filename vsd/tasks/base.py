"""Common base of vsd's training tasks and the context the trainer hands to task builders.

A vsd task is a :class:`timm.task.TrainingTask`: ``task(input, target) -> {'loss', 'output', <components>}``.
On top of timm's contract the trainer reads a few optional attributes (all with safe defaults here):

* ``needs_index``: the loader yields ``(x, y, index)`` and the trainer calls ``task(x, y, index=index)``;
* ``train_views``: ``None`` or a list of transform presets; the loader then yields a list of views as input;
* ``on_epoch_start(epoch)`` / ``on_epoch_end(epoch)``: epoch hooks (schedules, banks, snapshots);
* ``idle_parameters()``: parameters that get no gradient in the current epoch (a classifier a pre-training loss
  never reads, the network a stage does not train); DDP leaves them out of its gradient reduction and the
  trainer re-wraps the task when the set changes (:func:`vsd.engine.distributed.wrap_ddp`);
* ``evaluate(loaders, epoch) -> dict``: replaces the classification evaluation (representation methods);
* ``get_task_state()`` / ``load_task_state(state)``: nested tensors + JSON values saved in checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from timm.task import TrainingTask
from torch import nn

from vsd.engine.distributed import wrap_ddp


@dataclass
class TaskContext:
    """What a task builder may need to know about the run."""

    num_classes: int
    class_counts: List[int] = field(default_factory=list)
    num_train_samples: int = 0
    epochs: int = 1
    steps_per_epoch: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    in_chans: int = 3
    image_size: int = 32
    world_size: int = 1
    rank: int = 0
    dataset: str = ""


class VSDTask(TrainingTask):
    """Base class with vsd's optional trainer hooks (no-ops by default)."""

    needs_index: bool = False
    train_views: Optional[Sequence[str]] = None

    def prepare_distributed(self, device_ids: Optional[list] = None, **ddp_kwargs: Any) -> "VSDTask":
        """Wrap the trainable module in DDP, leaving out its idle parameters (what timm's ``train.py`` calls, once:
        a stage switch that changes the idle set needs ``tools/train.py``, which wraps the whole task, criterion
        parameters included, and re-wraps it when the set changes)."""
        self.trainable_module = wrap_ddp(self.trainable_module, self.idle_parameters(), device_ids, **ddp_kwargs)
        return self

    def idle_parameters(self) -> List[nn.Parameter]:
        """Parameters of the task that get no gradient in the current epoch (default: none)."""
        return []

    def on_epoch_start(self, epoch: int) -> None:
        """Called before training epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after training epoch ``epoch`` (0-based), before evaluation and checkpointing."""

    def get_task_state(self, module: Any = None, ema: bool = False) -> Dict[str, Any]:
        return {}

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Any = None,
                        ema: bool = False) -> None:
        return None


def classifier_parameters(model: nn.Module) -> List[nn.Parameter]:
    """The parameters of ``model``'s classifier (timm's ``get_classifier()``); none if it has no such API."""
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    return list(head.parameters()) if isinstance(head, nn.Module) else []
