"""Distillation checkpoints keep every rank's random states; each rank restores its own."""
import pytest
import torch

from vsd.distill import state
from vsd.engine.checkpoint import CheckpointError


def test_each_rank_restores_its_own_generators(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    x = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.1)
    g0, g1 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    torch.manual_seed(11)
    rank1_torch = torch.get_rng_state()
    rank1 = {"generators": {"g": g1.get_state()}, "rng": state.capture_rng_state()}

    def gather(out, mine):  # what all_gather_object gives rank 0 of 2
        out[0], out[1] = mine, rank1

    monkeypatch.setattr(state, "_rank_world", lambda: (0, 2))
    monkeypatch.setattr(state.dist, "all_gather_object", gather)
    torch.manual_seed(5)
    state.save_progress(path, 3, {"x": x}, {"opt": opt}, {"g": g0}, {})

    monkeypatch.setattr(state, "_rank_world", lambda: (1, 2))
    fresh = torch.Generator().manual_seed(99)
    assert state.load_progress(path, {"x": x}, {"opt": opt}, {"g": fresh})[0] == 3
    assert torch.equal(fresh.get_state(), g1.get_state())
    assert torch.equal(torch.get_rng_state(), rank1_torch)

    monkeypatch.setattr(state, "_rank_world", lambda: (0, 2))
    state.load_progress(path, {"x": x}, {"opt": opt}, {"g": fresh})
    assert torch.equal(fresh.get_state(), g0.get_state())

    monkeypatch.setattr(state, "_rank_world", lambda: (0, 1))
    with pytest.raises(CheckpointError, match="written by 2 process"):
        state.load_progress(path, {"x": x}, {"opt": opt}, {"g": fresh})


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    x = torch.zeros(2)
    monkeypatch.setattr(state, "_rank_world", lambda: (1, 2))
    monkeypatch.setattr(state.dist, "all_gather_object", lambda out, mine: out.__setitem__(slice(None), [mine, mine]))
    state.save_progress(tmp_path / "c.safetensors", 1, {"x": x}, {}, {}, {})
    assert not (tmp_path / "c.safetensors").exists()
