"""timm's model contract for every vsd wrapper and classification task, on a timm ResNet, a timm ViT and vsd models.

What timm's scripts and utilities do with a model, done here without network and without a copy of the scripts:
data config (resolve_data_config), num_classes / num_features / get_classifier / reset_classifier,
set_grad_checkpointing, no_weight_decay and group_matcher (create_optimizer_v2 with layer decay), ModelEmaV3,
CheckpointSaver + read back, DDP (gloo) and torch.compile.
"""
import argparse
import copy
import dataclasses
import os

import pytest
import timm
import torch
import torch.distributed as dist
from timm.data import resolve_data_config
from timm.models import group_parameters
from timm.optim import create_optimizer_v2
from timm.optim._param_groups import auto_group_layers
from timm.task import resume_task_checkpoint
from timm.task._helpers import load_task_ema_checkpoint
from timm.utils import CheckpointSaver, ModelEmaV3, unwrap_model

import vsd  # noqa: F401  (registers vsd models)
from vsd.losses import MDCSLoss, NKDLoss
from vsd.models.weights import read_state_dict
from vsd.tasks.mdcs import MDCSTask
from vsd.tasks.nkd import NKDTask
from vsd.tasks.pskd import PSKDSnapshotTask
from vsd.tasks.sla import SLATask
from vsd.tasks.uskd import USKDTask
from vsd.wrappers import (ExpertsWrapper, MidFeatureWrapper, PSKDSnapshot, SLAWrapper, TeacherWrapper,
                          USKDWrapper)

C = 5
MODELS = {  # name -> (factory, input size); tiny so that the whole matrix stays fast
    "timm_resnet": (lambda: timm.create_model("resnet10t", num_classes=C), 32),
    "timm_vit": (lambda: timm.create_model("vit_tiny_patch16_224", num_classes=C, img_size=32, patch_size=8,
                                           depth=2, embed_dim=48, num_heads=2), 32),
    "vsd_resnet": (lambda: timm.create_model("resnet32_cifar", num_classes=C), 16),
    "vsd_convnet": (lambda: timm.create_model("convnet_d2", num_classes=C, net_width=8, img_size=16), 16),
}
WRAPPERS = {  # name -> (build, model names it supports, prefix of the wrapped model's parameters)
    "mid_feature": (MidFeatureWrapper, list(MODELS), "model."),
    "uskd": (USKDWrapper, list(MODELS), "model."),
    "teacher": (lambda m: TeacherWrapper(m, copy.deepcopy(m)), list(MODELS), "student."),
    "pskd_snapshot": (lambda m: PSKDSnapshot(m, epochs=2), list(MODELS), "model."),
    "sla": (lambda m: SLAWrapper(m, self_distill=True), list(MODELS), "model."),
    "experts": (lambda m: ExpertsWrapper(m, num_experts=2), ["timm_resnet", "vsd_resnet"], None),
}
FAST = {("mid_feature", "timm_vit"), ("uskd", "timm_resnet"), ("uskd", "vsd_convnet"), ("teacher", "timm_resnet"),
        ("pskd_snapshot", "timm_vit"), ("sla", "timm_resnet"), ("experts", "vsd_resnet")}
# every wrapper on every model it supports; the rest of the matrix runs with `make test-all`
CASES = [pytest.param(w, m, marks=() if (w, m) in FAST else pytest.mark.slow)
         for w, (_, models, _) in WRAPPERS.items() for m in models]


def _build(wrapper, model_name, seed=0):
    torch.manual_seed(seed)
    factory, size = MODELS[model_name]
    raw = factory()
    raw_cfg = resolve_data_config(model=raw)
    return raw, raw_cfg, WRAPPERS[wrapper][0](raw), size


def _x(size, n=4):
    return torch.randn(n, 3, size, size)


def _loss(out):
    """A loss touching every output of the train-mode forward (so every trained parameter gets a gradient)."""
    if isinstance(out, torch.Tensor):
        return out.square().mean()
    parts = [getattr(out, f.name) for f in dataclasses.fields(out)] if dataclasses.is_dataclass(out) else out
    total = 0.0
    for part in parts:
        if isinstance(part, torch.Tensor):
            total = total + part.float().square().mean()
        elif isinstance(part, (list, tuple)):
            total = total + sum(p.square().mean() for p in part)
    return total


@pytest.mark.parametrize("wrapper,model_name", CASES)
def test_model_contract(wrapper, model_name):
    raw, raw_cfg, model, size = _build(wrapper, model_name)
    assert resolve_data_config(model=model) == raw_cfg  # preprocessing unchanged by wrapping
    assert model.default_cfg is model.pretrained_cfg
    assert model.num_classes == C and model.num_features == raw.num_features
    assert isinstance(model.get_classifier(), torch.nn.Module)
    model.eval()
    assert model(_x(size, 2)).shape == (2, C)  # eval mode: plain logits
    prefix = WRAPPERS[wrapper][2]
    if prefix is not None:
        inner = raw.no_weight_decay() if hasattr(raw, "no_weight_decay") else set()
        assert model.no_weight_decay() == {prefix + n for n in inner}
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.eval()(_x(size, 2)).shape == (2, 7)


@pytest.mark.parametrize("wrapper,model_name", CASES)
def test_optimizer_factory_and_layer_decay(wrapper, model_name):
    raw, _, model, _ = _build(wrapper, model_name)
    layers = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    prefix = WRAPPERS[wrapper][2]
    if prefix is not None:  # the wrapped model's parameters keep the layer ids timm gives them unwrapped
        reference = copy.deepcopy(unwrap_model(getattr(model, prefix[:-1])))
        raw_layers = (group_parameters(reference, reference.group_matcher(coarse=False), reverse=True)
                      if hasattr(reference, "group_matcher") else auto_group_layers(reference))
        assert {n: layers[prefix + n] for n in raw_layers} == raw_layers
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.7)
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    trained = [p for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(trained) and {id(p) for p in grouped} == {id(p) for p in trained}
    scales = {g["lr_scale"] for g in optimizer.param_groups}
    assert max(scales) == 1.0 and (min(scales) < 1.0) == (max(layers.values()) >= 1)
    create_optimizer_v2(model, opt="sgd", lr=0.1, weight_decay=1e-4)


@pytest.mark.parametrize("wrapper,model_name", CASES)
def test_ema_saver_round_trip(wrapper, model_name, tmp_path):
    _, _, model, size = _build(wrapper, model_name)
    optimizer = create_optimizer_v2(model, opt="sgd", lr=0.1)
    ema = ModelEmaV3(model, decay=0.5)
    model.train()
    _loss(model(_x(size))).backward()
    optimizer.step()
    ema.update(model, step=10)
    args = argparse.Namespace(model=model_name, lr=0.1)
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(tmp_path),
                            recovery_dir=str(tmp_path), max_history=1)
    saver.save_checkpoint(epoch=0, metric=1.0)
    _, _, fresh, _ = _build(wrapper, model_name, seed=1)
    fresh.load_state_dict(read_state_dict(tmp_path / "model_best.pth.tar"))
    x = _x(size, 2)
    assert torch.allclose(fresh.eval()(x), model.eval()(x), atol=1e-5)
    fresh.load_state_dict(read_state_dict(tmp_path / "model_best.pth.tar", ema=True))
    assert torch.allclose(fresh(x), ema.module.eval()(x), atol=1e-5)


@pytest.fixture
def gloo_world_1(tmp_path):
    """A one-process gloo group: DDP's reducer still checks that every parameter got a gradient."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("wrapper,model_name", CASES)
def test_ddp_two_steps(wrapper, model_name, gloo_world_1):
    _, _, model, size = _build(wrapper, model_name)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01)
    ddp.train()
    for _ in range(2):  # an unused parameter stops the second step ("Expected to have finished reduction")
        optimizer.zero_grad()
        _loss(ddp(_x(size))).backward()
        optimizer.step()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def _compiled_step(wrapper, model_name, backend):
    _, _, model, size = _build(wrapper, model_name)
    compiled = torch.compile(model, backend=backend)
    x = _x(size, 2)
    compiled.train()
    _loss(compiled(x)).backward()
    compiled.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(x), model.eval()(x), atol=1e-4)


def test_torch_compile_fast():
    torch._dynamo.reset()
    _compiled_step("uskd", "timm_resnet", backend="eager")


@pytest.mark.slow
@pytest.mark.parametrize("wrapper,model_name", CASES)
def test_torch_compile_inductor(wrapper, model_name):
    torch._dynamo.reset()
    _compiled_step(wrapper, model_name, backend="inductor")


def test_grad_checkpointing_is_passed_on():
    _, _, model, size = _build("uskd", "timm_resnet")
    model.set_grad_checkpointing(True)
    assert model.model.grad_checkpointing
    _, _, vsd_model, _ = _build("uskd", "vsd_convnet")
    with pytest.raises(AttributeError, match="does not support gradient checkpointing"):
        vsd_model.set_grad_checkpointing(True)


def test_experts_grad_checkpointing_same_gradients():
    grads = []
    for enable in (False, True):
        _, _, model, size = _build("experts", "timm_resnet")
        model.set_grad_checkpointing(enable)
        torch.manual_seed(3)
        _loss(model.train()(_x(size))).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


# ---------------------------------------------------------------------------------------------- tasks
TASKS = {  # name -> (build from a model, supported models)
    "uskd": (lambda m: USKDTask(m, mu=0.1), list(MODELS)),
    "nkd": (lambda m: NKDTask(m, copy.deepcopy(m), NKDLoss()), list(MODELS)),
    "pskd_snapshot": (lambda m: PSKDSnapshotTask(m, epochs=2), list(MODELS)),
    "sla": (lambda m: SLATask(m, C, self_distill=True), list(MODELS)),
    "mdcs": (lambda m: MDCSTask(ExpertsWrapper(m, num_experts=3), MDCSLoss([4, 3, 2, 2, 1])),
             ["timm_resnet", "vsd_resnet"]),
}
FAST_TASKS = {("uskd", "timm_vit"), ("nkd", "vsd_convnet"), ("pskd_snapshot", "timm_resnet"), ("sla", "timm_resnet"),
              ("mdcs", "timm_resnet")}
TASK_CASES = [pytest.param(t, m, marks=() if (t, m) in FAST_TASKS else pytest.mark.slow)
              for t, (_, models) in TASKS.items() for m in models]


def _task(name, model_name, seed=0):
    torch.manual_seed(seed)
    factory, size = MODELS[model_name]
    raw = factory()
    raw_cfg = resolve_data_config(model=raw)
    return TASKS[name][0](raw), raw_cfg, size


def _task_input(name, size):
    x = _x(size)
    return [x, x.flip(3)] if name == "mdcs" else x


@pytest.mark.parametrize("name,model_name", TASK_CASES)
def test_task_in_timm_train_flow(name, model_name, tmp_path):
    """What timm's train.py does with a task: optimizer on get_trainable_module(), EMA, task(x, y)['loss'],
    CheckpointSaver(task=...) and resume_task_checkpoint / load_task_ema_checkpoint into a fresh task."""
    task, raw_cfg, size = _task(name, model_name)
    assert resolve_data_config(model=task.get_eval_model()) == raw_cfg
    optimizer = create_optimizer_v2(task.get_trainable_module(), opt="adamw", lr=1e-3, weight_decay=0.05,
                                    layer_decay=0.7)
    trained = {id(p) for p in task.get_trainable_module().parameters() if p.requires_grad}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == trained
    task.setup_ema(decay=0.5)
    task.train()
    task(_task_input(name, size), torch.tensor([0, 1, 2, 3]))["loss"].backward()
    optimizer.step()
    task.update_ema(step=10)
    saver = CheckpointSaver(task.get_trainable_module(), optimizer, args=argparse.Namespace(model=model_name),
                            checkpoint_dir=str(tmp_path), recovery_dir=str(tmp_path), max_history=1, task=task)
    saver.save_checkpoint(epoch=0, metric=1.0)
    fresh, _, _ = _task(name, model_name, seed=1)
    fresh.setup_ema(decay=0.5)
    resume_task_checkpoint(fresh, str(tmp_path / "model_best.pth.tar"), log_info=False)
    load_task_ema_checkpoint(fresh, str(tmp_path / "model_best.pth.tar"))
    for ema in (False, True):
        a = unwrap_model(task.get_trainable_module(ema=ema)).state_dict()
        b = unwrap_model(fresh.get_trainable_module(ema=ema)).state_dict()
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a), (name, ema)


@pytest.mark.parametrize("name,model_name", TASK_CASES)
def test_task_prepare_distributed(name, model_name, gloo_world_1):
    """timm's train.py: task.prepare_distributed() wraps the trainable module; two steps must run."""
    task, _, size = _task(name, model_name)
    task.prepare_distributed()
    optimizer = torch.optim.SGD(task.get_trainable_module().parameters(), lr=0.01)
    task.train()
    for _ in range(2):
        optimizer.zero_grad()
        task(_task_input(name, size), torch.tensor([0, 1, 2, 3]))["loss"].backward()
        optimizer.step()


def _uskd_two_ranks(rank, store, results):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(USKDWrapper(timm.create_model("resnet10t", num_classes=C)))
    from vsd.losses import USKDLoss

    loss_fn, optimizer = USKDLoss(mu=0.1), torch.optim.SGD(model.parameters(), lr=0.5)
    torch.manual_seed(100 + rank)  # different data on each rank
    for _ in range(3):
        optimizer.zero_grad()
        loss_fn(model(_x(32)), torch.randint(0, C, (4,))).backward()
        optimizer.step()
    results[rank] = model.module.weak_head.weight.detach().clone()
    dist.destroy_process_group()


@pytest.mark.slow
def test_uskd_weak_head_identical_on_two_ranks(tmp_path):
    """The criterion + wrapper form under DDP: the weak head is synchronised (it lives in the wrapped model)."""
    import torch.multiprocessing as mp

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = mp.Manager().dict()
    mp.spawn(_uskd_two_ranks, args=(str(tmp_path / "store"), results), nprocs=2, join=True)
    assert torch.equal(results[0], results[1])
