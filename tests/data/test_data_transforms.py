"""Transform presets: shapes, dtypes, normalization, flips, grayscale support, picklability."""
from __future__ import annotations

import pickle

import pytest
import torch
from torchvision.transforms import v2

from vsd.data import PRESETS, DatasetInfo, build_transform, create_dataset
from vsd.data.transforms import crop_padding

GRAY = DatasetInfo("gray", 2, 1, 16, (0.3,), (0.2,), ("a", "b"), hflip=False)
RGB = DatasetInfo("rgb", 2, 3, 32, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), ("a", "b"))


@pytest.mark.parametrize("info", [GRAY, RGB], ids=["gray", "rgb"])
@pytest.mark.parametrize("preset", ["eval", "train", "weak", "strong"])
def test_presets_shape_dtype(info, preset):
    torch.manual_seed(0)
    transform = build_transform(preset, info)
    for _ in range(20):  # AutoAugment draws different operations each call
        x = torch.randint(0, 256, (info.in_chans, info.image_size, info.image_size), dtype=torch.uint8)
        y = transform(x)
        assert y.dtype == torch.float32 and y.shape == x.shape and torch.isfinite(y).all()


def test_eval_normalizes_exactly_and_batches():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    expected = (x.float() / 255 - torch.tensor(RGB.mean).view(3, 1, 1)) / torch.tensor(RGB.std).view(3, 1, 1)
    assert torch.allclose(build_transform("eval", RGB)(x), expected, atol=1e-6)


def test_none_and_callable():
    x = torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8)
    assert build_transform("none", GRAY)(x) is x
    assert build_transform(torch.flip, GRAY) is torch.flip
    with pytest.raises(ValueError, match="expected one of eval, train, weak, strong, none"):
        build_transform("autoaugment", GRAY)
    assert set(PRESETS) == {"eval", "train", "weak", "strong", "none"}


def test_flip_only_where_allowed_and_padding_scales():
    assert crop_padding(32) == 4 and crop_padding(16) == 2 and crop_padding(8) == 1
    for preset in ("train", "weak", "strong"):
        gray_ops = [type(t) for t in build_transform(preset, GRAY).transforms]
        rgb_ops = [type(t) for t in build_transform(preset, RGB).transforms]
        assert v2.RandomHorizontalFlip not in gray_ops and v2.RandomHorizontalFlip in rgb_ops
        assert v2.RandomCrop in gray_ops
    crop = build_transform("train", RGB).transforms[0]
    assert crop.padding == [4, 4, 4, 4]


def test_strong_preset_is_random_on_grayscale_digits():
    ds = create_dataset("digits", transform="strong")
    torch.manual_seed(0)
    views = torch.stack([ds[0][0] for _ in range(8)])
    assert views.shape == (8, 1, 16, 16) and any(not torch.equal(views[0], v) for v in views[1:])


def test_presets_pickle_for_dataloader_workers():
    for preset in PRESETS:
        restored = pickle.loads(pickle.dumps(create_dataset("synthetic", transform=preset)))
        assert restored[0][1] == 0


def test_strong_preset_order_op_by_op_as_mdcs_loader():
    """MDCS's official strong view: RandomCrop(32, pad 4) -> flip -> CIFAR10Policy -> ToTensor -> Cutout(1, 16)
    -> Normalize."""
    from torchvision.transforms import v2

    from vsd.data.transforms import Cutout

    info = DatasetInfo("toy", 10, 3, 32, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), tuple("abcdefghij"))
    ops = build_transform("strong", info).transforms
    kinds = [type(op) for op in ops]
    assert kinds == [v2.RandomCrop, v2.RandomHorizontalFlip, v2.AutoAugment, v2.ToDtype, Cutout, v2.Normalize]
    assert ops[0].padding == [4, 4, 4, 4] and ops[0].size == (32, 32)
    assert ops[2].policy == v2.AutoAugmentPolicy.CIFAR10
    assert ops[3].scale and ops[4].length == 16 and ops[4].n_holes == 1
    assert list(ops[5].mean) == [0.5, 0.4, 0.3]


def test_cutout_zeroes_the_clipped_square_around_the_drawn_centre():
    from vsd.data.transforms import Cutout

    image = torch.ones(2, 10, 12)
    torch.manual_seed(3)
    y, x = int(torch.randint(10, ())), int(torch.randint(12, ()))
    torch.manual_seed(3)
    out = Cutout(6)(image)
    hand = torch.ones(10, 12)
    hand[max(0, y - 3):min(10, y + 3), max(0, x - 3):min(12, x + 3)] = 0
    assert torch.equal(out, hand.expand(2, -1, -1))
    corner = Cutout(4)
    torch.manual_seed(0)
    holes = [(corner(torch.ones(1, 8, 8)) == 0).sum().item() for _ in range(50)]
    assert max(holes) == 16 and min(holes) < 16  # full squares inside, clipped ones at the border
