"""The MTT student trains in train mode (MTT's ``distill.py``): with BatchNorm the inner steps normalise with
batch statistics, even after the expert-accuracy check left the network in eval mode."""
import copy

import pytest
import torch

from vsd.config import load_config
from vsd.distill import mtt as mtt_module
from vsd.distill import run_distiller
from vsd.distill.flat import FlatModel


@pytest.mark.parametrize("backend", [
    "unroll", pytest.param("constant_memory", marks=pytest.mark.slow), pytest.param("higher", marks=pytest.mark.slow)])
def test_inner_loop_runs_batchnorm_in_train_mode(tmp_path, monkeypatch, backend):
    real = mtt_module.batched_matching_grads
    seen = []

    def probe(backend, fm, segments, images, *args, **kwargs):
        w0 = segments[0].w0
        with torch.no_grad():
            x = images[:6].detach()
            used = fm(w0, x)  # what the inner step computes (the module's mode decides BatchNorm's statistics)
            train_ref = FlatModel(copy.deepcopy(fm.model).train())(w0, x)
            eval_ref = FlatModel(copy.deepcopy(fm.model).eval())(w0, x)
        seen.append((fm.model.training, used, train_ref, eval_ref))
        return real(backend, fm, segments, images, *args, **kwargs)

    monkeypatch.setattr(mtt_module, "batched_matching_grads", probe)
    cfg = load_config(None, [
        "data.name=digits", "data.image_size=8", "model.name=convnet_d1",
        "model.kwargs={net_width: 4, net_norm: batchnorm}", "train.device=cpu", "distill.method=mtt",
        "distill.ipc=1", "distill.iterations=2", "distill.syn_steps=2", "distill.expert_epochs=1",
        "distill.max_start_epoch=1", "distill.num_experts=1", "distill.expert_train_epochs=1",
        f"distill.buffer_dir={tmp_path / 'b'}", "distill.eval_nets=0", "distill.progress=false",
        "distill.export_imagefolder=false", f"distill.backend={backend}"])
    run_distiller(cfg, tmp_path / "out")
    assert len(seen) == 2
    for training, used, train_ref, eval_ref in seen:
        assert training
        torch.testing.assert_close(used, train_ref)
        assert (used - eval_ref).abs().max() > 1e-2  # the two modes differ here: the check can fail


def test_batchnorm_statistics_are_re_estimated_for_stored_parameters():
    from vsd.distill.evaluate import recalibrate_batchnorm

    bn = torch.nn.BatchNorm2d(3, momentum=0.3).eval()
    x = torch.randn(20, 3, 4, 4) * 2 + 1
    assert recalibrate_batchnorm(bn, x, batch_size=64) is bn and not bn.training and bn.momentum == 0.3
    torch.testing.assert_close(bn.running_mean, x.mean((0, 2, 3)))
    torch.testing.assert_close(bn.running_var, x.transpose(0, 1).reshape(3, -1).var(1))


@pytest.mark.slow
def test_expert_accuracy_of_a_batchnorm_expert_is_its_own():
    from vsd.distill.evaluate import accuracy
    from vsd.distill.experts import ExpertSpec, train_expert

    cfg = load_config(None, ["data.name=digits", "data.image_size=8", "model.name=convnet_d1",
                             "model.kwargs={net_width: 8, net_norm: batchnorm}", "train.device=cpu",
                             "distill.method=mtt"])
    problem = mtt_module.load_problem(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    expert = problem.make_model()
    traj = train_expert(expert, *problem.train, ExpertSpec(epochs=3, batch_size=128, lr=0.05), None,
                        torch.Generator().manual_seed(0))
    own = accuracy(expert, *problem.test)  # with the expert's own running statistics (82.2 measured)
    fresh = FlatModel(problem.make_model())
    assert abs(mtt_module.expert_accuracy(problem, fresh, [traj])["mean"] - own) <= 2.0  # 82.5; was 74.4
