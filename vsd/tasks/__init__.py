"""Training tasks (timm ``TrainingTask`` subclasses) selected by ``method.name``."""
from vsd.tasks.base import TaskContext, VSDTask
from vsd.tasks.registry import create_task, list_tasks, register_task
from vsd.tasks import classification  # noqa: F401  (registers 'ce')

__all__ = ["TaskContext", "VSDTask", "create_task", "list_tasks", "register_task"]
from vsd.tasks import pskd, sla  # noqa: E402,F401  (registers 'pskd', 'sla')
from vsd.tasks import mdcs, nkd, uskd  # noqa: E402,F401  (registers 'mdcs', 'nkd', 'uskd')
from vsd.tasks import mae, dmae, further_pretrain_sd, random_teacher  # noqa: F401,E402  (issue 4 methods)
