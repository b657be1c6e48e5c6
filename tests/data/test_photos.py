"""photos: disjoint train / test regions, determinism, recorded normalization constants."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("skimage")

from vsd.data import create_dataset, dataset_info  # noqa: E402
from vsd.data.photos import PHOTO_NAMES, PHOTOS_MEAN, PHOTOS_STD, load_photos  # noqa: E402


def test_train_and_test_patches_come_from_disjoint_regions():
    train = create_dataset("photos", "train", transform="none", train_per_class=50)
    test = create_dataset("photos", "test", transform="none", test_per_class=20)
    size = train.info.image_size
    for label, photo in enumerate(load_photos(size)):
        (train_start, train_stop), (test_start, test_stop) = train.regions[label], test.regions[label]
        assert train_start == 0 and train_stop <= test_start and test_stop == photo.shape[2]
        left_train = train.origins[torch.tensor(train.targets) == label, 1]
        left_test = test.origins[torch.tensor(test.targets) == label, 1]
        assert (left_train + size <= train_stop).all() and (left_test >= test_start).all()
    train_patches = {p.numpy().tobytes() for p in train.images}
    assert not any(p.numpy().tobytes() in train_patches for p in test.images)


def test_patches_are_crops_at_their_origins_and_deterministic():
    ds = create_dataset("photos", "test", transform="none", test_per_class=5, image_size=16)
    photos = load_photos(16)
    for i in (0, 17, 49):
        (top, left), label = ds.origins[i].tolist(), ds.targets[i]
        assert torch.equal(ds.images[i], photos[label][:, top:top + 16, left:left + 16])
    again = create_dataset("photos", "test", transform="none", test_per_class=5, image_size=16)
    other = create_dataset("photos", "test", transform="none", test_per_class=5, image_size=16, seed=1)
    assert torch.equal(ds.images, again.images) and not torch.equal(ds.images, other.images)
    assert len(set(map(tuple, ds.origins[:5].tolist()))) == 5  # distinct positions within a class


def test_defaults_and_normalization_constants():
    info = dataset_info("photos")
    assert info.num_classes == 10 and info.classes == PHOTO_NAMES and info.image_size == 32
    train = create_dataset("photos", transform="none")
    assert len(train) == 5000 and train.class_counts == [500] * 10
    pixels = train.images.float() / 255
    assert torch.allclose(pixels.mean(dim=(0, 2, 3)), torch.tensor(PHOTOS_MEAN), atol=1e-3)
    assert torch.allclose(pixels.std(dim=(0, 2, 3)), torch.tensor(PHOTOS_STD), atol=1e-3)
    assert len(create_dataset("photos", "test", transform="none")) == 1000


def test_too_many_patches_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot draw"):
        create_dataset("photos", "test", image_size=8, test_per_class=10**6)


def test_missing_scikit_image_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match=r"pip install vsd\[photos\]"):
        create_dataset("photos", image_size=20)  # a size not cached by the other tests
    assert dataset_info("photos").num_classes == 10  # the description needs no photo
