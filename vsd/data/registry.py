"""The data set registry: ``create_dataset``, ``dataset_info``, ``list_datasets``, ``register_dataset``."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

from vsd.data._tensor_dataset import ImageDataset
from vsd.data.info import DatasetInfo
from vsd.data.transforms import TransformArg

__all__ = ["create_dataset", "dataset_info", "list_datasets", "register_dataset"]

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


def _check_options(name: str, cls: type[ImageDataset], options: dict[str, Any]) -> None:
    valid = _options(cls)
    if valid is None:
        return
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listing = ", ".join(valid) if valid else "none"
        raise TypeError(f"data set {name!r} got unknown option(s) {', '.join(map(repr, unknown))}; "
                        f"its options are: {listing}")


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
        **kwargs: data-set options (e.g. ``imbalance_factor`` for the ``*_lt`` sets).

    Raises:
        ValueError: unknown name or split. TypeError: an option the data set does not take.

    Example:
        >>> ds = create_dataset("digits", "test")
        >>> x, y = ds[0]; x.shape, x.dtype, len(ds)
        (torch.Size([1, 16, 16]), torch.float32, 360)
    """
    cls = _lookup(name)
    _check_options(name, cls, kwargs)
    cls.check_split(split)  # before any data is loaded
    return cls(split, root, transform=transform, image_size=image_size, download=download, **kwargs)


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
    _check_options(name, cls, kwargs)
    return cls.describe(root=root, image_size=image_size, **kwargs)
