"""MDCS task: two views through timm.task, class counts from the long-tailed set, warm-up state, a 2-epoch run."""
import csv

import pytest
import torch
from timm.task import TrainingTask

from vsd.config import ConfigError, load_config
from vsd.engine.checkpoint import load_checkpoint, save_checkpoint
from vsd.engine.trainer import train
from vsd.losses import mdcs_loss
from vsd.models import create_model
from vsd.tasks import TaskContext, create_task

TINY = ["data.name=digits_lt", "model.name=resnet32_cifar", "model.kwargs={layers: [1, 1, 1], widths: [4, 8, 8]}",
        "data.image_size=8", "train.batch_size=128", "train.epochs=2", "train.lr=0.05", "method.name=mdcs"]
COUNTS = [139, 107, 83, 64, 49, 38, 29, 23, 17, 13]


def _task(seed=0, *extra):
    torch.manual_seed(seed)
    model = create_model("resnet32_cifar", layers=[1, 1, 1], widths=[4, 8, 8], in_chans=1, num_classes=10)
    ctx = TaskContext(num_classes=10, class_counts=COUNTS, in_chans=1, image_size=8)
    return create_task(model, load_config(None, TINY + list(extra)), ctx)


def test_task_through_timm_interface():
    task = _task()
    assert isinstance(task, TrainingTask) and list(task.train_views) == ["weak", "strong"]
    task.train()
    task.on_epoch_start(4)
    weak, strong, y = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 9])
    out = task([weak, strong], y)
    assert set(out) == {"loss", "output", "mdcs_diversity", "mdcs_consistency"}
    assert out["output"].shape == (6, 10)
    experts = task.trainable_module(torch.cat([weak, strong])).expert_logits
    assert torch.allclose(out["loss"], mdcs_loss([e[:6] for e in experts], [e[6:] for e in experts], y, COUNTS, 4))
    out["loss"].backward()
    eval_model = task.get_eval_model().eval()
    assert eval_model(weak).shape == (6, 10)
    with pytest.raises(ValueError, match="two views per batch"):
        task(weak, y)


def test_state_round_trip(tmp_path):
    task = _task(0)
    task.on_epoch_start(7)
    save_checkpoint(tmp_path / "c.safetensors", {"model": task.trainable_module.state_dict(),
                                                 "task": task.get_task_state()})
    other = _task(1)
    state = load_checkpoint(tmp_path / "c.safetensors")
    other.trainable_module.load_state_dict(state["model"])
    other.load_task_state(state["task"])
    assert other.criterion.epoch == 7
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(other.get_eval_model().eval()(x), task.get_eval_model().eval()(x))


def test_config_errors():
    with pytest.raises(ConfigError, match="one value per expert"):
        _task(0, "method.num_experts=2")
    model = create_model("resnet32_cifar", layers=[1, 1, 1], widths=[4, 8, 8], in_chans=1, num_classes=10)
    with pytest.raises(ConfigError, match="per-class counts"):
        create_task(model, load_config(None, TINY), TaskContext(num_classes=10, in_chans=1, image_size=8))


def test_two_epoch_run_on_long_tailed_digits(tmp_path):
    train(load_config(None, TINY + [f"output={tmp_path}"]))
    with open(tmp_path / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and "train_mdcs_consistency" in rows[0]
    assert float(rows[1]["train_mdcs_consistency"]) >= 0.0
