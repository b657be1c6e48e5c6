"""Experts are trained with the run's DSA strategy (``distill.dsa_strategy``, ``auto`` drops flips for digits),
and the strategy is part of the buffer's identity: another strategy gets another cache folder, and a buffer
made with another strategy is refused."""
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from vsd.config import load_config
from vsd.distill import experts
from vsd.distill import run_distiller
from vsd.distill.augment import DEFAULT_STRATEGY
from vsd.distill.experts import BufferMismatchError, ExpertSpec, build_buffer, buffer_identity
from vsd.distill.flat import FlatModel
from vsd.distill.mtt import MTTConfig, expert_spec, make_augment


def test_auto_strategy_is_the_distillations_and_the_experts():
    digits, cifar = SimpleNamespace(hflip=False), SimpleNamespace(hflip=True)
    no_flip = DEFAULT_STRATEGY.replace("_flip", "")
    assert expert_spec(MTTConfig(), digits).dsa_strategy == no_flip
    assert "_".join(make_augment(MTTConfig(), digits).families) == no_flip
    assert expert_spec(MTTConfig(), cifar).dsa_strategy == DEFAULT_STRATEGY
    assert expert_spec(MTTConfig(dsa_strategy="crop_scale"), digits).dsa_strategy == "crop_scale"


def test_build_buffer_augments_with_the_specs_strategy(tmp_path, monkeypatch):
    made = []
    real = experts.DSA
    monkeypatch.setattr(experts, "DSA", lambda *a, **k: made.append((a, k)) or real(*a, **k))
    make = lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 3))  # noqa: E731
    x, y = torch.randn(12, 1, 4, 4), torch.arange(12) % 3
    identity = buffer_identity("lin", {}, FlatModel(make()), "toy", 4, 1, 3, False)
    build_buffer(tmp_path, identity, ExpertSpec(epochs=1, batch_size=4, dsa_strategy="color_crop"), 1, make, x, y, 0)
    assert made == [(("color_crop",), {})]


def _cfg(tmp_path, *extra):
    return load_config(None, [
        "data.name=digits", "data.image_size=8", "model.name=convnet_d1", "model.kwargs={net_width: 4}",
        "train.device=cpu", "distill.method=mtt", "distill.ipc=1", "distill.iterations=0", "distill.syn_steps=2",
        "distill.expert_epochs=1", "distill.max_start_epoch=1", "distill.num_experts=1",
        "distill.expert_train_epochs=1", f"distill.buffer_dir={tmp_path / 'b'}", "distill.eval_nets=0",
        "distill.progress=false", "distill.export_imagefolder=false", *extra])


def test_strategy_is_part_of_the_buffer_identity(tmp_path):
    first = run_distiller(_cfg(tmp_path, "distill.dsa_strategy=crop"), tmp_path / "a")["buffer"]
    header = json.loads((tmp_path / "b" / first.split("/")[-1] / "buffer.json").read_text())
    assert header["spec"]["dsa_strategy"] == "crop"
    second = run_distiller(_cfg(tmp_path, "distill.dsa_strategy=color"), tmp_path / "c")["buffer"]
    assert second != first  # another cache folder: the experts are rebuilt
    assert run_distiller(_cfg(tmp_path, "distill.dsa_strategy=crop"), tmp_path / "d")["experts_trained_now"] == 0
    with pytest.raises(BufferMismatchError, match="dsa_strategy: buffer has \"crop\", expected \"color\""):
        run_distiller(_cfg(tmp_path, "distill.dsa_strategy=color", f"distill.buffer_path={first}"), tmp_path / "e")


def test_a_buffer_without_a_recorded_strategy_is_refused(tmp_path):
    folder = run_distiller(_cfg(tmp_path), tmp_path / "a")["buffer"]
    path = tmp_path / "b" / folder.split("/")[-1] / "buffer.json"
    header = json.loads(path.read_text())
    del header["spec"]["dsa_strategy"]  # as written before the strategy was recorded
    path.write_text(json.dumps(header))
    with pytest.raises(BufferMismatchError, match="dsa_strategy: buffer has null"):
        run_distiller(_cfg(tmp_path, f"distill.buffer_path={folder}"), tmp_path / "c")
