"""Exact resume of an iterative distillation: named tensors, optimizers and random generators in one safe
checkpoint (safetensors + JSON, via :mod:`vsd.engine.checkpoint`), plus the DDP gradient all-reduce.

Example:
    >>> import tempfile, torch
    >>> x = torch.zeros(3, requires_grad=True)
    >>> opt = torch.optim.SGD([x], lr=0.1, momentum=0.5)
    >>> g = torch.Generator().manual_seed(0)
    >>> path = tempfile.mkdtemp() + "/ckpt.safetensors"
    >>> save_progress(path, 7, {"x": x}, {"opt": opt}, {"g": g}, {"note": "hi"})
    >>> load_progress(path, {"x": x}, {"opt": opt}, {"g": g})
    (7, {'note': 'hi'})
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch
import torch.distributed as dist

from vsd.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

KIND = "vsd-distill-progress"


def save_progress(path: Union[str, Path], iteration: int, tensors: Dict[str, torch.Tensor],
                  optimizers: Dict[str, torch.optim.Optimizer], generators: Dict[str, torch.Generator],
                  extra: Dict[str, Any]) -> None:
    """Atomically write the state after ``iteration`` completed iterations."""
    save_checkpoint(path, {
        "kind": KIND, "iteration": int(iteration),
        "tensors": {k: v.detach() for k, v in tensors.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "generators": {k: g.get_state() for k, g in generators.items()},
        "torch_rng": torch.get_rng_state(),
        "extra": extra,
    })


def load_progress(path: Union[str, Path], tensors: Dict[str, torch.Tensor],
                  optimizers: Dict[str, torch.optim.Optimizer],
                  generators: Dict[str, torch.Generator]) -> Tuple[int, Dict[str, Any]]:
    """Restore what :func:`save_progress` wrote into the given objects (in place); return (iteration, extra)."""
    state = load_checkpoint(path)
    if state.get("kind") != KIND:
        raise CheckpointError(f"{str(path)!r} is not a distillation checkpoint (kind {state.get('kind')!r})")
    for group, wanted in (("tensors", tensors), ("optimizers", optimizers), ("generators", generators)):
        missing = sorted(set(wanted) - set(state[group]))
        if missing:
            raise CheckpointError(f"distillation checkpoint {str(path)!r} lacks {group} {missing}; it was written "
                                  "by another configuration")
    for name, t in tensors.items():
        stored = state["tensors"][name]
        if stored.shape != t.shape:
            raise CheckpointError(f"checkpoint tensor {name!r} has shape {tuple(stored.shape)}, the run expects "
                                  f"{tuple(t.shape)} (another ipc or data set?)")
        with torch.no_grad():
            t.copy_(stored.to(t.device, t.dtype))
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    for name, gen in generators.items():
        gen.set_state(state["generators"][name])
    torch.set_rng_state(state["torch_rng"])
    return int(state["iteration"]), state["extra"]


def allreduce_mean(tensors: List[torch.Tensor]) -> None:
    """Average tensors over the DDP ranks in place (no-op without an initialised process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= dist.get_world_size()
