"""DINO projection head: MLP -> L2-normalized bottleneck -> weight-normalized prototypes.

Caron et al., ICCV 2021 (``DINOHead``); the random-teacher code (github.com/safelix/dinopl, ``DINOHead`` with
``L2Bottleneck`` config ``-/lb/fn/wn/l/-``) uses the same shape with defaults hidden [2048, 2048], bottleneck
256, 65536 prototypes and truncated-normal(0.02) initialisation of the linear layers::

    h = GELU(Linear(... GELU(Linear(x))))          (the hidden MLP)
    z = normalize(Linear(h))                         (bottleneck, unit L2 norm)
    s = z @ normalize_rows(V).T                     (prototype scores = cosines, weight norm with g = 1 fixed)

Deliberate difference: in dinopl the custom ``Linear.forward`` ignores the weight-normalized weight it is
handed, so its prototypes are in effect not normalized; here they are (as the paper and DINO describe).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """DINO head.

    Args:
        in_dim: Embedding width of the encoder.
        hidden_dims: Widths of the hidden MLP layers (each Linear + GELU); empty for none.
        bottleneck_dim: Width of the L2-normalized bottleneck.
        out_dim: Number of prototypes.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int] = (2048, 2048), bottleneck_dim: int = 256,
                 out_dim: int = 65536) -> None:
        super().__init__()
        dims: List[int] = [in_dim, *hidden_dims]
        layers: List[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU()]
        self.mlp = nn.Sequential(*layers)
        self.bottleneck = nn.Linear(dims[-1], bottleneck_dim)
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        self.out_dim = out_dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in [*self.mlp, self.bottleneck]:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings [..., in_dim] -> prototype scores [..., out_dim] in [-1, 1]."""
        z = F.normalize(self.bottleneck(self.mlp(x)), dim=-1)
        return z @ F.normalize(self.prototypes, dim=-1).t()
