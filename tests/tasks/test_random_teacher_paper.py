"""Random-teacher distillation: multi-crop views, teacher on global crops, pairing, and the paper's defaults."""
import numpy as np
import pytest
import timm
import torch

import vsd  # noqa: F401
from vsd.config import load_config
from vsd.data import DatasetInfo, build_transform
from vsd.data.transforms import ResizedCrop
from vsd.tasks import TaskContext, create_task
from vsd.tasks.random_teacher import RandomTeacherConfig

CTX = TaskContext(num_classes=2, epochs=2, in_chans=3, image_size=8)


def bn_convnet():
    torch.manual_seed(0)
    return timm.create_model("convnet_d1", net_width=8, net_norm="batchnorm", img_size=8, in_chans=3, num_classes=2)


def rt(*extra):
    return load_config(None, ["method.name=random_teacher", "method.hidden_dims=[16]", "method.bottleneck_dim=8",
                              "method.out_dim=32", *extra])


def test_paper_defaults():
    c = RandomTeacherConfig()
    assert (c.student_init, c.hidden_dims, c.bottleneck_dim, c.out_dim) == ("auto", [2048, 2048], 256, 65536)
    assert (c.s_temp, c.t_temp, c.center_momentum, c.loss_pairing, c.views) == (1.0, 1.0, None, "same", ["eval"])


def test_multicrop_views_and_teacher_on_globals_only():
    task = create_task(bn_convnet(), rt("method.global_crops=2", "method.local_crops=3",
                                        "method.local_scale=[0.1, 0.3]", "method.loss_pairing=opposite"), CTX)
    assert task.teacher_views == 2 and len(task.train_views) == 5
    assert task.train_views[0] == ResizedCrop(8, (0.4, 1.0)) and task.train_views[4] == ResizedCrop(8, (0.1, 0.3))
    seen = []
    task.teacher.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    views = [torch.randn(4, 3, 8, 8) for _ in range(5)]
    task.train()
    loss = task(views, torch.zeros(4, dtype=torch.long))["loss"]
    assert len(seen) == 2 and all(torch.equal(a, b) for a, b in zip(seen, views[:2]))
    # hand: mean over (teacher i, student j != i) of mean_b CE(softmax(t_i), log_softmax(s_j)), temperatures 1
    with torch.no_grad():
        s = [task.trainable_module(v).double().numpy() for v in views]
        t = [task.teacher(v).double().numpy() for v in views[:2]]
    terms = []
    for i in range(2):
        for j in range(5):
            if i != j:
                p = np.exp(t[i] - t[i].max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                logq = s[j] - np.log(np.exp(s[j]).sum(1, keepdims=True))
                terms.append(-(p * logq).sum(1).mean())
    assert loss.item() == pytest.approx(np.mean(terms), rel=1e-4)


def test_resized_crop_view_sizes():
    info = DatasetInfo("toy", 2, 3, 32, (0.5,) * 3, (0.25,) * 3, ("a", "b"))
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    ops = build_transform(ResizedCrop(16, (0.05, 0.4)), info).transforms
    assert ops[0].size == (16, 16) and ops[0].scale == (0.05, 0.4)
    assert build_transform(ResizedCrop(16, (0.05, 0.4)), info)(image).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="scale"):
        ResizedCrop(16, (0.5, 0.2))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_defaults_student_beats_teacher_on_photos(tmp_path, seed):
    """The paper's setting (BatchNorm ConvNet, exact copy, pairing same, temperatures 1/1, one view) at CPU size:
    width-16 ConvNet-D3, head [256] -> 64 -> 1024, AdamW 1e-3, 6 epochs (zoo/random_teacher/photos_convnet.yaml)."""
    pytest.importorskip("skimage")
    from vsd.engine.trainer import train

    cfg = load_config("zoo/random_teacher/photos_convnet.yaml",
                      [f"seed={seed}", f"output={tmp_path}", "train.device=cpu", "method.probe_every=6"])
    last = train(cfg)
    assert last["eval_probe_student_linear"] > last["eval_probe_teacher_linear"]
