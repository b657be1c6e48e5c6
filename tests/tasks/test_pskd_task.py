"""PS-KD tasks through timm.task: bank mode (exact targets, bank refresh, DDP-free state round trip) and
snapshot mode; config validation; a 2-epoch tools/train.py run and an exact resume of the bank."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.task import TrainingTask

from vsd.config import ConfigError, load_config
from vsd.engine.checkpoint import load_checkpoint, save_checkpoint
from vsd.losses import pskd_alpha, pskd_loss
from vsd.tasks import TaskContext, create_task
from vsd.tasks.pskd import PSKDBankTask, PSKDSnapshotTask
from vsd.wrappers import CompactProbBank, DenseProbBank

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.name=convnet_d1", "model.kwargs={net_width: 8}", "data.image_size=8", "train.batch_size=128"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _task(*overrides, n=20, epochs=4):
    cfg = load_config(None, ["method.name=pskd", *overrides])
    ctx = TaskContext(num_classes=5, num_train_samples=n, epochs=epochs)
    return create_task(timm.create_model("test_resnet", num_classes=5), cfg, ctx)


def test_builds_from_config():
    dense, compact, snap = _task(), _task("method.bank=compact", "method.topk=2"), _task("method.mode=snapshot")
    assert isinstance(dense, PSKDBankTask) and isinstance(dense, TrainingTask) and dense.needs_index
    assert isinstance(dense.bank, DenseProbBank) and dense.bank.num_samples == 20
    assert isinstance(compact.bank, CompactProbBank) and compact.bank.topk == 2
    assert isinstance(snap, PSKDSnapshotTask) and not snap.needs_index


@pytest.mark.parametrize("override,match", [
    ("method.mode=sparse", "method.mode"), ("method.bank=tiny", "method.bank"), ("method.topk=0", "method.topk"),
    ("method.alpha_T=2", "method.alpha_T"), ("method.alpah_T=0.5", "did you mean 'alpha_T'"),
])
def test_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, ["method.name=pskd", override])


def test_bank_task_targets_and_refresh():
    task = _task().train()
    x, y, idx = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 4]), torch.tensor([3, 9, 0, 17])
    task.on_epoch_start(0)
    out = task(x, y, index=idx)
    assert set(out) == {"loss", "output", "alpha"}
    assert torch.allclose(out["loss"], F.cross_entropy(out["output"], y))  # epoch 0: one-hot targets
    assert torch.allclose(task.bank.get(idx, y), torch.softmax(out["output"].detach(), 1))  # refreshed after step
    task.on_epoch_start(1)
    prev = task.bank.get(idx, y)
    out = task(x, y, index=idx)
    assert out["alpha"].item() == pytest.approx(pskd_alpha(1, 4))
    assert torch.allclose(out["loss"], pskd_loss(out["output"], y, prev, pskd_alpha(1, 4)))
    task.eval()
    before = task.bank.get(idx, y)
    task(x, y, index=idx)
    assert torch.equal(task.bank.get(idx, y), before)  # evaluation does not write the bank


def test_bank_task_needs_indices():
    with pytest.raises(ValueError, match="needs sample indices"):
        _task()(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))


@pytest.mark.parametrize("overrides", [(), ("method.bank=compact", "method.topk=2"), ("method.mode=snapshot",)])
def test_task_state_round_trips_through_checkpoint(tmp_path, overrides):
    task = _task(*overrides).train()
    x, y, idx = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 4]), torch.tensor([3, 9, 0, 17])
    kwargs = {"index": idx} if task.needs_index else {}
    task(x, y, **kwargs)
    task.on_epoch_end(0)
    task.on_epoch_start(1)
    save_checkpoint(tmp_path / "c.safetensors", {"task": task.get_task_state()})
    fresh = _task(*overrides)
    fresh.load_state_dict(task.state_dict())
    fresh.load_task_state(load_checkpoint(tmp_path / "c.safetensors")["task"])
    fresh.train()
    a, b = task(x, y, **kwargs), fresh(x, y, **kwargs)
    assert torch.allclose(a["loss"], b["loss"]) and a["alpha"] == b["alpha"]
    with pytest.raises(ValueError, match="no PS-KD task state"):
        fresh.load_task_state({})


def test_snapshot_task_eval_model_is_the_plain_model():
    task = _task("method.mode=snapshot")
    model = task.get_eval_model()
    assert not isinstance(model, PSKDSnapshotTask) and model is task.trainable_module.model
    assert model.eval()(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    out = task.train()(torch.randn(2, 3, 16, 16), torch.tensor([0, 3]))
    assert out["alpha"].item() == pytest.approx(0.2)


def _run(out, *overrides):
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), "--set", f"output={out}", *TINY, *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def test_two_epoch_trainer_run(tmp_path):
    from vsd.engine.trainer import train

    cfg = load_config(None, [*TINY, "method.name=pskd", "method.bank=compact", "method.topk=3", "train.epochs=2",
                             f"output={tmp_path}"])
    results = train(cfg)
    assert results["method"] == "pskd" and 0 <= results["eval_top1"] <= 100
    header, *rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert "train_alpha" in header.split(",") and len(rows) == 2
    assert [float(r.split(",")[header.split(",").index("train_alpha")]) for r in rows] == [0.4, 0.8]


@pytest.mark.slow
def test_two_epoch_train_script_run(tmp_path):
    results = _run(tmp_path / "bank", "method.name=pskd", "method.bank=compact", "method.topk=3",
                   "train.epochs=2")
    assert results["method"] == "pskd" and results["epochs"] == 2 and 0 <= results["eval_top1"] <= 100
    header, *rows = (tmp_path / "bank" / "summary.csv").read_text().splitlines()
    assert "train_alpha" in header.split(",") and len(rows) == 2


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["bank", "snapshot"])
def test_resume_restores_bank_or_snapshot_exactly(tmp_path, mode):
    from vsd.engine.trainer import RunInterrupted, train

    cfg = load_config(None, [*TINY, "method.name=pskd", f"method.mode={mode}", "train.epochs=2",
                             f"output={tmp_path / 'a'}"])
    straight = train(cfg)
    cut = load_config(None, [f"output={tmp_path / 'b'}"], base=cfg)
    with pytest.raises(RunInterrupted):
        train(cut, max_steps=12)  # 11 steps per epoch: stops early in epoch 2, after the epoch-1 checkpoint
    resumed = train(cut, resume=str(tmp_path / "b" / "checkpoint-last.safetensors"))
    assert resumed["eval_top1"] == straight["eval_top1"]
    assert resumed["eval_loss"] == pytest.approx(straight["eval_loss"], rel=1e-6)


@pytest.mark.slow
def test_ddp_two_processes_share_the_bank(tmp_path):
    """torchrun with 2 gloo processes for 1 epoch: each rank trains on 704 samples (11 batches of 64), so a bank
    holding more than 704 written rows on rank 0 got the other rank's predictions through all_gather."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tools" / "train.py"), "--set", f"output={tmp_path}", *TINY, "train.epochs=1",
           "method.name=pskd", "method.bank=compact", "method.topk=3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    bank = load_checkpoint(tmp_path / "checkpoint-last.safetensors")["task"]["bank"]
    assert int(bank["written"].sum()) == 2 * 704
