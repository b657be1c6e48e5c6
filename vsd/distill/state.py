"""Exact resume of an iterative distillation: named tensors, optimizers and every rank's random generators in
one safe checkpoint (safetensors + JSON, via :mod:`vsd.engine.checkpoint`), plus the DDP helpers distillers
share (the run's device, the gradient all-reduce, a parameter broadcast).

Under ``torchrun`` each rank draws its own random numbers (MTT: its own (expert, start epoch) pairs), so the
checkpoint holds the generator and global RNG states (Python, NumPy, torch, CUDA) of *every* rank, gathered
into the file that rank 0 writes; on resume each rank restores its own. A checkpoint written by another number
of ranks is refused (the random streams could not continue exactly).

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
from typing import Any, Dict, Iterable, List, Tuple, Union

import torch
import torch.distributed as dist

from vsd.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vsd.engine.distributed import DistEnv, init_distributed, resolve_device
from vsd.engine.rng import capture_rng_state, restore_rng_state

KIND = "vsd-distill-progress"
VERSION = 2


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _rank_world() -> Tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)


def run_device(name: str) -> Tuple[torch.device, DistEnv]:
    """The device of this process and its place in the run: the process group is initialised (torchrun) and,
    on CUDA, the rank's own GPU ``cuda:LOCAL_RANK`` is selected *before* anything is created on it."""
    device = resolve_device(name)
    env = init_distributed(device.type)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", env.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device, env


def save_progress(path: Union[str, Path], iteration: int, tensors: Dict[str, torch.Tensor],
                  optimizers: Dict[str, torch.optim.Optimizer], generators: Dict[str, torch.Generator],
                  extra: Dict[str, Any]) -> None:
    """Atomically write the state after ``iteration`` completed iterations. Under DDP every rank must call it
    (the random states are gathered); rank 0 writes the file."""
    mine = {"generators": {k: g.get_state() for k, g in generators.items()}, "rng": capture_rng_state()}
    rank, world = _rank_world()
    ranks: List[Any] = [mine]
    if world > 1:
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
    if rank != 0:
        return
    save_checkpoint(path, {
        "kind": KIND, "version": VERSION, "iteration": int(iteration), "world_size": world,
        "tensors": {k: v.detach() for k, v in tensors.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "ranks": ranks,
        "extra": extra,
    })


def load_progress(path: Union[str, Path], tensors: Dict[str, torch.Tensor],
                  optimizers: Dict[str, torch.optim.Optimizer],
                  generators: Dict[str, torch.Generator]) -> Tuple[int, Dict[str, Any]]:
    """Restore what :func:`save_progress` wrote into the given objects (in place; this rank's own random
    states); return (iteration, extra)."""
    state = load_checkpoint(path)
    if state.get("kind") != KIND or state.get("version") != VERSION:
        raise CheckpointError(f"{str(path)!r} is not a distillation checkpoint of version {VERSION} (kind "
                              f"{state.get('kind')!r}, version {state.get('version')!r}); start afresh with "
                              "overwrite=true")
    rank, world = _rank_world()
    if state["world_size"] != world:
        raise CheckpointError(f"distillation checkpoint {str(path)!r} was written by {state['world_size']} "
                              f"process(es), this run has {world}; resume with the same number of processes or "
                              "start afresh with overwrite=true")
    mine = state["ranks"][rank]
    for group, wanted, stored in (("tensors", tensors, state["tensors"]),
                                  ("optimizers", optimizers, state["optimizers"]),
                                  ("generators", generators, mine["generators"])):
        missing = sorted(set(wanted) - set(stored))
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
        gen.set_state(mine["generators"][name])
    restore_rng_state(mine["rng"])
    return int(state["iteration"]), state["extra"]


def allreduce_mean(tensors: List[torch.Tensor]) -> None:
    """Average tensors over the DDP ranks in place (no-op without an initialised process group)."""
    if _distributed():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= dist.get_world_size()


def broadcast_(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Copy rank ``src``'s values into every rank's tensors, in place (no-op without a process group)."""
    if _distributed():
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t, src)
