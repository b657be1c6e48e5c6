"""DSA: formulas, gradients to the pixels, parameter replay (also on a batch of another size)."""
import pytest
import torch

from vsd.distill.augment import DSA, DSAParams


def _params(op, value, n):
    return DSAParams(ops=[op], values={op: value}, rows=n)


def test_colour_formulas_by_hand():
    dsa = DSA()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    u = torch.tensor([0.2, 0.9], dtype=torch.float64)
    out = dsa(x, _params("brightness", u, 2))
    assert torch.allclose(out, x + (u - 0.5).view(2, 1, 1, 1))
    out = dsa(x, _params("saturation", u, 2))
    m = x.mean(1, keepdim=True)
    assert torch.allclose(out, m + (x - m) * (2.0 * u).view(2, 1, 1, 1))
    out = dsa(x, _params("contrast", u, 2))
    m = x.mean((1, 2, 3), keepdim=True)
    assert torch.allclose(out, m + (x - m) * (u + 0.5).view(2, 1, 1, 1))
    # unclamped: values outside [0, 1] survive, so gradients are not zeroed
    assert out.max() > 1 or out.min() < 0


def test_crop_is_an_integer_shift_with_zero_fill():
    x = torch.arange(2 * 16, dtype=torch.float64).view(2, 1, 4, 4) + 1
    out = DSA()(x, _params("crop", torch.tensor([[1, 0], [0, -1]]), 2))
    assert torch.allclose(out[0, 0, :, 1:], x[0, 0, :, :3]) and out[0, 0, :, 0].abs().max() < 1e-9
    assert torch.allclose(out[1, 0, :3], x[1, 0, 1:]) and out[1, 0, 3].abs().max() < 1e-9


def test_cutout_zeroes_a_half_size_square_and_flip_mirrors():
    x = torch.ones(1, 2, 8, 8)
    out = DSA()(x, _params("cutout", torch.tensor([[4, 4]]), 1))
    assert int((out[0, 0] == 0).sum()) == 16 and torch.all(out[0, 0, 2:6, 2:6] == 0)
    y = torch.randn(2, 1, 3, 3)
    out = DSA()(y, _params("flip", torch.tensor([True, False]), 2))
    assert torch.equal(out[0], y[0].flip(2)) and torch.equal(out[1], y[1])


@pytest.mark.parametrize("op", ["brightness", "saturation", "contrast", "crop", "cutout", "flip", "scale", "rotate"])
def test_gradients_reach_the_pixels(op):
    dsa = DSA(strategy="color_crop_cutout_flip_scale_rotate", mode="M")
    full = dsa.sample(2, 5, 5, torch.Generator().manual_seed(0))
    params = _params(op, full.values[op], 2)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dsa(t, params), (x,))


def test_replay_same_params_and_other_batch_sizes():
    dsa = DSA(mode="M")
    x = torch.randn(6, 3, 8, 8)
    params = dsa.sample(6, 8, 8, torch.Generator().manual_seed(0))
    full = dsa(x, params)
    assert torch.equal(full, dsa(x, params))
    assert torch.allclose(dsa(x[:3], params), full[:3], atol=1e-6)  # smaller batch: the first rows
    x8 = torch.randn(8, 3, 8, 8)
    out8 = dsa(x8, params)  # larger batch: row i uses parameters i mod 6
    assert torch.allclose(out8[6:], dsa(x8[6:], params), atol=1e-6)


def test_mode_s_picks_one_family_and_m_all():
    g = torch.Generator().manual_seed(0)
    ops = {tuple(DSA(mode="S").sample(2, 8, 8, g).ops) for _ in range(40)}
    assert ops == {("brightness", "saturation", "contrast"), ("crop",), ("cutout",), ("flip",), ("scale",),
                   ("rotate",)}
    assert len(DSA(mode="M").sample(2, 8, 8).ops) == 8


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown DSA families"):
        DSA("color_blur")
    with pytest.raises(ValueError, match="mode"):
        DSA(mode="X")
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        DSA()(torch.zeros(3, 8, 8))
