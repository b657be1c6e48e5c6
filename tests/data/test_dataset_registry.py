"""Registry: names, options, splits, DatasetInfo consistency and the common data set attributes."""
from __future__ import annotations

import pytest
import torch

from vsd.data import (DatasetInfo, TensorImageDataset, create_dataset, dataset_info, list_datasets,
                      register_dataset)
from vsd.data.photos import Photos

BUILTIN = {"digits", "digits_lt", "synthetic", "photos", "cifar10", "cifar100", "cifar10_lt", "cifar100_lt",
           "imagefolder", "distilled"}


def test_list_datasets_has_builtins():
    assert BUILTIN <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown data set 'mnist'.*digits"):
        create_dataset("mnist")
    with pytest.raises(ValueError, match="valid names"):
        dataset_info("mnist")


def test_unknown_option_names_the_key():
    with pytest.raises(TypeError, match="'imbalance_factr'.*imbalance_factor"):
        create_dataset("digits_lt", imbalance_factr=5)
    with pytest.raises(TypeError, match="'seed'.*none"):
        dataset_info("digits", seed=1)


def test_bad_split():
    with pytest.raises(ValueError, match="no split 'val'.*train, test"):
        create_dataset("digits", "val")
    with pytest.raises(ValueError, match="'photos' has no split 'valid'"):
        Photos("valid")  # direct construction is checked too


def test_bad_transform():
    with pytest.raises(ValueError, match="unknown transform 'fancy'"):
        create_dataset("synthetic", transform="fancy")


@pytest.mark.parametrize("name, options", [
    ("digits", {}), ("digits_lt", {"imbalance_factor": 5}), ("synthetic", {"num_classes": 3, "in_chans": 1}),
    ("photos", {"train_per_class": 4, "test_per_class": 2}),
])
@pytest.mark.parametrize("image_size", [None, 12])
def test_info_matches_dataset_and_items(name, options, image_size):
    if name == "photos":
        pytest.importorskip("skimage")
    info = dataset_info(name, image_size, **options)
    for split in ("train", "test"):
        ds = create_dataset(name, split, image_size=image_size, **options)
        assert ds.info == info and ds.num_classes == info.num_classes and ds.classes == info.classes
        assert isinstance(ds.targets, list) and len(ds.targets) == len(ds)
        assert sum(ds.class_counts) == len(ds) and len(ds.class_counts) == ds.num_classes
        x, y = ds[len(ds) - 1]
        assert x.dtype == torch.float32 and x.shape == (info.in_chans, info.image_size, info.image_size)
        assert isinstance(y, int) and y == ds.targets[-1]


def test_label_out_of_range_is_rejected():
    info = DatasetInfo("toy", 2, 1, 4, (0.5,), (0.5,), ("a", "b"))
    with pytest.raises(ValueError, match="label 2 at index 1 is outside 0..1"):
        TensorImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), [0, 2], info, "train", "eval")
    with pytest.raises(ValueError, match=r"uint8 \[N, 1, 4, 4\]"):
        TensorImageDataset(torch.zeros(2, 1, 4, 4), [0, 1], info, "train", "eval")


def test_info_validation():
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        DatasetInfo("toy", 2, 3, 4, (0.5,), (0.5,), ("a", "b"))
    with pytest.raises(ValueError, match="1 class names for 2 classes"):
        DatasetInfo("toy", 2, 1, 4, (0.5,), (0.5,), ("a",))


def test_register_dataset_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        @register_dataset("digits")
        class Other(TensorImageDataset):
            pass


def test_register_custom_dataset():
    @register_dataset("_toy_for_test")
    class Toy(TensorImageDataset):
        def __init__(self, split="train", root=None, *, transform="eval", image_size=None, download=False,
                     n=3):
            super().__init__(torch.zeros(n, 1, 4, 4, dtype=torch.uint8), [0] * n, self.describe(), split,
                             transform)

        @classmethod
        def describe(cls, *, root=None, image_size=None, **options):
            return DatasetInfo(cls.dataset_name, 1, 1, 4, (0.0,), (1.0,), ("zero",))

    assert len(create_dataset("_toy_for_test", n=5)) == 5
    assert dataset_info("_toy_for_test").name == "_toy_for_test"
    with pytest.raises(TypeError, match="'m'.*n"):
        create_dataset("_toy_for_test", m=1)
