"""A model viewed as a function of one flat parameter vector.

Trajectory matching works on flat vectors: expert snapshots, the student's inner-loop iterates and the matching
loss are all [P] tensors. :class:`FlatModel` records the parameter order (names and shapes) so a stored
trajectory can be checked against the architecture that reads it, and calls the model with its parameters
taken from a flat vector.

The call puts views of the vector straight into each submodule's ``_parameters`` slots for the duration of the
forward pass (the slots and the view shapes are resolved once, at construction) and puts the module's own
parameters back afterwards, so the model itself is left unchanged. This is the reparametrisation of MTT's
``ReparamModule`` without its per-call module walk, and cheaper than ``torch.func.functional_call``, which
re-resolves every name, re-collects the buffers and checks for tied weights on every call (about 1.3 ms per
call for ConvNet-D3, measured on CPU; an unroll calls the model ``syn_steps`` times per iteration, twice in
the constant-memory engine). It works under ``torch.func.vmap`` (one model call for K parameter vectors).
Buffers are the module's own.

Example:
    >>> import torch
    >>> fm = FlatModel(torch.nn.Linear(3, 2))
    >>> w = fm.flatten_module()
    >>> fm.num_params, tuple(fm(w, torch.zeros(5, 3)).shape)
    (8, (5, 2))
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn


class FlatModel:
    """Call ``model`` with its parameters taken from a flat vector (buffers are the module's own)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        named = [(n, p) for n, p in model.named_parameters()]
        if not named:
            raise ValueError("FlatModel needs a model with parameters")
        self.names: List[str] = [n for n, _ in named]
        self.shapes: List[Tuple[int, ...]] = [tuple(p.shape) for _, p in named]
        self.numels: List[int] = [p.numel() for _, p in named]
        self.num_params = sum(self.numels)
        # the parameter slots (owning module's dict, key), in flat order; a tied parameter is listed once by
        # named_parameters and the other owners would keep their own copy, so refuse ties
        self._slots: List[Tuple[Dict[str, torch.Tensor], str]] = []
        for name in self.names:
            owner, _, key = name.rpartition(".")
            self._slots.append((model.get_submodule(owner)._parameters, key))
        if sum(1 for m in model.modules() for p in m._parameters.values() if p is not None) != len(self._slots):
            raise ValueError("FlatModel does not support tied (shared) parameters")

    def flatten_module(self) -> torch.Tensor:
        """The model's current parameters as one detached flat vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])

    def unflatten(self, flat: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Split a flat vector into a ``{name: tensor}`` dict (views; differentiable)."""
        self._check(flat)
        return dict(zip(self.names, self._views(flat)))

    def _check(self, flat: torch.Tensor) -> None:
        if flat.dim() != 1 or flat.numel() != self.num_params:
            raise ValueError(f"flat parameter vector must have shape [{self.num_params}] for this model, "
                             f"got {tuple(flat.shape)}")

    def _views(self, flat: torch.Tensor) -> List[torch.Tensor]:
        return [piece.view(shape) for piece, shape in zip(torch.split(flat, self.numels), self.shapes)]

    def load_into_module(self, flat: torch.Tensor) -> None:
        """Copy a flat vector into the model's parameters (in place, no autograd)."""
        values = self.unflatten(flat.detach())
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(values[name])

    def layout(self) -> Dict[str, List]:
        """JSON description of the parameter order (names and shapes), stored with expert buffers."""
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    def conv_mask(self) -> torch.Tensor:
        """Boolean [P] mask of the entries belonging to 4-d (convolution) weights."""
        return torch.cat([torch.full((n,), len(s) == 4, dtype=torch.bool) for n, s in zip(self.numels, self.shapes)])

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self._check(flat)
        own = [slots[key] for slots, key in self._slots]
        try:
            for (slots, key), view in zip(self._slots, self._views(flat)):
                slots[key] = view
            return self.model(x)
        finally:
            for (slots, key), param in zip(self._slots, own):
                slots[key] = param
