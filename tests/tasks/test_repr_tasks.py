"""Representation-distillation tasks: MAE, DMAE, further pre-training with SD, random teacher."""
from types import SimpleNamespace

import pytest
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vsd  # noqa: F401
from vsd.config import ConfigError, load_config
from vsd.engine.checkpoint import load_checkpoint, save_checkpoint
from vsd.tasks import TaskContext, create_task
from vsd.tasks.random_teacher import init_student, resolve_init

MAE_KW = dict(img_size=8, in_chans=1, num_classes=2, embed_dim=16, depth=3, num_heads=2,
              decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2)
CTX = TaskContext(num_classes=2, epochs=2, in_chans=1, image_size=8)


def tiny_mae(seed=0, **kw):
    torch.manual_seed(seed)
    return timm.create_model("mae_vit_tiny_patch4_32", **dict(MAE_KW, **kw))


def cfg(*overrides):
    return load_config(None, list(overrides))


def loaders(n=24):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 2)
    return SimpleNamespace(train=DataLoader(data, batch_size=8), test=DataLoader(data, batch_size=8))


def step(task, x):
    task.train()
    batch = (x[0] if isinstance(x, list) else x).shape[0]
    out = task(x, torch.zeros(batch, dtype=torch.long))
    out["loss"].backward()
    return out


# --------------------------------------------------------------------------------------------- MAE
class TestMAETask:
    def test_step_and_probe_schedule(self):
        task = create_task(tiny_mae(), cfg("method.name=mae", "method.mask_ratio=0.5"), CTX)
        out = step(task, torch.randn(4, 1, 8, 8))
        assert out["loss"].dim() == 0 and out["output"].shape == (4, 4, 16)
        assert task.mae.blocks[0].attn.qkv.weight.grad is not None
        assert task.evaluate(loaders(), 0) == {}  # probe_every 0: only after the last epoch
        assert set(task.evaluate(loaders(), 1)) == {"probe_linear", "probe_knn"}

    def test_bad_ratio_and_non_mae_model(self):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            create_task(tiny_mae(), cfg("method.name=mae", "method.mask_ratio=1.2"), CTX)
        vit = timm.create_model("vit_tiny_patch4_32", img_size=8, in_chans=1, depth=1)
        with pytest.raises(TypeError, match="mae_vit_tiny_patch4_32"):
            create_task(vit, cfg("method.name=mae"), CTX)

    def test_unknown_config_key(self):
        with pytest.raises(ConfigError, match="mask_ratio"):
            cfg("method.name=mae", "method.mask_ration=0.5")


# --------------------------------------------------------------------------------------------- DMAE
def _teacher_file(tmp_path, model):
    path = tmp_path / "teacher.safetensors"
    save_checkpoint(path, {"model": model.state_dict()})
    return str(path)


def dmae_cfg(path, *extra):
    return cfg("method.name=dmae", "method.teacher_model=mae_vit_tiny_patch4_32",
               "method.teacher_kwargs={embed_dim: 16, depth: 3, num_heads: 2, decoder_embed_dim: 8, "
               "decoder_depth: 1, decoder_num_heads: 2}", f"method.teacher_checkpoint={path}",
               "method.student_blocks=[1]", *extra)


class TestDMAETask:
    def test_student_and_teacher_see_the_same_tokens(self, tmp_path):
        # teacher = the student's own weights, no projection: identical tokens give exactly zero feature loss
        student = tiny_mae()
        task = create_task(student, dmae_cfg(_teacher_file(tmp_path, student), "method.projection=false"), CTX)
        assert task.teacher.blocks == [1] and task.teacher.run_depth == 2
        out = task(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
        assert out["feature"].item() == pytest.approx(0.0, abs=1e-6)
        # a different masking for the teacher would not match
        x = torch.randn(4, 1, 8, 8)
        masked = student.forward_mae(x, 0.75, collect=[1])
        other = torch.roll(masked.masking.ids_keep, 1, dims=0)
        assert not torch.allclose(task.teacher(x, other)[0], masked.intermediates[0])

    def test_loss_is_pixel_plus_feature_and_teacher_frozen(self, tmp_path):
        task = create_task(tiny_mae(), dmae_cfg(_teacher_file(tmp_path, tiny_mae(seed=3))), CTX)
        out = step(task, torch.randn(4, 1, 8, 8))
        assert out["loss"].item() == pytest.approx(out["pixel"].item() + out["feature"].item(), rel=1e-5)
        assert all(p.grad is None for p in task.teacher.parameters())
        assert task.trainable_module.criterion.projections[0].weight.grad is not None

    def test_bad_inputs(self, tmp_path):
        path = _teacher_file(tmp_path, tiny_mae())
        with pytest.raises(ValueError, match="teacher_checkpoint"):
            create_task(tiny_mae(), cfg("method.name=dmae"), CTX)
        with pytest.raises(ValueError, match="below the student's depth 3"):
            create_task(tiny_mae(), dmae_cfg(path, "method.student_blocks=[3]"), CTX)
        with pytest.raises(ValueError, match="beyond the teacher's depth 3"):
            create_task(tiny_mae(), dmae_cfg(path, "method.teacher_blocks=[5]"), CTX)
        wide = tiny_mae(embed_dim=24)
        wide_cfg = cfg("method.name=dmae", "method.teacher_model=mae_vit_tiny_patch4_32",
                       "method.teacher_kwargs={embed_dim: 24, depth: 3, num_heads: 2, decoder_embed_dim: 8, "
                       "decoder_depth: 1, decoder_num_heads: 2}", f"method.teacher_checkpoint={_teacher_file(tmp_path, wide)}",
                       "method.student_blocks=[1]", "method.projection=false")
        with pytest.raises(ValueError, match="differs from teacher width 24"):
            create_task(tiny_mae(), wide_cfg, CTX)
        with pytest.raises(ValueError, match="mismatched shapes"):
            create_task(tiny_mae(), dmae_cfg(_teacher_file(tmp_path, tiny_mae(depth=3, mlp_ratio=2.0))), CTX)


# --------------------------------------------------------------------------------------------- further PT
class TestFurtherPretrainSD:
    def test_stage_one_trains_teacher_stage_two_student_from_original(self):
        model = tiny_mae()
        original = {k: v.clone() for k, v in model.state_dict().items()}
        ctx = TaskContext(num_classes=2, epochs=4, in_chans=1, image_size=8)
        task = create_task(model, cfg("method.name=further_pretrain_sd"), ctx)
        opt = torch.optim.SGD([p for p in task.parameters() if p.requires_grad], lr=0.1)
        x = torch.randn(4, 1, 8, 8)
        for epoch in range(4):
            task.train()
            task.on_epoch_start(epoch)
            opt.zero_grad(set_to_none=True)
            out = task(x, torch.zeros(4, dtype=torch.long))
            out["loss"].backward()
            opt.step()
            if epoch == 1:  # end of stage 1: the student still holds the original weights
                assert out["stage"].item() == 1.0
                assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
                teacher_end = {k: v.clone() for k, v in task.teacher.state_dict().items()}
                assert not torch.equal(teacher_end["blocks.0.attn.qkv.weight"], original["blocks.0.attn.qkv.weight"])
        assert out["stage"].item() == 2.0 and out["distill"].item() > 0
        assert all(torch.equal(v, teacher_end[k]) for k, v in task.teacher.state_dict().items())  # frozen
        assert not torch.equal(model.blocks[0].attn.qkv.weight, original["blocks.0.attn.qkv.weight"])
        assert task.get_eval_model() is model

    def test_distill_term_by_hand(self):
        task = create_task(tiny_mae(), cfg("method.name=further_pretrain_sd", "method.switch_epoch=0"), CTX)
        x = torch.randn(3, 1, 8, 8)
        out = task(x, torch.zeros(3, dtype=torch.long))
        hand = (task.mae.forward_features(x)[:, 0] - task.teacher.forward_features(x)[:, 0]).pow(2).sum() / 3
        assert out["distill"].item() == pytest.approx(hand.item(), abs=1e-6)  # identical copies at start: 0
        assert hand.item() == pytest.approx(0.0, abs=1e-8)

    def test_bad_switch_epoch_and_state(self):
        with pytest.raises(ValueError, match="switch_epoch"):
            create_task(tiny_mae(), cfg("method.name=further_pretrain_sd", "method.switch_epoch=2"), CTX)
        task = create_task(tiny_mae(), cfg("method.name=further_pretrain_sd"), CTX)
        assert task.get_task_state() == {"stage": 1, "switch_epoch": 1}
        with pytest.raises(ValueError, match="switch_epoch=0"):
            task.load_task_state({"stage": 2, "switch_epoch": 0})


# --------------------------------------------------------------------------------------------- random teacher
def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 32))


def _flat(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


class TestRandomTeacherInit:
    def test_copy_has_distance_zero(self):
        t = mlp()
        s, rand = init_student(t, "copy")
        assert rand is None and torch.equal(_flat(s), _flat(t)) and s is not t

    def test_perturbed_distance_is_eps_times_draw(self):
        t = mlp()
        s, rand = init_student(t, "perturbed", eps=0.1, seed=5)
        assert torch.allclose((_flat(s) - _flat(t)).norm(), 0.1 * _flat(rand).norm(), rtol=1e-5)
        # the draw is an independent initialisation of the same family: relative distance ~ eps
        rel = ((_flat(s) - _flat(t)).norm() / _flat(t).norm()).item()
        assert rel == pytest.approx(0.1, rel=0.1)

    def test_interpolated_distance(self):
        t = mlp()
        s, rand = init_student(t, "interpolated", alpha=0.25, seed=5)
        assert torch.allclose((_flat(s) - _flat(t)).norm(), 0.25 * (_flat(rand) - _flat(t)).norm(), rtol=1e-5)
        rel = ((_flat(s) - _flat(t)).norm() / _flat(t).norm()).item()
        assert rel == pytest.approx(0.25 * 2 ** 0.5, rel=0.1)  # independent draws: ||r - t|| ~ sqrt(2) ||t||
        with pytest.raises(ValueError, match="alpha"):
            init_student(t, "interpolated", alpha=1.5)

    def test_seeded_and_global_rng_untouched(self):
        t = mlp()
        torch.manual_seed(123)
        before = torch.rand(1)
        torch.manual_seed(123)
        a, _ = init_student(t, "perturbed", eps=0.1, seed=7)
        after = torch.rand(1)
        b, _ = init_student(t, "perturbed", eps=0.1, seed=7)
        assert torch.equal(before, after) and torch.equal(_flat(a), _flat(b))

    def test_auto_resolution_and_unknown_mode(self):
        assert resolve_init("auto", nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))) == "copy"
        with pytest.raises(ConfigError, match="net_norm=batchnorm"):
            resolve_init("auto", nn.Sequential(nn.Conv2d(1, 2, 3), nn.InstanceNorm2d(2, affine=True)))
        with pytest.raises(ValueError, match="copy, perturbed, interpolated"):
            resolve_init("clone", nn.Linear(1, 1))


def convnet(norm="instancenorm"):
    torch.manual_seed(0)
    return timm.create_model("convnet_d1", net_width=8, net_norm=norm, img_size=8, in_chans=1, num_classes=2)


def rt_cfg(*extra):
    return cfg("method.name=random_teacher", "method.hidden_dims=[16]", "method.bottleneck_dim=8",
               "method.out_dim=32", *extra)


def _student_grad_norm(task, x):
    task.zero_grad(set_to_none=True)
    step(task, [x])
    return sum(p.grad.norm() ** 2 for p in task.trainable_module.parameters() if p.grad is not None) ** 0.5


class TestRandomTeacherTask:
    def test_exact_copy_with_instance_norm_never_trains_perturbed_does_auto_refuses(self):
        x = torch.randn(6, 1, 8, 8)
        copy_task = create_task(convnet(), rt_cfg("method.student_init=copy"), CTX)
        zero = _student_grad_norm(copy_task, x)  # float32 round-off only
        perturbed = create_task(convnet(), rt_cfg("method.student_init=perturbed"), CTX)
        assert _student_grad_norm(perturbed, x) > 1000 * zero
        with pytest.raises(ConfigError, match="BatchNorm backbone"):
            create_task(convnet(), rt_cfg(), CTX)

    def test_batchnorm_copy_trains(self):
        task = create_task(convnet("batchnorm"), rt_cfg(), CTX)
        assert task.init_mode == "copy"
        assert _student_grad_norm(task, torch.randn(6, 1, 8, 8)) > 1e-4

    def test_teacher_frozen_eval_and_state_roundtrip(self, tmp_path):
        model = convnet()
        task = create_task(model, rt_cfg("method.student_init=perturbed"), CTX)
        assert task.train_views == ["eval"] and task.get_eval_model() is model
        step(task, [torch.randn(4, 1, 8, 8)])
        assert not task.teacher.training and all(p.grad is None for p in task.teacher.parameters())
        save_checkpoint(tmp_path / "c.safetensors", {"task": task.get_task_state()})
        other = create_task(convnet(), rt_cfg("seed=9", "method.student_init=perturbed"), CTX)
        other.load_task_state(load_checkpoint(tmp_path / "c.safetensors")["task"])
        assert torch.equal(_flat(other.teacher), _flat(task.teacher))

    def test_evaluate_reports_student_and_teacher(self):
        task = create_task(convnet("batchnorm"), rt_cfg("method.probe_k=3"), CTX)
        row = task.evaluate(loaders(), 0)
        assert set(row) == {"probe_student_linear", "probe_student_knn", "probe_teacher_linear",
                            "probe_teacher_knn"}


# --------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_mae_run_then_finetune_and_dmae_through_the_trainer(tmp_path):
    from vsd.engine.trainer import train

    tiny = "{depth: 1, embed_dim: 32, num_heads: 2, decoder_embed_dim: 16, decoder_depth: 1, decoder_num_heads: 2}"
    common = ["data.name=digits", "train.epochs=1", "train.batch_size=256", "train.opt=adamw", "train.lr=1e-3"]
    mae = train(load_config(None, common + ["method.name=mae", "model.name=mae_vit_tiny_patch4_32",
                                            f"model.kwargs={tiny}", f"output={tmp_path / 'mae'}"]))
    assert {"eval_probe_linear", "eval_probe_knn"} <= set(mae)
    weights = tmp_path / "mae" / "model.safetensors"
    dmae = train(load_config(None, common + [
        "method.name=dmae", "model.name=mae_vit_tiny_patch4_32", f"model.kwargs={tiny}",
        "method.teacher_model=mae_vit_tiny_patch4_32", f"method.teacher_kwargs={tiny}",
        f"method.teacher_checkpoint={weights}", "method.student_blocks=[0]", f"output={tmp_path / 'dmae'}"]))
    assert "eval_probe_linear" in dmae
    ft = train(load_config(None, common + ["method.name=ce", "model.name=vit_tiny_patch4_32",
                                           "model.kwargs={depth: 1, embed_dim: 32, num_heads: 2}",
                                           f"model.checkpoint={weights}", f"output={tmp_path / 'ft'}"]))
    assert 0.0 <= ft["eval_top1"] <= 100.0
