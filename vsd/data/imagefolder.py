"""``imagefolder``: any class-per-folder tree of image files, loaded lazily.

Layouts: ``<root>/<split>/<class>/<image>`` (the class list comes from ``<root>/train``), or a flat
``<root>/<class>/<image>`` tree, which is the ``train`` split only. Classes are the sorted folder names; images
are files ending in .png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff or .webp. Each image is converted to grayscale
or RGB (``in_chans``; default: from the first image), and resized so its shorter side is ``image_size`` then
center-cropped (default ``image_size``: the first image's size, which must then be square). Normalization:
``mean`` / ``std`` options, else the ImageNet statistics (their channel average for grayscale).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from PIL import Image

from vsd.data._tensor_dataset import ImageDataset, resize_center_crop
from vsd.data.info import DatasetInfo
from vsd.data.registry import register_dataset
from vsd.data.transforms import TransformArg

__all__ = ["ImageFolder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY_BANDS = ("1", "L", "I", "F")


def _require_root(root: Union[str, Path, None]) -> Path:
    if root is None:
        raise ValueError("imagefolder needs root=<folder> (data.root in a config): a tree of "
                         "<root>/<split>/<class>/<image> or <root>/<class>/<image>")
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"imagefolder root {path} is not a folder")
    return path


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_root(root: Path) -> Path:
    """The folder whose sub-folders are the classes: ``root/train`` in the split layout, else ``root``."""
    return root / "train" if (root / "train").is_dir() else root


def _split_dir(root: Path, split: str) -> Path:
    if (root / "train").is_dir():
        path = root / split
        if not path.is_dir():
            raise FileNotFoundError(f"imagefolder: no split folder {path}; found: {', '.join(_subdirs(root))}")
        return path
    if split != "train":
        raise FileNotFoundError(f"imagefolder: {root} has no split folders (train/, {split}/), so it is a flat "
                                f"class-per-folder tree holding only the 'train' split, not {split!r}")
    return root


#: What PIL raises for a file that is not a readable image (unknown format, truncated, broken chunks).
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _unreadable(path: Path, err: Exception) -> ValueError:
    return ValueError(f"imagefolder: cannot read image {path}: {' '.join(str(err).split()) or type(err).__name__}")


def _load(path: Path, in_chans: int) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("L" if in_chans == 1 else "RGB"))
    except _UNREADABLE as err:
        raise _unreadable(path, err) from None
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


@register_dataset("imagefolder")
class ImageFolder(ImageDataset):
    """A class-per-folder image tree (see the module docstring); options ``mean``, ``std``, ``in_chans``."""

    splits = None

    def __init__(self, split: str = "train", root: Union[str, Path, None] = None, *,
                 transform: TransformArg = "eval", image_size: Optional[int] = None, download: bool = False,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 in_chans: Optional[int] = None) -> None:
        path = _require_root(root)
        info = self.describe(root=path, image_size=image_size, mean=mean, std=std, in_chans=in_chans)
        split_dir = _split_dir(path, split)
        unknown = sorted(set(_subdirs(split_dir)) - set(info.classes))
        if unknown:
            raise ValueError(f"imagefolder: class folder(s) {', '.join(unknown)} in {split_dir} are not classes of "
                             f"{_class_root(path)}")
        self.samples: list[tuple[Path, int]] = [
            (file, label) for label, name in enumerate(info.classes) if (split_dir / name).is_dir()
            for file in _images_in(split_dir / name)]
        if not self.samples:
            raise FileNotFoundError(f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir}")
        super().__init__(info, [label for _, label in self.samples], split, transform)

    @classmethod
    def describe(cls, *, root: Any = None, image_size: Optional[int] = None,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 in_chans: Optional[int] = None, **options: Any) -> DatasetInfo:
        class_root = _class_root(_require_root(root))
        classes = _subdirs(class_root)
        first = next((files[0] for files in (_images_in(class_root / c) for c in classes) if files), None)
        if first is None:
            raise FileNotFoundError(f"imagefolder: no class folders with images under {class_root}")
        if in_chans is None or image_size is None:
            try:
                with Image.open(first) as image:
                    bands, (width, height) = image.getbands(), image.size
            except _UNREADABLE as err:
                raise _unreadable(first, err) from None
            if in_chans is None:
                in_chans = 1 if bands[0] in _GRAY_BANDS else 3
            if image_size is None:
                if width != height:
                    raise ValueError(f"imagefolder: the first image {first} is {width}x{height}, not square; "
                                     "pass image_size")
                image_size = width
        if in_chans not in (1, 3):
            raise ValueError(f"imagefolder: in_chans must be 1 or 3, got {in_chans}")
        default_mean = _IMAGENET_MEAN if in_chans == 3 else (round(sum(_IMAGENET_MEAN) / 3, 3),)
        default_std = _IMAGENET_STD if in_chans == 3 else (round(sum(_IMAGENET_STD) / 3, 3),)
        return DatasetInfo(name=cls.dataset_name, num_classes=len(classes), in_chans=in_chans,
                           image_size=image_size, mean=tuple(mean or default_mean), std=tuple(std or default_std),
                           classes=tuple(classes))

    def load_image(self, index: int) -> torch.Tensor:
        return resize_center_crop(_load(self.samples[index][0], self.info.in_chans), self.info.image_size)
