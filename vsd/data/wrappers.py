"""Dataset wrappers for training methods: sample indices, several augmented views, and whole-set tensors."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from vsd.data._tensor_dataset import TensorImageDataset
from vsd.data.info import DatasetInfo
from vsd.data.transforms import TransformArg, build_transform

__all__ = ["IndexedDataset", "MultiViewDataset", "dataset_to_tensors"]


class _Wrapper(Dataset):
    """Forwards the data set description (``info``, ``targets``, ``class_counts``, ...) of the wrapped set."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def info(self) -> DatasetInfo:
        return self.dataset.info

    @property
    def targets(self) -> list[int]:
        return self.dataset.targets

    @property
    def class_counts(self) -> list[int]:
        return self.dataset.class_counts

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def classes(self) -> tuple[str, ...]:
        return self.dataset.classes


class IndexedDataset(_Wrapper):
    """``ds[i] -> (x, y, i)``: adds the sample index, for methods that keep per-sample state (PS-KD).

    Example:
        >>> from vsd.data import create_dataset
        >>> x, y, i = IndexedDataset(create_dataset("synthetic"))[5]; i
        5
    """

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        x, y = self.dataset[index]
        return x, y, index


class MultiViewDataset(_Wrapper):
    """``ds[i] -> ([view_1(x), view_2(x), ...], y)``: several transforms of one raw image (MDCS weak + strong).

    Args:
        dataset: a data set yielding raw ``uint8`` images, i.e. created with ``transform="none"``; it must
            have ``info`` (presets read the image size, normalization and flip rule from it).
        transforms: preset names (``"weak"``, ``"strong"``, ...) or callables on the raw ``uint8`` tensor.

    Example:
        >>> from vsd.data import create_dataset
        >>> raw = create_dataset("digits", transform="none")
        >>> (weak, strong), y = MultiViewDataset(raw, ["weak", "strong"])[0]
        >>> weak.shape, strong.dtype
        (torch.Size([1, 16, 16]), torch.float32)
    """

    def __init__(self, dataset: Any, transforms: Sequence[TransformArg]) -> None:
        super().__init__(dataset)
        if isinstance(transforms, str) or not transforms:
            raise ValueError(f"MultiViewDataset needs a non-empty list of transforms, got {transforms!r}")
        sample, _ = dataset[0]
        if not isinstance(sample, torch.Tensor) or sample.dtype != torch.uint8:
            got = sample.dtype if isinstance(sample, torch.Tensor) else type(sample).__name__
            raise TypeError("MultiViewDataset needs a data set of raw uint8 images: create it with "
                            f"transform='none' (its first image is {got})")
        self.transforms = [build_transform(t, dataset.info) for t in transforms]

    def __getitem__(self, index: int) -> tuple[list[Any], int]:
        x, y = self.dataset[index]
        return [transform(x) for transform in self.transforms], y


def dataset_to_tensors(dataset: Any, chunk_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """All samples of a data set as ``(images [N, C, H, W], labels [N] int64)``, in order.

    In-memory data sets with the ``"eval"`` or ``"none"`` transform are converted in vectorized chunks of
    ``chunk_size``; any other data set is read item by item (random transforms are then applied once).
    """
    if len(dataset) == 0:
        raise ValueError("dataset_to_tensors: the data set is empty")
    if isinstance(dataset, TensorImageDataset) and dataset.transform_name in ("eval", "none"):
        labels = torch.tensor(dataset.targets, dtype=torch.int64)
        if dataset.transform_name == "none":
            return dataset.images.clone(), labels
        images = torch.empty(dataset.images.shape, dtype=torch.float32)
        for start in range(0, len(images), chunk_size):
            images[start:start + chunk_size] = dataset.transform(dataset.images[start:start + chunk_size])
        return images, labels
    samples = [dataset[i] for i in range(len(dataset))]
    return torch.stack([s[0] for s in samples]), torch.tensor([int(s[1]) for s in samples], dtype=torch.int64)
