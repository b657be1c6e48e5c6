"""DINO loss and head."""
import numpy as np
import pytest
import torch

from vsd.losses.dino import DINOLoss, dino_cross_entropy
from vsd.wrappers.dino_head import DINOHead


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


class TestDINOCrossEntropy:
    def test_against_hand_computation(self):
        g = torch.Generator().manual_seed(0)
        s, t = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
        c = torch.randn(5, generator=g)
        expect = np.mean([-(_softmax((t[b] - c).numpy() / 0.5) * np.log(_softmax(s[b].numpy() / 2.0))).sum()
                          for b in range(3)])
        assert dino_cross_entropy(s, t, s_temp=2.0, t_temp=0.5, center=c).item() == pytest.approx(expect, rel=1e-5)

    def test_gradient_is_softmax_difference(self):
        s = torch.randn(2, 4, requires_grad=True)
        t = torch.randn(2, 4)
        dino_cross_entropy(s, t).backward()
        assert torch.allclose(s.grad, (s.detach().softmax(-1) - t.softmax(-1)) / 2, atol=1e-6)
        # identical scores: exactly zero gradient (why an exact copy never trains without BatchNorm)
        s2 = t.clone().requires_grad_(True)
        dino_cross_entropy(s2, t).backward()
        assert torch.allclose(s2.grad, torch.zeros_like(t), atol=1e-7)

    def test_gradcheck(self):
        s = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
        t = torch.randn(2, 4, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda a: dino_cross_entropy(a, t, 0.7, 0.3), (s,))

    def test_errors(self):
        with pytest.raises(ValueError, match="equal shapes"):
            dino_cross_entropy(torch.randn(2, 3), torch.randn(2, 4))
        with pytest.raises(ValueError, match="positive"):
            dino_cross_entropy(torch.randn(2, 3), torch.randn(2, 3), s_temp=0.0)


class TestDINOLoss:
    def test_one_view_equals_functional(self):
        s, t = torch.randn(4, 6), torch.randn(4, 6)
        assert torch.allclose(DINOLoss(6, pairing="same")(s, t), dino_cross_entropy(s, t))
        with pytest.raises(ValueError, match="no \\(teacher, student\\) view pair"):
            DINOLoss(6)(s, t)  # DINO's 'opposite' pairing needs two global crops

    def test_two_views_pair_opposite_views(self):
        s, t = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
        hand = (dino_cross_entropy(s[1], t[0]) + dino_cross_entropy(s[0], t[1])) / 2
        assert torch.allclose(DINOLoss(6)(s, t), hand)

    def test_centering_ema(self):
        loss = DINOLoss(3, center_momentum=0.9, pairing="same")
        t = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
        loss(torch.zeros(2, 3), t)
        assert torch.allclose(loss.center, 0.1 * torch.tensor([2.0, 2.0, 2.0]))
        no_center = DINOLoss(3, pairing="same")
        no_center(torch.zeros(2, 3), t)
        assert torch.all(no_center.center == 0)
        with pytest.raises(ValueError, match="center_momentum"):
            DINOLoss(3, center_momentum=1.0)


class TestDINOHead:
    def test_scores_are_cosines_with_unit_prototypes(self):
        torch.manual_seed(0)
        head = DINOHead(8, hidden_dims=[16], bottleneck_dim=4, out_dim=10)
        x = torch.randn(5, 8)
        scores = head(x)
        z = head.bottleneck(torch.nn.functional.gelu(head.mlp[0](x)))
        z = z / z.norm(dim=1, keepdim=True)
        w = head.prototypes / head.prototypes.norm(dim=1, keepdim=True)
        assert torch.allclose(scores, z @ w.t(), atol=1e-6)
        assert scores.abs().max() <= 1.0 + 1e-6
        # scaling a prototype does not change its score (weight normalization)
        with torch.no_grad():
            head.prototypes[3] *= 7.0
        assert torch.allclose(head(x), scores, atol=1e-6)

    def test_no_hidden_layers(self):
        head = DINOHead(8, hidden_dims=[], bottleneck_dim=4, out_dim=3)
        assert head(torch.randn(2, 8)).shape == (2, 3)


def _np_ce(s, t, s_temp, t_temp):
    """Hand cross-entropy of one pair: mean_b -sum_k softmax(t/tt) log softmax(s/ts) (numpy, float64)."""
    s, t = s.astype(np.float64) / s_temp, t.astype(np.float64) / t_temp
    p = np.exp(t - t.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    logq = s - s.max(1, keepdims=True)
    logq -= np.log(np.exp(logq).sum(1, keepdims=True))
    return float(-(p * logq).sum(1).mean())


class TestMultiCropPairing:
    @pytest.mark.parametrize("pairing,pairs", [
        ("opposite", [(0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]),
        ("same", [(0, 0), (1, 1)]),
        ("all", [(i, j) for i in range(2) for j in range(4)]),
    ])
    def test_two_global_two_local_against_hand_computation(self, pairing, pairs):
        g = torch.Generator().manual_seed(0)
        s, t = torch.randn(4, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
        hand = np.mean([_np_ce(s[j].numpy(), t[i].numpy(), 0.1, 0.04) for i, j in pairs])
        got = DINOLoss(5, s_temp=0.1, t_temp=0.04, pairing=pairing)(s, t)
        assert got.item() == pytest.approx(hand, rel=1e-6)

    def test_bad_view_counts_and_pairing(self):
        with pytest.raises(ValueError, match="teacher views <= student views"):
            DINOLoss(5)(torch.randn(1, 2, 5), torch.randn(2, 2, 5))
        with pytest.raises(ValueError, match="pairing must be one of"):
            DINOLoss(5, pairing="matching")
