"""Linear and k-NN probes: recover planted structure, stay at chance without it, named layers, errors."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vsd.probe import extract_features, knn_probe, linear_probe, list_layers, probe_model


def planted(n, d=20, classes=4, seed=0, scale=None):
    """Labels = argmax of a fixed linear map of the features; features get wildly different scales."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(99).normal(size=(d, classes))
    x = rng.normal(size=(n, d))
    y = (x @ w).argmax(1)
    scale = np.logspace(-3, 3, d) if scale is None else scale
    return x * scale, y  # standardisation must undo the scales


def test_linear_probe_recovers_planted_linear_structure():
    tx, ty = planted(600)
    vx, vy = planted(300, seed=1)
    assert linear_probe(tx, ty, vx, vy) > 90.0


def test_knn_recovers_clusters_and_linear_is_at_chance_on_noise():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 10)) * 4
    ty, vy = rng.integers(0, 3, 300), rng.integers(0, 3, 150)
    tx, vx = centers[ty] + rng.normal(size=(300, 10)), centers[vy] + rng.normal(size=(150, 10))
    assert knn_probe(tx, ty, vx, vy, k=20) > 95.0
    noise_y = rng.integers(0, 3, 150)
    assert linear_probe(tx, ty, rng.normal(size=(150, 10)), noise_y) < 50.0


def test_knn_majority_vote_by_hand():
    # 1-D: train points at 0..9 with label = (x >= 5); query 4.9 with k=3 -> neighbours 4, 5, 6 -> label 1
    tx = np.arange(10, dtype=float)[:, None]
    ty = (tx[:, 0] >= 5).astype(int)
    assert knn_probe(tx, ty, np.array([[4.9]]), np.array([1]), k=3) == 100.0
    assert knn_probe(tx, ty, np.array([[4.9]]), np.array([0]), k=1) == 0.0  # nearest is 5 -> label 1
    with pytest.raises(ValueError, match="positive"):
        knn_probe(tx, ty, tx, ty, k=0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def _loader(n=8):
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 1, 5, 5, generator=g), torch.arange(n) % 2), batch_size=3)


def test_named_layer_features_and_pooling():
    net = Net()
    feats, labels = extract_features(net, _loader(), layer="conv")
    x = torch.cat([b[0] for b in _loader()])
    assert np.allclose(feats, net.conv(x).mean((2, 3)).detach().double().numpy(), atol=1e-6)
    assert labels.tolist() == [0, 1] * 4
    flat, _ = extract_features(net, _loader(), layer="conv", pool="flatten")
    assert flat.shape == (8, 4 * 25)
    out, _ = extract_features(net, _loader())  # no timm head API: the model output
    assert out.shape == (8, 2)


def test_unknown_layer_lists_available():
    with pytest.raises(ValueError, match=r"no layer 'conv9'; available layers: conv, fc"):
        extract_features(Net(), _loader(), layer="conv9")
    assert list_layers(Net()) == ["conv", "fc"]
    with pytest.raises(ValueError, match="unknown pool"):
        extract_features(Net(), _loader(), pool="max")


def test_probe_model_on_timm_embedding():
    import timm

    import vsd  # noqa: F401  (registers vit_tiny_patch4_32)

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch4_32", img_size=8, in_chans=1, embed_dim=16, depth=1, num_heads=2)
    x = torch.randn(40, 1, 8, 8)
    data = TensorDataset(x, torch.arange(40) % 2)
    feats, _ = extract_features(vit, DataLoader(data, batch_size=16))
    assert np.allclose(feats, vit.eval().forward_features(x)[:, 0].detach().double().numpy(), atol=1e-5)  # CLS
    accs = probe_model(vit, DataLoader(data, batch_size=16), DataLoader(data, batch_size=16), k=5)
    assert set(accs) == {"linear", "knn"} and all(0.0 <= v <= 100.0 for v in accs.values())
