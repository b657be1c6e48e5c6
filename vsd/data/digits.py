"""``digits`` and ``digits_lt``: scikit-learn's bundled handwritten digits (no download).

1,797 grayscale 8 x 8 images with values 0..16, scaled to ``uint8`` (``round(v * 255 / 16)``) and resized
(bilinear, antialiased) to ``image_size`` (default 16). The split is fixed: ``train_test_split(test_size=0.2,
stratify=labels, random_state=0)`` -> 1,437 train / 360 test images, each split in the original file order.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from vsd.data._tensor_dataset import TensorImageDataset, resize_center_crop
from vsd.data.info import DatasetInfo
from vsd.data.longtail import LongTailMixin
from vsd.data.registry import register_dataset
from vsd.data.transforms import TransformArg

__all__ = ["Digits", "DigitsLT", "DIGITS_MEAN", "DIGITS_STD"]

DEFAULT_IMAGE_SIZE = 16
#: Pixel mean / std of the train split at 16 x 16 in [0, 1] (recomputed in tests/data/test_digits.py); used at
#: every image size.
DIGITS_MEAN = (0.3054,)
DIGITS_STD = (0.3187,)


@lru_cache(maxsize=1)
def _digits_uint8() -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """All 1,797 images as uint8 [N, 1, 8, 8], their labels, and the fixed train / test index arrays."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
    return images, labels, np.sort(train_idx), np.sort(test_idx)


def load_digits_split(split: str, image_size: int) -> tuple[torch.Tensor, list[int]]:
    """Images (uint8 [N, 1, image_size, image_size]) and labels of one split of the fixed digits split."""
    images, labels, train_idx, test_idx = _digits_uint8()
    index = torch.from_numpy(train_idx if split == "train" else test_idx)
    return resize_center_crop(images[index], image_size), labels[index.numpy()].tolist()


@register_dataset("digits")
class Digits(TensorImageDataset):
    """scikit-learn digits, 10 classes, 1 channel; ``"train"`` augmentation = padded crop without flip."""

    def __init__(self, split: str = "train", root: Union[str, Path, None] = None, *,
                 transform: TransformArg = "eval", image_size: Optional[int] = None,
                 download: bool = False) -> None:
        info = self.describe(image_size=image_size)
        images, targets = load_digits_split(split, info.image_size)
        super().__init__(images, targets, info, split, transform)

    @classmethod
    def describe(cls, *, root: Any = None, image_size: Optional[int] = None, **options: Any) -> DatasetInfo:
        return DatasetInfo(name=cls.dataset_name, num_classes=10, in_chans=1,
                           image_size=DEFAULT_IMAGE_SIZE if image_size is None else image_size,
                           mean=DIGITS_MEAN, std=DIGITS_STD,
                           classes=tuple(str(d) for d in range(10)), hflip=False)


@register_dataset("digits_lt")
class DigitsLT(LongTailMixin, Digits):
    """Long-tailed digits: exponential profile on the train split (``n_max`` = 139, the smallest train class;
    default imbalance factor 10 gives 139, 107, 83, 64, 49, 38, 29, 23, 17, 13 = 562 images); the test split is
    the balanced digits test split."""

    default_imbalance_factor = 10.0
