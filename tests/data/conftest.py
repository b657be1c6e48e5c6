"""Fixtures for the data tests: tiny CIFAR folders in torchvision's exact on-disk format, and image trees."""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct


class _Py2StylePickler(pickle.Pickler):
    """Writes arrays the way the original (Python 2, numpy 1.x) CIFAR batches hold them: ``_reconstruct`` +
    a latin-1 string of the raw bytes, under protocol 2."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            state = (1, obj.shape, obj.dtype, False, obj.tobytes().decode("latin1"))
            return _reconstruct, (np.ndarray, (0,), "b"), state
        return NotImplemented


def py2_pickle_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Py2StylePickler(buffer, protocol=2).dump(obj)
    # numpy 1.x named the module numpy.core.multiarray, as the real files do.
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def _batch(rng: np.random.Generator, per_class: int, num_classes: int, label_key: str) -> dict:
    labels = np.tile(np.arange(num_classes), per_class)
    rng.shuffle(labels)
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return {"batch_label": "tiny", label_key: labels.tolist(), "data": data, "filenames": ["x.png"] * len(labels)}


@pytest.fixture
def write_cifar() -> Callable[..., dict]:
    """``write_cifar(root, "cifar10"|"cifar100", train_per_class=2, test_per_class=1)`` writes every batch file
    (CIFAR-10: 5 train batches, each with ``train_per_class`` images per class) and returns the written dicts by
    file name."""

    def write(root: Path, kind: str = "cifar10", train_per_class: int = 2, test_per_class: int = 1) -> dict:
        rng = np.random.default_rng(0)
        if kind == "cifar10":
            folder, num_classes, key = "cifar-10-batches-py", 10, "labels"
            plan = {**{f"data_batch_{i}": train_per_class for i in range(1, 6)}, "test_batch": test_per_class}
        else:
            folder, num_classes, key = "cifar-100-python", 100, "fine_labels"
            plan = {"train": train_per_class, "test": test_per_class}
        (root / folder).mkdir(parents=True, exist_ok=True)
        written = {}
        for name, per_class in plan.items():
            written[name] = _batch(rng, per_class, num_classes, key)
            (root / folder / name).write_bytes(py2_pickle_bytes(written[name]))
        return written

    return write
