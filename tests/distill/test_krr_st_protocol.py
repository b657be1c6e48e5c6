"""KRR-ST transfer protocol as the official test.py, and prerequisite checks before any compute."""
import time

import pytest
import torch

from vsd.config import load_config
from vsd.distill import krr_st as krr_st_module
from vsd.distill import run_distiller
from vsd.distill.transfer import PretrainSet, TransferConfig, make_target_task, run_transfer
from tests.distill.test_krr_st import TINY


def test_defaults_are_the_official_ones():
    t = TransferConfig()
    assert t.labels_per_class == [0] and t.finetune_steps == 10000 and t.finetune_batch_size == 256
    assert (t.ce_lr, t.ce_weight_decay, t.finetune_lr, t.finetune_weight_decay) == (0.01, 5e-4, 0.01, 5e-4)


def test_zero_labels_per_class_keeps_the_whole_target_train_set():
    x, y = torch.randn(30, 1, 4, 4), torch.arange(3).repeat(10)
    task = make_target_task((x, y), (x, y), [2, 0], 0, torch.Generator().manual_seed(0))
    assert len(task.train_labels) == 20 and sorted(task.train_labels.tolist()) == [0] * 10 + [1] * 10


def test_random_subset_pretrains_by_ce_on_real_labels_with_dsa(tmp_path, monkeypatch):
    seen = {}
    real_run = krr_st_module.run_transfer

    def spy(makers, make_task, tcfg, *args, **kwargs):
        seen["set"] = makers["random"](0)
        seen["augment"] = kwargs.get("ce_augment")
        return real_run(makers, make_task, tcfg, *args, **kwargs)

    monkeypatch.setattr(krr_st_module, "run_transfer", spy)
    cfg = load_config(None, TINY + ["distill.transfer.enabled=true", "distill.transfer.classes=[5, 6]",
                                    "distill.transfer.seeds=1", "distill.transfer.pretrain_epochs=1",
                                    "distill.transfer.finetune_steps=1", "distill.transfer.options=[random]"])
    results = run_distiller(cfg, tmp_path / "run")
    pset: PretrainSet = seen["set"]
    assert pset.loss == "ce" and pset.targets.dtype == torch.int64 and set(pset.targets.tolist()) <= {0, 1}
    assert seen["augment"].families == ["color", "crop", "cutout", "scale", "rotate"]  # digits: no flip
    assert "eval_finetune_random_full" in results


def test_ce_pretraining_uses_the_augmentation():
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, x, generator=None):
            calls.append(x.shape)
            return x

    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1])
    task = make_target_task((x, y), (x, y), [0, 1], 0, torch.Generator().manual_seed(0))
    sets = {"ce": lambda r: PretrainSet(x, y, "ce"), "mse": lambda r: PretrainSet(x, torch.randn(6, 3), "mse")}
    cfg = TransferConfig(seeds=1, pretrain_epochs=2, finetune_steps=1, pretrain_batch_size=6)
    run_transfer(sets, lambda r: task, cfg, "convnet_d1", {"net_width": 4}, seed=0, ce_augment=Spy())
    assert len(calls) == 2  # two CE epochs of one batch; the MSE (KRR-ST) pre-training is not augmented


def test_missing_tm_export_refused_before_any_compute(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("data was loaded before the prerequisites were checked")

    monkeypatch.setattr(krr_st_module, "_load_split", boom)
    cfg = load_config(None, TINY + ["distill.transfer.enabled=true", "distill.transfer.options=[none, tm]",
                                    f"distill.transfer.tm_export={tmp_path / 'nowhere'}"])
    start = time.time()
    with pytest.raises(ValueError, match="tm_export.*no distilled export.*digits_tm_source.yaml"):
        run_distiller(cfg, tmp_path / "run")
    assert time.time() - start < 5
    cfg = load_config(None, TINY + [f"distill.target.checkpoint={tmp_path / 'none.safetensors'}"])
    with pytest.raises(ValueError, match="distill.target.checkpoint .* does not exist"):
        run_distiller(cfg, tmp_path / "run2")
