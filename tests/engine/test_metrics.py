"""Top-k, loss and ECE against hand computations."""
import math

import pytest
import torch

from vsd.engine.metrics import ClassificationMeter


def test_topk_loss_and_ece_by_hand():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]]))
    target = torch.tensor([0, 1, 0, 1])
    meter = ClassificationMeter(num_bins=10)
    meter.update(logits[:2], target[:2])
    meter.update(logits[2:], target[2:])
    out = meter.compute()
    assert out["top1"] == pytest.approx(50.0)
    assert out["top5"] == pytest.approx(100.0)
    expected_loss = -(math.log(0.7) + math.log(0.35) + math.log(0.1) + math.log(0.6)) / 4
    assert out["loss"] == pytest.approx(expected_loss, rel=1e-5)
    # bins: 0.7 correct -> bin 7; 0.4 wrong -> bin 4; 0.8 wrong -> bin 8; 0.6 correct -> bin 6
    expected_ece = (abs(0.7 - 1) + abs(0.4 - 0) + abs(0.8 - 0) + abs(0.6 - 1)) / 4
    assert out["ece"] == pytest.approx(100 * expected_ece, rel=1e-5)


def test_empty_meter_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        ClassificationMeter().compute()
