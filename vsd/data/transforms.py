"""Transform presets on raw ``uint8`` image tensors ``[C, H, W]`` (torchvision.transforms.v2).

Presets (the ``transform`` argument of :func:`vsd.data.create_dataset`):

- ``"eval"``: to float in ``[0, 1]``, then normalize with ``info.mean`` / ``info.std``.
- ``"train"``: the standard augmentation: random crop with zero padding (4 px at 32 px, scaled with the image
  size: ``round(size / 8)``) and, where ``info.hflip``, a horizontal flip; then ``"eval"``.
- ``"weak"``: ``"train"`` plus a random rotation of up to 15 degrees (the weak view of RIDE/MDCS).
- ``"strong"``: the strong view of MDCS's official loader: crop (+ flip), AutoAugment with the CIFAR-10 policy,
  to float in ``[0, 1]``, :class:`Cutout` (one hole of side ``image_size // 2``: 16 px at 32 px), normalize.
- ``"none"``: the raw ``uint8`` tensor, untouched.

A :class:`ResizedCrop` (multi-crop views of DINO / random teachers) becomes ``RandomResizedCrop(size, scale)``
(+ a flip where ``info.hflip``) then ``"eval"``. A callable is used as is: it receives the raw ``uint8`` tensor
``[C, H, W]``. All presets work on grayscale
(1-channel) and RGB images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Tuple, Union

import torch
from torchvision.transforms import v2

from vsd.data.info import DatasetInfo

__all__ = ["PRESETS", "Cutout", "ResizedCrop", "TransformArg", "build_transform", "crop_padding"]

PRESETS = ("eval", "train", "weak", "strong", "none")

@dataclass(frozen=True)
class ResizedCrop:
    """A multi-crop view: ``RandomResizedCrop(size, scale)`` (antialiased, aspect ratio in [3/4, 4/3] as
    torchvision's default) + a horizontal flip where the data set allows, then ``"eval"`` (DINO's global crops:
    scale (0.4, 1), local crops: (0.05, 0.4))."""

    size: int
    scale: Tuple[float, float] = (0.4, 1.0)

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if self.size < 1 or not 0 < lo <= hi <= 1:
            raise ValueError(f"a resized crop needs size >= 1 and 0 < scale[0] <= scale[1] <= 1, got size "
                             f"{self.size}, scale {self.scale}")

    def build(self, info: DatasetInfo) -> Callable[[torch.Tensor], Any]:
        ops: list[v2.Transform] = [v2.RandomResizedCrop(self.size, scale=tuple(self.scale), antialias=True)]
        if info.hflip:
            ops.append(v2.RandomHorizontalFlip())
        return v2.Compose(ops + _to_normalized(info))


#: What ``transform`` arguments accept: a preset name, a :class:`ResizedCrop` or a callable on the raw uint8 tensor.
TransformArg = Union[str, ResizedCrop, Callable[[torch.Tensor], Any]]

_WEAK_ROTATION_DEGREES = 15.0


def crop_padding(image_size: int) -> int:
    """Zero padding of the random crop: 4 pixels at 32 x 32 (the CIFAR standard), proportional otherwise."""
    return max(1, round(image_size / 8))


class Cutout:
    """Zero one square hole per image (DeVries & Taylor 2017; the ``Cutout`` of MDCS's ``autoaug.py``).

    The centre ``(y, x)`` is uniform over all pixels; the hole is rows ``[y - L//2, y + L//2)`` and columns
    ``[x - L//2, x + L//2)`` clipped to the image, so it is smaller near the border. Applied to the float image in
    ``[0, 1]`` before normalization, as in the official loader (the hole ends up at ``-mean / std``).

    Args:
        length: Side ``L`` of the square, in pixels.
        n_holes: Number of holes (1 in MDCS).
    """

    def __init__(self, length: int, n_holes: int = 1) -> None:
        if length < 1 or n_holes < 1:
            raise ValueError(f"Cutout needs length >= 1 and n_holes >= 1, got {length} and {n_holes}")
        self.length, self.n_holes = length, n_holes

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        mask = torch.ones(h, w, dtype=image.dtype, device=image.device)
        half = self.length // 2
        for _ in range(self.n_holes):
            y, x = int(torch.randint(h, ())), int(torch.randint(w, ()))
            mask[max(0, y - half):min(h, y + half), max(0, x - half):min(w, x + half)] = 0
        return image * mask

    def __repr__(self) -> str:
        return f"Cutout(length={self.length}, n_holes={self.n_holes})"


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _to_normalized(info: DatasetInfo) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(info.mean), list(info.std))]


def _crop_flip(info: DatasetInfo) -> list[v2.Transform]:
    ops: list[v2.Transform] = [v2.RandomCrop(info.image_size, padding=crop_padding(info.image_size))]
    if info.hflip:
        ops.append(v2.RandomHorizontalFlip())
    return ops


def build_transform(transform: TransformArg, info: DatasetInfo) -> Callable[[torch.Tensor], Any]:
    """Turn a preset name (or a callable) into the callable applied to each raw ``uint8`` image.

    Args:
        transform: one of :data:`PRESETS` or a callable taking the raw ``uint8`` tensor ``[C, H, W]``.
        info: the data set's description (image size, normalization, whether flips are allowed).

    Returns:
        A picklable callable (safe for ``DataLoader`` workers). The ``"eval"`` one also accepts a batch
        ``[N, C, H, W]``.

    Example:
        >>> info = DatasetInfo("toy", 2, 1, 8, (0.5,), (0.25,), ("a", "b"))
        >>> build_transform("eval", info)(torch.full((1, 8, 8), 255, dtype=torch.uint8))[0, 0, 0].item()
        2.0
    """
    if isinstance(transform, ResizedCrop):
        return transform.build(info)
    if callable(transform):
        return transform
    if transform == "none":
        return _identity
    if transform == "eval":
        ops = _to_normalized(info)
    elif transform == "train":
        ops = _crop_flip(info) + _to_normalized(info)
    elif transform == "weak":
        ops = _crop_flip(info) + [v2.RandomRotation(_WEAK_ROTATION_DEGREES)] + _to_normalized(info)
    elif transform == "strong":
        to_float, normalize = _to_normalized(info)
        ops = _crop_flip(info) + [v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10), to_float,
                                  Cutout(max(1, info.image_size // 2)), normalize]
    else:
        raise ValueError(f"unknown transform {transform!r}: expected one of {', '.join(PRESETS)} or a callable "
                         "taking the raw uint8 image tensor [C, H, W]")
    return v2.Compose(ops)
