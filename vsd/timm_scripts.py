"""What timm's own ``train.py`` / ``legacy_train.py`` need for vsd methods that their loaders cannot produce.

:func:`mdcs_train_loader`: MDCS trains on two views of every image, a weak one (timm's training transform of
the model's data config, no auto-augment) and a strong one (the same plus RandAugment, the stronger policy of
the official code). timm's ``create_loader`` yields one view, so this builds the training loader of an
ImageFolder (``root/<class>/<image>``, the layout of timm's ``--data-dir .../train``) whose batches are
``(torch.cat([weak, strong]), target)`` - the two views concatenated along the batch, the input that
:class:`vsd.wrappers.ExpertsWrapper` + :class:`vsd.losses.MDCSLoss` and :class:`vsd.tasks.mdcs.MDCSTask`
take - together with the training images per class (``MDCSLoss(class_counts)``). Under DDP it uses a
``DistributedSampler`` (timm's epoch loop calls its ``set_epoch``).

The batches are normalised float tensors on the CPU: run the script with ``--no-prefetcher`` (timm's prefetcher
expects its own loader) and without Mixup/CutMix (one label per image pair). See ``docs/timm_scripts.md``.

Example:
    >>> loader, class_counts = mdcs_train_loader("train_dir", data_config, batch_size=128)  # doctest: +SKIP
    >>> images, target = next(iter(loader))   # images: [2 * 128, 3, H, W], target: [128]
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from timm.data import create_transform
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.datasets import ImageFolder

__all__ = ["mdcs_train_loader"]

#: The strong view's extra augmentation (timm's RandAugment spec).
STRONG_AUGMENT = "rand-m9-mstd0.5-inc1"


class _TwoViews:
    """``image -> (weak(image), strong(image))``."""

    def __init__(self, weak: Callable[[Any], torch.Tensor], strong: Callable[[Any], torch.Tensor]) -> None:
        self.weak, self.strong = weak, strong

    def __call__(self, image: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.weak(image), self.strong(image)


def _collate(batch: List[Tuple[Tuple[torch.Tensor, torch.Tensor], int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    weak = torch.stack([views[0] for views, _ in batch])
    strong = torch.stack([views[1] for views, _ in batch])
    return torch.cat([weak, strong]), torch.tensor([label for _, label in batch])


def mdcs_train_loader(root: Union[str, Path], data_config: Dict[str, Any], batch_size: int,
                      distributed: bool = False, num_workers: int = 4, seed: int = 0,
                      strong_augment: str = STRONG_AUGMENT, pin_memory: bool = False
                      ) -> Tuple[DataLoader, List[int]]:
    """The MDCS training loader of the ImageFolder ``root`` and its class counts (see the module docstring).

    Args:
        root: the training split, one sub-folder per class (timm: ``os.path.join(args.data_dir, 'train')``).
        data_config: timm's data config of the model (``resolve_data_config(vars(args), model=model)``).
        batch_size: images per view per process (each batch holds ``2 * batch_size`` images).
        distributed: use a ``DistributedSampler`` (``args.distributed``).
        num_workers, pin_memory: as for timm's loaders (``args.workers``, ``args.pin_mem``).
        seed: the sampler's shuffling seed under DDP.
        strong_augment: timm auto-augment spec added to the strong view.

    Returns:
        ``(loader, class_counts)``: batches ``(torch.cat([weak, strong]), target)``; ``class_counts[c]`` = number
        of training images of class ``c`` (classes in ImageFolder's sorted-folder order, as timm's).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MDCS training folder {str(root)!r} does not exist (expected root/<class>/<image>)")
    common = dict(input_size=data_config["input_size"], interpolation=data_config["interpolation"],
                  mean=data_config["mean"], std=data_config["std"], crop_pct=data_config.get("crop_pct"),
                  is_training=True)
    weak = create_transform(**common)
    strong = create_transform(**common, auto_augment=strong_augment)
    dataset = ImageFolder(str(root), transform=_TwoViews(weak, strong))
    counts = Counter(dataset.targets)
    class_counts = [counts.get(c, 0) for c in range(len(dataset.classes))]
    sampler: Optional[DistributedSampler] = DistributedSampler(dataset, shuffle=True, seed=seed) \
        if distributed else None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=num_workers, collate_fn=_collate, drop_last=True, pin_memory=pin_memory,
                        persistent_workers=num_workers > 0)
    return loader, class_counts
