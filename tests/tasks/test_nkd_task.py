"""NKD task: teacher from a vsd checkpoint, the timm.task interface, and a 2-epoch run."""
import csv

import pytest
import torch
from timm.task import TrainingTask

from vsd.config import ConfigError, load_config
from vsd.engine.checkpoint import load_checkpoint, save_checkpoint
from vsd.engine.trainer import train
from vsd.models import create_model
from vsd.tasks import TaskContext, create_task

TINY = ["model.name=convnet_d1", "model.kwargs={net_width: 8}", "data.image_size=8", "train.batch_size=128",
        "train.epochs=2", "train.lr=0.05", "method.name=nkd", "method.teacher=convnet_d2",
        "method.teacher_kwargs={net_width: 16}"]
CTX = TaskContext(num_classes=10, in_chans=1, image_size=8)


def _teacher(path):
    torch.manual_seed(7)
    teacher = create_model("convnet_d2", net_width=16, img_size=8, in_chans=1, num_classes=10)
    save_checkpoint(path, {"model": teacher.state_dict(), "epoch": 0})
    return teacher.eval()


def _student():
    return create_model("convnet_d1", net_width=8, img_size=8, in_chans=1, num_classes=10)


def test_task_through_timm_interface(tmp_path):
    teacher = _teacher(tmp_path / "teacher.safetensors")
    cfg = load_config(None, TINY + [f"method.teacher_checkpoint={tmp_path / 'teacher.safetensors'}",
                                    "method.temperature=3.0", "method.gamma=3.5"])
    student = _student()
    task = create_task(student, cfg, CTX)
    assert isinstance(task, TrainingTask)
    task.train()
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 9])
    out = task(x, y)
    assert set(out) == {"loss", "output", "ce", "nkd_target", "nkd_non_target"}
    assert torch.allclose(out["loss"], out["ce"] + out["nkd_target"] + out["nkd_non_target"])
    out["loss"].backward()
    frozen = task.teacher
    assert not frozen.training and all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    assert torch.allclose(frozen(x), teacher(x))  # the checkpoint's weights were loaded
    assert task.get_eval_model() is student and task.get_task_state() == {}


def test_teacher_is_required_and_must_fit(tmp_path):
    with pytest.raises(ConfigError, match="NKD needs a teacher model name"):
        create_task(_student(), load_config(None, ["method.name=nkd"]), CTX)
    _teacher(tmp_path / "t.safetensors")
    wrong = TINY + [f"method.teacher_checkpoint={tmp_path / 't.safetensors'}", "method.teacher_kwargs={net_width: 8}"]
    with pytest.raises(ValueError, match="shape mismatches"):
        create_task(_student(), load_config(None, wrong), CTX)


def test_two_epoch_run_saves_student_only(tmp_path):
    _teacher(tmp_path / "teacher.safetensors")
    cfg = load_config(None, TINY + [f"method.teacher_checkpoint={tmp_path / 'teacher.safetensors'}",
                                    f"output={tmp_path / 'run'}"])
    train(cfg)
    with open(tmp_path / "run" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and "train_nkd_non_target" in rows[0]
    saved = load_checkpoint(tmp_path / "run" / "checkpoint-last.safetensors")["model"]
    assert set(saved) == set(_student().state_dict())
