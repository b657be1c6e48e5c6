"""SLA task through timm.task: components, eval model, config validation, a trainer run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.task import TrainingTask

from vsd.config import ConfigError, load_config
from vsd.losses import sla_aggregate, sla_loss, sla_sd_loss
from vsd.tasks import TaskContext, create_task
from vsd.wrappers import SLAWrapper

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.name=convnet_d1", "model.kwargs={net_width: 8}", "data.image_size=8", "train.batch_size=128"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _task(*overrides):
    cfg = load_config(None, ["method.name=sla", *overrides])
    return create_task(timm.create_model("test_resnet", num_classes=5), cfg, TaskContext(num_classes=5))


def test_sla_task_components_and_eval_model():
    task = _task().train()
    assert isinstance(task, TrainingTask) and isinstance(task.get_eval_model(), SLAWrapper)
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([0, 4, 2])
    out = task(x, y)
    assert set(out) == {"loss", "output", "joint"} and out["output"].shape == (3, 5)
    wrapper = task.trainable_module
    wrapper.model.eval()  # fixed batch-norm statistics: recompute the joint logits independently
    out = task(x, y)
    joint = wrapper(x).joint_logits
    assert torch.allclose(out["loss"], sla_loss(joint, y), atol=1e-6)
    assert torch.allclose(out["output"], sla_aggregate(joint), atol=1e-5)
    assert task.eval().get_eval_model()(x).shape == (3, 5)


def test_sla_sd_task_components():
    task = _task("method.self_distill=true", "method.temperature=2").train()
    task.trainable_module.model.eval()
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([0, 4, 2])
    out = task(x, y)
    assert set(out) == {"loss", "output", "joint", "single", "kd"}
    raw = task.trainable_module(x)
    assert torch.allclose(out["loss"], sla_sd_loss(raw.joint_logits, raw.single_logits, y, 4, 2.0), atol=1e-5)
    assert torch.allclose(out["loss"], out["joint"] + out["single"] + out["kd"])
    assert torch.allclose(out["output"], raw.single_logits, atol=1e-6)


def test_large_loss_scales_joint_term():
    task = _task("method.large_loss=true").train()
    task.trainable_module.model.eval()
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 3])
    assert torch.allclose(task(x, y)["joint"], 4 * sla_loss(task.trainable_module(x).joint_logits, y), atol=1e-5)


@pytest.mark.parametrize("override,match", [
    ("method.num_transforms=3", "method.num_transforms"), ("method.temperature=0", "method.temperature"),
    ("method.self_distil=true", "did you mean 'self_distill'"),
])
def test_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, ["method.name=sla", override])


def test_two_epoch_trainer_run_sla_sd(tmp_path):
    from vsd.engine.trainer import train

    cfg = load_config(None, [*TINY, "method.name=sla", "method.self_distill=true", "train.epochs=2",
                             f"output={tmp_path}"])
    results = train(cfg)
    assert results["method"] == "sla" and 0 <= results["eval_top1"] <= 100
    header = (tmp_path / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"train_joint", "train_single", "train_kd"} <= set(header)


@pytest.mark.slow
def test_two_epoch_train_script_run(tmp_path):
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), "--set", f"output={tmp_path}", *TINY,
           "method.name=sla", "train.epochs=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["method"] == "sla" and results["epochs"] == 2
