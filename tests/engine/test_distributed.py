"""DDP with 2 CPU processes (gloo), through ``tests/engine/ddp_worker.py`` under torchrun.

* CE on digits: the run completes, only rank 0 writes files, both ranks end with identical parameters, and the
  reduced metrics are exactly those of evaluating the saved model on the whole test set in one process.
* CE on tiny data without augmentation: 2 ranks x batch B/2 train the same weights as 1 process x batch B
  (the union of the ranks' batches is the single-process batch; DDP averages the ranks' mean gradients).
* The method matrix (every ``method.name`` of ``tools/smoke.py``): a few steps end with finite losses, identical
  parameters on both ranks, no hang (timeout) and files written once. ``further_pretrain_sd`` (idle classifier,
  idle network, re-wrap at the stage switch) runs in the default suite, the rest under ``-m slow``.
"""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.engine.smoke_tool import smoke_module

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
RUN_FILES = {"config.yaml", "summary.csv", "results.json", "checkpoint-last.safetensors", "model.safetensors"}
DEFAULT_SUITE_CASES = {"further_pretrain_sd"}


def run_ddp(tmp_path: Path, overrides, timeout: int = 240) -> Path:
    """Train ``overrides`` on 2 gloo ranks; return the report folder of the worker (fails on error or hang)."""
    report = tmp_path / "report"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           str(report), "--set", *overrides, "train.device=cpu"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"the 2-process run did not finish within {timeout} s (hang?)")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return report


def check_ranks_agree(report: Path, out: Path, epochs: int) -> None:
    """Identical parameters on both ranks, files written by rank 0 only, finite losses in every epoch."""
    p0, p1 = load_file(str(report / "rank0.safetensors")), load_file(str(report / "rank1.safetensors"))
    assert p0.keys() == p1.keys() and p0
    differing = [k for k in p0 if not torch.equal(p0[k], p1[k])]
    assert not differing, f"parameters differ between ranks: {differing[:5]}"
    w0 = set(json.loads((report / "rank0.json").read_text())["written"])
    w1 = json.loads((report / "rank1.json").read_text())["written"]
    assert RUN_FILES <= w0 and w1 == []
    with open(out / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == epochs
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    assert json.loads((out / "results.json").read_text())["world_size"] == 2


def test_ce_two_processes_metrics_are_exact(tmp_path):
    out = tmp_path / "ddp"
    report = run_ddp(tmp_path, [f"output={out}", "model.name=convnet_d1", "model.kwargs={net_width: 8}",
                                "data.image_size=8", "train.batch_size=128", "train.epochs=2"])
    check_ranks_agree(report, out, epochs=2)
    results = json.loads((out / "results.json").read_text())

    from vsd.config import load_config
    from vsd.data import create_dataset
    from vsd.engine.metrics import ClassificationMeter
    from vsd.engine.trainer import build_model

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


@pytest.mark.slow
def test_two_ranks_half_batch_equal_one_rank_full_batch(tmp_path):
    smoke = smoke_module()
    overrides = (smoke.TINY_DATA + smoke.TINY_TRAIN + smoke.TINY_CONVNET
                 + ["data.train_transform=eval", "train.batch_size=16", "train.epochs=2"])
    from vsd.config import load_config
    from vsd.engine.trainer import train

    single = train(load_config(None, overrides + [f"output={tmp_path / 'one'}", "train.device=cpu"]))
    run_ddp(tmp_path, overrides + [f"output={tmp_path / 'two'}"])
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-4)
    from vsd.engine.rng import seed_everything
    from vsd.engine.trainer import build_model
    from vsd.data import dataset_info

    seed_everything(0)  # the initial weights: training moved them far more than the tolerance
    cfg = load_config(None, overrides)
    init = build_model(cfg, dataset_info("synthetic", image_size=8, **cfg.data.kwargs)).state_dict()
    assert max((one[k] - init[k]).abs().max().item() for k in one) > 1e-2


def _matrix_params():
    for case in smoke_module().METHOD_CASES:
        marks = () if case.name in DEFAULT_SUITE_CASES else (pytest.mark.slow,)
        yield pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", list(_matrix_params()))
def test_method_under_ddp(case, tmp_path):
    out = tmp_path / "run"
    report = run_ddp(tmp_path, case.config_overrides(tmp_path / "files") + [f"output={out}"])
    check_ranks_agree(report, out, epochs=2)
