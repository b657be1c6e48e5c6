"""Synthetic-set initialisation and the evaluation protocol."""
import pytest
import torch
from torch import nn

from vsd.distill import init as syn_init
from vsd.distill.evaluate import default_loss, evaluate_set, summarize
from vsd.distill.experts import perturb_weights
from vsd.distill.mtt import balance_scale


def _blobs():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(20)
    images = torch.randn(60, 1, 2, 2, generator=g) * 0.1 + labels.view(-1, 1, 1, 1).float()
    return images, labels


def test_representative_picks_the_image_nearest_the_class_centre_at_ipc_1():
    images, labels = _blobs()
    logits_fn = lambda x: x.flatten(1)  # noqa: E731
    picked, picked_labels = syn_init.representative(images, labels, 3, 1, logits_fn)
    assert picked_labels.tolist() == [0, 1, 2]
    for c in range(3):
        members = images[labels == c].flatten(1)
        nearest = members[((members - members.mean(0)) ** 2).sum(1).argmin()]
        assert torch.allclose(picked[c].flatten(), nearest)
    picked3, _ = syn_init.representative(images, labels, 3, 3, logits_fn)
    assert len({tuple(p.flatten().tolist()) for p in picked3}) == 9  # distinct images


def test_random_real_and_ipc_check():
    images, labels = _blobs()
    x, y = syn_init.random_real(images, labels, 3, 4, torch.Generator().manual_seed(0))
    assert x.shape == (12, 1, 2, 2) and y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.all(x.view(12, -1).mean(1).round() == y.float())
    with pytest.raises(ValueError, match="class 'b' has only 20"):
        syn_init.check_ipc(labels, 3, 21, ["b", "x", "y"])
    with pytest.raises(ValueError, match=">= 1"):
        syn_init.check_ipc(labels, 3, 0)


def test_evaluation_with_soft_and_regression_targets():
    labels = torch.arange(3).repeat_interleave(20)
    images = torch.nn.functional.one_hot(labels, 4).float().view(60, 1, 2, 2) * 3
    images = images + 0.1 * torch.randn(60, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    make = lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 3))  # noqa: E731
    hard = evaluate_set(make, images, labels, images, labels, num_nets=2, epochs=20, lr=0.1, batch_size=8)
    assert hard["mean"] > 90 and len(hard["accs"]) == 2
    soft = torch.nn.functional.one_hot(labels, 3).float()
    assert evaluate_set(make, images, soft, images, labels, num_nets=1, epochs=20, lr=0.1, batch_size=8)["mean"] > 90
    mse = lambda out, t: ((out - t) ** 2).mean()  # noqa: E731
    out = evaluate_set(make, images, soft, images, labels, num_nets=1, epochs=20, lr=0.1, batch_size=8, loss_fn=mse)
    assert out["mean"] > 90
    with pytest.raises(ValueError, match="positive finite"):
        evaluate_set(make, images, labels, images, labels, num_nets=1, epochs=1, lr=float("nan"))


def test_helpers_by_hand():
    assert summarize([1.0, 3.0]) == {"mean": 2.0, "std": 1.0, "accs": [1.0, 3.0]}
    logits, probs = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.25, 0.75]])
    expected = -(0.25 * torch.log_softmax(logits, 1)[0, 0] + 0.75 * torch.log_softmax(logits, 1)[0, 1])
    assert torch.allclose(default_loss(logits, probs), expected)
    import math
    assert balance_scale(20, 20) == pytest.approx(math.log(18, 5))
    assert balance_scale(0, 20) == pytest.approx(1 / math.log(18, 5))
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = perturb_weights(w, [slice(0, 2)], 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(out[2:], w[2:])
    d = (out[:2] - w[:2]) / w[:2]
    assert torch.allclose(d.norm(), torch.tensor(1.0))
