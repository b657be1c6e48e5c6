"""DDP with 2 CPU processes (gloo): the run completes, rank 0 writes the files, and the reduced metrics are
exactly those of evaluating the saved model on the whole test set in one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tools" / "train.py"), "--set", f"output={out}", "model.name=convnet_d1",
           "model.kwargs={net_width: 8}", "data.image_size=8", "train.batch_size=128", "train.epochs=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["epochs"] == 2

    from vsd.config import load_config
    from vsd.data import create_dataset
    from vsd.engine.metrics import ClassificationMeter
    from vsd.engine.trainer import build_model
    import torch

    cfg = load_config(out / "config.yaml")
    test = create_dataset("digits", "test", transform="eval", image_size=8)
    model = build_model(cfg, test.info)
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    model.eval()
    meter = ClassificationMeter(cfg.eval.ece_bins)
    with torch.no_grad():
        for i in range(0, len(test), 100):
            xs, ys = zip(*[test[j] for j in range(i, min(i + 100, len(test)))])
            meter.update(model(torch.stack(xs)), torch.tensor(ys))
    single = meter.compute()
    assert results["eval_top1"] == pytest.approx(single["top1"], abs=1e-9)
    assert results["eval_loss"] == pytest.approx(single["loss"], rel=1e-5)
