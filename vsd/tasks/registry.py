"""Registry of training methods: ``method.name`` -> a builder ``(model, cfg, ctx) -> TrainingTask``."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

from timm.task import TrainingTask
from torch import nn

from vsd.config import Config, MethodConfig, register_method_config
from vsd.tasks.base import TaskContext

TaskBuilder = Callable[[nn.Module, Config, TaskContext], TrainingTask]
_TASKS: Dict[str, TaskBuilder] = {}


def register_task(name: str, config_cls: Optional[type] = None) -> Callable[[TaskBuilder], TaskBuilder]:
    """Decorator registering a task builder under ``method.name == name`` with its config dataclass."""

    def decorator(builder: TaskBuilder) -> TaskBuilder:
        if name in _TASKS:
            raise ValueError(f"training method {name!r} is registered twice")
        _TASKS[name] = builder
        register_method_config(name, config_cls or MethodConfig)
        return builder

    return decorator


def list_tasks() -> List[str]:
    """Names accepted by ``method.name``."""
    return sorted(_TASKS)


def create_task(model: nn.Module, cfg: Config, ctx: TaskContext) -> TrainingTask:
    """Build the task named by ``cfg.method.name`` around ``model``."""
    name = cfg.method.name
    if name not in _TASKS:
        raise ValueError(f"unknown method.name {name!r}; available: {', '.join(list_tasks())}")
    return _TASKS[name](model, cfg, ctx)
