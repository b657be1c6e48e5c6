"""tools/train.py: bad input gives one readable line and exit status 2; a real kill resumes exactly."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "tools" / "train.py")
TINY = ["model.name=convnet_d1", "model.kwargs={net_width: 8}", "data.image_size=8", "train.batch_size=128"]


def run_train(*args, env=None):
    return subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def train_main(*args) -> int:
    """Call tools/train.py's main() in this process (fast: no interpreter start-up)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vsd_tools_train", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(args))


def _one_error_line(code, stderr, pattern):
    assert code == 2, stderr
    lines = [line for line in stderr.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("overrides, pattern", [
    (["train.epoch=1"], r"unknown config key 'train.epoch'.*did you mean 'epochs'"),
    (["train.epochs"], r"expected key=value"),
    (["train.epochs=abc"], r"train.epochs.*'abc'.*int"),
    (["data.name=cifar11"], r"unknown data set 'cifar11'.*cifar10"),
    (["model.name=convnet_d9"], r"unknown model 'convnet_d9'"),
    (["data.name=cifar10", "data.root=/nonexistent/place"], r"/nonexistent/place"),
])
def test_bad_input_one_line(tmp_path, capsys, overrides, pattern):
    code = train_main("--set", f"output={tmp_path}/o", *TINY, *overrides)
    _one_error_line(code, capsys.readouterr().err, pattern)
    assert not (tmp_path / "o" / "results.json").exists()


def test_corrupt_checkpoint_for_resume(tmp_path, capsys):
    bad = tmp_path / "ck.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    _one_error_line(train_main("--resume", str(bad)), capsys.readouterr().err, r"corrupt or truncated")


def test_existing_run_is_refused_by_the_cli(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "results.json").write_text("{}")
    code = train_main("--set", f"output={tmp_path}/o", *TINY)
    _one_error_line(code, capsys.readouterr().err, r"already holds a run.*overwrite=true")


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = TINY + ["train.epochs=6", "train.batch_size=64"]
    full = run_train("--set", f"output={tmp_path}/full", *args)
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen([sys.executable, TRAIN, "--set", f"output={tmp_path}/killed", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpt = tmp_path / "killed" / "checkpoint-last.safetensors"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.1)  # into the next epoch
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    resumed = run_train("--resume", str(ckpt))
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
