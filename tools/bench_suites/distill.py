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
import resource
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from bench_suites._common import row
from vsd.distill.augment import DSA
from vsd.distill.flat import FlatModel
from vsd.distill.matching import (Segment, available_memory_bytes, batched_matching_grads, choose_backend,
                                  make_plan, matching_grads, unroll_bytes)
from vsd.models import create_model

SUITE = "distill"


class _Live:
    """A saved tensor's stand-in; when autograd drops the last stand-in of a storage, its bytes leave the count."""

    def __init__(self, t: torch.Tensor, counter: Dict[Any, int]) -> None:
        self.t, self.counter = t, counter
        self.key = t.untyped_storage().data_ptr()
        if counter.get(("refs", self.key), 0) == 0:
            counter[("bytes", self.key)] = t.untyped_storage().nbytes()
            counter["live"] += counter[("bytes", self.key)]
            counter["peak"] = max(counter["peak"], counter["live"])
        counter[("refs", self.key)] = counter.get(("refs", self.key), 0) + 1

    def __del__(self) -> None:
        self.counter[("refs", self.key)] -= 1
        if self.counter[("refs", self.key)] == 0:
            self.counter["live"] -= self.counter.pop(("bytes", self.key))


def live_saved_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes of the distinct storages saved for backward and alive at the same time while ``fn`` runs (a
    storage that several autograd nodes save, or views of, counts once)."""
    counter: Dict[Any, int] = {"live": 0, "peak": 0}
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


def _rounds(calls: Dict[str, Callable[[], Any]], repeats: int,
            usage: Optional[Dict[str, List[Tuple[float, float, int]]]] = None) -> Dict[str, List[float]]:
    """Seconds per call over ``repeats`` rounds; the order is rotated every round and reversed every other round,
    so no case always runs right after the same other case. ``usage`` collects each call's (user s, system s,
    minor page faults) of this process."""
    names = list(calls)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in (order[::-1] if r % 2 else order):
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = _clock()
            calls[n]()
            times[n].append(_clock() - start)
            after = resource.getrusage(resource.RUSAGE_SELF)
            if usage is not None:
                usage.setdefault(n, []).append((after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
                                                after.ru_minflt - before.ru_minflt))
    return times


def _usage(usage: Dict[str, List[Tuple[float, float, int]]], name: str) -> str:
    """Median user / system seconds and minor page faults per call."""
    med = [statistics.median(u[i] for u in usage[name]) for i in range(3)]
    return f"{med[0]:.3g}/{med[1]:.2g} s, {med[2]:.0f} page faults"


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
    need = unroll_bytes(fm, [seg], images, labels, aug)  # the distiller's estimate, against what is free now
    budget = available_memory_bytes(images.device)
    gb = 2 ** 30
    if need > budget:  # the unroll (and the baseline, which saves the same) cannot run: say so, time the other
        auto, _, reason = choose_backend(lambda b: None, need, budget)  # decided on memory, nothing is timed
        calls = {"constant_memory": calls["constant_memory"]}
    mem = {n: live_saved_peak(c) for n, c in calls.items()}  # also the warm-up round
    usage: Dict[str, List[Tuple[float, float, int]]] = {}
    times = _rounds(calls, repeats, usage)
    if "baseline" not in calls:
        return [row(SUITE, case, "s/iteration: constant_memory (flat unroll and unroll do not fit)",
                    statistics.median(times["constant_memory"]), None,
                    notes=f"unroll and baseline would keep ~{need / gb:.1f} GB of activations, "
                          f"{budget / gb:.1f} GB available; peak saved MB {mem['constant_memory'] / 2**20:.0f}; "
                          f"user/sys {_usage(usage, 'constant_memory')}; auto picks {auto} ({reason})")]
    auto, _, reason = choose_backend(lambda b: calls[b](), need, budget)
    rows = []
    for name in ("unroll", "constant_memory"):
        med, lo, hi = _ratio(times, name, "baseline")
        rows.append(row(SUITE, case, f"s/iteration: {name} vs flat unroll", statistics.median(times[name]),
                        statistics.median(times["baseline"]),
                        notes=f"speed-up x{med:.2f} (rounds {lo:.2f}-{hi:.2f}); peak saved MB "
                              f"{mem[name] / 2**20:.0f} vs {mem['baseline'] / 2**20:.0f}; user/sys "
                              f"{_usage(usage, name)} vs {_usage(usage, 'baseline')}"))
    med, lo, hi = _ratio(times, auto, "baseline")
    rows.append(row(SUITE, case, f"s/iteration: auto ({auto}) vs flat unroll", statistics.median(times[auto]),
                    statistics.median(times["baseline"]),
                    notes=f"speed-up x{med:.2f} (rounds {lo:.2f}-{hi:.2f}), after its first iteration; {reason}"))
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

# (kind, ipc, syn_steps, DSA, K, backend, rounds): the subset of the paper grid that a loaded 2-core CPU runs in
# about an hour; the rest (CIFAR ipc 50, syn_steps 80, the unroll at ipc 10 syn_steps 40) needs a GPU
GRID = [("digits", 1, 20, True, 1, None, 3), ("digits", 1, 20, True, 2, "unroll", 3),
        ("digits", 1, 20, True, 4, "unroll", 3), ("digits", 1, 20, True, 4, "constant_memory", 3),
        ("digits", 1, 80, True, 1, None, 3), ("digits", 10, 20, True, 1, None, 3),
        ("cifar", 1, 20, True, 1, None, 3), ("cifar", 1, 20, False, 1, None, 3),
        ("cifar", 1, 10, True, 4, "constant_memory", 3), ("cifar", 10, 20, True, 1, None, 2),
        ("cifar", 10, 40, True, 1, None, 2)]

NOTES = """
Baseline (1.0x): a straightforward flat-parameter unroll written in the suite (the network's weights are views of
one flat vector, re-pointed every step, MTT-style), same problem, minibatches and DSA draws. `value` and
`baseline` are medians of s/iteration (or s/trajectory; process CPU time on CPU, wall time on CUDA) over
interleaved rounds in rotating, alternating order (2 rounds at CIFAR ipc 10, else 3, after a warm-up round);
`ratio` = time ratio (< 1 = faster); notes give the speed-up as the median of per-round ratios and its min-max
spread, the peak bytes autograd keeps saved for backward, and the median user / system CPU seconds and minor page
faults per iteration. `auto` = the engine the distiller's own choice (memory estimate against the available
memory, then a timed probe of 4 iterations) takes on that problem; its row is that engine's time after the first
iteration. Where 1.25x the unroll's estimated activations exceeds the available memory, neither it nor the
baseline (which saves the same) is run, and the row says so (CIFAR ipc 10 syn_steps 40 is estimated at 11 GB,
which fits 23 GB; its row takes ~20 CPU-minutes). Batched rows: K trajectory segments per iteration as one
vmap-ed inner loop vs one after another. Not in the grid: CIFAR ipc 50 (500 images: ~28 GB of unroll
activations at syn_steps 20, more than this machine has, and several CPU-minutes per iteration and engine),
syn_steps 80 at CIFAR size; `GRID` in tools/bench_suites/distill.py lists the rows.
"""


def run(quick: bool = False) -> List[Dict]:
    where = f"CPU {torch.get_num_threads()} thread(s)" if not torch.cuda.is_available() else "CUDA"
    rows: List[Dict] = []
    for kind, ipc, steps, dsa, k, backend, rounds in GRID[:2] if quick else GRID:
        spec = dict(CIFAR if kind == "cifar" else DIGITS, ipc=ipc, steps=steps, dsa=dsa)
        net = "CIFAR ConvNet-D3 w128 32px" if kind == "cifar" else "digits ConvNet-D2 w32 16px"
        case = f"{net}, ipc {ipc}, syn_steps {steps}, DSA {'on' if dsa else 'off'} ({where})"
        start = time.time()
        rounds = 2 if quick else rounds
        rows += engine_rows(case, spec, rounds) if k == 1 else batched_rows(case, spec, k, backend, rounds)
        rows[-1]["notes"] += f"; measured in {time.time() - start:.0f} s"
    return rows


if __name__ == "__main__":
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(r)
