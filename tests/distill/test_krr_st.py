"""End-to-end tests of the KRR-ST distiller (distill.method: krr_st) on a tiny digits run."""
import json

import pytest
import torch

from vsd.config import load_config
from vsd.distill import krr_st as krr_st_module
from vsd.distill import load_distilled, run_distiller, save_distilled
from vsd.distill.krr_st import load_krr_st_set

TINY = [
    "data.name=digits", "data.image_size=8", "model.name=convnet_d1", "model.kwargs={net_width: 4}",
    "train.device=cpu", "distill.method=krr_st", "distill.num_images=6", "distill.iterations=4",
    "distill.batch_real=16", "distill.pool_size=2", "distill.pool_max_steps=3", "distill.source_classes=[0, 1]",
    "distill.checkpoint_every=2", "distill.log_every=2", "distill.target.epochs=1", "distill.target.batch_size=32",
    "distill.target.projector=[8]", "distill.transfer.enabled=false",
]


def _cfg(*extra):
    return load_config(None, TINY + list(extra))


def test_end_to_end_export_and_transfer(tmp_path):
    tm_dir = tmp_path / "tm"
    save_distilled(tm_dir, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]),
                   {"method": "mtt", "dataset": "digits", "classes": [str(i) for i in range(10)], "mean": [0.3],
                    "std": [0.3]})
    cfg = _cfg("distill.transfer.enabled=true", "distill.transfer.classes=[5, 6]",
               "distill.transfer.labels_per_class=[2, 1]", "distill.transfer.seeds=1",
               "distill.transfer.pretrain_epochs=1", "distill.transfer.finetune_steps=2",
               "distill.transfer.protocols=[finetune, linear]",
               "distill.transfer.options=[none, random, tm, krr_st, target]",
               f"distill.transfer.tm_export={tm_dir}")
    out = tmp_path / "run"
    results = run_distiller(cfg, out)
    json.dumps(results)  # JSON-serialisable for results.json
    assert results["seed"] == cfg.seed
    assert {k for k in results if k.startswith("eval_")} == {
        f"eval_{p}_{o}_{s}shot" for p in ("finetune", "linear") for o in ("none", "random", "tm", "krr_st", "target")
        for s in (1, 2)}
    tensors, meta = load_distilled(out)
    assert meta["method"] == "krr_st" and meta["target_dim"] == tensors["targets"].shape[1] == results["target_dim"]
    assert tensors["images"].shape == (6, 1, 8, 8)
    assert set(tensors["labels"].tolist()) <= {0, 1}          # initialised from the source classes only
    pset = load_krr_st_set(out)
    assert pset.loss == "mse" and pset.targets.shape == (6, meta["target_dim"])
    assert (out / "grid_all.png").is_file() and (out / "target_model.safetensors").is_file()


def test_resume_is_exact(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    run_distiller(_cfg(), straight)

    interrupted = tmp_path / "interrupted"
    real_step = krr_st_module._Distillation.outer_step

    def crash_after_two(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(krr_st_module._Distillation, "outer_step", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_distiller(_cfg(), interrupted)
    monkeypatch.setattr(krr_st_module._Distillation, "outer_step", real_step)
    assert not (interrupted / "distilled.safetensors").exists()
    run_distiller(_cfg(), interrupted)

    a, _ = load_distilled(straight)
    b, _ = load_distilled(interrupted)
    torch.testing.assert_close(a["images"], b["images"], rtol=0, atol=0)
    torch.testing.assert_close(a["targets"], b["targets"], rtol=0, atol=0)


def test_resume_with_another_target_width_is_an_error(tmp_path):
    out = tmp_path / "run"
    first = run_distiller(_cfg(), out)
    # a local target checkpoint is used as is (no Barlow Twins training, nothing saved in the new run)
    other = tmp_path / "from_checkpoint"
    results = run_distiller(_cfg(f"distill.target.checkpoint={out / 'target_model.safetensors'}",
                                 "distill.iterations=1"), other)
    assert results["target_dim"] == first["target_dim"] == 64  # convnet_d1, width 4, 8x8 -> 4 x 4 x 4
    assert not (other / "target_model.safetensors").exists()
    (out / "target_model.safetensors").unlink()  # a different target model: 8x8 -> 4 channels * 2*2 = 16 wide
    with pytest.raises(ValueError, match="target representations must have width"):
        run_distiller(_cfg("distill.target.model=convnet_d2"), out)


def test_export_round_trip_and_mismatched_target_width(tmp_path):
    images, targets = torch.randn(3, 1, 8, 8), torch.randn(3, 4)
    save_distilled(tmp_path, images, torch.tensor([0, 1, 0]),
                   {"method": "krr_st", "dataset": "digits", "classes": ["0", "1"], "mean": [0.3], "std": [0.3],
                    "target_dim": 4}, targets=targets)
    pset = load_krr_st_set(tmp_path)
    assert torch.equal(pset.images, images) and torch.equal(pset.targets, targets) and pset.out_dim == 4
    save_distilled(tmp_path, torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 0]),
                   {"method": "krr_st", "dataset": "digits", "classes": ["0", "1"], "mean": [0.3], "std": [0.3],
                    "target_dim": 5}, targets=torch.randn(3, 4))
    with pytest.raises(ValueError, match="target_dim=5"):
        load_krr_st_set(tmp_path)
    save_distilled(tmp_path, torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 0]),
                   {"method": "mtt", "dataset": "digits", "classes": ["0", "1"], "mean": [0.3], "std": [0.3]})
    with pytest.raises(ValueError, match="no 'targets' tensor"):
        load_krr_st_set(tmp_path)


@pytest.mark.parametrize("override,match", [
    ("distill.pool_size=0", "pool size must be >= 1"),
    ("distill.num_images=100000", "num_images must lie in"),
    ("distill.source_classes=[42]", "select no image"),
])
def test_bad_config(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        run_distiller(_cfg(override, "distill.target.epochs=0"), tmp_path)


def test_transfer_class_missing_from_finetuning_split(tmp_path):
    cfg = _cfg("distill.transfer.enabled=true", "distill.transfer.classes=[5, 12]", "distill.iterations=1",
               "distill.transfer.options=[none]")
    with pytest.raises(ValueError, match=r"\[12\] have no image in the fine-tuning split"):
        run_distiller(cfg, tmp_path)
