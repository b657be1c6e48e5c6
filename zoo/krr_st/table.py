#!/usr/bin/env python
"""Print the KRR-ST transfer table (markdown) from finished runs' ``results.json``.

    python zoo/krr_st/table.py runs/krr_st/digits_s0 runs/krr_st/digits_s1 runs/krr_st/digits_s2

Each cell: mean +- std (population) of fine-tuning top-1 over every (distillation seed, transfer repeat) pair,
with the per-seed means listed after it.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Dict, List

import torch

OPTIONS = {"none": "no pre-training", "random": "random real subset + target-model representations",
           "tm": "trajectory matching (MTT) set + its labels", "krr_st": "KRR-ST (images + learned targets)"}


def main(runs: List[str]) -> int:
    cells: Dict[str, Dict[int, List[List[float]]]] = {}
    for run in runs:
        results = json.loads((Path(run) / "results.json").read_text())
        for key, value in results.items():
            match = re.fullmatch(r"eval_transfer_(\w+?)_(\d+)shot", key)
            if match:
                cells.setdefault(match.group(1), {}).setdefault(int(match.group(2)), []).append(value["accs"])
    shots = sorted({s for per in cells.values() for s in per}, reverse=True)
    print("| pre-training | " + " | ".join(f"{s} labels/class" for s in shots) + " |")
    print("|---|" + "---|" * len(shots))
    for option in [o for o in OPTIONS if o in cells]:
        row = []
        for s in shots:
            per_seed = cells[option].get(s, [])
            flat = torch.tensor([a for accs in per_seed for a in accs], dtype=torch.float64)
            means = ", ".join(f"{sum(a) / len(a):.1f}" for a in per_seed)
            row.append(f"{flat.mean():.2f} ± {flat.std(unbiased=False):.2f} ({means})" if len(flat) else "")
        print(f"| {OPTIONS[option]} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
