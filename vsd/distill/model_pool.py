"""A pool of small networks trained online on the synthetic set, as used by KRR-ST (and FRePo).

Each member is trained on ``(X_syn, Y_syn)`` by MSE, one step each time it is used, and re-initialised (with a
fresh optimizer) once it has taken ``max_steps`` steps, so the pool always holds networks at diverse stages
of training. At the start (:meth:`ModelPool.warm_up`) every member takes a random number of steps drawn from
``U{1 .. max_steps-1}``, which spreads the members' ages.

Difference from the official code (db-Lee/selfsup_dd, ``model_pool.py``): there, re-initialisation does not
reset the member's step counter, so a member that reached the limit is re-initialised at every later use and
never trained again. Here the counter is reset to 0 and the fresh member trains in the same call.
All randomness of the pool itself (warm-up lengths, member choice) comes from its own generator, whose state is
part of :meth:`ModelPool.state_dict`, so a resumed run continues exactly (member re-initialisation uses the
global torch RNG; save that too).

Example:
    >>> pool = ModelPool(lambda: torch.nn.Linear(4, 2), size=3, max_steps=5,
    ...                  make_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
    >>> pool.warm_up(torch.randn(6, 4), torch.randn(6, 2))
    >>> loss = pool.update(pool.sample(), torch.randn(6, 4), torch.randn(6, 2))
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Set

import torch
import torch.nn as nn
import torch.nn.functional as F

from vsd.probe import embed

__all__ = ["ModelPool", "head_keys", "member_features"]


def member_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features [N, D] of ``model``: timm's ``forward_head(forward_features(x), pre_logits=True)``,
    or ``model.embed(x)`` for modules that define it."""
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        feats = embed(model, x)
    elif hasattr(model, "embed"):
        feats = model.embed(x)
    else:
        raise TypeError(f"{type(model).__name__} exposes neither timm's forward_features/forward_head nor "
                        "embed(x); the model pool needs penultimate features")
    return feats.flatten(1)


def head_keys(model: nn.Module) -> Set[str]:
    """State-dict keys of the classifier head (timm's ``get_classifier()``): what "drop the head" removes and
    what an encoder checkpoint may omit. Empty for modules without ``get_classifier``."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        return set()
    ids = {id(t) for t in list(head.parameters()) + list(head.buffers())}
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {name for name, t in named if id(t) in ids}


class ModelPool:
    """``size`` networks built by ``factory`` and trained online on the synthetic set by MSE.

    Args:
        factory: builds a freshly initialised member whose output width equals the target width.
        size: number of members (>= 1).
        max_steps: training steps after which a member is re-initialised (>= 2).
        make_optimizer: builds the optimizer of a member.
        generator: source of the pool's own randomness (warm-up lengths, member choice).
    """

    def __init__(self, factory: Callable[[], nn.Module], size: int, max_steps: int,
                 make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
                 generator: Optional[torch.Generator] = None) -> None:
        if size < 1:
            raise ValueError(f"model pool size must be >= 1, got {size}")
        if max_steps < 2:
            raise ValueError(f"model pool max_steps (steps before a member is re-initialised) must be >= 2, "
                             f"got {max_steps}")
        self.factory = factory
        self.size = size
        self.max_steps = max_steps
        self.make_optimizer = make_optimizer
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.members: List[nn.Module] = []
        self.optimizers: List[torch.optim.Optimizer] = []
        self.steps: List[int] = []
        for _ in range(size):
            model = factory()
            self.members.append(model)
            self.optimizers.append(make_optimizer(model))
            self.steps.append(0)

    def _randint(self, low: int, high: int) -> int:
        """Uniform integer in [low, high) from the pool's generator."""
        return int(torch.randint(low, high, (1,), generator=self.generator))

    def sample(self) -> int:
        """Index of a member drawn uniformly at random."""
        return self._randint(0, self.size)

    def _train_step(self, idx: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        model, opt = self.members[idx], self.optimizers[idx]
        model.train()
        out = model(x)
        if out.shape != y.shape:
            raise ValueError(f"model pool member output has shape {tuple(out.shape)} but the synthetic targets "
                             f"have shape {tuple(y.shape)}; build members with the target width as num_classes")
        loss = F.mse_loss(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.steps[idx] += 1
        return loss.detach()

    def reset(self, idx: int) -> None:
        """Re-initialise member ``idx`` (new weights and optimizer) and reset its step counter to 0."""
        device = next(iter(self.members[idx].parameters()), torch.empty(0)).device
        self.members[idx] = self.factory().to(device)
        self.optimizers[idx] = self.make_optimizer(self.members[idx])
        self.steps[idx] = 0

    def warm_up(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Train every member for a random number of steps in ``U{1 .. max_steps-1}`` on ``(x, y)``."""
        x, y = x.detach(), y.detach()
        for idx in range(self.size):
            for _ in range(self._randint(1, self.max_steps)):
                self._train_step(idx, x, y)

    def update(self, idx: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Train member ``idx`` one step on ``(x, y)`` (detached), re-initialising it first if it has reached
        ``max_steps``; return the member's MSE before the step (a 0-d tensor on its device: no host sync)."""
        if not 0 <= idx < self.size:
            raise IndexError(f"model pool member index must lie in [0, {self.size}), got {idx}")
        if self.steps[idx] >= self.max_steps:
            self.reset(idx)
        return self._train_step(idx, x.detach(), y.detach())

    def state_dict(self) -> Dict[str, Any]:
        """Members' weights, optimizer states, step counters and the generator state (checkpoint-safe)."""
        return {
            "members": [m.state_dict() for m in self.members],
            "optimizers": [o.state_dict() for o in self.optimizers],
            "steps": list(self.steps),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict` (same size and architecture)."""
        if len(state["members"]) != self.size:
            raise ValueError(f"model pool state holds {len(state['members'])} members, this pool has {self.size}")
        for idx in range(self.size):
            self.members[idx].load_state_dict(state["members"][idx])
            self.optimizers[idx] = self.make_optimizer(self.members[idx])
            self.optimizers[idx].load_state_dict(state["optimizers"][idx])
        self.steps = [int(s) for s in state["steps"]]
        self.generator.set_state(state["generator"])
