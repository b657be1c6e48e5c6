"""Trajectory matching engines against a straightforward flat-parameter unroll (the 1.0x baseline).

Baseline (this file, not the library): the unroll written the way MTT's ``distill.py`` writes it, on a copy of
the network whose parameters are plain views of one flat vector (MTT's ``ReparamModule`` idea, own code): each
inner step re-points every layer's weight at a view of the current flat vector, runs the network, takes the
gradient with ``create_graph=True`` and appends ``w - syn_lr * g`` to the list of student parameters; the matching
loss is then back-propagated through the whole list. Same problem, minibatches and DSA draws as the engines.

Rows (one per problem size): seconds per outer iteration of the baseline, ``unroll``, ``constant_memory`` and
``auto``, each in a Python process of its own (allocator state is per process: in one process the heap one engine
leaves behind serves the next one's large blocks, which hides what each costs where it runs alone): the
baseline as a plain script runs it (glibc's defaults), the engines as the distiller runs them (the unroll with
the CPU large-block policy of :mod:`vsd.distill.cpu_memory`; ``auto`` with that policy and the distiller's own
probe, :func:`vsd.distill.matching.choose_backend`, then its pick). Per process one warm-up call, then ``repeats``
timed calls (CPU time of the process on CPU, so that other processes' load on shared cores does not count);
``passes`` processes per engine, every other pass in reverse order. Reported: the ratio of the medians to the
baseline's, with the range over all (baseline, engine) call pairs, user / system seconds and page faults per
call, the process's peak RSS and the peak bytes autograd keeps saved for backward (counted with
``torch.autograd.graph.saved_tensors_hooks`` during the warm-up call). Batched rows: K segments per iteration as
one vmap-ed inner loop vs one after another (one process, interleaved rounds), per-trajectory time ratio.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from bench_suites._common import row
from vsd.distill.augment import DSA
from vsd.distill.flat import FlatModel
from vsd.distill.cpu_memory import available_memory_bytes, large_blocks_policy
from vsd.distill.matching import (UNROLL_HEADROOM, Segment, batched_matching_grads, choose_backend, make_plan,
                                  matching_grads, unroll_bytes)
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
    """The benchmark problem on CUDA when present, else CPU (random images and experts, seeded)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    net = create_model(model, num_classes=10, in_chans=chans, img_size=size, net_width=width).to(device)
    fm = FlatModel(net)
    w0 = fm.flatten_module()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(10 * ipc, chans, size, size, generator=gen).to(device)
    labels = torch.arange(10).repeat_interleave(ipc).to(device)
    aug = DSA("color_crop_cutout_scale_rotate") if dsa else None
    segments = []
    for _ in range(k):
        start = w0 + 0.01 * torch.randn(w0.shape, generator=gen).to(device)
        target = start + 0.01 * torch.randn(w0.shape, generator=gen).to(device)
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


def _ratio(times: Dict[str, List[float]], name: str, base: str) -> Tuple[float, float, float]:
    """Median, min and max of the per-round ratios base-time / name-time (> 1 = faster than the baseline)."""
    r = [b / t for b, t in zip(times[base], times[name])]
    return statistics.median(r), min(r), max(r)


def _arm(spec: Dict[str, Any], arm: str, rounds: int) -> Dict[str, Any]:
    """One engine on one problem, as it runs in a process of its own: ``baseline`` with glibc's defaults (a plain
    script), ``unroll`` / ``constant_memory`` as the distiller runs that configured backend (with the CPU
    large-block policy), ``auto`` as the distiller runs its default (policy, timed probe, then the pick). One
    warm-up call (counting the saved activations), then ``rounds`` timed calls."""
    spec = dict(spec)
    torch.set_num_threads(int(spec.pop("threads", torch.get_num_threads())))
    fm, net, images, labels, aug, (seg,) = _problem(**spec)
    lr = torch.tensor(0.01, device=images.device)

    def engine(name: str):
        return matching_grads(name, fm, seg.w0, seg.targets, images, lr, labels, seg.plan, aug)

    out: Dict[str, Any] = {"engine": arm, "allocator": "", "reason": ""}
    if arm == "baseline":
        call = lambda: baseline_unroll(net, seg.w0, seg.targets[0][1], images, lr, labels, seg.plan, aug)  # noqa: E731
    else:
        need = unroll_bytes(fm, [seg], images, labels, aug)
        budget = available_memory_bytes(images.device)
        out["allocator"] = large_blocks_policy(need, budget, images.device)
        if arm == "auto":
            out["engine"], _, out["reason"] = choose_backend(engine, need, budget, images.device)
        call = lambda: engine(out["engine"])  # noqa: E731
    out["saved_peak"] = live_saved_peak(call)
    usage: Dict[str, List[Tuple[float, float, int]]] = {}
    out["times"] = _rounds({arm: call}, rounds, usage)[arm]
    out["usage"] = usage[arm]
    out["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def _arm_in_process(spec: Dict[str, Any], arm: str, rounds: int) -> Dict[str, Any]:
    """:func:`_arm` in a fresh Python process (allocator state is per process: in one process the heap one engine
    left behind would serve the next one's blocks)."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(root / "tools"),
                                                       os.environ.get("PYTHONPATH", "")]))
    spec = dict(spec, threads=torch.get_num_threads())
    proc = subprocess.run([sys.executable, "-m", "bench_suites.distill", "--arm", json.dumps(spec), arm, str(rounds)],
                          capture_output=True, text=True, env=env, cwd=root / "tools")
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark arm {arm} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _vs_baseline(arm: Dict[str, Any], base: Dict[str, Any]) -> str:
    """Speed-up = median baseline time / median arm time, with the range over all (baseline, arm) call pairs."""
    pairs = [b / t for b in base["times"] for t in arm["times"]]
    med = statistics.median(base["times"]) / statistics.median(arm["times"])
    return f"speed-up x{med:.2f} (pairs {min(pairs):.2f}-{max(pairs):.2f})"


def _usage_line(arm: Dict[str, Any]) -> str:
    """Median user / system seconds and minor page faults per call, the peak RSS and the saved-activation peak."""
    user, system, faults = (statistics.median(u[i] for u in arm["usage"]) for i in range(3))
    return (f"{user:.3g}/{system:.2g} s, {faults:.0f} page faults, peak RSS {arm['maxrss'] / 2 ** 30:.2f} GB, "
            f"peak saved MB {arm['saved_peak'] / 2 ** 20:.0f}")


def _merge(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One arm's passes: times and usage pooled, the largest peak RSS, the engine of every pass (the first pass's
    reasons)."""
    return dict(runs[0], times=[t for r in runs for t in r["times"]], usage=[u for r in runs for u in r["usage"]],
                maxrss=max(r["maxrss"] for r in runs), engine=" | ".join(dict.fromkeys(r["engine"] for r in runs)))


def engine_rows(case: str, spec: Dict[str, Any], repeats: int, passes: int = 2) -> List[Dict]:
    fm, _, images, labels, aug, (seg,) = _problem(**spec)
    need = unroll_bytes(fm, [seg], images, labels, aug)  # the distiller's estimate, against what is free now
    budget = available_memory_bytes(images.device)
    gb = 2 ** 30
    if need * UNROLL_HEADROOM > budget:  # neither the unroll nor the baseline (which saves the same) can run
        cm = _arm_in_process(spec, "constant_memory", repeats)
        return [row(SUITE, case, "s/iteration: constant_memory (flat unroll and unroll do not fit)",
                    statistics.median(cm["times"]), None,
                    notes=f"unroll and baseline would keep ~{need / gb:.1f} GB of activations, {budget / gb:.1f} GB "
                          f"available; auto takes constant_memory on memory alone; user/sys {_usage_line(cm)}")]
    order = ["baseline", "unroll", "constant_memory", "auto"]
    runs: Dict[str, List[Dict[str, Any]]] = {a: [] for a in order}
    for p in range(passes):  # one process per arm and pass; every other pass in reverse order
        for a in (order[::-1] if p % 2 else order):
            runs[a].append(_arm_in_process(spec, a, repeats))
    arms = {a: _merge(r) for a, r in runs.items()}
    base = arms["baseline"]
    rows = []
    for name in ("unroll", "constant_memory", "auto"):
        arm = arms[name]
        label = f"auto ({arm['engine']})" if name == "auto" else name
        detail = f"; {arm['allocator']}" + (f"; {arm['reason']}" if name == "auto" else "")
        rows.append(row(SUITE, case, f"s/iteration: {label} vs flat unroll", statistics.median(arm["times"]),
                        statistics.median(base["times"]),
                        notes=f"{_vs_baseline(arm, base)}; user/sys {_usage_line(arm)} vs {_usage_line(base)}"
                              f"{detail}"))
    return rows


def batched_rows(case: str, spec: Dict[str, Any], k: int, backend: str, repeats: int) -> List[Dict]:
    fm, _, images, labels, aug, segments = _problem(k=k, **spec)
    lr = torch.tensor(0.01, device=images.device)
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

# (kind, ipc, syn_steps, DSA, K, backend, rounds, passes): the subset of the paper grid that a loaded 2-core CPU
# runs in about an hour and a half; the rest (syn_steps 40/80 at ipc 10/50, ipc 50 beside the baseline) needs a GPU
GRID = [("digits", 1, 20, True, 1, None, 15, 2), ("digits", 1, 20, True, 2, "unroll", 3, 1),
        ("digits", 1, 20, True, 4, "unroll", 3, 1), ("digits", 1, 20, True, 4, "constant_memory", 3, 1),
        ("digits", 1, 80, True, 1, None, 8, 2), ("digits", 10, 20, True, 1, None, 8, 2),
        ("cifar", 1, 20, True, 1, None, 3, 2), ("cifar", 1, 20, False, 1, None, 3, 2),
        ("cifar", 1, 10, True, 4, "constant_memory", 3, 1), ("cifar", 10, 20, True, 1, None, 2, 1),
        ("cifar", 10, 40, True, 1, None, 2, 1), ("cifar", 50, 20, True, 1, None, 2, 1),
        ("cifar", 1, 40, True, 1, None, 3, 1), ("cifar", 1, 80, True, 1, None, 3, 1)]

NOTES = """
Baseline (1.0x): a straightforward flat-parameter unroll written in the suite (the network's weights are views of
one flat vector, re-pointed every step, MTT-style), same problem, minibatches and DSA draws, run as a plain script
runs it. Every engine row runs in a process of its own (the baseline too: glibc's allocator state is per process),
the engines as the distiller runs them, with the CPU large-block policy (large blocks served from the heap when
2x the unroll's estimated activations fit the available memory, `vsd/distill/cpu_memory.py`).
`value` and `baseline` are medians of s/iteration (or s/trajectory; process CPU time on CPU, wall time on CUDA)
over `rounds` timed calls after a warm-up call, in `passes` processes per engine (GRID in
tools/bench_suites/distill.py); `ratio` = time ratio (< 1 = faster); notes give the speed-up (ratio of the medians)
with its range over all (baseline, engine) call pairs, the median user / system CPU seconds and minor page faults
per call, the process's peak RSS (everything it held: data, model, allocator) and the peak bytes autograd keeps
saved for backward. `auto` = the engine the distiller's own choice (memory estimate against the available
memory, then a timed probe of 4 iterations) takes; its row is that engine's time after the probe. Where 1.25x
the unroll's estimated activations exceeds the available memory, neither it nor the baseline (which saves the
same) is run, and the row says so. Batched rows: K trajectory segments per iteration as one vmap-ed inner loop vs
one after another, interleaved in one process. CIFAR ipc 50 needs ~28 GB of unroll activations at syn_steps 20,
more than this machine has, so only `constant_memory` runs there; syn_steps 80 at ipc 10 and 40/80 at ipc 50 are
not in the grid (CPU hours).
"""


def run(quick: bool = False) -> List[Dict]:
    where = f"CPU {torch.get_num_threads()} thread(s)" if not torch.cuda.is_available() else "CUDA"
    rows: List[Dict] = []
    for kind, ipc, steps, dsa, k, backend, rounds, passes in GRID[:2] if quick else GRID:
        spec = dict(CIFAR if kind == "cifar" else DIGITS, ipc=ipc, steps=steps, dsa=dsa)
        net = "CIFAR ConvNet-D3 w128 32px" if kind == "cifar" else "digits ConvNet-D2 w32 16px"
        case = f"{net}, ipc {ipc}, syn_steps {steps}, DSA {'on' if dsa else 'off'} ({where})"
        start = time.time()
        rounds, passes = (2, 1) if quick else (rounds, passes)
        rows += (engine_rows(case, spec, rounds, passes) if k == 1
                 else batched_rows(case, spec, k, backend, rounds))
        rows[-1]["notes"] += f"; measured in {time.time() - start:.0f} s"
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--arm"]:  # one arm in this process: python -m bench_suites.distill --arm SPEC ARM ROUNDS
        print(json.dumps(_arm(json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]))))
    else:
        for r in run(quick="--quick" in sys.argv):
            print(r)
