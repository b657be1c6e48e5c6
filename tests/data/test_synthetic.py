"""synthetic: determinism, options and shapes."""
from __future__ import annotations

import torch

from vsd.data import create_dataset


def test_deterministic_and_seeded():
    a = create_dataset("synthetic", transform="none", seed=3)
    b = create_dataset("synthetic", transform="none", seed=3)
    c = create_dataset("synthetic", transform="none", seed=4)
    assert torch.equal(a.images, b.images) and a.targets == b.targets
    assert not torch.equal(a.images, c.images)
    test = create_dataset("synthetic", "test", transform="none", seed=3)
    assert not torch.equal(a.images[: len(test)], test.images)


def test_options_shapes_and_counts():
    ds = create_dataset("synthetic", "test", transform="none", image_size=8, num_classes=4, test_per_class=3,
                        in_chans=1)
    assert ds.images.shape == (12, 1, 8, 8) and ds.images.dtype == torch.uint8
    assert ds.class_counts == [3, 3, 3, 3] and ds.info.mean == (0.5,)


def test_classes_differ_by_orientation():
    """Class means of the horizontal vs vertical image gradient energy differ: the classes are learnable."""
    ds = create_dataset("synthetic", transform="none", num_classes=2, train_per_class=40, noise=0.0)
    x = ds.images.float()
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean(dim=(1, 2, 3))
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean(dim=(1, 2, 3))
    ratio = dx / dy
    labels = torch.tensor(ds.targets)
    assert ratio[labels == 0].mean() > 2 * ratio[labels == 1].mean()
