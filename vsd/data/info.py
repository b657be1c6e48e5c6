"""What a data set is, independent of its files: :class:`DatasetInfo` and the default data root."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_ROOT", "DatasetInfo"]

#: Where data sets with files on disk (CIFAR) are looked for when ``root`` is not given, relative to the
#: working directory. See ``datasets/README.md``.
DEFAULT_ROOT = Path("datasets")


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a data set: enough to build a model and its normalization without loading data.

    Args:
        name: registry name of the data set.
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        in_chans: image channels (1 grayscale, 3 RGB).
        image_size: height = width of the images the data set yields.
        mean: per-channel mean of ``[0, 1]`` pixel values used by the ``"eval"`` normalization.
        std: per-channel standard deviation, same convention.
        classes: class names, index = label.
        hflip: whether a horizontal flip keeps the label (False for digits), read by the augmentation presets.

    Example:
        >>> info = DatasetInfo("toy", 2, 1, 8, (0.5,), (0.25,), ("a", "b"))
        >>> info.num_classes, info.in_chans
        (2, 1)
    """

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    hflip: bool = True

    def __post_init__(self) -> None:
        # Accept lists from callers (and JSON) but store tuples so the info stays hashable and immutable.
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.num_classes < 1 or self.in_chans < 1 or self.image_size < 1:
            raise ValueError(f"DatasetInfo {self.name!r}: num_classes, in_chans and image_size must be >= 1, got "
                             f"{self.num_classes}, {self.in_chans}, {self.image_size}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"DatasetInfo {self.name!r}: mean and std need {self.in_chans} values (in_chans), "
                             f"got {len(self.mean)} and {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"DatasetInfo {self.name!r}: std must be positive, got {self.std}")
        if len(self.classes) != self.num_classes:
            raise ValueError(f"DatasetInfo {self.name!r}: {len(self.classes)} class names for "
                             f"{self.num_classes} classes")
