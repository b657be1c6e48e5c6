"""digits: the fixed stratified split, the recorded normalization constants, image sizes."""
from __future__ import annotations

import numpy as np
import torch

from vsd.data import create_dataset, dataset_info, dataset_to_tensors
from vsd.data.digits import DIGITS_MEAN, DIGITS_STD, _digits_uint8, load_digits_split


def test_split_sizes_disjoint_and_stratified():
    _, labels, train_idx, test_idx = _digits_uint8()
    assert len(train_idx) == 1437 and len(test_idx) == 360
    assert set(train_idx).isdisjoint(test_idx) and len(set(train_idx) | set(test_idx)) == 1797
    total = np.bincount(labels, minlength=10)
    test = np.bincount(labels[test_idx], minlength=10)
    assert np.all(np.abs(test - 0.2 * total) <= 1)
    assert create_dataset("digits", "test").class_counts == test.tolist()


def test_split_is_fixed():
    """Pin the split so a change of scikit-learn's shuffling would be noticed."""
    _, _, train_idx, test_idx = _digits_uint8()
    assert test_idx[:5].tolist() == sorted(test_idx)[:5]
    again = _digits_uint8.__wrapped__()
    assert np.array_equal(again[3], test_idx)


def test_normalization_constants_match_recomputation():
    images, _ = load_digits_split("train", 16)
    pixels = images.float() / 255
    assert abs(pixels.mean().item() - DIGITS_MEAN[0]) < 1e-3
    assert abs(pixels.std().item() - DIGITS_STD[0]) < 1e-3
    normalized, _ = dataset_to_tensors(create_dataset("digits"))
    assert abs(normalized.mean().item()) < 1e-2 and abs(normalized.std().item() - 1) < 1e-2


def test_values_and_sizes():
    raw = create_dataset("digits", "train", transform="none")
    assert raw.images.dtype == torch.uint8 and raw.images.shape == (1437, 1, 16, 16)
    assert raw.images.max().item() == 255 and raw.images.min().item() == 0
    native = create_dataset("digits", "train", transform="none", image_size=8)
    _, labels, train_idx, _ = _digits_uint8()
    assert native.targets == labels[train_idx].tolist()
    assert native.images.shape == (1437, 1, 8, 8)
    info = dataset_info("digits", 28)
    assert info.image_size == 28 and info.in_chans == 1 and not info.hflip
