"""USKD task: through timm.task, weak-head state in checkpoints, and 2-epoch tools/train.py-equivalent runs."""
import csv

import pytest
import torch
from safetensors.torch import load_file
from timm.task import TrainingTask

from vsd.config import ConfigError, load_config
from vsd.engine.checkpoint import load_checkpoint, save_checkpoint
from vsd.engine.trainer import RunInterrupted, train
from vsd.models import create_model
from vsd.tasks import TaskContext, create_task

TINY = ["model.name=convnet_d2", "model.kwargs={net_width: 8}", "data.image_size=8", "train.batch_size=128",
        "train.epochs=2", "train.lr=0.05", "method.name=uskd", "method.mu=0.1"]


def _task(seed=0):
    torch.manual_seed(seed)
    cfg = load_config(None, TINY)
    model = create_model("convnet_d2", net_width=8, img_size=8, in_chans=1, num_classes=10)
    return create_task(model, cfg, TaskContext(num_classes=10, in_chans=1, image_size=8)), model


def test_task_through_timm_interface():
    task, model = _task()
    assert isinstance(task, TrainingTask)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    out = task(x, y)
    assert set(out) == {"loss", "output", "ce", "uskd_target", "uskd_non_target", "uskd_weak"}
    assert torch.allclose(out["loss"], out["ce"] + out["uskd_target"] + out["uskd_non_target"] + out["uskd_weak"])
    out["loss"].backward()
    assert task.trainable_module.weak_head.weight.grad is not None
    assert task.get_eval_model() is model
    # timm's train.py builds the optimizer (and DDP) on get_trainable_module(): it must hold the weak head
    assert task.trainable_module.weak_head.weight in set(task.get_trainable_module().parameters())
    assert not list(task.criterion.parameters())
    task.eval()
    assert torch.equal(task.get_trainable_module()(x), model(x))  # eval mode: plain logits
    task.setup_ema(decay=0.9)
    ema_model = task.get_eval_model(ema=True)
    assert type(ema_model) is type(model) and ema_model is not model


def test_weak_head_state_round_trip(tmp_path):
    task, _ = _task(0)
    save_checkpoint(tmp_path / "c.safetensors", {"task": task.get_task_state()})
    other, _ = _task(1)
    assert not torch.equal(other.trainable_module.weak_head.weight, task.trainable_module.weak_head.weight)
    other.load_task_state(load_checkpoint(tmp_path / "c.safetensors")["task"])
    assert torch.equal(other.trainable_module.weak_head.weight, task.trainable_module.weak_head.weight)
    with pytest.raises(ValueError, match="no weak-head weights"):
        other.load_task_state({})


def test_config_rejects_unknown_key():
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        load_config(None, ["method.name=uskd", "method.alpah=0.1"])


def test_two_epoch_run(tmp_path):
    train(load_config(None, TINY + [f"output={tmp_path}"]))
    with open(tmp_path / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and "train_uskd_weak" in rows[0] and float(rows[-1]["eval_top1"]) > 20.0


def test_exact_resume_restores_weak_head(tmp_path):
    full = train(load_config(None, TINY + [f"output={tmp_path / 'full'}"]))
    cfg = load_config(None, TINY + [f"output={tmp_path / 'killed'}"])
    with pytest.raises(RunInterrupted):
        train(cfg, max_steps=14)  # 12 steps per epoch at this batch size: killed inside epoch 2
    resumed = train(cfg, resume=str(tmp_path / "killed" / "checkpoint-last.safetensors"))
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # needs the weak head restored from the task state
    assert resumed["eval_loss"] == full["eval_loss"]


def test_timm_train_script_flow():
    """What timm's train.py does with a task: optimizer on get_trainable_module(), task(input, target)['loss']."""
    from timm.optim import create_optimizer_v2

    task, model = _task()
    optimizer = create_optimizer_v2(task.get_trainable_module(), opt="sgd", lr=0.1)
    head_before = task.trainable_module.weak_head.weight.detach().clone()
    task.train()
    loss = task(torch.randn(6, 1, 8, 8), torch.softmax(torch.randn(6, 10), 1))["loss"]  # mixup-style soft targets
    loss.backward()
    optimizer.step()
    assert not torch.equal(task.trainable_module.weak_head.weight, head_before)
    task.eval()
    assert task.get_eval_model()(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_ema_task_state_is_the_ema_weak_head():
    """timm's CheckpointSaver stores get_task_state(ema=True) next to state_dict_ema: it must be the EMA head."""
    task, _ = _task()
    task.setup_ema(decay=0.5)
    task.train()
    task(torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5]))["loss"].backward()
    with torch.no_grad():
        task.trainable_module.weak_head.weight.add_(1.0)
    task.update_ema(step=10)  # (ModelEmaV3 copies on the first steps)
    live = task.get_task_state()["weak_head"]["weight"]
    ema = task.get_task_state(ema=True)["weak_head"]["weight"]
    assert not torch.equal(live, ema)
    assert torch.equal(ema, task.get_trainable_module(ema=True).module.weak_head.weight)
