"""Model weights from timm's own training checkpoints (written here by timm's CheckpointSaver), safely."""
import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.utils import CheckpointSaver, ModelEmaV3

from vsd.config import load_config
from vsd.engine.checkpoint import save_checkpoint
from vsd.models import build_model, load_pretrained, read_state_dict
from vsd.models.weights import load_weights
from vsd.wrappers import TeacherWrapper, create_teacher

ROOT = Path(__file__).resolve().parents[2]


def _same(state, model):
    own = model.state_dict()
    return sorted(state) == sorted(own) and all(torch.equal(state[k], own[k]) for k in own)


def _timm_checkpoint(tmp_path, name="resnet10t", num_classes=3, **kwargs):
    """What timm's train.py writes: CheckpointSaver with args (a Namespace), optimizer and EMA state."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=num_classes, **kwargs)
    ema = ModelEmaV3(model, decay=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    ema.update(model, step=10)
    args = argparse.Namespace(model=name, lr=0.1, input_size=[3, 32, 32], mean=None, model_kwargs={}, smoothing=0.1)
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(tmp_path),
                            recovery_dir=str(tmp_path), max_history=1)
    saver.save_checkpoint(epoch=0, metric=50.0)
    assert (tmp_path / "model_best.pth.tar").is_file() and (tmp_path / "checkpoint-0.pth.tar").is_file()
    return model, ema.module


def test_reads_timm_training_checkpoint_and_its_ema(tmp_path):
    model, ema = _timm_checkpoint(tmp_path)
    assert not _same(model.state_dict(), ema)  # the two weight sets differ, so picking the right one matters
    for name in ("model_best.pth.tar", "checkpoint-0.pth.tar"):
        assert _same(read_state_dict(tmp_path / name), model)
        assert _same(read_state_dict(tmp_path / name, ema=True), ema)


def test_timm_checkpoint_as_teacher_and_as_model_checkpoint(tmp_path):
    model, ema = _timm_checkpoint(tmp_path)
    path = tmp_path / "model_best.pth.tar"
    assert _same(create_teacher("resnet10t", path, num_classes=3).state_dict(), model)
    assert _same(TeacherWrapper(timm.create_model("resnet10t", num_classes=3), "resnet10t", path,
                                ema=True).teacher.state_dict(), ema)
    info = argparse.Namespace(num_classes=3, in_chans=3, image_size=32)
    for ema_on, expected in ((False, model), (True, ema)):
        cfg = load_config(None, ["model.name=resnet10t", f"model.checkpoint={path}",
                                 f"model.checkpoint_ema={str(ema_on).lower()}"])
        assert _same(build_model(cfg, info).state_dict(), expected)
    # fine-tuning on another label set: the classifier is skipped, everything else loaded
    tuned = build_model(load_config(None, ["model.name=resnet10t", f"model.checkpoint={path}"]),
                        argparse.Namespace(num_classes=7, in_chans=3, image_size=32))
    assert torch.equal(tuned.conv1[0].weight, model.conv1[0].weight) and tuned.fc.out_features == 7


def test_nkd_task_reads_teacher_ema_from_timm_checkpoint(tmp_path):
    from vsd.tasks import TaskContext, create_task

    _, ema = _timm_checkpoint(tmp_path)
    cfg = load_config(None, ["method.name=nkd", "method.teacher=resnet10t",
                             f"method.teacher_checkpoint={tmp_path / 'model_best.pth.tar'}",
                             "method.teacher_checkpoint_ema=true"])
    task = create_task(timm.create_model("resnet10t", num_classes=3), cfg, TaskContext(num_classes=3))
    assert _same(task.teacher.state_dict(), ema)


def test_prefixes_and_layouts(tmp_path):
    model = timm.create_model("resnet10t", num_classes=3)
    state = model.state_dict()
    torch.save({"model": {f"_orig_mod.module.{k}": v for k, v in state.items()}}, tmp_path / "a.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "b.bin")
    torch.save({"model_ema": state, "model": state}, tmp_path / "c.pt")
    save_checkpoint(tmp_path / "vsd.safetensors", {"model": state, "ema": state, "epoch": 1})
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for name in ("a.pth", "b.bin", "c.pt", "vsd.safetensors", "w.safetensors"):
        assert _same(read_state_dict(tmp_path / name), model), name
    assert _same(read_state_dict(tmp_path / "c.pt", ema=True), model)
    assert _same(read_state_dict(tmp_path / "vsd.safetensors", ema=True), model)


def test_clear_errors(tmp_path):
    state = timm.create_model("resnet10t", num_classes=3).state_dict()
    torch.save({"state_dict": state}, tmp_path / "no_ema.pth.tar")
    with pytest.raises(ValueError, match=r"holds no EMA weights .*weight entries found: \['state_dict'\]"):
        read_state_dict(tmp_path / "no_ema.pth.tar", ema=True)
    save_checkpoint(tmp_path / "run.safetensors", {"model": state})
    with pytest.raises(ValueError, match="vsd checkpoint without EMA weights"):
        read_state_dict(tmp_path / "run.safetensors", ema=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="plain safetensors weight file"):
        read_state_dict(tmp_path / "w.safetensors", ema=True)
    torch.save({"epoch": 3, "args": argparse.Namespace(lr=0.1)}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match=r"holds no state dict of tensors .*dict with keys \[.args., .epoch.\]"):
        read_state_dict(tmp_path / "empty.pth")
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="neither a safetensors file .* nor a PyTorch file"):
        read_state_dict(tmp_path / "junk.bin")
    (tmp_path / "cut.pth.tar").write_bytes((tmp_path / "no_ema.pth.tar").read_bytes()[:2000])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_state_dict(tmp_path / "cut.pth.tar")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth.tar")


def test_never_unpickles_code(tmp_path):
    """A checkpoint with any global beyond argparse.Namespace is refused, and its __reduce__ never runs."""
    marker = tmp_path / "ran"
    torch.save({"state_dict": {}, "payload": _Evil(str(marker))}, tmp_path / "evil.pth.tar")
    with pytest.raises(ValueError, match=r"will not unpickle them.*|_Evil"):
        read_state_dict(tmp_path / "evil.pth.tar")
    assert not marker.exists()


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_strict_and_fine_tune_fitting(tmp_path):
    model = timm.create_model("resnet10t", num_classes=3)
    state = dict(model.state_dict())
    state["extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "extra.pth.tar")
    with pytest.raises(ValueError, match=r"unexpected keys: extra\.weight"):
        load_weights(timm.create_model("resnet10t", num_classes=3), tmp_path / "extra.pth.tar")
    load_pretrained(timm.create_model("resnet10t", num_classes=3), tmp_path / "extra.pth.tar")  # extras ignored
    del state["conv1.0.weight"]
    torch.save({"state_dict": state}, tmp_path / "missing.pth.tar")
    with pytest.raises(ValueError, match=r"missing keys: conv1\.0\.weight"):
        load_pretrained(timm.create_model("resnet10t", num_classes=3), tmp_path / "missing.pth.tar")


def test_tasks_never_import_the_trainer():
    """Layering: vsd.tasks (and vsd.models, vsd.wrappers) must not import vsd.engine.trainer, lazily or not."""
    for package in ("tasks", "models", "wrappers"):
        for path in (ROOT / "vsd" / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names] if isinstance(node, ast.Import) else []
                assert not any(n.startswith("vsd.engine.trainer") for n in names), path
    code = "import sys, vsd.tasks, vsd.models, vsd.wrappers; assert 'vsd.engine.trainer' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_safetensors_whose_header_starts_like_a_pickle(tmp_path):
    """A safetensors header length whose first byte is 0x80 must not be taken for a PyTorch pickle."""
    state = {k: v.contiguous() for k, v in timm.create_model("resnet10t", num_classes=3).state_dict().items()}
    path = tmp_path / "w.safetensors"
    for pad in range(300):
        save_file(state, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert sorted(read_state_dict(path)) == sorted(state)
