"""Generated data sets in real on-disk formats, for smoke runs and tests (random pixels, balanced labels).

* :func:`write_cifar`: torchvision's CIFAR python batches, pickled exactly as the original (Python 2, numpy 1.x)
  files: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch}`` or ``<root>/cifar-100-python/{train,
  test}``, uint8 rows of 3072 bytes (R, G, B planes of 32x32);
* :func:`write_imagefolder`: ``<root>/{train,test}/<class>/<i>.<ext>`` RGB images of a given size (smooth
  random colour gradients, so JPEG files stay small at ImageNet sizes).

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> sorted(write_cifar(root, "cifar10", train_per_class=1))[:2]
    ['data_batch_1', 'data_batch_2']
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Dict

import numpy as np
from PIL import Image

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

__all__ = ["py2_pickle_bytes", "write_cifar", "write_imagefolder"]


class _Py2StylePickler(pickle.Pickler):
    """Writes arrays the way the original CIFAR batches hold them: ``_reconstruct`` + a latin-1 string of the raw
    bytes, under protocol 2."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            state = (1, obj.shape, obj.dtype, False, obj.tobytes().decode("latin1"))
            return _reconstruct, (np.ndarray, (0,), "b"), state
        return NotImplemented


def py2_pickle_bytes(obj: object) -> bytes:
    """``obj`` pickled as the original CIFAR files are (numpy 1.x module names included)."""
    buffer = io.BytesIO()
    _Py2StylePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def _batch(rng: np.random.Generator, per_class: int, num_classes: int, label_key: str) -> dict:
    labels = np.tile(np.arange(num_classes), per_class)
    rng.shuffle(labels)
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return {"batch_label": "generated", label_key: labels.tolist(), "data": data,
            "filenames": ["x.png"] * len(labels)}


def write_cifar(root: Path, kind: str = "cifar10", train_per_class: int = 2, test_per_class: int = 1,
                seed: int = 0) -> Dict[str, dict]:
    """Write every batch file of ``kind`` (``cifar10``: 5 train batches with ``train_per_class`` images per class
    each; ``cifar100``: one train file) under ``root``; return the written dicts by file name."""
    if kind not in ("cifar10", "cifar100"):
        raise ValueError(f"kind must be 'cifar10' or 'cifar100', got {kind!r}")
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        folder, num_classes, key = "cifar-10-batches-py", 10, "labels"
        plan = {**{f"data_batch_{i}": train_per_class for i in range(1, 6)}, "test_batch": test_per_class}
    else:
        folder, num_classes, key = "cifar-100-python", 100, "fine_labels"
        plan = {"train": train_per_class, "test": test_per_class}
    (Path(root) / folder).mkdir(parents=True, exist_ok=True)
    written = {}
    for name, per_class in plan.items():
        written[name] = _batch(rng, per_class, num_classes, key)
        (Path(root) / folder / name).write_bytes(py2_pickle_bytes(written[name]))
    return written


def write_imagefolder(root: Path, num_classes: int = 10, train_per_class: int = 2, test_per_class: int = 1,
                      image_size: int = 32, ext: str = "png", seed: int = 0) -> None:
    """Write ``<root>/{train,test}/class_XXXX/<i>.<ext>`` RGB images of ``image_size`` x ``image_size``."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, image_size)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for c in range(num_classes):
            folder = Path(root) / split / f"class_{c:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                a, b, base = rng.uniform(-0.5, 0.5, (3, 1, 1)), rng.uniform(-0.5, 0.5, (3, 1, 1)), rng.uniform(
                    0.25, 0.75, (3, 1, 1))
                pixels = base + a * ramp[None, :, None] + b * ramp[None, None, :]
                image = np.clip(pixels * 255, 0, 255).astype(np.uint8).transpose(1, 2, 0)
                Image.fromarray(image).save(folder / f"{i}.{ext}")
