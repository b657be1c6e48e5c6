"""The ``distilled`` data set: a folder written by ``tools/distill.py`` (``distilled.safetensors`` +
``distilled.json``), read back with its SHA-256 and format version checked (:func:`vsd.distill.load_distilled`).

* ``split="train"``: the distilled images, already in the space the networks consume (normalized with the
  source's mean/std, and ZCA-whitened when the export says ``zca``). Labels are the class indices; for soft-label
  exports ``targets`` holds the arg-max class and ``soft_targets`` the [N, K] probabilities.
* ``split="test"``: the source data set's test split, normalized (and ZCA-whitened with the exported matrices),
  so ``tools/train.py --set data.name=distilled data.root=<folder>`` trains on the distilled set and tests on
  real data.

Transforms act on the float images: ``"eval"`` / ``"none"`` return them unchanged, ``"train"`` / ``"weak"`` apply
the source's random crop with padding (and flip when the source allows flips); ``"strong"`` is refused (its
AutoAugment needs uint8 pixels); a callable receives the float image.

Example:
    >>> ds = create_dataset("distilled", "train", root="runs/mtt/digits_ipc1")   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torchvision.transforms import v2

from vsd.data._tensor_dataset import ImageDataset
from vsd.data.info import DatasetInfo
from vsd.data.registry import create_dataset, dataset_info, register_dataset
from vsd.data.transforms import _identity, crop_padding
from vsd.data.wrappers import dataset_to_tensors


def _root(root: Union[str, Path, None]) -> Path:
    if root is None:
        raise ValueError("data set 'distilled' needs data.root = the folder written by tools/distill.py "
                         "(holding distilled.json and distilled.safetensors)")
    return Path(root)


def _float_transform(transform: Any, info: DatasetInfo) -> Callable[[torch.Tensor], Any]:
    if callable(transform):
        return transform
    if transform in ("eval", "none"):
        return _identity  # picklable, so DataLoader workers can use it
    if transform in ("train", "weak"):
        ops = [v2.RandomCrop(info.image_size, padding=crop_padding(info.image_size))]
        if info.hflip:
            ops.append(v2.RandomHorizontalFlip())
        return v2.Compose(ops)
    raise ValueError(f"data set 'distilled' supports the transforms eval, none, train, weak or a callable on the "
                     f"float image; got {transform!r}")


@register_dataset("distilled")
class Distilled(ImageDataset):
    """A distilled export (see the module docstring)."""

    def __init__(self, split: str = "train", root: Union[str, Path, None] = None, *, transform: Any = "eval",
                 image_size: Optional[int] = None, download: bool = False) -> None:
        from vsd.distill.export import load_distilled

        tensors, meta = load_distilled(_root(root))
        info = self.describe(root=root, image_size=image_size)
        self.meta = meta
        self.soft_targets: Optional[torch.Tensor] = None
        if split == "train":
            self.images = tensors["images"].float()
            labels = tensors["labels"]
            if labels.dim() == 2:
                self.soft_targets = labels.float()
                labels = labels.argmax(dim=1)
        else:
            source = create_dataset(meta["dataset"], split, transform="eval", image_size=info.image_size,
                                    **meta.get("config", {}).get("data", {}).get("kwargs", {}))
            self.images, labels = dataset_to_tensors(source)
            if meta.get("zca"):
                shift = tensors["zca_mean"].reshape(1, -1)
                self.images = ((self.images.flatten(1) - shift) @ tensors["zca_transform"]).view_as(self.images)
        super().__init__(info, labels.tolist(), split, "none")
        self.transform_name = transform if isinstance(transform, str) else None
        self.transform = _float_transform(transform, info)

    @classmethod
    def describe(cls, *, root: Any = None, image_size: Optional[int] = None, **options: Any) -> DatasetInfo:
        import json

        from vsd.distill.export import META_FILE, DistilledFormatError

        path = _root(root) / META_FILE
        if not path.is_file():
            raise DistilledFormatError(f"no distilled export at {str(path.parent)!r} (expected {META_FILE})")
        meta = json.loads(path.read_text(encoding="utf-8"))
        size = int(meta["image_size"][0])
        if image_size is not None and image_size != size:
            raise ValueError(f"data set 'distilled' at {str(root)!r} holds {size}x{size} images; image_size="
                             f"{image_size} would need resizing distilled pixels, which is not supported")
        try:
            hflip = dataset_info(meta["dataset"]).hflip
        except (ValueError, TypeError):
            hflip = True
        return DatasetInfo(name="distilled", num_classes=len(meta["classes"]), in_chans=int(meta["in_chans"]),
                           image_size=size, mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                           classes=tuple(meta["classes"]), hflip=hflip)

    def load_image(self, index: int) -> torch.Tensor:
        return self.images[index].clone()
