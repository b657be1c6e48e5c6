"""CPU memory for the trajectory-matching engines: glibc's allocator settings and the memory budget.

An unroll allocates the same activations in every outer iteration and frees them at its end. By default glibc's
malloc hands that memory back to the OS in two ways, and the next iteration page-faults it in again (each page
zero-filled by the kernel):

1. it gives the free top of its heap back once it exceeds a threshold that adapts to the largest freed block
   (~15% of an iteration at digits size, whether it happened depending on which small block sat at the top of
   the heap): :func:`keep_freed_memory` turns that off. It costs no memory (the process had it already), so the
   engines apply it on their first CPU call.
2. it maps every block of at least 32 MB (its largest mmap threshold) with ``mmap`` and unmaps it on ``free``: at
   CIFAR size (ConvNet-D3 width 128, 32 px, 100 images: 52 MB per first-block activation) that is 4-8 million
   page faults and 6-17 s of system time per iteration on top of ~26 s of user time, varying with where the heap
   happened to have room. :func:`serve_large_blocks_from_heap` (``M_MMAP_MAX = 0``) takes those blocks from the
   heap too, where they are reused: 0.1-0.2M page faults and under 1 s of system time per iteration, 1.5x
   faster (BENCHMARKS.md). Its cost is fragmentation: the process peak there rose from 7.5 to 9.8-10.2 GB
   (1.8x the unroll's 5.5 GB estimate). So it is turned on only where
   :data:`HEAP_HEADROOM` times the unroll's estimated activations fits the memory budget
   (:func:`large_blocks_policy`).

Both settings are process-wide, like any allocator setting, and last until the process ends; outside glibc
(macOS, musl) they do nothing. :func:`available_memory_bytes` is the budget the engine choice compares with.
"""
from __future__ import annotations

import ctypes
import os
import platform
from typing import Optional

import torch

# the process peak over the unroll's estimated activations with large blocks served from the heap
# (measured 1.8x at CIFAR ipc 10, syn_steps 20), with a margin
HEAP_HEADROOM = 2.0
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc <malloc.h> mallopt parameters
_MMAP_THRESHOLD_MAX = 32 * 2 ** 20  # glibc's largest (64-bit)
_freed_memory_kept: Optional[bool] = None
_large_blocks_on_heap = False


def _mallopt():
    """glibc's ``mallopt``, or None outside glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return getattr(ctypes.CDLL(None), "mallopt", None)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process for reuse (once per process; True if in effect).

    ``mallopt(M_TRIM_THRESHOLD, -1)`` stops it from giving the free top of the heap back to the OS. Setting it
    freezes glibc's adaptive mmap threshold, so ``M_MMAP_THRESHOLD`` is set to glibc's largest, 32 MB (the value
    the adaptive one grows to): larger blocks are still ``mmap``-ed and unmapped on free, as by default (see
    :func:`serve_large_blocks_from_heap`).
    """
    global _freed_memory_kept
    if _freed_memory_kept is None:
        mallopt = _mallopt()
        _freed_memory_kept = mallopt is not None and (bool(mallopt(_M_TRIM_THRESHOLD, -1))
                                                      and bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)))
    return _freed_memory_kept


def serve_large_blocks_from_heap() -> bool:
    """Take blocks of 32 MB and more from the (kept) heap instead of fresh ``mmap``-s (``M_MMAP_MAX = 0``), so they
    are reused without page faults; True if in effect. Implies :func:`keep_freed_memory`."""
    global _large_blocks_on_heap
    if not _large_blocks_on_heap and keep_freed_memory():
        mallopt = _mallopt()
        _large_blocks_on_heap = mallopt is not None and bool(mallopt(_M_MMAP_MAX, 0))
    return _large_blocks_on_heap


def large_blocks_policy(steps_bytes: int, budget_bytes: int, device: torch.device) -> str:
    """Serve large blocks from the heap when :data:`HEAP_HEADROOM` x the unroll's estimated activations
    ``steps_bytes`` fits ``budget_bytes`` (CPU only); returns one line saying what was done and why."""
    gb = 2 ** 30
    if device.type != "cpu":
        return "device allocator (not CPU)"
    need = steps_bytes * HEAP_HEADROOM
    if need > budget_bytes:
        return (f"large blocks mmap-ed (glibc default): x{HEAP_HEADROOM} the unroll's ~{steps_bytes / gb:.2f} GB "
                f"> budget {budget_bytes / gb:.2f} GB")
    if not serve_large_blocks_from_heap():
        return "large blocks mmap-ed (no glibc malloc)"
    return (f"large blocks served from the heap: x{HEAP_HEADROOM} the unroll's ~{steps_bytes / gb:.2f} GB "
            f"within budget {budget_bytes / gb:.2f} GB")


def heap_free_bytes() -> int:
    """Free bytes inside this process's glibc heap (``mallinfo2().fordblks``): memory that
    :func:`keep_freed_memory` kept, which the OS does not count as available but this process reuses first."""
    if not keep_freed_memory():
        return 0

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]

    mallinfo2 = getattr(ctypes.CDLL(None), "mallinfo2", None)
    if mallinfo2 is None:
        return 0
    mallinfo2.restype = MallInfo2
    return int(mallinfo2().fordblks)


def available_memory_bytes(device: Optional[torch.device] = None) -> int:
    """Memory the unroll may use: free device memory on CUDA; on CPU the kernel's ``MemAvailable`` (free memory
    plus the page cache it can drop; else the free pages, ``SC_AVPHYS_PAGES``) plus the free memory kept in this
    process's heap."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return available + heap_free_bytes()
