"""Differentiable Siamese Augmentation (DSA) with explicit, replayable parameters.

Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021
(official code: VICO-UoE/DatasetCondensation, ``DiffAugment`` / ``ParamDiffAug``).

Families and their ops (defaults of the paper's ``ParamDiffAug``), for ``x`` of shape [N, C, H, W]:

* ``color``: brightness ``x + (u - 0.5) * 1.0``; saturation ``m_c + (x - m_c) * 2.0 u`` with ``m_c`` the mean over
  channels; contrast ``m + (x - m) * (u + 0.5)`` with ``m`` the per-image mean (``u ~ U[0, 1)`` per image).
* ``crop``: integer translation by up to ``round(0.125 * size)`` pixels, zero fill.
* ``cutout``: a zeroed square of side ``round(0.5 * size)`` at a random centre.
* ``flip``: horizontal flip with probability 0.5.
* ``scale``: per-axis scale factors ``U[1/1.2, 1.2)``.
* ``rotate``: angle ``U[-15, 15)`` degrees.

Mode ``'S'`` applies one family drawn at random per call (the DSA default), mode ``'M'`` applies every family.

Every op is differentiable with respect to the pixels. The colour formulas are applied unclamped (kornia's
ColorJitter clamps to [0, 1], which zeroes gradients on normalized or ZCA-whitened inputs); the geometric ops
use kornia (``translate``, ``scale``, ``rotate``: bilinear sampling, zero padding).

Parameters are sampled once (:meth:`DSA.sample`) into a :class:`DSAParams` and can be replayed on any batch:
sample ``i`` of a batch of size ``M`` uses the parameters of row ``i mod n`` (``n`` = sampled rows). Replaying on a
batch of the sampled size is exact; on a smaller batch it uses the first rows, like the official code's shared
seed does; unlike kornia's own parameter replay, a different batch size is not an error.

Deliberate differences from the official code: the scale op multiplies coordinates by the inverse factor of
DSA's ``affine_grid`` formulation (same distribution of zoom in and out, kornia convention); rotation and scale
resample with kornia's ``align_corners=True`` bilinear warp instead of ``F.grid_sample``; parameters are explicit
objects instead of a global seed counter.

Example:
    >>> import torch
    >>> dsa = DSA()
    >>> x = torch.randn(4, 3, 8, 8, requires_grad=True)
    >>> params = dsa.sample(4, 8, 8)
    >>> y = dsa(x, params)
    >>> y.shape, torch.equal(y, dsa(x, params))
    (torch.Size([4, 3, 8, 8]), True)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from kornia.geometry.transform import rotate, scale, translate
from torch import nn

FAMILIES: Dict[str, Sequence[str]] = {
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("crop",),
    "cutout": ("cutout",),
    "flip": ("flip",),
    "scale": ("scale",),
    "rotate": ("rotate",),
}
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass
class DSAParams:
    """Sampled augmentation parameters: the ops to apply, in order, and a per-sample tensor for each op."""

    ops: List[str]
    values: Dict[str, torch.Tensor] = field(default_factory=dict)
    rows: int = 0

    def take(self, op: str, m: int, like: torch.Tensor) -> torch.Tensor:
        """The parameters of ``op`` for a batch of ``m`` samples (row ``i mod rows``), on ``like``'s device."""
        value = self.values[op]
        index = torch.arange(m) % self.rows
        out = value[index].to(like.device)
        return out.to(like.dtype) if out.is_floating_point() else out


class DSA(nn.Module):
    """Differentiable Siamese Augmentation; see the module docstring for the formulas.

    Args:
        strategy: families joined by ``_`` (subset of color, crop, cutout, flip, scale, rotate).
        mode: ``'S'`` one family per call, ``'M'`` all families.
    """

    def __init__(self, strategy: str = DEFAULT_STRATEGY, mode: str = "S", scale: float = 1.2, rotate: float = 15.0,
                 brightness: float = 1.0, saturation: float = 2.0, contrast: float = 0.5, cutout: float = 0.5,
                 crop_pad: float = 0.125, flip: float = 0.5) -> None:
        super().__init__()
        families = [f for f in strategy.split("_") if f]
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families:
            raise ValueError(f"unknown DSA families {unknown or strategy!r}; expected names from "
                             f"{list(FAMILIES)} joined by '_', e.g. {DEFAULT_STRATEGY!r}")
        if mode not in ("S", "M"):
            raise ValueError(f"DSA mode must be 'S' (one family per call) or 'M' (all families), got {mode!r}")
        if scale < 1.0 or not 0.0 <= flip <= 1.0 or not 0.0 <= cutout <= 1.0 or crop_pad < 0.0:
            raise ValueError("DSA needs scale >= 1, 0 <= flip <= 1, 0 <= cutout <= 1 and crop_pad >= 0")
        self.families = families
        self.mode = mode
        self.hyper = dict(scale=scale, rotate=rotate, brightness=brightness, saturation=saturation,
                          contrast=contrast, cutout=cutout, crop_pad=crop_pad, flip=flip)

    def sample(self, n: int, height: int, width: int, generator: Optional[torch.Generator] = None) -> DSAParams:
        """Draw parameters for ``n`` samples of size ``height`` x ``width`` (CPU tensors)."""
        if n < 1:
            raise ValueError(f"DSA.sample needs n >= 1 samples, got {n}")
        g = generator
        if self.mode == "S":
            pick = int(torch.randint(len(self.families), (1,), generator=g))
            families = [self.families[pick]]
        else:
            families = list(self.families)
        ops = [op for fam in families for op in FAMILIES[fam]]
        h = self.hyper
        values: Dict[str, torch.Tensor] = {}
        for op in ops:
            if op in ("brightness", "saturation", "contrast"):
                values[op] = torch.rand(n, generator=g)
            elif op == "crop":
                sh, sw = int(height * h["crop_pad"] + 0.5), int(width * h["crop_pad"] + 0.5)
                values[op] = torch.stack([torch.randint(-sw, sw + 1, (n,), generator=g),
                                          torch.randint(-sh, sh + 1, (n,), generator=g)], dim=1)
            elif op == "cutout":
                ch, cw = int(height * h["cutout"] + 0.5), int(width * h["cutout"] + 0.5)
                values[op] = torch.stack([torch.randint(0, height + (1 - ch % 2), (n,), generator=g),
                                          torch.randint(0, width + (1 - cw % 2), (n,), generator=g)], dim=1)
            elif op == "flip":
                values[op] = torch.rand(n, generator=g) < h["flip"]
            elif op == "scale":
                lo = 1.0 / h["scale"]
                values[op] = torch.rand(n, 2, generator=g) * (h["scale"] - lo) + lo
            elif op == "rotate":
                values[op] = (torch.rand(n, generator=g) - 0.5) * 2.0 * h["rotate"]
        return DSAParams(ops=ops, values=values, rows=n)

    def forward(self, x: torch.Tensor, params: Optional[DSAParams] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Augment ``x`` [N, C, H, W] with ``params`` (sampled now when not given)."""
        if x.dim() != 4:
            raise ValueError(f"DSA expects images [N, C, H, W], got shape {tuple(x.shape)}")
        if params is None:
            params = self.sample(x.shape[0], x.shape[2], x.shape[3], generator)
        for op in params.ops:
            x = getattr(self, f"_{op}")(x, params.take(op, x.shape[0], x))
        return x

    # ----------------------------------------------------------------------------------------- the ops
    def _brightness(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return x + (u - 0.5).view(-1, 1, 1, 1) * self.hyper["brightness"]

    def _saturation(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        return (x - mean) * (u * self.hyper["saturation"]).view(-1, 1, 1, 1) + mean

    def _contrast(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (u + self.hyper["contrast"]).view(-1, 1, 1, 1) + mean

    def _crop(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return translate(x, shift.to(x.dtype))

    def _cutout(self, x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        ch, cw = int(height * self.hyper["cutout"] + 0.5), int(width * self.hyper["cutout"] + 0.5)
        rows = torch.arange(height, device=x.device).view(1, -1)
        cols = torch.arange(width, device=x.device).view(1, -1)
        top = (centre[:, 0] - ch // 2).view(-1, 1)
        left = (centre[:, 1] - cw // 2).view(-1, 1)
        in_rows = (rows >= top) & (rows < top + ch)
        in_cols = (cols >= left) & (cols < left + cw)
        hole = in_rows[:, :, None] & in_cols[:, None, :]
        return x * (~hole).unsqueeze(1).to(x.dtype)

    def _flip(self, x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)

    def _scale(self, x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        return scale(x, factors)

    def _rotate(self, x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        return rotate(x, angle)
