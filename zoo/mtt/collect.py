#!/usr/bin/env python
"""Summarise several ``tools/distill.py`` runs (one per seed) as a markdown table row.

    python zoo/mtt/collect.py runs/mtt/digits_ipc1_s0 runs/mtt/digits_ipc1_s1 runs/mtt/digits_ipc1_s2

Each run's results.json holds the mean over its evaluation networks; this prints, per quantity, the mean and
population std over the runs of those means, and the pooled mean and std over every evaluation network.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

KEYS = [("eval_distilled", "distilled"), ("eval_random_real", "random real"), ("eval_full_data", "full data"),
        ("expert_full_data", "experts (full data)")]


def main(folders) -> int:
    runs = [json.loads((Path(f) / "results.json").read_text()) for f in folders]
    print(f"runs: {', '.join(str(f) for f in folders)}")
    print("| quantity | mean of run means +- std (runs) | pooled over all networks | networks |")
    print("|---|---|---|---|")
    for key, name in KEYS:
        present = [r[key] for r in runs if key in r]
        if not present:
            continue
        means = [p["mean"] for p in present]
        pooled = [a for p in present for a in p["accs"]]
        spread = statistics.pstdev(means) if len(means) > 1 else 0.0
        print(f"| {name} | {statistics.mean(means):.2f} +- {spread:.2f} ({len(means)}) | "
              f"{statistics.mean(pooled):.2f} +- {statistics.pstdev(pooled):.2f} | {len(pooled)} |")
    walls = [r.get("wall_s", 0) for r in runs]
    lrs = [r.get("syn_lr") for r in runs]
    print(f"\nwall_s per run: {', '.join(f'{w:.0f}' for w in walls)}; learned syn_lr: "
          f"{', '.join(f'{v:.4g}' for v in lrs)}; status: {', '.join(r.get('status', '?') for r in runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
