"""Resume safety: a resume continues its own run in its checkpoint's folder and never writes over another run;
per-key rules for --set next to --resume; runs killed before their first checkpoint; stale temporaries; umask."""
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.bad_input_helpers import SMALL, assert_one_error_line, fingerprint, tool_main
from vsd.config import load_config
from vsd.engine.checkpoint import load_checkpoint
from vsd.engine.io import atomic_write_text
from vsd.engine.trainer import RunInterrupted, train

CKPT = "checkpoint-last.safetensors"


def cfg_at(out: Path, *extra: str):
    return load_config(None, SMALL + [f"output={out}"] + list(extra))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-epoch SMALL run (copy it before use)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(cfg_at(out))
    return out


def _models_equal(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_resume_into_the_folder_of_another_run_is_refused(tmp_path, capsys, finished_run):
    shutil.copytree(finished_run, tmp_path / "A")
    train(cfg_at(tmp_path / "B", "seed=1"))
    before = fingerprint(tmp_path)
    code = tool_main("train", "--resume", str(tmp_path / "A" / CKPT), "--set", f"output={tmp_path / 'B'}")
    assert_one_error_line(code, capsys.readouterr().err, r"output.*folder of its checkpoint")
    assert fingerprint(tmp_path) == before


def test_moved_run_resumes_where_it_now_is_and_leaves_the_new_run_alone(tmp_path, capsys):
    runs = tmp_path / "runs"
    full = cfg_at(tmp_path / "full")
    train(full)
    with pytest.raises(RunInterrupted):
        train(cfg_at(runs / "x"), max_steps=4)  # killed in epoch 2, after the epoch-1 checkpoint
    (tmp_path / "archive").mkdir()
    shutil.move(str(runs / "x"), str(tmp_path / "archive" / "x"))
    train(cfg_at(runs / "x", "seed=1"))  # a new run under the old name
    before = fingerprint(runs)
    assert tool_main("train", "--resume", str(tmp_path / "archive" / "x" / CKPT)) == 0
    assert fingerprint(runs) == before
    moved = tmp_path / "archive" / "x"
    assert (moved / "results.json").is_file()
    assert _models_equal(moved, tmp_path / "full")  # and the resumed run is still exact
    assert load_checkpoint(moved / CKPT)["config"]["output"] == str(moved)


def test_extending_epochs_on_resume_follows_the_schedule_of_the_new_length(tmp_path):
    one = cfg_at(tmp_path / "r", "train.epochs=1")
    train(one)
    assert tool_main("train", "--resume", str(tmp_path / "r" / CKPT), "--set", "train.epochs=2") == 0
    train(cfg_at(tmp_path / "planned"))  # planned for 2 epochs from the start
    rows = lambda p: (p / "summary.csv").read_text().splitlines()  # noqa: E731
    header = rows(tmp_path / "r")[0].split(",")
    lr = lambda p, epoch: float(rows(p)[epoch].split(",")[header.index("lr")])  # noqa: E731
    steps = load_checkpoint(tmp_path / "r" / CKPT)["step"] // 2
    cosine = 0.5 * 0.05 * (1 + math.cos(math.pi * steps / (2 * steps)))  # default lr 0.05, min_lr 0
    assert lr(tmp_path / "r", 2) == pytest.approx(cosine) and lr(tmp_path / "r", 2) > 0.01
    assert lr(tmp_path / "r", 2) == pytest.approx(lr(tmp_path / "planned", 2))
    assert load_checkpoint(tmp_path / "r" / CKPT)["epoch"] == 1


@pytest.mark.parametrize("overrides, keys", [
    (["train.lr=0.1"], r"train\.lr"),
    (["train.batch_size=64", "train.ema=true"], r"train\.batch_size.*train\.ema"),
    (["model.kwargs={net_width: 16}"], r"model\.kwargs"),
    (["method.name=pskd"], r"method\.name"),
    (["train.epochs=1"], r"train\.epochs.*below the 2 epoch"),
])
def test_resume_refuses_keys_it_cannot_apply(tmp_path, capsys, finished_run, overrides, keys):
    shutil.copytree(finished_run, tmp_path / "A")
    before = fingerprint(tmp_path)
    code = tool_main("train", "--resume", str(tmp_path / "A" / CKPT), "--set", *overrides)
    assert_one_error_line(code, capsys.readouterr().err, keys)
    assert fingerprint(tmp_path) == before


def test_run_killed_before_its_first_checkpoint_starts_over(tmp_path, capsys):
    out = tmp_path / "r"
    with pytest.raises(RunInterrupted):
        train(cfg_at(out), max_steps=2)
    assert not (out / CKPT).exists() and (out / "config.yaml").exists()
    code = tool_main("train", "--set", f"output={out}", *SMALL, "train.lr=0.1")
    line = assert_one_error_line(code, capsys.readouterr().err, r"stopped before its first checkpoint.*train\.lr")
    assert "--resume" not in line  # there is nothing to resume
    assert train(cfg_at(out))["epochs"] == 2  # the same config starts over


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(RunInterrupted):
        train(cfg_at(out), max_steps=4)
    (out / f".{CKPT}.abc123.tmp").write_bytes(b"half a checkpoint")
    train(cfg_at(out), resume=str(out / CKPT))
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_keep_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode
