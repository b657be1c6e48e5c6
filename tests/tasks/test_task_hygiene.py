"""Every task of the method matrix (``tools/smoke.py``), one step per epoch of a 2-epoch run:

* device hygiene: no tensor factory (``torch.tensor``, ``zeros``, ``arange``, ...) is called without ``device=``
  inside the step or the epoch hooks, and every tensor the step returns is on the model's device; the run is in
  float64 (a dtype sentinel), so a tensor built from scratch instead of from the run's tensors shows up as
  float32 (this is what a CPU ``stage`` metric looked like);
* DDP: ``idle_parameters()`` is exactly the set of parameters that get no gradient in that epoch (declaring too
  few makes DDP fail at the second step, too many leaves a trained parameter unsynchronised).
"""
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode

from tests.engine.smoke_tool import cpu_trainer, smoke_module

FACTORIES = {torch.tensor, torch.as_tensor, torch.scalar_tensor, torch.zeros, torch.ones, torch.empty, torch.full,
             torch.arange, torch.linspace, torch.eye, torch.rand, torch.randn, torch.randint, torch.randperm}


class DeviceLessFactories(TorchFunctionMode):
    """Records every tensor factory called without an explicit ``device``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            frame = traceback.extract_stack()[-2]
            self.calls.append(f"{func.__name__} at {frame.filename}:{frame.lineno}")
        return func(*args, **kwargs)


def _double(obj):
    if isinstance(obj, torch.Tensor):
        return obj.double() if obj.is_floating_point() else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_double(o) for o in obj)
    return obj


@pytest.mark.parametrize("case", smoke_module().METHOD_CASES, ids=lambda c: c.name)
def test_step_tensors_on_the_run_device_and_idle_parameters_exact(case, tmp_path):
    trainer, batch = cpu_trainer(case, tmp_path)
    task = trainer.task.double()
    device = next(task.parameters()).device
    batch = _double(batch)
    kwargs = {"index": batch[2]} if task.needs_index else {}
    for epoch in range(trainer.cfg.train.epochs):
        task.train()
        task.zero_grad(set_to_none=True)
        with DeviceLessFactories() as spy:
            task.on_epoch_start(epoch)
            out = task(batch[0], batch[1], **kwargs)
            out["loss"].backward()
            task.on_epoch_end(epoch)
        assert spy.calls == [], f"epoch {epoch}: tensors created without device=: {spy.calls}"
        for key, value in out.items():
            if isinstance(value, torch.Tensor):
                assert value.device == device, f"epoch {epoch}: {key!r} is on {value.device}, model on {device}"
                assert not value.is_floating_point() or value.dtype == torch.float64, \
                    f"epoch {epoch}: {key!r} is {value.dtype} in a float64 run: built from scratch?"
        no_grad = {id(p) for p in task.parameters() if p.requires_grad and p.grad is None}
        idle = {id(p) for p in task.idle_parameters() if p.requires_grad}
        names = {id(p): n for n, p in task.named_parameters()}
        assert no_grad == idle, (f"epoch {epoch}: without gradient but not declared idle: "
                                 f"{[names[i] for i in no_grad - idle][:5]}; declared idle but trained: "
                                 f"{[names[i] for i in idle - no_grad][:5]}")
