"""``photos``: a small natural-image set built offline from the photographs bundled with scikit-image and
scikit-learn (``pip install vsd[photos]`` for scikit-image).

Ten colour photographs are ten classes: scikit-image's astronaut, coffee, chelsea (a cat), rocket,
hubble_deep_field, immunohistochemistry, motorcycle (left stereo view) and retina (its central square, inside
the black border), and scikit-learn's china and flower. Each photo is resized so its shorter side is
``8 * image_size`` (256 px for the default 32 x 32 patches), so a patch covers the same part of the scene at
every resolution. Patches are square crops at distinct positions drawn with
``numpy.random.default_rng([seed, class, 0 for train or 1 for test])``: train patches lie wholly in the left 70%
of the photo's width, test patches in the right 30%, so no pixel is shared between the splits. The set exists
because digits is too easy for representation-learning studies (a random ConvNet's features already probe at
98% there); this implementation's probe accuracy has not been measured.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from vsd.data._tensor_dataset import TensorImageDataset
from vsd.data.info import DatasetInfo
from vsd.data.registry import register_dataset
from vsd.data.transforms import TransformArg

__all__ = ["Photos", "PHOTO_NAMES", "PHOTOS_MEAN", "PHOTOS_STD", "TRAIN_FRACTION"]

PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
               "motorcycle", "retina", "china", "flower")
#: Fraction of each photo's width (from the left) that train patches come from; test patches use the rest.
TRAIN_FRACTION = 0.7
DEFAULT_IMAGE_SIZE = 32
_SCALE = 8  # shorter photo side = _SCALE * image_size
#: Pixel mean / std of the default train split (500 patches per class at 32 x 32) in [0, 1]; recomputed in
#: tests/data/test_photos.py.
PHOTOS_MEAN = (0.5033, 0.3721, 0.3207)
PHOTOS_STD = (0.3122, 0.2372, 0.2409)


def _skimage_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        try:
            import skimage.data
        except ImportError as err:
            raise ImportError("the 'photos' data set needs scikit-image: pip install vsd[photos]") from err
        if name == "motorcycle":
            return skimage.data.stereo_motorcycle()[0]
        image = getattr(skimage.data, name)()
        if name == "retina":  # keep the square inside the circular field of view
            h, w = image.shape[:2]
            image = image[round(0.17 * h):round(0.83 * h), round(0.17 * w):round(0.83 * w)]
        return image
    return load


def _sklearn_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    return load


_LOADERS = {name: (_sklearn_photo(name) if name in ("china", "flower") else _skimage_photo(name))
            for name in PHOTO_NAMES}


@lru_cache(maxsize=2)
def load_photos(image_size: int) -> tuple[torch.Tensor, ...]:
    """The ten photos as uint8 RGB tensors [3, H, W], shorter side ``8 * image_size`` (cached per size)."""
    photos = []
    for name in PHOTO_NAMES:
        array = np.array(_LOADERS[name](), dtype=np.uint8)  # a writable copy
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"photos: {name} is not an RGB image: shape {array.shape}")
        image = torch.from_numpy(array).permute(2, 0, 1)
        photos.append(TF.resize(image, _SCALE * image_size, antialias=True).contiguous())
    return tuple(photos)


def split_columns(width: int, split: str) -> tuple[int, int]:
    """Column range ``[start, stop)`` of a photo of ``width`` pixels that ``split``'s patches lie in."""
    boundary = int(TRAIN_FRACTION * width)
    return (0, boundary) if split == "train" else (boundary, width)


def _patch_origins(photo_shape: tuple[int, int], columns: tuple[int, int], size: int, count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct (top, left) positions of ``size`` patches lying wholly inside ``columns``."""
    height = photo_shape[0]
    n_tops, n_lefts = height - size + 1, columns[1] - columns[0] - size + 1
    if n_tops < 1 or n_lefts < 1 or count > n_tops * n_lefts:
        raise ValueError(f"photos: cannot draw {count} distinct {size}px patches from a region of "
                         f"{height}x{columns[1] - columns[0]} pixels")
    flat = rng.choice(n_tops * n_lefts, size=count, replace=False)
    return np.stack([flat // n_lefts, columns[0] + flat % n_lefts], axis=1)


@register_dataset("photos")
class Photos(TensorImageDataset):
    """Patches of ten bundled photographs (see the module docstring); options ``train_per_class`` (500),
    ``test_per_class`` (100) and ``seed`` (0). ``origins`` holds each patch's (top, left) in its resized photo,
    ``regions`` each class's column range for this split."""

    def __init__(self, split: str = "train", root: Union[str, Path, None] = None, *,
                 transform: TransformArg = "eval", image_size: Optional[int] = None, download: bool = False,
                 train_per_class: int = 500, test_per_class: int = 100, seed: int = 0) -> None:
        info = self.describe(image_size=image_size)
        per_class = train_per_class if split == "train" else test_per_class
        size = info.image_size
        patches, origins, targets = [], [], []
        self.regions: list[tuple[int, int]] = []
        for label, photo in enumerate(load_photos(size)):
            columns = split_columns(photo.shape[2], split)
            rng = np.random.default_rng([seed, label, int(split != "train")])
            for top, left in _patch_origins(tuple(photo.shape[1:]), columns, size, per_class, rng).tolist():
                patches.append(photo[:, top:top + size, left:left + size])
                origins.append((top, left))
            targets.extend([label] * per_class)
            self.regions.append(columns)
        self.origins = torch.tensor(origins, dtype=torch.long).reshape(-1, 2)
        super().__init__(torch.stack(patches), targets, info, split, transform)

    @classmethod
    def describe(cls, *, root: Any = None, image_size: Optional[int] = None, **options: Any) -> DatasetInfo:
        return DatasetInfo(name=cls.dataset_name, num_classes=len(PHOTO_NAMES), in_chans=3,
                           image_size=DEFAULT_IMAGE_SIZE if image_size is None else image_size,
                           mean=PHOTOS_MEAN, std=PHOTOS_STD,
                           classes=PHOTO_NAMES)
