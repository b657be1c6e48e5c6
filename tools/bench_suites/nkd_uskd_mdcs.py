"""Cost of NKD, USKD and MDCS against cross-entropy on the same model and batch, measured in one process.

* USKD and NKD: one training step (forward, loss, backward, SGD step) on the default digits recipe's model
  (ConvNet-D3, width 64, 1x16x16, batch 64). NKD's teacher logits are computed once beforehand, so the ratio
  is the cost of the NKD loss alone (teacher forward excluded); the target is within 5% of CE.
* MDCS: seconds per image seen on a CIFAR ResNet-8 (``resnet32_cifar`` with one block per stage): MDCS runs
  two views through three experts per image, CE one view through the single model.

Cases are timed in interleaved rounds (CE, USKD, NKD, CE, ...) and the median per case is reported, so that
load drift on a shared machine hits every case alike.
"""
from __future__ import annotations

import statistics
from typing import Callable, Dict, List

import torch

from bench_suites._common import row, time_fn
from vsd.config import load_config
from vsd.losses import NKDLoss
from vsd.models import create_model
from vsd.tasks import TaskContext, create_task

SUITE = "nkd_uskd_mdcs"
_CTX = dict(num_classes=10, in_chans=1, image_size=16)
_COUNTS = [139, 107, 83, 64, 49, 38, 29, 23, 17, 13]


def _stepper(params, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    return step


def _convnet() -> torch.nn.Module:
    return create_model("convnet_d3", net_width=64, img_size=16, in_chans=1, num_classes=10)


def _task_step(method: List[str], model: torch.nn.Module, x, y, counts=None) -> Callable[[], None]:
    task = create_task(model, load_config(None, method), TaskContext(class_counts=counts or [], **_CTX))
    task.train()
    return _stepper(task.parameters(), lambda: task(x, y)["loss"])


def _nkd_step(x, y) -> Callable[[], None]:
    student = _convnet().train()
    with torch.no_grad():
        teacher_logits = _convnet().eval()(x)  # precomputed: the teacher forward is excluded
    criterion = NKDLoss(temperature=1.0, gamma=1.5)
    return _stepper(student.parameters(), lambda: criterion((student(x), teacher_logits), y))


def _interleaved(cases: Dict[str, Callable[[], None]], rounds: int, inner: int) -> Dict[str, float]:
    times: Dict[str, List[float]] = {name: [] for name in cases}
    for fn in cases.values():
        time_fn(fn, repeats=1, warmup=2, inner=1)
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name].append(time_fn(fn, repeats=1, warmup=0, inner=inner))
    return {name: statistics.median(t) for name, t in times.items()}


def run(quick: bool = False) -> List[Dict]:
    torch.manual_seed(0)
    rounds, inner = (3, 2) if quick else (21, 3)
    batch = 64
    x, y = torch.randn(batch, 1, 16, 16), torch.randint(0, 10, (batch,))
    steps = _interleaved({
        "ce": _task_step(["method.name=ce"], _convnet(), x, y),
        "uskd": _task_step(["method.name=uskd"], _convnet(), x, y),
        "nkd": _nkd_step(x, y),
    }, rounds, inner)
    note = f"ConvNet-D3 w64, 1x16x16, batch {batch}, step = forward+loss+backward+SGD"
    rows = [row(SUITE, "CE (baseline)", "step ms", steps["ce"] * 1e3, steps["ce"] * 1e3, note),
            row(SUITE, "USKD", "step ms", steps["uskd"] * 1e3, steps["ce"] * 1e3, note + "; target ratio <= 1.05"),
            row(SUITE, "NKD (teacher forward excluded)", "step ms", steps["nkd"] * 1e3, steps["ce"] * 1e3,
                note + "; target ratio <= 1.05")]

    def resnet8() -> torch.nn.Module:
        return create_model("resnet32_cifar", layers=[1, 1, 1], in_chans=1, num_classes=10)

    views = [torch.randn(batch, 1, 16, 16), torch.randn(batch, 1, 16, 16)]
    lt_y = torch.randint(0, 10, (batch,))
    per = _interleaved({
        "ce": _task_step(["method.name=ce"], resnet8(), views[0], lt_y),
        "mdcs": _task_step(["method.name=mdcs"], resnet8(), views, lt_y, _COUNTS),
    }, max(rounds // 3, 2), inner)
    note = f"CIFAR ResNet-8, 1x16x16, batch {batch} images (MDCS: 2 views x 3 experts)"
    rows += [row(SUITE, "CE ResNet-8 (baseline)", "ms per image", per["ce"] / batch * 1e3, per["ce"] / batch * 1e3,
                 note),
             row(SUITE, "MDCS ResNet-8, K=3", "ms per image", per["mdcs"] / batch * 1e3, per["ce"] / batch * 1e3,
                 note)]
    return rows
