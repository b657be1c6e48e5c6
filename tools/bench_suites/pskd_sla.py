"""Cost of PS-KD and SLA against cross-entropy on the same model and batch, measured in one process.

* step time (forward + backward + SGD step) of PS-KD bank mode (dense and compact), PS-KD snapshot mode, SLA and
  SLA+SD, as a ratio to CE; each repeat times CE, the case, the case, CE (ABBA) and the median of the
  per-repeat ratios is reported, which keeps a busy machine's drift out of the ratio; a CE-vs-CE row shows
  the noise floor. Per image seen = per input image of
  the batch (SLA processes 4 rotated copies of each).
* memory of the PS-KD bank at ImageNet size (1,281,167 x 1000), dense fp32 vs compact top-k, from the sizes of
  meta-device tensors (nothing is allocated).
"""
from __future__ import annotations

import statistics
from typing import Callable, Dict, List, Tuple

import torch

from bench_suites._common import row, time_fn
from vsd.config import load_config
from vsd.data import dataset_info
from vsd.engine.trainer import build_model
from vsd.tasks import TaskContext, create_task
from vsd.wrappers.prob_bank import bank_sizes, create_prob_bank

SUITE = "pskd_sla"
NUM_SAMPLES = 1437  # digits train split
CASES: List[Tuple[str, List[str]]] = [
    ("CE again (A/A control: the noise floor)", ["method.name=ce"]),
    ("PS-KD bank dense", ["method.name=pskd"]),
    ("PS-KD bank compact k=3", ["method.name=pskd", "method.bank=compact", "method.topk=3"]),
    ("PS-KD snapshot", ["method.name=pskd", "method.mode=snapshot"]),
    ("SLA (x4 rotations)", ["method.name=sla"]),
    ("SLA+SD (x4 rotations)", ["method.name=sla", "method.self_distill=true"]),
]


def _step_fn(overrides: List[str], batch: int) -> Callable[[], None]:
    cfg = load_config(None, ["model.kwargs={net_width: 64}", *overrides])
    info = dataset_info(cfg.data.name, image_size=cfg.data.image_size)
    torch.manual_seed(0)
    ctx = TaskContext(num_classes=info.num_classes, num_train_samples=NUM_SAMPLES, epochs=10)
    task = create_task(build_model(cfg, info), cfg, ctx).train()
    task.on_epoch_end(0)   # snapshot mode: a previous-epoch model exists
    task.on_epoch_start(1)  # bank mode: targets are read from the bank
    opt = torch.optim.SGD(task.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, info.in_chans, info.image_size, info.image_size)
    y = torch.randint(0, info.num_classes, (batch,))
    kwargs = {"index": torch.randperm(NUM_SAMPLES)[:batch]} if getattr(task, "needs_index", False) else {}

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        task(x, y, **kwargs)["loss"].backward()
        opt.step()

    return step


def _paired_ratio(case: Callable[[], None], base: Callable[[], None], repeats: int) -> Tuple[float, float]:
    """Median over repeats of (case time / base time) and the median base time; each repeat times
    base, case, case, base (ABBA) so that a drift of the machine's speed cancels out of the ratio."""
    ratios, bases = [], []
    for _ in range(repeats):
        b1 = time_fn(base, repeats=1, warmup=1, inner=3)
        c = time_fn(case, repeats=1, warmup=1, inner=3) + time_fn(case, repeats=1, warmup=0, inner=3)
        b = b1 + time_fn(base, repeats=1, warmup=1, inner=3)
        ratios.append(c / b)
        bases.append(b / 2)
    return statistics.median(ratios), statistics.median(bases)


def run(quick: bool = False) -> List[Dict]:
    batch, repeats = 64, (3 if quick else 9)
    ce = _step_fn(["method.name=ce"], batch)
    rows = []
    for name, overrides in CASES:
        ratio, base = _paired_ratio(_step_fn(overrides, batch), ce, repeats)
        entry = row(SUITE, name, "train ms/step (baseline CE)", ratio * base * 1e3, base * 1e3,
                    f"digits convnet_d3 w64, batch {batch}; {ratio * base / batch * 1e3:.3f} ms per image seen "
                    f"(CE {base / batch * 1e3:.3f}); ratio = median of paired ratios")
        entry["ratio"] = ratio
        rows.append(entry)
    ce_step = time_fn(ce, repeats=repeats, warmup=1, inner=3)
    for kind in ("dense", "compact"):
        bank = create_prob_bank(kind, NUM_SAMPLES, 10, topk=3)
        index, target = torch.randperm(NUM_SAMPLES)[:batch], torch.randint(0, 10, (batch,))
        probs = torch.softmax(torch.randn(batch, 10), 1)

        def bank_ops() -> None:
            bank.get(index, target)
            bank.update(index, probs)

        ms = time_fn(bank_ops, repeats=repeats, warmup=2, inner=20) * 1e3
        rows.append(row(SUITE, f"PS-KD bank {kind} read+write alone", "ms/step (baseline CE step)", ms,
                        ce_step * 1e3, f"the bank's own cost per step of {batch} samples; noise-free upper "
                        f"bound of the bank-mode overhead"))
    n, c = 1_281_167, 1000
    sizes = bank_sizes(["dense", "compact"], n, c, topk=10)
    rows.append(row(SUITE, "PS-KD bank 1.28M x 1000", "compact k=10 MB", sizes["compact"] / 2**20,
                    sizes["dense"] / 2**20, "baseline = dense fp32 MB (official code); fp16 values + int16 classes"))
    k48 = bank_sizes(["compact"], n, c, topk=48)["compact"]
    rows.append(row(SUITE, "PS-KD bank 1.28M x 1000", "compact k=48 MB", k48 / 2**20, sizes["dense"] / 2**20,
                    "largest k within 5% of dense"))
    return rows
