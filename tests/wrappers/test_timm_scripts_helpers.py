"""vsd.timm_scripts.mdcs_train_loader: two views of an ImageFolder with timm's data config, class counts, DDP."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import resolve_data_config

from vsd.losses import MDCSLoss
from vsd.tasks.mdcs import MDCSTask
from vsd.timm_scripts import mdcs_train_loader
from vsd.wrappers import ExpertsWrapper


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name, count in (("a", 5), ("b", 3), ("c", 2)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    return tmp_path


def test_two_views_counts_and_task(image_folder):
    model = timm.create_model("resnet10t", num_classes=3)
    config = resolve_data_config({"input_size": (3, 16, 16)}, model=model)
    loader, counts = mdcs_train_loader(image_folder, config, batch_size=4, num_workers=0)
    assert counts == [5, 3, 2]
    images, target = next(iter(loader))
    assert images.shape == (8, 3, 16, 16) and target.shape == (4,)
    assert not torch.equal(images[:4], images[4:])  # weak and strong views differ
    assert images.dtype == torch.float32 and images.min() < 0  # normalised with the model's mean/std
    task = MDCSTask(ExpertsWrapper(model), MDCSLoss(counts))  # train.py: task(input, target) with the cat views
    out = task(images, target)
    assert out["output"].shape == (4, 3) and torch.isfinite(out["loss"])


def test_distributed_sampler_and_bad_root(image_folder, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loader, _ = mdcs_train_loader(image_folder, {"input_size": (3, 16, 16), "interpolation": "bilinear",
                                                     "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0},
                                      batch_size=2, distributed=True, num_workers=0)
        assert type(loader.sampler).__name__ == "DistributedSampler"
    finally:
        dist.destroy_process_group()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mdcs_train_loader(tmp_path / "nope", {}, batch_size=2)
