"""imagefolder: split and flat layouts, resizing, channels, normalization options, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vsd.data import create_dataset, dataset_info


def _write(path, size=(8, 8), mode="RGB", value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    array = np.full((size[1], size[0], channels), value, dtype=np.uint8).squeeze(-1 if channels == 1 else None)
    Image.fromarray(array, mode).save(path)


@pytest.fixture
def tree(tmp_path):
    for split, per_class in (("train", 3), ("test", 1)):
        for label, name in enumerate(("cat", "dog")):
            for i in range(per_class):
                _write(tmp_path / split / name / f"{i}.png", value=10 * label + i)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    return tmp_path


def test_split_layout(tree):
    train = create_dataset("imagefolder", "train", tree, transform="none")
    test = create_dataset("imagefolder", "test", tree)
    assert train.classes == ("cat", "dog") and train.targets == [0, 0, 0, 1, 1, 1] and test.class_counts == [1, 1]
    x, y = train[4]
    assert x.dtype == torch.uint8 and x.shape == (3, 8, 8) and int(x[0, 0, 0]) == 11 and y == 1
    x, _ = test[0]
    assert x.dtype == torch.float32 and train.info.mean == (0.485, 0.456, 0.406)
    assert dataset_info("imagefolder", root=tree) == train.info


def test_flat_layout_is_train_only(tmp_path):
    _write(tmp_path / "a" / "0.jpg", size=(20, 10))
    _write(tmp_path / "b" / "0.png", size=(12, 12))
    ds = create_dataset("imagefolder", "train", tmp_path, image_size=6)
    assert ds.classes == ("a", "b") and ds[0][0].shape == (3, 6, 6) and ds[1][0].shape == (3, 6, 6)
    with pytest.raises(FileNotFoundError, match="only the 'train' split"):
        create_dataset("imagefolder", "test", tmp_path, image_size=6)
    with pytest.raises(ValueError, match="not square; pass image_size"):
        create_dataset("imagefolder", "train", tmp_path)


def test_grayscale_and_options(tmp_path):
    _write(tmp_path / "train" / "x" / "0.png", mode="L", value=255)
    ds = create_dataset("imagefolder", "train", tmp_path, mean=[0.5], std=[0.5])
    x, _ = ds[0]
    assert ds.info.in_chans == 1 and x.shape == (1, 8, 8) and torch.allclose(x, torch.ones_like(x))
    rgb = create_dataset("imagefolder", "train", tmp_path, in_chans=3, transform="none")
    assert rgb[0][0].shape == (3, 8, 8)
    assert dataset_info("imagefolder", root=tmp_path).mean == (0.449,)


def test_errors(tree, tmp_path):
    with pytest.raises(ValueError, match="needs root"):
        create_dataset("imagefolder")
    with pytest.raises(FileNotFoundError, match="no split folder .*val"):
        create_dataset("imagefolder", "val", tree)
    _write(tree / "test" / "bird" / "0.png")
    with pytest.raises(ValueError, match="bird"):
        create_dataset("imagefolder", "test", tree)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        create_dataset("imagefolder", "train", tmp_path / "missing")
