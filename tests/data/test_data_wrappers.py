"""Wrappers: indices, multiple views, whole-set tensors."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from vsd.data import IndexedDataset, MultiViewDataset, create_dataset, dataset_to_tensors


def test_indexed_dataset_forwards_description():
    ds = create_dataset("synthetic", num_classes=3, train_per_class=4)
    indexed = IndexedDataset(ds)
    x, y, i = indexed[5]
    assert i == 5 and y == ds.targets[5] and torch.equal(x, ds[5][0])
    assert len(indexed) == 12 and indexed.info is ds.info and indexed.class_counts == [4, 4, 4]
    assert indexed.num_classes == 3 and indexed.classes == ds.classes and indexed.targets == ds.targets
    x, y, index = next(iter(DataLoader(indexed, batch_size=5)))
    assert x.shape == (5, 3, 16, 16) and index.tolist() == [0, 1, 2, 3, 4]


def test_multiview_dataset():
    raw = create_dataset("digits", transform="none")
    views, y = MultiViewDataset(raw, ["weak", "strong", "eval"])[3]
    assert len(views) == 3 and y == raw.targets[3]
    assert all(v.shape == (1, 16, 16) and v.dtype == torch.float32 for v in views)
    assert torch.equal(views[2], create_dataset("digits")[3][0])
    (first, second), _ = MultiViewDataset(raw, [lambda t: t.flip(-1), "none"])[0]
    assert torch.equal(first, second.flip(-1))
    batch, labels = next(iter(DataLoader(MultiViewDataset(raw, ["weak", "strong"]), batch_size=4)))
    assert len(batch) == 2 and batch[0].shape == (4, 1, 16, 16) and labels.shape == (4,)


def test_multiview_needs_raw_images():
    with pytest.raises(TypeError, match="transform='none'"):
        MultiViewDataset(create_dataset("synthetic"), ["weak"])
    with pytest.raises(ValueError, match="non-empty list"):
        MultiViewDataset(create_dataset("synthetic", transform="none"), "weak")


def test_dataset_to_tensors_fast_path_matches_items():
    ds = create_dataset("synthetic", "test")
    images, labels = dataset_to_tensors(ds, chunk_size=7)
    slow_images = torch.stack([ds[i][0] for i in range(len(ds))])
    assert torch.allclose(images, slow_images, atol=1e-6) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == ds.targets
    raw_images, _ = dataset_to_tensors(create_dataset("synthetic", "test", transform="none"))
    assert raw_images.dtype == torch.uint8 and raw_images.shape == images.shape
    wrapped_images, wrapped_labels = dataset_to_tensors(torch.utils.data.Subset(ds, [2, 0]))
    assert torch.equal(wrapped_images[1], images[0]) and wrapped_labels.tolist() == [ds.targets[2], ds.targets[0]]
