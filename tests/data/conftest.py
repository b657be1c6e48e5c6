"""Fixtures for the data tests: tiny CIFAR folders in torchvision's exact on-disk format, and image trees."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from vsd.data.fake_files import write_cifar as _write_cifar


@pytest.fixture
def write_cifar() -> Callable[..., dict]:
    """``write_cifar(root, "cifar10"|"cifar100", train_per_class=2, test_per_class=1)`` writes every batch file
    (CIFAR-10: 5 train batches, each with ``train_per_class`` images per class) and returns the written dicts by
    file name."""

    def write(root: Path, kind: str = "cifar10", train_per_class: int = 2, test_per_class: int = 1) -> dict:
        return _write_cifar(root, kind, train_per_class, test_per_class)

    return write
