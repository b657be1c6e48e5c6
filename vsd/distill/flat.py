"""A model viewed as a function of one flat parameter vector, via ``torch.func.functional_call``.

Trajectory matching works on flat vectors: expert snapshots, the student's inner-loop iterates and the matching
loss are all [P] tensors. :class:`FlatModel` records the parameter order (names and shapes) so a stored
trajectory can be checked against the architecture that reads it.

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
from torch.func import functional_call


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

    def flatten_module(self) -> torch.Tensor:
        """The model's current parameters as one detached flat vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])

    def unflatten(self, flat: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Split a flat vector into a ``{name: tensor}`` dict (views; differentiable)."""
        if flat.dim() != 1 or flat.numel() != self.num_params:
            raise ValueError(f"flat parameter vector must have shape [{self.num_params}] for this model, "
                             f"got {tuple(flat.shape)}")
        pieces = torch.split(flat, self.numels)
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}

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
        buffers = dict(self.model.named_buffers())
        return functional_call(self.model, (self.unflatten(flat), buffers), (x,))
