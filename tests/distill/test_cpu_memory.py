"""CPU memory for the matching engines: the budget, glibc's kept heap, and large blocks served from the heap."""
import io
import os
import platform
import subprocess
import sys

import pytest
import torch

from vsd.distill import cpu_memory
from vsd.distill.cpu_memory import HEAP_HEADROOM, keep_freed_memory, large_blocks_policy

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_available_memory_reads_memavailable(monkeypatch):
    """On CPU the budget is /proc/meminfo's MemAvailable (free + droppable page cache), not the free pages only;
    without /proc it falls back to the free pages."""
    meminfo = "MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n"
    monkeypatch.setattr(cpu_memory, "open", lambda path: io.StringIO(meminfo), raising=False)
    monkeypatch.setattr(cpu_memory, "heap_free_bytes", lambda: 0)
    assert cpu_memory.available_memory_bytes() == 20000000 * 1024

    def missing(path):
        raise OSError("no /proc")

    monkeypatch.setattr(cpu_memory, "open", missing, raising=False)
    assert cpu_memory.available_memory_bytes() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_memory_kept_in_the_heap_counts_as_available():
    """Blocks freed into the kept heap are free to this process though the OS no longer counts them available."""
    keep_freed_memory()
    before = cpu_memory.heap_free_bytes()
    blocks = [torch.ones(4 * 2 ** 20) for _ in range(before // 2 ** 24 + 4)]  # 16 MB each, 64 MB over what is free
    del blocks
    assert cpu_memory.heap_free_bytes() >= before + 48 * 2 ** 20


def test_large_blocks_policy_needs_twice_the_estimate(monkeypatch):
    """The heap serves large blocks only where HEAP_HEADROOM x the unroll's estimate fits the budget, and only on
    CPU; the line it returns says which and why."""
    calls = []
    monkeypatch.setattr(cpu_memory, "serve_large_blocks_from_heap", lambda: calls.append(1) or True)
    gb = 2 ** 30
    tight = large_blocks_policy(gb, int((HEAP_HEADROOM - 0.1) * gb), torch.device("cpu"))
    assert not calls and tight.startswith("large blocks mmap-ed") and "1.00 GB" in tight
    roomy = large_blocks_policy(gb, int(HEAP_HEADROOM * gb), torch.device("cpu"))
    assert calls == [1] and roomy.startswith("large blocks served from the heap")
    assert large_blocks_policy(gb, 100 * gb, torch.device("meta")) == "device allocator (not CPU)" and calls == [1]


_ROUNDS = """
import resource, sys, torch
from vsd.distill import cpu_memory
cpu_memory.keep_freed_memory()
if sys.argv[1] == "heap":
    assert cpu_memory.serve_large_blocks_from_heap()
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(12 * 2 ** 20) for _ in range(3)]  # 3 x 48 MB, above glibc's largest mmap threshold
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[2:]))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_large_blocks_from_the_heap_are_reused_without_page_faults():
    """Blocks of 48 MB are mmap-ed and unmapped on free by default, even with the kept heap, so every round
    page-faults them in again (~36,864 pages per round); served from the heap they are reused. Fresh processes,
    so that the allocator setting does not outlive the test."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _ROUNDS, mode], capture_output=True, text=True, check=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        return int(out.stdout.split()[-1])

    assert faults("mmap") > 4 * 30000
    assert faults("heap") < 1000
