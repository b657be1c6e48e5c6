"""Trajectory matching: activation memory and time per iteration against ``syn_steps``, plain unroll
(baseline) vs the exact constant-memory engine, on the same problem in the same process.

Memory is the peak of the *live* bytes autograd keeps saved for backward (counted with
``torch.autograd.graph.saved_tensors_hooks``; a saved tensor stops counting when its graph is freed), which is
what grows with the unroll; the constant-memory engine's parameter history (w_t per step, also b_t with inner
momentum) is reported in the notes.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch

import statistics
import time

from bench_suites._common import row
from vsd.distill.augment import DSA
from vsd.distill.flat import FlatModel
from vsd.distill.matching import make_plan, matching_grads
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


def _interleaved_seconds(call: Callable[[str], Any], backends, repeats: int) -> Dict[str, float]:
    """Median seconds per call, the backends timed alternately (so load from other processes hits both)."""
    for b in backends:
        call(b)
    times: Dict[str, List[float]] = {b: [] for b in backends}
    for _ in range(repeats):
        for b in backends:
            start = time.perf_counter()
            call(b)
            times[b].append(time.perf_counter() - start)
    return {b: statistics.median(t) for b, t in times.items()}


def _problem(syn_steps: int):
    torch.manual_seed(0)
    model = create_model("convnet_d3", num_classes=10, in_chans=1, img_size=16, net_width=32)
    fm = FlatModel(model)
    w0 = fm.flatten_module()
    images = torch.randn(10, 1, 16, 16)
    labels = torch.arange(10)
    aug = DSA("color_crop_cutout_scale_rotate")
    plan = make_plan(10, syn_steps, 0, aug, 16, 16, torch.Generator().manual_seed(0))
    target = [(syn_steps, w0 + 0.01 * torch.randn_like(w0))]
    lr = torch.tensor(0.01)
    return lambda backend: matching_grads(backend, fm, w0, target, images, lr, labels, plan, aug), fm.num_params


def run(quick: bool = False) -> List[Dict]:
    rows: List[Dict] = []
    steps_list = [10, 20] if quick else [10, 20, 40, 80]
    repeats = 2 if quick else 5
    for steps in steps_list:
        call, num_params = _problem(steps)
        mem = {b: live_saved_peak(lambda: call(b)) for b in ("unroll", "constant_memory")}
        sec = _interleaved_seconds(call, ("unroll", "constant_memory"), repeats)
        history_mb = steps * num_params * 4 / 2**20  # one [P] vector per step (no momentum)
        case = f"convnet_d3 w32 16x16, ipc 1, syn_steps {steps}"
        rows.append(row(SUITE, case, "activation MB: constant_memory vs unroll", mem["constant_memory"] / 2**20,
                        mem["unroll"] / 2**20, notes=f"+{history_mb:.1f} MB parameter history (constant_memory)"))
        rows.append(row(SUITE, case, "s/iteration: constant_memory vs unroll", sec["constant_memory"],
                        sec["unroll"], notes="CPU, 1 thread" if torch.get_num_threads() == 1 else "CPU"))
    return rows


if __name__ == "__main__":
    for r in run(quick=True):
        print(r)
