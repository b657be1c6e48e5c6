"""bf16 autocast (``train.amp``) for distillation, on CPU: expert training, evaluation and the KRR-ST features
run in bfloat16 within a documented tolerance of float32, while the matching loop and the KRR solve stay
float32.

Tolerances (measured on digits 8x8, convnet_d1): expert trajectory ||theta_bf16 - theta_fp32|| /
||theta_fp32 - theta_0|| ~ 0.002 after 2 epochs (bound 0.05); test accuracy within 5 points; KRR-ST outer MSE
within 5 % relative."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vsd.config import load_config
from vsd.distill import krr as krr_module
from vsd.distill import krr_st as krr_st_module
from vsd.distill import mtt as mtt_module
from vsd.distill import run_distiller
from vsd.distill.evaluate import accuracy, evaluate_set
from vsd.distill.experts import ExpertSpec, train_expert
from vsd.distill.precision import autocast_dtype

BASE = ["data.name=digits", "data.image_size=8", "model.name=convnet_d1", "model.kwargs={net_width: 4}",
        "train.device=cpu"]


def test_train_amp_values():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("bf16", cpu) is torch.bfloat16 and autocast_dtype("none", cpu) is None
    assert autocast_dtype(True, cpu) is None and autocast_dtype(True, cuda) is torch.bfloat16  # boolean form
    assert autocast_dtype(False, cuda) is None
    for bad, why in (("fp16", "for distillation"), ("fp8", "one of none, bf16")):  # fp16: no loss scaler here
        with pytest.raises(ValueError, match=why):
            autocast_dtype(bad, cpu)


def _digits():
    problem = mtt_module.load_problem(load_config(None, BASE + ["distill.method=mtt"]), torch.device("cpu"))
    (x, y), test = problem.train, problem.test
    return problem.make_model, x[:512], y[:512], test


@pytest.mark.slow
def test_expert_training_and_evaluation_in_bf16_are_close_to_float32():
    make, x, y, test = _digits()
    runs = {}
    for amp in ("none", "bfloat16"):
        torch.manual_seed(0)
        model = make()
        traj = train_expert(model, x, y, ExpertSpec(epochs=2, batch_size=128, lr=0.05, autocast=amp), None,
                            torch.Generator().manual_seed(0))
        runs[amp] = (traj, accuracy(model, *test))
    (t32, acc32), (t16, acc16) = runs["none"], runs["bfloat16"]
    assert t16.dtype == torch.float32 and not torch.equal(t16, t32)  # bf16 did run, the trajectory is float32
    assert float((t16[-1] - t32[-1]).norm() / (t32[-1] - t32[0]).norm()) < 0.05
    assert abs(acc16 - acc32) <= 5.0
    kw = dict(num_nets=1, epochs=5, lr=0.05, batch_size=64)
    e32 = evaluate_set(make, x[:100], y[:100], *test, **kw)["mean"]
    e16 = evaluate_set(make, x[:100], y[:100], *test, amp=torch.bfloat16, **kw)["mean"]
    assert abs(e16 - e32) <= 5.0


def test_evaluation_forward_runs_in_bf16_and_the_loss_in_float32(monkeypatch):
    dtypes = []

    def loss_fn(output, target):
        dtypes.append(output.dtype)
        return F.cross_entropy(output, target)

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    forward = []
    model.register_forward_hook(lambda m, i, o: forward.append(o.dtype))
    x, y = torch.randn(8, 1, 2, 2), torch.tensor([0, 1] * 4)
    evaluate_set(lambda: model, x, y, x, y, num_nets=1, epochs=1, lr=0.1, amp=torch.bfloat16, loss_fn=loss_fn)
    assert set(forward) == {torch.bfloat16} and dtypes == [torch.float32]


def test_mtt_with_amp_matches_in_float32(tmp_path, monkeypatch):
    real = mtt_module.batched_matching_grads
    autocast_in_matching = []

    def probe(*args, **kwargs):
        autocast_in_matching.append(torch.is_autocast_enabled("cpu"))
        return real(*args, **kwargs)

    monkeypatch.setattr(mtt_module, "batched_matching_grads", probe)
    cfg = load_config(None, BASE + [
        "distill.method=mtt", "distill.ipc=1", "distill.iterations=2", "distill.syn_steps=2",
        "distill.expert_epochs=1", "distill.max_start_epoch=1", "distill.num_experts=1",
        "distill.expert_train_epochs=1", f"distill.buffer_dir={tmp_path / 'b'}", "distill.eval_nets=1",
        "distill.eval_epochs=2", "distill.eval_random_baseline=false", "distill.progress=false",
        "distill.export_imagefolder=false"])
    cfg.train.amp = "bf16"  # the choice form of train.amp
    out = run_distiller(cfg, tmp_path / "bf16")
    # two iterations (plus the timed engine probe of backend=auto), never under autocast
    assert out["amp"] == "bfloat16" and len(autocast_in_matching) >= 2 and not any(autocast_in_matching)
    assert torch.isfinite(torch.tensor(out["final_loss"]))
    assert json.loads((Path(out["buffer"]) / "buffer.json").read_text())["spec"]["autocast"] == "bfloat16"


@pytest.mark.slow
def test_krr_st_features_in_bf16_solve_in_float32(tmp_path, monkeypatch):
    real = krr_module.krr_st_outer_loss
    seen = []

    def probe(f_syn, y_syn, f_real, y_real, **kw):
        seen.append((f_syn.dtype, f_real.dtype, y_real.dtype, kw.get("dtype")))
        return real(f_syn, y_syn, f_real, y_real, **kw)

    monkeypatch.setattr(krr_st_module, "krr_st_outer_loss", probe)
    tiny = BASE + ["distill.method=krr_st", "distill.num_images=6", "distill.iterations=3", "distill.batch_real=32",
                   "distill.pool_size=2", "distill.pool_max_steps=3", "distill.source_classes=[0, 1]",
                   "distill.target.epochs=1", "distill.target.batch_size=32", "distill.target.projector=[8]",
                   "distill.transfer.enabled=false"]
    fp32 = run_distiller(load_config(None, tiny), tmp_path / "fp32")
    cfg = load_config(None, tiny)
    cfg.train.amp = "bf16"
    bf16 = run_distiller(cfg, tmp_path / "bf16")
    assert bf16["amp"] == "bfloat16" and fp32["amp"] == "none"
    assert seen[-1] == (torch.float32, torch.float32, torch.float32, torch.float32)
    assert bf16["final_outer_mse"] == pytest.approx(fp32["final_outer_mse"], rel=0.05)
    assert bf16["final_outer_mse"] != fp32["final_outer_mse"]  # the features did run in bf16
