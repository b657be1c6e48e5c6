"""The trainer: run outputs, exact resume after a kill, NaN stop, refusal to clobber a run, EMA."""
import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vsd.config import load_config
from vsd.engine.checkpoint import load_checkpoint
from vsd.engine.trainer import OutputExists, RunInterrupted, TrainingDiverged, train

TINY = ["model.name=convnet_d1", "model.kwargs={net_width: 8}", "data.image_size=8", "train.batch_size=128",
        "train.epochs=3", "train.lr=0.05"]


def tiny_cfg(tmp_path: Path, *extra: str):
    return load_config(None, TINY + [f"output={tmp_path}"] + list(extra))


def _rows(path: Path):
    with open(path / "summary.csv") as handle:
        return list(csv.DictReader(handle))


def test_run_writes_the_contract_files(tmp_path):
    results = train(tiny_cfg(tmp_path / "run"))
    out = tmp_path / "run"
    for name in ("config.yaml", "summary.csv", "results.json", "checkpoint-last.safetensors", "model.safetensors"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    for key in ("eval_top1", "eval_top5", "epochs", "method", "model", "dataset", "params", "wall_s"):
        assert key in saved
    assert saved["eval_top1"] == results["eval_top1"]
    rows = _rows(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for column in ("train_loss", "eval_loss", "eval_top1", "eval_top5", "eval_ece", "lr"):
        assert column in rows[0]
    assert saved["eval_top1"] > 40.0  # 3 tiny epochs on digits learn something (chance is 10%)
    assert load_checkpoint(out / "checkpoint-last.safetensors")["epoch"] == 2


@pytest.mark.parametrize("kill_step", [14, 30])
def test_killed_run_resumes_bit_identically(tmp_path, kill_step):
    full = train(tiny_cfg(tmp_path / "full"))
    cfg = tiny_cfg(tmp_path / "killed")
    with pytest.raises(RunInterrupted):
        train(cfg, max_steps=kill_step)
    resumed = train(cfg, resume=str(tmp_path / "killed" / "checkpoint-last.safetensors"))
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["eval_top1"] == full["eval_top1"] and resumed["eval_loss"] == full["eval_loss"]
    drop = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time"} for r in rows]  # noqa: E731
    assert drop(_rows(tmp_path / "full")) == drop(_rows(tmp_path / "killed"))


def test_resume_restores_ema_too(tmp_path):
    full = train(tiny_cfg(tmp_path / "full", "train.ema=true", "train.ema_decay=0.9"))
    cfg = tiny_cfg(tmp_path / "killed", "train.ema=true", "train.ema_decay=0.9")
    with pytest.raises(RunInterrupted):
        train(cfg, max_steps=12)
    resumed = train(cfg, resume=str(tmp_path / "killed" / "checkpoint-last.safetensors"))
    assert "eval_ema_top1" in resumed and resumed["eval_ema_top1"] == full["eval_ema_top1"]
    assert resumed["eval_ema_loss"] == full["eval_ema_loss"]


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from vsd.tasks.classification import CETask

    calls = {"n": 0}
    original = CETask.forward

    def poisoned(self, input, target):
        out = original(self, input, target)
        calls["n"] += 1
        if calls["n"] == 11 + 3:  # 1437 // 120 = 11 steps per epoch: the 3rd step of epoch 2
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(CETask, "forward", poisoned)
    cfg = tiny_cfg(tmp_path / "nan", "train.batch_size=120")
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 2, step 3"):
        train(cfg)
    state = load_checkpoint(tmp_path / "nan" / "checkpoint-last.safetensors")
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_output_folder_of_another_run_is_refused(tmp_path):
    train(tiny_cfg(tmp_path / "r", "train.epochs=1"))
    with pytest.raises(OutputExists, match="already holds a run"):
        train(tiny_cfg(tmp_path / "r", "train.epochs=1"))
    train(tiny_cfg(tmp_path / "r", "train.epochs=1", "overwrite=true"))


def test_labels_out_of_range_are_a_clear_error():
    from vsd.tasks.classification import CETask

    task = CETask(torch.nn.Linear(4, 3), criterion=torch.nn.CrossEntropyLoss(), verbose=False)
    with pytest.raises(ValueError, match=r"target labels must lie in \[0, 3\).*\[0, 7\]"):
        task(torch.randn(2, 4), torch.tensor([0, 7]))


def test_multistep_schedule_decays_at_the_milestones(tmp_path):
    train(tiny_cfg(tmp_path / "ms", "train.epochs=4", "train.sched=multistep", "train.decay_milestones=[2, 3]",
                   "train.lr=0.1"))
    lrs = [float(r["lr"]) for r in _rows(tmp_path / "ms")]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001])
