"""Common base of vsd's training tasks and the context the trainer hands to task builders.

A vsd task is a :class:`timm.task.TrainingTask`: ``task(input, target) -> {'loss', 'output', <components>}``.
On top of timm's contract the trainer reads a few optional attributes (all with safe defaults here):

* ``needs_index``: the loader yields ``(x, y, index)`` and the trainer calls ``task(x, y, index=index)``;
* ``train_views``: ``None`` or a list of transform presets; the loader then yields a list of views as input;
* ``on_epoch_start(epoch)`` / ``on_epoch_end(epoch)``: epoch hooks (schedules, banks, snapshots);
* ``evaluate(loaders, epoch) -> dict``: replaces the classification evaluation (representation methods);
* ``get_task_state()`` / ``load_task_state(state)``: nested tensors + JSON values saved in checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from timm.task import TrainingTask


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
        """Wrap the trainable module in DDP (what timm's ``train.py`` calls; ``tools/train.py`` wraps the whole
        task instead, so parameters a criterion owns are synchronised too)."""
        from torch.nn.parallel import DistributedDataParallel

        self.trainable_module = DistributedDataParallel(self.trainable_module, device_ids=device_ids, **ddp_kwargs)
        return self

    def on_epoch_start(self, epoch: int) -> None:
        """Called before training epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after training epoch ``epoch`` (0-based), before evaluation and checkpointing."""

    def get_task_state(self, module: Any = None, ema: bool = False) -> Dict[str, Any]:
        return {}

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Any = None,
                        ema: bool = False) -> None:
        return None
