"""``synthetic``: deterministic procedural images for tests and smoke runs (no files, no download).

Class ``c`` of ``C`` is a sinusoidal grating oriented at ``pi * c / C`` (+- a quarter of the angle step), with a
random frequency (1.5 to 3 cycles per image), phase and per-channel contrast, plus Gaussian pixel noise. The
train and test splits come from independent streams ``numpy.random.default_rng([seed, 0 for train or 1 for test])``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from vsd.data._tensor_dataset import TensorImageDataset
from vsd.data.info import DatasetInfo
from vsd.data.registry import register_dataset
from vsd.data.transforms import TransformArg

__all__ = ["Synthetic", "make_gratings"]

DEFAULT_IMAGE_SIZE = 16


def make_gratings(num_classes: int, per_class: int, image_size: int, in_chans: int, noise: float,
                  rng: np.random.Generator) -> tuple[torch.Tensor, list[int]]:
    """Class-ordered oriented gratings: uint8 images [num_classes * per_class, in_chans, S, S] and labels."""
    n = num_classes * per_class
    labels = np.repeat(np.arange(num_classes), per_class)
    step = np.pi / num_classes
    angle = labels * step + rng.uniform(-step / 4, step / 4, n)
    freq = rng.uniform(1.5, 3.0, n) * 2 * np.pi / image_size
    phase = rng.uniform(0, 2 * np.pi, n)
    contrast = rng.uniform(0.2, 0.45, (n, in_chans))
    coords = np.arange(image_size, dtype=np.float64)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    proj = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy
    wave = np.sin(freq[:, None, None] * proj + phase[:, None, None])
    images = 0.5 + contrast[:, :, None, None] * wave[:, None] + noise * rng.standard_normal(
        (n, in_chans, image_size, image_size))
    images = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    return torch.from_numpy(images), labels.tolist()


@register_dataset("synthetic")
class Synthetic(TensorImageDataset):
    """Oriented gratings + noise; options ``num_classes`` (10), ``train_per_class`` (32), ``test_per_class``
    (8), ``in_chans`` (3), ``noise`` (0.1, std in [0, 1] pixel units) and ``seed`` (0)."""

    def __init__(self, split: str = "train", root: Union[str, Path, None] = None, *,
                 transform: TransformArg = "eval", image_size: Optional[int] = None, download: bool = False,
                 num_classes: int = 10, train_per_class: int = 32, test_per_class: int = 8, in_chans: int = 3,
                 noise: float = 0.1, seed: int = 0) -> None:
        info = self.describe(image_size=image_size, num_classes=num_classes, in_chans=in_chans)
        per_class = train_per_class if split == "train" else test_per_class
        if per_class < 1:
            raise ValueError(f"synthetic: {split}_per_class must be >= 1, got {per_class}")
        rng = np.random.default_rng([seed, int(split != "train")])
        images, targets = make_gratings(num_classes, per_class, info.image_size, in_chans, noise, rng)
        super().__init__(images, targets, info, split, transform)

    @classmethod
    def describe(cls, *, root: Any = None, image_size: Optional[int] = None, num_classes: int = 10,
                 in_chans: int = 3, **options: Any) -> DatasetInfo:
        return DatasetInfo(name=cls.dataset_name, num_classes=num_classes, in_chans=in_chans,
                           image_size=DEFAULT_IMAGE_SIZE if image_size is None else image_size, mean=(0.5,) * in_chans,
                           std=(0.25,) * in_chans, classes=tuple(f"angle_{c}" for c in range(num_classes)))
