"""The data set registry: ``create_dataset``, ``dataset_info``, ``list_datasets``, ``register_dataset``."""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

from vsd.data._tensor_dataset import ImageDataset, TensorImageDataset
from vsd.data.info import DatasetInfo
from vsd.data.train_split import TRAIN_SPLIT_OPTIONS, apply_train_options
from vsd.data.transforms import TransformArg

__all__ = ["ClassSubset", "create_dataset", "dataset_info", "list_datasets", "register_dataset", "restrict_classes"]

_REGISTRY: dict[str, type[ImageDataset]] = {}
# Arguments every data set class takes; anything else in its __init__ signature is a data-set option.
_COMMON_ARGS = ("self", "split", "root", "transform", "image_size", "download")

D = TypeVar("D", bound=type[ImageDataset])


def register_dataset(name: str) -> Callable[[D], D]:
    """Class decorator adding an :class:`~vsd.data.ImageDataset` subclass to the registry under ``name``.

    The class needs ``splits`` (tuple of valid split names, or ``None`` to check them itself), a classmethod
    ``describe(*, root=None, image_size=None, **options) -> DatasetInfo`` and an ``__init__(split="train",
    root=None, *, transform="eval", image_size=None, download=False, <options with defaults>)``.

    Example:
        >>> @register_dataset("my_set")          # doctest: +SKIP
        ... class MySet(TensorImageDataset): ...
    """
    def decorator(cls: D) -> D:
        previous = _REGISTRY.get(name)
        if previous is not None and (previous.__module__, previous.__qualname__) != (cls.__module__,
                                                                                     cls.__qualname__):
            raise ValueError(f"data set name {name!r} is already registered by "
                             f"{previous.__module__}.{previous.__qualname__}")
        _REGISTRY[name] = cls
        cls.dataset_name = name
        return cls
    return decorator


def list_datasets() -> list[str]:
    """Registered data set names, sorted."""
    return sorted(_REGISTRY)


def _lookup(name: str) -> type[ImageDataset]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(list_datasets())}") from None


def _options(cls: type[ImageDataset]) -> Optional[list[str]]:
    """Names of the data-set-specific options of ``cls`` (None when its __init__ takes ``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name not in _COMMON_ARGS]


class DataOptionError(ValueError, TypeError):
    """An option the data set does not take (a ``TypeError`` like a bad keyword argument, and a ``ValueError``
    since it is bad input: ``data.kwargs`` in a config)."""


def _check_options(name: str, cls: type[ImageDataset], options: dict[str, Any]) -> None:
    valid = _options(cls)
    if valid is None:
        return
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listing = ", ".join(valid) if valid else "none"
        raise DataOptionError(f"data set {name!r} got unknown option(s) {', '.join(map(repr, unknown))} "
                              f"(data.kwargs); its options are: {listing}")


def _check_classes(name: str, info: DatasetInfo, classes: Sequence[int]) -> list[int]:
    """``classes`` as a list of ints, or one ValueError naming the bad value and the valid range."""
    valid = f"valid class indices of {name!r} are 0..{info.num_classes - 1}"
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or len(classes) == 0:
        raise ValueError(f"classes must be a non-empty list of class indices, got {classes!r}; {valid}")
    kept: list[int] = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < info.num_classes:
            raise ValueError(f"classes: {c!r} is not a class index; {valid}")
        if c in kept:
            raise ValueError(f"classes: {c!r} is given twice; {valid}")
        kept.append(int(c))
    return kept


def _subset_info(info: DatasetInfo, classes: list[int]) -> DatasetInfo:
    return dataclasses.replace(info, num_classes=len(classes), classes=tuple(info.classes[c] for c in classes))


class ClassSubset(ImageDataset):
    """The samples of ``dataset`` whose label is in ``classes``, relabelled ``classes[k] -> k``.

    Used by :func:`create_dataset` (``classes=...``) for data sets not held in memory; in-memory sets are cut
    in place with :meth:`TensorImageDataset.keep`. Images and the transform are those of the wrapped set.
    """

    def __init__(self, dataset: ImageDataset, classes: Sequence[int]) -> None:
        self.dataset = dataset
        self.class_indices = _check_classes(dataset.info.name, dataset.info, classes)
        remap = {c: k for k, c in enumerate(self.class_indices)}
        self.indices = [i for i, t in enumerate(dataset.targets) if t in remap]
        # Not ImageDataset.__init__: the transform stays the wrapped set's own.
        self.info = _subset_info(dataset.info, self.class_indices)
        self.split = dataset.split
        self.targets = [remap[dataset.targets[i]] for i in self.indices]
        self.class_counts = self._count_classes()

    @property
    def transform(self) -> Any:
        return self.dataset.transform

    @transform.setter
    def transform(self, value: Any) -> None:
        self.dataset.transform = value

    @property
    def transform_name(self) -> Optional[str]:
        return self.dataset.transform_name

    def load_image(self, index: int) -> Any:
        return self.dataset.load_image(self.indices[index])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        x, _ = self.dataset[self.indices[index]]
        return x, self.targets[index]


def restrict_classes(dataset: ImageDataset, classes: Sequence[int]) -> ImageDataset:
    """Keep the samples of ``dataset`` whose label is in ``classes``, relabelled ``0 .. len(classes) - 1`` in
    the given order. In-memory sets are cut in place (and returned); others are wrapped in :class:`ClassSubset`."""
    if not isinstance(dataset, TensorImageDataset):
        return ClassSubset(dataset, classes)
    kept = _check_classes(dataset.info.name, dataset.info, classes)
    remap = {c: k for k, c in enumerate(kept)}
    indices = [i for i, t in enumerate(dataset.targets) if t in remap]
    dataset.info = _subset_info(dataset.info, kept)
    dataset.targets = [remap.get(t, -1) for t in dataset.targets]  # keep() then drops the -1s
    dataset.keep(indices)
    return dataset


def create_dataset(name: str, split: str = "train", root: Union[str, Path, None] = None, *,
                   transform: TransformArg = "eval", image_size: Optional[int] = None, download: bool = False,
                   **kwargs: Any) -> ImageDataset:
    """Build a registered data set.

    Args:
        name: a name from :func:`list_datasets` (``digits``, ``cifar10``, ``imagefolder``, ...).
        split: ``"train"`` or ``"test"`` (``imagefolder``: any sub-folder name).
        root: folder holding the data set's files (default ``datasets/`` for CIFAR; required for imagefolder;
            ignored by the bundled or generated sets).
        transform: a preset name (``"eval"``, ``"train"``, ``"weak"``, ``"strong"``, ``"none"``) or a callable
            on the raw ``uint8`` image tensor ``[C, H, W]``.
        image_size: output height = width (default: the data set's own).
        download: fetch missing files where the data set supports it (CIFAR).
        **kwargs: data-set options (e.g. ``imbalance_factor`` for the ``*_lt`` sets). Every data set also takes
            ``classes``: a list of class indices; only their samples are kept, relabelled ``0 .. K-1`` in the
            given order (``info.num_classes``, ``info.classes`` and ``class_counts`` follow);
            ``samples_per_class`` and ``label_noise`` (train split only, see :mod:`vsd.data.train_split`).

    Raises:
        ValueError: unknown name or split, a bad ``classes`` entry. TypeError: an option the data set does not
            take.

    Example:
        >>> ds = create_dataset("digits", "test")
        >>> x, y = ds[0]; x.shape, x.dtype, len(ds)
        (torch.Size([1, 16, 16]), torch.float32, 360)
    """
    cls = _lookup(name)
    classes = kwargs.pop("classes", None)
    train_options = {k: kwargs.pop(k) for k in TRAIN_SPLIT_OPTIONS if k in kwargs}
    _check_options(name, cls, kwargs)
    cls.check_split(split)  # before any data is loaded
    if classes is not None:  # check before loading
        _check_classes(name, cls.describe(root=root, image_size=image_size, **kwargs), classes)
    dataset = cls(split, root, transform=transform, image_size=image_size, download=download, **kwargs)
    dataset = dataset if classes is None else restrict_classes(dataset, classes)
    return apply_train_options(dataset, split, train_options)


def dataset_info(name: str, image_size: Optional[int] = None, *, root: Union[str, Path, None] = None,
                 **kwargs: Any) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered data set without loading it (``imagefolder`` lists its folders).

    Takes the same ``image_size``, ``root`` and options as :func:`create_dataset`, so
    ``dataset_info(name, ...) == create_dataset(name, ...).info``.

    Example:
        >>> dataset_info("digits").mean
        (0.3054,)
    """
    cls = _lookup(name)
    classes = kwargs.pop("classes", None)
    for key in TRAIN_SPLIT_OPTIONS:  # they change the train samples, not the info
        kwargs.pop(key, None)
    _check_options(name, cls, kwargs)
    info = cls.describe(root=root, image_size=image_size, **kwargs)
    return info if classes is None else _subset_info(info, _check_classes(name, info, classes))
