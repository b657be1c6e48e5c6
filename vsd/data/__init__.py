"""Data sets, transform presets and wrappers.

Example:
    >>> from vsd.data import create_dataset, dataset_info
    >>> ds = create_dataset("digits", "train", transform="train")
    >>> x, y = ds[0]                     # float32 [1, 16, 16], normalized; int label
    >>> dataset_info("digits").num_classes
    10
"""
from vsd.data._tensor_dataset import ImageDataset, TensorImageDataset
from vsd.data.info import DEFAULT_ROOT, DatasetInfo
from vsd.data.registry import create_dataset, dataset_info, list_datasets, register_dataset
from vsd.data.transforms import PRESETS, build_transform
from vsd.data.wrappers import IndexedDataset, MultiViewDataset, dataset_to_tensors

# Importing the data set modules registers their names.
from vsd.data import cifar, digits, imagefolder, photos, synthetic  # noqa: E402,F401  (isort: skip)
from vsd.data import distilled  # noqa: E402,F401  (registers 'distilled'; isort: skip)

__all__ = [
    "DEFAULT_ROOT", "DatasetInfo", "ImageDataset", "IndexedDataset", "MultiViewDataset", "PRESETS",
    "TensorImageDataset", "build_transform", "create_dataset", "dataset_info", "dataset_to_tensors",
    "list_datasets", "register_dataset",
]
