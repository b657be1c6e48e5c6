"""Long-tailed subsets with the exponential profile of LDAM-DRW / MDCS (Cao et al., NeurIPS 2019).

Class ``c`` of ``C`` keeps ``n_c = int(n_max * (1 / imbalance_factor) ** (c / (C - 1)))`` training samples, where
``n_max`` is the smallest class count of the balanced split (5,000 for CIFAR-10, 500 for CIFAR-100, 139 for the
digits train split). Selection matches the reference ``IMBALANCECIFAR`` code exactly: a ``RandomState(0)``
shuffles each class's indices in class order and the first ``n_c`` are kept, grouped by class. The test split
stays balanced.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Callable, ClassVar, Optional, Union

import numpy as np

from vsd.data.transforms import TransformArg

__all__ = ["LongTailMixin", "longtail_counts", "longtail_indices"]


def longtail_counts(n_max: int, num_classes: int, imbalance_factor: float) -> list[int]:
    """Per-class sample counts of the exponential long-tail profile (head class first).

    Example:
        >>> longtail_counts(5000, 10, 100)
        [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    """
    if imbalance_factor < 1:
        raise ValueError(f"imbalance_factor must be >= 1 (n_max / n_min), got {imbalance_factor}")
    if num_classes == 1:
        return [int(n_max)]
    return [int(n_max * (1.0 / imbalance_factor) ** (c / (num_classes - 1.0))) for c in range(num_classes)]


def longtail_indices(targets: Sequence[int], num_classes: int, imbalance_factor: float,
                     seed: int = 0) -> list[int]:
    """Indices of the long-tailed subset of a (roughly) balanced labelled set, grouped by class.

    Raises:
        ValueError: a class is empty, or ``imbalance_factor < 1``.
    """
    labels = np.asarray(targets, dtype=np.int64)
    per_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    n_max = min(len(idx) for idx in per_class)
    if n_max == 0:
        raise ValueError("cannot build a long-tailed subset: some class has no samples")
    rng = np.random.RandomState(seed)
    selected: list[int] = []
    for idx, count in zip(per_class, longtail_counts(n_max, num_classes, imbalance_factor)):
        rng.shuffle(idx)
        selected.extend(idx[:count].tolist())
    return selected


class LongTailMixin:
    """Turns a balanced :class:`TensorImageDataset` class into its long-tailed variant (train split only).

    Use as ``class CIFAR10LT(LongTailMixin, CIFAR10)`` and set ``default_imbalance_factor``. Adds the option
    ``imbalance_factor`` (``n_max / n_min``; ``None`` = the class default) and the attribute of the same name.
    """

    default_imbalance_factor: ClassVar[float]
    keep: Callable[[Sequence[int]], None]  # provided by TensorImageDataset

    def __init__(self, split: str = "train", root: Union[str, Path, None] = None, *,
                 transform: TransformArg = "eval", image_size: Optional[int] = None, download: bool = False,
                 imbalance_factor: Optional[float] = None) -> None:
        factor = float(self.default_imbalance_factor if imbalance_factor is None else imbalance_factor)
        if factor < 1:
            raise ValueError(f"{type(self).__name__}: imbalance_factor must be >= 1 (n_max / n_min), got {factor}")
        super().__init__(split, root, transform=transform, image_size=image_size, download=download)
        self.imbalance_factor = factor
        if split == "train":
            self.keep(longtail_indices(self.targets, self.num_classes, factor))
