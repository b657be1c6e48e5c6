"""Representation distillation: DMAE teacher forward, truncated at the aligned block vs the full encoder.

Case: a ViT-Small/4 MAE teacher (width 384, 12 blocks) on 32x32 images with 75% masking (16 visible patches + CLS),
DMAE's default alignment (student block 8 of 12 -> teacher block 8 of 12, i.e. 9 blocks run). Baseline: the
official code's teacher pass (every encoder block + final norm, as ``forward_encoder_customized`` does; the
official code also runs the teacher's decoder, which is not counted here, so the ratio is conservative).
Both under ``no_grad`` in eval mode, same inputs, same process.
"""
from __future__ import annotations

import statistics
from typing import Dict, List

import timm
import torch

import vsd  # noqa: F401  (registers the models)
from vsd.models.mae import encode_visible, random_masking
from vsd.wrappers.truncated_teacher import TruncatedTeacher

try:
    from bench_suites._common import time_fn
except ImportError:  # run from the repository root
    from tools.bench_suites._common import time_fn


def _interleaved(a, b, repeats: int, inner: int) -> tuple:
    """Median seconds per call of ``a`` and ``b``, timed alternately so machine load hits both alike."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(time_fn(a, repeats=1, warmup=0, inner=inner))
        tb.append(time_fn(b, repeats=1, warmup=0, inner=inner))
    return statistics.median(ta), statistics.median(tb)


def run(quick: bool = False) -> List[Dict[str, object]]:
    torch.manual_seed(0)
    teacher = timm.create_model("mae_vit_small_patch4_32", num_classes=10).eval()
    batch = 16 if quick else 64
    x = torch.randn(batch, 3, 32, 32)
    ids_keep = random_masking(batch, teacher.num_patches, 0.75).ids_keep
    block = 8
    truncated = TruncatedTeacher(teacher, [block])

    def full() -> None:
        with torch.no_grad():
            encode_visible(teacher, x, ids_keep, collect=[block])

    def trunc() -> None:
        truncated(x, ids_keep)

    repeats, inner = (5, 2) if quick else (15, 3)
    full(), trunc()  # warm-up
    t_full, t_trunc = _interleaved(full, trunc, repeats, inner)
    notes = f"batch {batch}, 3x32x32, mask 0.75, block {block} of 12; {torch.get_num_threads()} threads"
    return [{"suite": "repr", "case": "dmae teacher forward, truncated at aligned block", "metric": "ms/batch",
             "value": t_trunc * 1e3, "baseline": t_full * 1e3, "ratio": t_trunc / t_full, "notes": notes},
            {"suite": "repr", "case": "dmae teacher speed-up (full / truncated)", "metric": "x",
             "value": t_full / t_trunc, "baseline": 1.0, "ratio": t_full / t_trunc,
             "notes": "expected ~12/9 = 1.33 from block count"}]


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
