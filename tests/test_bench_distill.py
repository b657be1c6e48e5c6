"""tools/bench_suites/distill.py: the engine rows' arms (each engine in its own process) on a tiny problem, and
the arithmetic of the reported speed-ups."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from bench_suites import distill as bench  # noqa: E402

TINY = dict(model="convnet_d1", width=4, chans=1, size=8, ipc=1, steps=3, dsa=False)


def test_arm_times_the_engine_the_distiller_would_run():
    """An arm gives one time and one (user, system, faults) triple per round, the saved-activation peak of a
    real unroll, the allocator line of the CPU policy and, for auto, the engine its probe picked; the
    baseline runs without the policy."""
    auto = bench._arm(dict(TINY), "auto", 2)
    assert len(auto["times"]) == 2 and len(auto["usage"]) == 2 and auto["saved_peak"] > 0
    assert auto["engine"] in ("unroll", "constant_memory") and "timed probe" in auto["reason"]
    assert auto["allocator"].startswith("large blocks")
    base = bench._arm(dict(TINY), "baseline", 1)
    assert base["allocator"] == "" and base["engine"] == "baseline"
    fm, net, images, labels, aug, (seg,) = bench._problem(**TINY)
    lr = torch.tensor(0.01)
    loss, g_img, _ = bench.baseline_unroll(net, seg.w0, seg.targets[0][1], images, lr, labels, seg.plan, aug)
    ours, grads = bench.matching_grads("unroll", fm, seg.w0, seg.targets, images, lr, labels, seg.plan, aug)
    assert torch.allclose(loss, ours) and torch.allclose(g_img, grads["images"], rtol=1e-4, atol=1e-7)


def test_speed_up_is_the_ratio_of_medians_with_the_pair_range():
    base = {"times": [2.0, 4.0, 3.0]}
    arm = {"times": [1.0, 2.0]}
    # medians 3.0 / 1.5 = 2.0; pairs: 2/2 = 1.0 (smallest) .. 4/1 = 4.0 (largest)
    assert bench._vs_baseline(arm, base) == "speed-up x2.00 (pairs 1.00-4.00)"
    merged = bench._merge([{"times": [1.0], "usage": [(1, 0, 0)], "maxrss": 5, "engine": "unroll"},
                           {"times": [3.0], "usage": [(3, 0, 0)], "maxrss": 9, "engine": "constant_memory"}])
    assert merged["times"] == [1.0, 3.0] and merged["maxrss"] == 9 and merged["engine"] == "unroll | constant_memory"
    # medians of (user, system, faults) over calls, peak RSS in GB, saved peak in MB
    usage = {"usage": [(1.0, 0.5, 10), (2.0, 0.1, 30), (3.0, 0.2, 20)], "maxrss": 2 ** 30, "saved_peak": 2 ** 21}
    assert bench._usage_line(usage) == "2/0.2 s, 20 page faults, peak RSS 1.00 GB, peak saved MB 2"


@pytest.mark.slow  # ~5-10 s: a fresh Python process imports torch
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource module")
def test_arm_runs_in_a_fresh_process():
    out = bench._arm_in_process(dict(TINY), "constant_memory", 1)
    assert out["engine"] == "constant_memory" and len(out["times"]) == 1 and out["maxrss"] > 0
