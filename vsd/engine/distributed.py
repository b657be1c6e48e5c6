"""Process-group set-up for ``torchrun`` (gloo on CPU, nccl on CUDA; rank 0 owns the files) and DDP wrapping."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other name is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_distributed(device_type: str) -> DistEnv:
    """Initialise the default process group from torchrun's environment variables (no-op when absent)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank)


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (all of them, including those
    DDP is told to ignore, so that ranks seeded differently start from identical weights)."""
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.detach(), src)


def parameter_names(module: nn.Module, params: Iterable[nn.Parameter]) -> List[str]:
    """Every qualified name (aliases included) under which one of ``params`` appears in ``module``."""
    wanted = {id(p) for p in params}
    return sorted(n for n, p in module.named_parameters(remove_duplicate=False) if id(p) in wanted)


def wrap_ddp(module: nn.Module, idle: Iterable[nn.Parameter] = (), device_ids: Optional[List[int]] = None,
             **ddp_kwargs: Any) -> DistributedDataParallel:
    """``DistributedDataParallel(module)`` whose gradient reduction covers exactly the parameters that train:
    the ``idle`` ones (no gradient in this stage, e.g. a classifier a pre-training loss never reads) are ignored.

    Why not ``find_unused_parameters``: it re-traverses the autograd graph every step and hides mistakes
    (a parameter that should train but gets no gradient); why not ``static_graph``: the set of trained
    parameters changes between the stages of a run. Declaring the idle parameters keeps the default, strict,
    fastest DDP: a parameter that is neither declared idle nor given a gradient still fails loudly.
    """
    for p in module.parameters():  # flags left by a previous wrap of the same module (stage switch)
        if hasattr(p, "_ddp_ignored"):
            del p._ddp_ignored
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, parameter_names(module, idle))
    return DistributedDataParallel(module, device_ids=device_ids, **ddp_kwargs)
