"""Trajectory matching engines against a straightforward flat-parameter unroll (the 1.0x baseline).

Baseline (this file, not the library): the unroll written the way MTT's ``distill.py`` writes it, on a copy of
the network whose parameters are plain views of one flat vector (MTT's ``ReparamModule`` idea, own code): each
inner step re-points every layer's weight at a view of the current flat vector, runs the network, takes the
gradient with ``create_graph=True`` and appends ``w - syn_lr * g`` to the list of student parameters; the matching
loss is then back-propagated through the whole list. Same problem, minibatches and DSA draws as the engines.

Rows (one per problem size): seconds per outer iteration of the baseline, ``unroll`` and ``constant_memory``,
timed interleaved in rotating, alternating order (``repeats`` rounds after one warm-up round; CPU time of the
process on CPU, so that other processes' load on shared cores does not count), reported as the median of the
per-round ratios to the baseline with their min-max spread; peak memory = peak live bytes autograd keeps saved
for backward (counted with ``torch.autograd.graph.saved_tensors_hooks`` during the warm-up round, CPU) or the
CUDA allocator peak. ``auto`` is the engine that the distiller's own probe
(:func:`vsd.distill.matching.choose_backend`) picks on that problem. Batched rows: K segments per iteration as one
vmap-ed inner loop vs one after another, per-trajectory time ratio.
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from bench_suites._common import row
from vsd.distill.augment import DSA
from vsd.distill.flat import FlatModel
from vsd.distill.matching import Segment, batched_matching_grads, choose_backend, make_plan, matching_grads
from vsd.models import create_model

SUITE = "distill"


class _Live:
    """A saved tensor's stand-in that subtracts its bytes from the live count when autograd drops it."""

    def __init__(self, t: torch.Tensor, counter: Dict[str, int]) -> None:
        self.t, self.counter, self.nbytes = t, counter, t.numel() * t.element_size()
        counter["live"] += self.nbytes
        counter["peak"] = max(counter["peak"], counter["live"])

    def __del__(self) -> None:
        self.counter["live"] -= self.nbytes


def live_saved_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes of tensors saved for backward and alive at the same time while ``fn`` runs."""
    counter = {"live": 0, "peak": 0}
    with torch.autograd.graph.saved_tensors_hooks(lambda t: _Live(t, counter), lambda live: live.t):
        fn()
    return counter["peak"]


class ViewNet(nn.Module):
    """The network with its parameters replaced by views of one flat vector (set before every forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.net = copy.deepcopy(model)
        self.slots: List[Tuple[nn.Module, str, Tuple[int, ...]]] = []
        for name, p in list(self.net.named_parameters()):
            owner_name, _, attr = name.rpartition(".")
            owner = self.net.get_submodule(owner_name)
            del owner._parameters[attr]
            setattr(owner, attr, p.detach())
            self.slots.append((owner, attr, tuple(p.shape)))
        self.numels = [int(torch.Size(s).numel()) for _, _, s in self.slots]

    def forward(self, x: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        for (owner, attr, shape), piece in zip(self.slots, torch.split(flat, self.numels)):
            setattr(owner, attr, piece.view(shape))
        return self.net(x)


def baseline_unroll(net: ViewNet, w0: torch.Tensor, target: torch.Tensor, images: torch.Tensor,
                    syn_lr: torch.Tensor, labels: torch.Tensor, plan, augment: Optional[DSA]):
    """MTT's inner loop and matching loss, straightforwardly: returns (loss, d loss / d images, d loss / d lr)."""
    images = images.detach().requires_grad_(True)
    syn_lr = syn_lr.detach().requires_grad_(True)
    student = [w0.detach().requires_grad_(True)]
    for step in plan:
        x = images[step.indices]
        if augment is not None:
            x = augment(x, step.aug)
        ce = F.cross_entropy(net(x, student[-1]), labels[step.indices])
        grad = torch.autograd.grad(ce, student[-1], create_graph=True)[0]
        student.append(student[-1] - syn_lr * grad)
    loss = torch.sum((student[-1] - target) ** 2) / torch.sum((w0 - target) ** 2)
    g_images, g_lr = torch.autograd.grad(loss, [images, syn_lr])
    return loss.detach(), g_images, g_lr


def _problem(model: str, width: int, chans: int, size: int, ipc: int, steps: int, dsa: bool, k: int = 1):
    torch.manual_seed(0)
    net = create_model(model, num_classes=10, in_chans=chans, img_size=size, net_width=width)
    fm = FlatModel(net)
    w0 = fm.flatten_module()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(10 * ipc, chans, size, size, generator=gen)
    labels = torch.arange(10).repeat_interleave(ipc)
    aug = DSA("color_crop_cutout_scale_rotate") if dsa else None
    segments = []
    for _ in range(k):
        start = w0 + 0.01 * torch.randn(w0.shape, generator=gen)
        target = start + 0.01 * torch.randn(w0.shape, generator=gen)
        segments.append(Segment(start, [(steps, target)], make_plan(len(images), steps, 0, aug, size, size, gen)))
    return fm, ViewNet(net), images, labels, aug, segments


def _clock() -> float:
    """Wall time on CUDA; on CPU this process's CPU time, which the load of other processes on shared cores
    (descheduling) does not inflate the way it inflates wall time."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def _rounds(calls: Dict[str, Callable[[], Any]], repeats: int) -> Dict[str, List[float]]:
    """Seconds per call over ``repeats`` rounds; the order is rotated every round and reversed every other round,
    so no case always runs right after the same other case."""
    names = list(calls)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in (order[::-1] if r % 2 else order):
            start = _clock()
            calls[n]()
            times[n].append(_clock() - start)
    return times


def _ratio(times: Dict[str, List[float]], name: str, base: str) -> Tuple[float, float, float]:
    """Median, min and max of the per-round ratios base-time / name-time (> 1 = faster than the baseline)."""
    r = [b / t for b, t in zip(times[base], times[name])]
    return statistics.median(r), min(r), max(r)


def engine_rows(case: str, spec: Dict[str, Any], repeats: int) -> List[Dict]:
    fm, net, images, labels, aug, (seg,) = _problem(**spec)
    lr = torch.tensor(0.01)
    target = seg.targets[0][1]
    calls = {
        "baseline": lambda: baseline_unroll(net, seg.w0, target, images, lr, labels, seg.plan, aug),
        "unroll": lambda: matching_grads("unroll", fm, seg.w0, seg.targets, images, lr, labels, seg.plan, aug),
        "constant_memory": lambda: matching_grads("constant_memory", fm, seg.w0, seg.targets, images, lr, labels,
                                                  seg.plan, aug),
    }
    mem = {n: live_saved_peak(c) for n, c in calls.items()}  # also the warm-up round
    times = _rounds(calls, repeats)
    auto, _, reason = choose_backend(lambda b: calls[b](), steps_bytes=None, budget_bytes=None)
    rows = []
    for name in ("unroll", "constant_memory"):
        med, lo, hi = _ratio(times, name, "baseline")
        rows.append(row(SUITE, case, f"s/iteration: {name} vs flat unroll", statistics.median(times[name]),
                        statistics.median(times["baseline"]),
                        notes=f"speed-up x{med:.2f} (rounds {lo:.2f}-{hi:.2f}); peak saved MB "
                              f"{mem[name] / 2**20:.0f} vs {mem['baseline'] / 2**20:.0f}"))
    rows[-1]["notes"] += f"; auto picks {auto} ({reason})"
    return rows


def batched_rows(case: str, spec: Dict[str, Any], k: int, backend: str, repeats: int) -> List[Dict]:
    fm, _, images, labels, aug, segments = _problem(k=k, **spec)
    lr = torch.tensor(0.01)
    calls = {v: (lambda v=v: batched_matching_grads(backend, fm, segments, images, lr, labels, aug,
                                                     vectorize=v == "vmap")) for v in ("sequential", "vmap")}
    for c in calls.values():
        c()
    times = _rounds(calls, repeats)
    med, lo, hi = _ratio(times, "vmap", "sequential")
    return [row(SUITE, case, f"s/trajectory: K={k} {backend}, vmap vs sequential", statistics.median(times["vmap"]) / k,
                statistics.median(times["sequential"]) / k, notes=f"speed-up x{med:.2f} (rounds {lo:.2f}-{hi:.2f})")]


CIFAR = dict(model="convnet_d3", width=128, chans=3, size=32)
DIGITS = dict(model="convnet_d2", width=32, chans=1, size=16)

# (kind, ipc, syn_steps, DSA, K, backend): the documented subset of the paper grid that fits a loaded 2-core CPU
# (a CIFAR ipc 10 iteration takes minutes there); on a GPU add the rest (CIFAR ipc 10/50, syn_steps 40/80)
GRID = [("digits", 1, 20, True, 1, None), ("digits", 1, 20, True, 2, "unroll"), ("digits", 1, 20, True, 4, "unroll"),
        ("digits", 1, 20, True, 4, "constant_memory"), ("digits", 1, 80, True, 1, None),
        ("digits", 10, 20, True, 1, None), ("cifar", 1, 20, True, 1, None), ("cifar", 1, 20, False, 1, None),
        ("cifar", 1, 10, True, 4, "constant_memory")]

NOTES = """
Baseline (1.0x): a straightforward flat-parameter unroll written in the suite (the network's weights are views of
one flat vector, re-pointed every step, MTT-style), same problem, minibatches and DSA draws. `value` and
`baseline` are medians of s/iteration (or s/trajectory; process CPU time on CPU, wall time on CUDA) over
interleaved rounds in rotating, alternating order; `ratio` =
time ratio (< 1 = faster); notes give the speed-up as the median of per-round ratios and its min-max spread, and
the peak bytes autograd keeps saved for backward. `auto picks` = the engine the distiller's own timed probe chose
on that problem. Batched rows: K trajectory segments per iteration as one vmap-ed inner loop vs one after another.
The grid is a subset of the paper's (ConvNet-D3 w128, 32 px, instance norm, 10 classes): on 2 shared CPU cores
one CIFAR ipc 1 row takes about 10 minutes and an ipc 10 iteration minutes of CPU, so CIFAR syn_steps 40 and 80,
ipc 10 and ipc 50 are not in it (`GRID` in tools/bench_suites/distill.py lists the rows; add them on a GPU).
"""


def run(quick: bool = False) -> List[Dict]:
    where = f"CPU {torch.get_num_threads()} thread(s)" if not torch.cuda.is_available() else "CUDA"
    rows: List[Dict] = []
    for kind, ipc, steps, dsa, k, backend in GRID[:2] if quick else GRID:
        spec = dict(CIFAR if kind == "cifar" else DIGITS, ipc=ipc, steps=steps, dsa=dsa)
        net = "CIFAR ConvNet-D3 w128 32px" if kind == "cifar" else "digits ConvNet-D2 w32 16px"
        case = f"{net}, ipc {ipc}, syn_steps {steps}, DSA {'on' if dsa else 'off'} ({where})"
        start = time.time()
        rows += engine_rows(case, spec, 2 if quick else 3) if k == 1 else batched_rows(case, spec, k, backend, 3)
        rows[-1]["notes"] += f"; measured in {time.time() - start:.0f} s"
    return rows


if __name__ == "__main__":
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(r)
