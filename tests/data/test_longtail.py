"""Long-tailed profiles: the formula, the reference selection, and the *_lt data sets."""
from __future__ import annotations

import numpy as np
import pytest

from vsd.data import create_dataset
from vsd.data.longtail import longtail_counts, longtail_indices


def test_counts_formula_and_literature_totals():
    for c, n in enumerate(longtail_counts(5000, 10, 100)):
        assert n == int(5000 * 0.01 ** (c / 9))
    assert sum(longtail_counts(5000, 10, 100)) == 12406  # CIFAR-10-LT, imbalance 100
    assert sum(longtail_counts(500, 100, 100)) == 10847  # CIFAR-100-LT, imbalance 100
    assert longtail_counts(500, 100, 1) == [500] * 100
    with pytest.raises(ValueError, match=">= 1"):
        longtail_counts(10, 3, 0.5)


def _reference_selection(targets, counts, seed):
    """The IMBALANCECIFAR selection of LDAM-DRW: global numpy seed, per-class shuffle, first n_c."""
    np.random.seed(seed)
    targets = np.array(targets, dtype=np.int64)
    selected = []
    for the_class, n in zip(np.unique(targets), counts):
        idx = np.where(targets == the_class)[0]
        np.random.shuffle(idx)
        selected.extend(idx[:n].tolist())
    return selected


def test_selection_matches_reference_code():
    targets = np.random.default_rng(1).permutation(np.repeat(np.arange(10), 50)).tolist()
    ours = longtail_indices(targets, 10, 20)
    assert ours == _reference_selection(targets, longtail_counts(50, 10, 20), seed=0)
    assert np.bincount(np.array(targets)[ours], minlength=10).tolist() == longtail_counts(50, 10, 20)


def test_digits_lt_counts_and_balanced_test():
    train = create_dataset("digits_lt")
    n_max = min(create_dataset("digits").class_counts)
    assert train.class_counts == longtail_counts(n_max, 10, 10) and train.imbalance_factor == 10
    assert train.class_counts == [139, 107, 83, 64, 49, 38, 29, 23, 17, 13]
    assert create_dataset("digits_lt", "test").class_counts == create_dataset("digits", "test").class_counts
    heavier = create_dataset("digits_lt", imbalance_factor=50)
    assert heavier.class_counts == longtail_counts(n_max, 10, 50)
    with pytest.raises(ValueError, match="imbalance_factor must be >= 1"):
        create_dataset("digits_lt", imbalance_factor=0.5)


def test_cifar_lt_from_files(tmp_path, write_cifar):
    write_cifar(tmp_path, "cifar10", train_per_class=2)  # 10 images per class
    train = create_dataset("cifar10_lt", "train", tmp_path, imbalance_factor=10)
    assert train.class_counts == longtail_counts(10, 10, 10) == [10, 7, 5, 4, 3, 2, 2, 1, 1, 1]
    assert train.targets == sorted(train.targets)  # grouped by class, as in the reference code
    default = create_dataset("cifar10_lt", "train", tmp_path)
    assert default.imbalance_factor == 100 and default.class_counts == longtail_counts(10, 10, 100)
    assert create_dataset("cifar10_lt", "test", tmp_path).class_counts == [1] * 10
    write_cifar(tmp_path, "cifar100", train_per_class=5)
    assert create_dataset("cifar100_lt", "train", tmp_path).class_counts == longtail_counts(5, 100, 100)
