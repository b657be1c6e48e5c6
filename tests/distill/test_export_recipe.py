"""An export carries its evaluation recipe; a ``distilled`` training run takes it unless the config overrides it."""
import pytest
import torch

from vsd.config import load_config
from vsd.data.distilled import DSAImage, apply_export_recipe
from vsd.distill.export import evaluation_recipe, export_imagefolder, load_distilled, save_distilled

CONFIG = load_config(None, ["model.name=convnet_d2", "model.kwargs={net_width: 32}"])
META = {"method": "mtt", "dataset": "digits", "classes": [str(i) for i in range(10)], "mean": [0.3054],
        "std": [0.3187], "syn_lr": 0.0038, "ipc": 1,
        "config": {"model": {"name": "convnet_d2", "kwargs": {"net_width": 32}},
                   "distill": {"method": "mtt", "dsa": True, "dsa_strategy": "auto", "eval_epochs": 300,
                               "eval_batch_size": 256}}}


def _export(tmp_path, meta=META):
    save_distilled(tmp_path, torch.randn(10, 1, 16, 16), torch.arange(10), meta)
    return load_distilled(tmp_path)[1]


def test_recipe_written_with_the_evaluation_protocol(tmp_path):
    recipe = _export(tmp_path)["eval_recipe"]
    assert recipe == {"use": "training", "loss": "ce", "model": "convnet_d2", "model_kwargs": {"net_width": 32},
                      "opt": "momentum", "momentum": 0.9, "lr": 0.0038, "weight_decay": 5e-4, "epochs": 300,
                      "batch_size": 256, "sched": "multistep", "decay_milestones": [150], "decay_rate": 0.1,
                      "augmentation": "dsa", "dsa_strategy": "color_crop_cutout_scale_rotate"}  # digits: no flip
    no_dsa = dict(META, config={**META["config"], "distill": {**META["config"]["distill"], "dsa": False}})
    assert evaluation_recipe(no_dsa)["augmentation"] == "none"
    krr = evaluation_recipe({"method": "krr_st", "config": {"model": {"name": "convnet_d2", "kwargs": {}},
                                                             "distill": {"transfer": {"pretrain_epochs": 150}}}})
    assert krr["use"] == "pretraining" and krr["loss"] == "mse" and krr["decay_milestones"] == [75]


def test_defaults_taken_overrides_kept_and_reported(tmp_path):
    _export(tmp_path)
    said = []
    base = load_config(None, ["data.name=distilled", f"data.root={tmp_path}", "train.epochs=7"])
    cfg = apply_export_recipe(base, said.append)
    assert (cfg.model.name, cfg.model.kwargs, cfg.train.lr, cfg.train.batch_size) == \
        ("convnet_d2", {"net_width": 32}, 0.0038, 256)
    assert (cfg.train.opt, cfg.train.momentum, cfg.train.weight_decay, cfg.train.sched) == \
        ("momentum", 0.9, 5e-4, "multistep")
    assert cfg.train.decay_milestones == [150] and cfg.data.train_transform == "dsa"
    assert cfg.train.epochs == 7  # set by the user: kept, and said so
    assert "train.lr=0.0038" in said[0] and "train.epochs=7 (recipe 300)" in said[1]
    mine = apply_export_recipe(load_config(None, ["data.name=distilled", f"data.root={tmp_path}",
                                                  "model.name=resnet8_cifar"]), said.append)
    assert mine.model.name == "resnet8_cifar" and mine.model.kwargs == {}  # no convnet kwargs on another model
    other = load_config(None, ["data.name=digits"])
    assert apply_export_recipe(other, said.append) is other


def test_dsa_transform_of_the_distilled_set(tmp_path):
    from vsd.data import create_dataset

    _export(tmp_path)
    ds = create_dataset("distilled", "train", root=str(tmp_path), transform="dsa")
    assert isinstance(ds.transform, DSAImage)
    assert ds.transform.dsa.families == ["color", "crop", "cutout", "scale", "rotate"]
    torch.manual_seed(0)
    x, _ = ds[0]
    assert x.shape == (1, 16, 16) and not torch.equal(x, ds.images[0])


def test_imagefolder_readme_gives_timm_arguments(tmp_path):
    meta = _export(tmp_path)
    export_imagefolder(tmp_path / "imagefolder", torch.rand(10, 1, 16, 16), torch.arange(10), META["classes"])
    note = (tmp_path / "imagefolder" / "README.txt").read_text()
    assert "--lr 0.0038" in note and "--epochs 300" in note and "--decay-epochs 150" in note
    assert "--opt momentum" in note and "--warmup-epochs 0" in note and "-b 10" in note and "no DSA" in note
    assert meta["eval_recipe"]["lr"] == pytest.approx(0.0038)


def test_cli_counts_only_the_users_keys(tmp_path):
    """tools/train.py's default recipe (12 epochs, lr 0.05, ...) is not the user's choice: the export's recipe wins;
    --set and --config keys are the user's and stay."""
    from vsd.cli import resolve_config
    from vsd.data.distilled import explicit_keys

    _export(tmp_path)
    default = "zoo/baseline/digits_convnet.yaml"
    cfg = resolve_config(None, ["data.name=distilled", f"data.root={tmp_path}", "train.batch_size=5"], None, default)
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.opt, cfg.model.kwargs) == (300, 0.0038, "momentum",
                                                                                {"net_width": 32})
    assert cfg.train.batch_size == 5 and cfg.data.train_transform == "dsa"
    from vsd.engine.preflight import check_inputs

    check_inputs(cfg)  # what the export supplied passes the run's own validation (data.train_transform=dsa)
    mine = tmp_path / "mine.yaml"
    mine.write_text("train: {epochs: 3}\nmodel: {kwargs: {net_width: 8}}\n")
    assert set(explicit_keys(mine, ["seed=1"])) == {"train.epochs", "model.kwargs.net_width", "seed"}
    cfg = resolve_config(str(mine), ["data.name=distilled", f"data.root={tmp_path}"], None, default)
    assert cfg.train.epochs == 3 and cfg.model.kwargs == {"net_width": 8} and cfg.train.lr == 0.0038
