"""Training tasks (timm ``TrainingTask`` subclasses) selected by ``method.name``."""
from vsd.tasks.base import TaskContext, VSDTask
from vsd.tasks.registry import create_task, list_tasks, register_task
from vsd.tasks import classification  # noqa: F401  (registers 'ce')

__all__ = ["TaskContext", "VSDTask", "create_task", "list_tasks", "register_task"]
