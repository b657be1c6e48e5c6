"""Training throughput (images/s) and activation memory of the default recipe and the CIFAR models."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import torch

from bench_suites._common import peak_memory, row, time_fn
from vsd.config import load_config
from vsd.engine.trainer import build_model
from vsd.data import dataset_info
from vsd.tasks import TaskContext, create_task

SUITE = "train"
DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "zoo" / "baseline" / "digits_convnet.yaml"


def _step_fn(cfg, batch_size: int):
    info = dataset_info(cfg.data.name, image_size=cfg.data.image_size)
    model = build_model(cfg, info)
    task = create_task(model, cfg, TaskContext(num_classes=info.num_classes))
    opt = torch.optim.SGD(task.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, info.in_chans, info.image_size, info.image_size)
    y = torch.randint(0, info.num_classes, (batch_size,))

    def forward():
        return task(x, y)["loss"]

    def step():
        opt.zero_grad(set_to_none=True)
        forward().backward()
        opt.step()

    return step, forward


def run(quick: bool = False) -> List[Dict]:
    cases = [
        ("default recipe (digits 16px, convnet_d3 w32)", [], 64),
        ("digits 16px, resnet18_cifar", ["model.name=resnet18_cifar", "model.kwargs={}"], 64),
        ("32px RGB, convnet_d3 w128 (MTT ConvNet)",
         ["data.name=synthetic", "data.image_size=32", "model.kwargs={}"], 64),
    ]
    rows = []
    repeats = 2 if quick else 5
    base = None
    for name, overrides, batch in cases:
        cfg = load_config(DEFAULT_RECIPE, overrides)
        step, forward = _step_fn(cfg, batch)
        seconds = time_fn(step, repeats=repeats)
        ips = batch / seconds
        base = base or ips
        rows.append(row(SUITE, name, "train images/s", ips, base, f"batch {batch}, forward+backward+SGD step"))
        rows.append(row(SUITE, name, "activation MB", peak_memory(forward) / 2**20, None,
                        "saved tensors of one forward (CPU) / allocator peak (CUDA)"))
    return rows
