"""The registry's ``classes`` option: keep a subset of classes, relabelled 0..K-1 in the given order."""
from __future__ import annotations

import pytest
import torch

from vsd.data import create_dataset, dataset_info, dataset_to_tensors
from vsd.data.registry import ClassSubset


def test_digits_subset_sizes_and_labels():
    full = create_dataset("digits", "train")
    ds = create_dataset("digits", "train", classes=[0, 1, 2, 3, 4])
    assert len(ds) == sum(full.class_counts[:5])
    assert ds.class_counts == full.class_counts[:5]
    assert ds.num_classes == 5 and ds.classes == ("0", "1", "2", "3", "4")
    x, y = dataset_to_tensors(ds)
    assert set(y.tolist()) == set(range(5)) and x.shape[0] == len(ds)
    # the images are the full set's images of those classes, in order
    fx, fy = dataset_to_tensors(full)
    assert torch.equal(x, fx[fy < 5])


def test_order_defines_new_labels():
    full = create_dataset("digits", "test")
    ds = create_dataset("digits", "test", classes=[7, 2])
    assert ds.classes == ("7", "2") and ds.class_counts == [full.class_counts[7], full.class_counts[2]]
    first = next(i for i, t in enumerate(full.targets) if t in (7, 2))
    x, y = ds[0]
    assert y == (0 if full.targets[first] == 7 else 1) and torch.equal(x, full[first][0])


@pytest.mark.parametrize("name, options", [("digits", {}), ("digits_lt", {"imbalance_factor": 5}),
                                           ("synthetic", {"num_classes": 4, "in_chans": 1})])
def test_info_matches_dataset(name, options):
    info = dataset_info(name, 12, classes=[3, 1], **options)
    assert info.num_classes == 2 and len(info.classes) == 2
    for split in ("train", "test"):
        ds = create_dataset(name, split, image_size=12, classes=[3, 1], **options)
        assert ds.info == info and set(ds.targets) <= {0, 1} and sum(ds.class_counts) == len(ds)


def test_synthetic_subset():
    ds = create_dataset("synthetic", "train", num_classes=3, classes=[2])
    assert ds.num_classes == 1 and ds.classes == ("angle_2",) and set(ds.targets) == {0}


def test_wrapper_for_sets_not_in_memory():
    base = create_dataset("synthetic", "train", num_classes=3)
    sub = ClassSubset(base, [2, 0])
    assert sub.num_classes == 2 and sub.classes == ("angle_2", "angle_0")
    assert sub.class_counts == [base.class_counts[2], base.class_counts[0]] and len(sub) == len(sub.targets)
    index = base.targets.index(0)
    pos = sub.indices.index(index)
    x, y = sub[pos]
    assert y == 1 and torch.equal(x, base[index][0])
    assert sub.transform is base.transform and sub.transform_name == "eval"
    assert torch.equal(sub.load_image(pos), base.load_image(index))


@pytest.mark.parametrize("classes, match", [([0, 10], r"10 is not a class index.*0\.\.9"),
                                            ([1, 1], r"1 is given twice.*0\.\.9"),
                                            ([-1], r"-1 is not a class index"),
                                            ([], "non-empty")])
def test_bad_classes(classes, match):
    with pytest.raises(ValueError, match=match):
        create_dataset("digits", classes=classes)
    with pytest.raises(ValueError, match=match):
        dataset_info("digits", classes=classes)
