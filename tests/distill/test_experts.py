"""Expert buffers: loss scaling, gradient penalty, resume, mismatch refusal, fp16 storage."""
import pytest
import torch
from torch import nn

from vsd.distill.experts import (BufferMismatchError, ExpertSpec, build_buffer, buffer_identity, gradient_penalty,
                                 load_buffer, loss_scale)
from vsd.distill.flat import FlatModel


def _make():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(30, 1, 4, 4, generator=g), torch.arange(30) % 3


def _identity(model_name="lin"):
    return buffer_identity(model_name, {}, FlatModel(_make()), "toy", 4, 1, 3, False)


def test_loss_scaling_schedule():
    assert [loss_scale(e, True) for e in (0, 1, 9, 10, 30)] == pytest.approx([0.5, 0.55, 0.95, 1.0, 1.0])
    assert loss_scale(0, False) == 1.0


def test_gradient_penalty_by_hand():
    lin = nn.Linear(4, 2)
    x = torch.randn(3, 4)
    # d sum(logits) / dx = column sums of W for every sample
    expected = (lin.weight.sum(0).norm() - 1) ** 2
    assert torch.allclose(gradient_penalty(lin, x), expected)
    assert gradient_penalty(lin, x).requires_grad


def test_build_resume_and_refuse(tmp_path):
    x, y = _data()
    spec = ExpertSpec(epochs=2, batch_size=8, augment=False, momentum=0.9, loss_scaling=True, grad_penalty=0.5)
    trained = build_buffer(tmp_path, _identity(), spec, 3, _make, x, y, seed=0)
    assert trained == [0, 1, 2]
    first = load_buffer(tmp_path, _identity())
    assert len(first) == 3 and first[0].shape == (3, 51)
    assert not torch.equal(first[0][0], first[0][-1])
    (tmp_path / "expert_001.safetensors").unlink()
    assert build_buffer(tmp_path, _identity(), spec, 3, _make, x, y, seed=0) == [1]  # resume: only the missing
    again = load_buffer(tmp_path, _identity())
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    with pytest.raises(BufferMismatchError, match="model: buffer has \"lin\", expected \"other\""):
        load_buffer(tmp_path, _identity("other"))
    with pytest.raises(BufferMismatchError, match="training spec"):
        build_buffer(tmp_path, _identity(), ExpertSpec(epochs=3, augment=False), 3, _make, x, y, seed=0)


def test_ranks_split_experts_and_fp16(tmp_path):
    x, y = _data()
    spec = ExpertSpec(epochs=1, batch_size=8, augment=True, dtype="float16")
    assert build_buffer(tmp_path, _identity(), spec, 4, _make, x, y, seed=1, rank=1, world_size=2) == [1, 3]
    with pytest.raises(BufferMismatchError, match="missing"):
        load_buffer(tmp_path, _identity(), num_experts=4)
    assert build_buffer(tmp_path, _identity(), spec, 4, _make, x, y, seed=1, rank=0, world_size=2) == [0, 2]
    trajectories = load_buffer(tmp_path, _identity(), num_experts=4)
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / "expert_000.safetensors"))["trajectory"].dtype == torch.float16
    assert trajectories[0].dtype == torch.float32


def test_bad_spec():
    with pytest.raises(ValueError, match="dtype"):
        ExpertSpec(dtype="bfloat16")
    with pytest.raises(ValueError, match="lr must be positive"):
        ExpertSpec(lr=0.0)
