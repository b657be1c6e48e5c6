"""Checkpoints: exact round-trip of nested state, atomic writes, and readable errors for bad files."""
import json

import pytest
import torch

from vsd.engine.checkpoint import CheckpointError, flatten_state, load_checkpoint, save_checkpoint
from vsd.engine.io import atomic_write_text


def _state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "name": "x",
            "nested": {"t": (1, 2.5, None), "bank": torch.arange(6, dtype=torch.float16).view(2, 3)},
            "history": [{"epoch": 1, "loss": float("inf")}]}


def test_roundtrip_is_exact(tmp_path):
    state = _state()
    save_checkpoint(tmp_path / "c.safetensors", state)
    back = load_checkpoint(tmp_path / "c.safetensors")
    assert back["epoch"] == 3 and back["name"] == "x" and back["nested"]["t"] == (1, 2.5, None)
    assert torch.equal(back["nested"]["bank"], state["nested"]["bank"]) and back["nested"]["bank"].dtype == torch.float16
    for k, v in state["model"].items():
        assert torch.equal(back["model"][k], v)
    # optimizer state is keyed by ints and holds tuples: it must load back into a fresh optimizer
    assert set(back["optimizer"]["state"]) == {0, 1}
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    model = torch.nn.Linear(3, 2)
    torch.optim.Adam(model.parameters()).load_state_dict(back["optimizer"])
    assert back["history"][0]["loss"] == float("inf")


def test_unsupported_objects_are_refused():
    with pytest.raises(TypeError, match="cannot store a object"):
        flatten_state({"x": object()})


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_or_truncated_checkpoint_gives_one_clear_error(tmp_path, damage):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _state())
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00" * 64, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a vsd checkpoint"):
        load_checkpoint(tmp_path / "plain.safetensors")


def test_a_pickle_is_never_loaded(tmp_path):
    path = tmp_path / "evil.safetensors"
    torch.save({"x": 1}, path)  # a pickle file given where a checkpoint is expected
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_text(path, json.dumps({"v": 1}))
    import vsd.engine.io as io_mod

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io_mod.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, json.dumps({"v": 2}))
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
