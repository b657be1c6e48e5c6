"""Base classes shared by every vsd data set: labels, class counts, info and the transform hook."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Optional

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from vsd.data.info import DatasetInfo
from vsd.data.transforms import TransformArg, build_transform

__all__ = ["ImageDataset", "TensorImageDataset", "resize_center_crop"]


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``uint8`` images ``[..., C, H, W]`` so the shorter side is ``size`` (bilinear, antialiased), then
    center-crop to ``size x size``. Square inputs are simply resized; inputs already at the size are returned."""
    height, width = images.shape[-2:]
    if height == size and width == size:
        return images
    images = TF.resize(images, [size, size] if height == width else size, antialias=True)
    return TF.center_crop(images, [size, size])


class ImageDataset(Dataset):
    """Base of every registered data set: ``ds[i] -> (transform(raw uint8 image), int label)``.

    Subclasses build their :class:`DatasetInfo` with the ``describe`` classmethod (cheap: no data loading),
    implement :meth:`load_image`, and list their valid ``splits`` (``None``: any name, checked by the subclass).
    Their ``__init__`` takes ``(split, root, *, transform, image_size, download, **options)``; the registry
    validates ``options`` against that signature.
    """

    splits: ClassVar[Optional[tuple[str, ...]]] = ("train", "test")
    #: The registry name, set by :func:`vsd.data.register_dataset`.
    dataset_name: ClassVar[str] = ""

    def __init__(self, info: DatasetInfo, targets: Sequence[int], split: str, transform: TransformArg) -> None:
        self.check_split(split)
        self.info = info
        self.split = split
        self.targets: list[int] = [int(t) for t in targets]
        self._check_labels()
        self.class_counts: list[int] = self._count_classes()
        self.transform_name: Optional[str] = transform if isinstance(transform, str) else None
        self.transform = build_transform(transform, info)

    @classmethod
    def check_split(cls, split: str) -> None:
        """Raise ValueError when ``split`` is not one of ``cls.splits`` (any split passes when it is None)."""
        if cls.splits is not None and split not in cls.splits:
            raise ValueError(f"data set {cls.dataset_name or cls.__name__!r} has no split {split!r}; valid splits: "
                             f"{', '.join(cls.splits)}")

    @classmethod
    def describe(cls, *, root: Any = None, image_size: Optional[int] = None, **options: Any) -> DatasetInfo:
        """The :class:`DatasetInfo` this class would produce for these arguments, without loading the data."""
        raise NotImplementedError(f"{cls.__name__} must implement describe()")

    def load_image(self, index: int) -> torch.Tensor:
        """The raw ``uint8`` image ``[C, H, W]`` at ``index``, before any transform."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_image()")

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(self.load_image(index)), self.targets[index]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.info.name!r}, split={self.split!r}, size={len(self)}, "
                f"num_classes={self.num_classes}, image=[{self.info.in_chans}, {self.info.image_size}, "
                f"{self.info.image_size}], transform={self.transform_name or self.transform!r})")

    def _check_labels(self) -> None:
        for index, label in enumerate(self.targets):
            if not 0 <= label < self.info.num_classes:
                raise ValueError(f"data set {self.info.name!r} ({self.split}): label {label} at index {index} is "
                                 f"outside 0..{self.info.num_classes - 1}")

    def _count_classes(self) -> list[int]:
        counts = [0] * self.info.num_classes
        for label in self.targets:
            counts[label] += 1
        return counts


class TensorImageDataset(ImageDataset):
    """An :class:`ImageDataset` whose images live in memory as one ``uint8`` tensor ``[N, C, H, W]``.

    ``images`` is exposed (read it, do not modify it); :func:`vsd.data.dataset_to_tensors` uses it as a fast path.
    """

    def __init__(self, images: torch.Tensor, targets: Sequence[int], info: DatasetInfo, split: str,
                 transform: TransformArg) -> None:
        expected = (info.in_chans, info.image_size, info.image_size)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"data set {info.name!r}: images must be uint8 [N, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}], got {images.dtype} {list(images.shape)}")
        if len(images) != len(targets):
            raise ValueError(f"data set {info.name!r}: {len(images)} images but {len(targets)} labels")
        self.images = images.contiguous()
        self._eval_cache: Optional[torch.Tensor] = None
        super().__init__(info, targets, split, transform)

    def load_image(self, index: int) -> torch.Tensor:
        return self.images[index].clone()

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if self.transform_name == "eval":  # deterministic: normalize the whole set once, then index
            if self._eval_cache is None:
                self._eval_cache = self.transform(self.images)
            return self._eval_cache[index], self.targets[index]
        return super().__getitem__(index)

    def keep(self, indices: Sequence[int]) -> None:
        """Keep only the samples at ``indices`` (in that order), updating ``targets`` and ``class_counts``."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        self.images = self.images[index]
        self._eval_cache = None
        self.targets = [self.targets[i] for i in index.tolist()]
        self.class_counts = self._count_classes()
