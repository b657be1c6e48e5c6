"""Measuring helpers shared by the benchmark suites: step timing and activation memory.

Timing: median of repeated blocks after warm-up, all cases of a suite measured in the same process so that
ratios are meaningful. Memory: on CUDA the peak of ``torch.cuda.max_memory_allocated``; on CPU the bytes of
tensors autograd saves for the backward pass (activation memory, counted through
``torch.autograd.graph.saved_tensors_hooks``), which is what grows with batch size and unrolling.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, Optional

import torch


def time_fn(fn: Callable[[], Any], repeats: int = 5, warmup: int = 2, inner: int = 3) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` blocks of ``inner`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def saved_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of the distinct tensors autograd saves while running ``fn`` (a forward pass)."""
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            ptr = t.untyped_storage().data_ptr()
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):
            seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def peak_memory(fn: Callable[[], Any], device: Optional[torch.device] = None) -> int:
    """Peak memory of ``fn`` in bytes: CUDA allocator peak on GPU, saved activations on CPU."""
    if device is not None and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    return saved_tensor_bytes(fn)


def row(suite: str, case: str, metric: str, value: float, baseline: Optional[float] = None,
        notes: str = "") -> Dict[str, Any]:
    """One table row; ``ratio`` = value / baseline when a baseline is given."""
    return {"suite": suite, "case": case, "metric": metric, "value": value, "baseline": baseline,
            "ratio": (value / baseline) if baseline else None, "notes": notes}
