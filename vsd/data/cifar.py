"""``cifar10``, ``cifar100`` and their long-tailed ``*_lt`` variants, read from torchvision's on-disk format.

Expected files (what torchvision's downloader extracts): ``<root>/cifar-10-batches-py/{data_batch_1..5,
test_batch}`` and ``<root>/cifar-100-python/{train,test}``; the default root is ``datasets/``. The batches are
read with a restricted unpickler (numpy arrays and builtin containers only). ``download=True`` fetches and
extracts the official archive with torchvision's downloader (MD5-checked) when the folder is incomplete.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import numpy as np
import torch
from torchvision.datasets import CIFAR10 as _TVCIFAR10
from torchvision.datasets import CIFAR100 as _TVCIFAR100

from vsd.data._safe_pickle import load_restricted_pickle
from vsd.data._tensor_dataset import TensorImageDataset, resize_center_crop
from vsd.data.info import DEFAULT_ROOT, DatasetInfo
from vsd.data.longtail import LongTailMixin
from vsd.data.registry import register_dataset
from vsd.data.transforms import TransformArg

__all__ = ["CIFAR10", "CIFAR100", "CIFAR10LT", "CIFAR100LT"]

_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)
_NATIVE_SIZE = 32


def _check_memory(title: str, count: int, size: int) -> None:
    """Refuse an ``image_size`` whose resized copy (uint8, plus as much again while resizing) exceeds the
    memory available now, instead of failing inside the allocator."""
    if size <= _NATIVE_SIZE:
        return
    need = 2 * count * 3 * size * size
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no sysconf: nothing to compare with
        return
    if need > free:
        raise ValueError(f"{title} at image_size {size} needs about {need / 2**30:.1f} GiB of memory for {count} "
                         f"images, {free / 2**30:.1f} GiB are available; choose a smaller data.image_size")


class _CIFAR(TensorImageDataset):
    """Shared reader; subclasses set the torchvision class (folder, file lists, archive), labels key, stats."""

    title: ClassVar[str]
    torchvision_cls: ClassVar[Any]
    label_key: ClassVar[str]
    class_names: ClassVar[tuple[str, ...]]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]

    def __init__(self, split: str = "train", root: Union[str, Path, None] = None, *,
                 transform: TransformArg = "eval", image_size: Optional[int] = None,
                 download: bool = False) -> None:
        root = Path(root) if root is not None else DEFAULT_ROOT
        info = self.describe(image_size=image_size)
        files = [name for name, _md5 in (self.torchvision_cls.train_list if split == "train"
                                         else self.torchvision_cls.test_list)]
        if download and self._missing(root, files):
            self._download(root)
        missing = self._missing(root, files)
        if missing:
            raise FileNotFoundError(
                f"{self.title} not found: expected {', '.join(files)} in {root / self.torchvision_cls.base_folder} "
                f"(missing: {', '.join(missing)}). Set `download: true` in the data config (download=True) on a "
                "machine with internet, or see datasets/README.md")
        images, targets = self._read(root, files)
        _check_memory(self.title, len(images), info.image_size)
        super().__init__(resize_center_crop(images, info.image_size), targets, info, split, transform)

    @classmethod
    def describe(cls, *, root: Any = None, image_size: Optional[int] = None, **options: Any) -> DatasetInfo:
        return DatasetInfo(name=cls.dataset_name, num_classes=len(cls.class_names), in_chans=3,
                           image_size=_NATIVE_SIZE if image_size is None else image_size, mean=cls.mean, std=cls.std,
                           classes=cls.class_names)

    @classmethod
    def _missing(cls, root: Path, files: list[str]) -> list[str]:
        return [name for name in files if not (root / cls.torchvision_cls.base_folder / name).is_file()]

    @classmethod
    def _download(cls, root: Path) -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        tv = cls.torchvision_cls
        download_and_extract_archive(tv.url, str(root), filename=tv.filename, md5=tv.tgz_md5)

    @classmethod
    def _read(cls, root: Path, files: list[str]) -> tuple[torch.Tensor, list[int]]:
        """uint8 images [N, 3, 32, 32] and labels from the pickled batches (rows are R, G, B planes)."""
        arrays, targets = [], []
        for name in files:
            path = root / cls.torchvision_cls.base_folder / name
            batch = load_restricted_pickle(path)
            if not isinstance(batch, dict) or "data" not in batch or cls.label_key not in batch:
                raise ValueError(f"{path} is not a {cls.title} batch: expected a dict with keys 'data' and "
                                 f"{cls.label_key!r}")
            data = np.asarray(batch["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * _NATIVE_SIZE * _NATIVE_SIZE:
                raise ValueError(f"{path}: 'data' must be [N, 3072] uint8, got {data.dtype} {list(data.shape)}")
            labels = [int(t) for t in batch[cls.label_key]]
            if len(labels) != len(data):
                raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
            arrays.append(data.reshape(-1, 3, _NATIVE_SIZE, _NATIVE_SIZE))
            targets.extend(labels)
        return torch.from_numpy(np.concatenate(arrays)), targets


@register_dataset("cifar10")
class CIFAR10(_CIFAR):
    """CIFAR-10: 50,000 train / 10,000 test RGB 32 x 32 images, 10 classes."""

    title = "CIFAR-10"
    torchvision_cls = _TVCIFAR10
    label_key = "labels"
    class_names = _CIFAR10_CLASSES
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


@register_dataset("cifar100")
class CIFAR100(_CIFAR):
    """CIFAR-100 (fine labels): 50,000 train / 10,000 test RGB 32 x 32 images, 100 classes."""

    title = "CIFAR-100"
    torchvision_cls = _TVCIFAR100
    label_key = "fine_labels"
    class_names = _CIFAR100_CLASSES
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)


@register_dataset("cifar10_lt")
class CIFAR10LT(LongTailMixin, CIFAR10):
    """CIFAR-10-LT: imbalance factor 100 by default (5,000 -> 50 images per class, 12,406 in all)."""

    default_imbalance_factor = 100.0


@register_dataset("cifar100_lt")
class CIFAR100LT(LongTailMixin, CIFAR100):
    """CIFAR-100-LT: imbalance factor 100 by default (500 -> 5 images per class, 10,847 in all)."""

    default_imbalance_factor = 100.0
