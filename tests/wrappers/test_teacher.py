"""Teacher loading (vsd checkpoint, safetensors, weights-only .pth), key checks, and the train/eval faces."""
import timm
import torch
import pytest
from safetensors.torch import save_file

from vsd.engine.checkpoint import save_checkpoint
from vsd.wrappers import TeacherWrapper, create_teacher
from vsd.models.weights import read_state_dict


def _net(num_classes=3):
    return timm.create_model("resnet10t", num_classes=num_classes)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_loads_every_safe_format(tmp_path):
    torch.manual_seed(0)
    source = _net()
    state = source.state_dict()
    save_checkpoint(tmp_path / "run.safetensors", {"model": state, "epoch": 3})
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "weights.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "foreign.pth")
    for name in ("run.safetensors", "weights.safetensors", "foreign.pth"):
        torch.manual_seed(1)
        teacher = create_teacher("resnet10t", tmp_path / name, num_classes=3)
        assert _same(teacher, source), name
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_refuses_to_unpickle(tmp_path):
    torch.save({"model": _net().state_dict(), "extra": object.__new__(pytest.MonkeyPatch)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="will not unpickle"):
        read_state_dict(tmp_path / "evil.pth")


def test_mismatched_keys_are_listed(tmp_path):
    state = _net().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fc.bias"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys: fc\.bias; unexpected keys: extra\.weight"):
        create_teacher("resnet10t", tmp_path / "bad.safetensors", num_classes=3)
    save_file({k: v.contiguous() for k, v in _net(5).state_dict().items()}, str(tmp_path / "five.safetensors"))
    with pytest.raises(ValueError, match=r"shape mismatches .*fc\.weight \(5, 512\) vs \(3, 512\)"):
        create_teacher("resnet10t", tmp_path / "five.safetensors", num_classes=3)


def test_bad_paths_and_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_teacher("resnet10t", tmp_path / "nope.safetensors")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="neither a safetensors file .* nor a PyTorch file"):
        create_teacher("resnet10t", tmp_path / "w.npz")
    with pytest.raises(ValueError, match="only apply to a model name"):
        create_teacher(_net(), num_classes=3)
    with pytest.raises(TypeError, match="timm model name or an nn.Module"):
        create_teacher(3)


def test_wrapper_train_and_eval_faces():
    torch.manual_seed(0)
    student, teacher = _net(), _net()
    model = TeacherWrapper(student, teacher)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    assert not model.teacher.training
    out = model(x)
    assert torch.allclose(out.teacher_logits, teacher(x))
    assert out.teacher_logits.grad_fn is None and out.logits.grad_fn is not None
    model.eval()
    assert torch.allclose(model(x), student(x))


def test_wrapper_builds_teacher_by_name_with_student_classes():
    model = TeacherWrapper(_net(7), "resnet10t")
    assert model.teacher.num_classes == 7
    with pytest.raises(ValueError, match="teacher logits \\(2, 4\\) do not match the student's \\(2, 7\\)"):
        TeacherWrapper(_net(7), "resnet10t", num_classes=4)(torch.randn(2, 3, 32, 32))
