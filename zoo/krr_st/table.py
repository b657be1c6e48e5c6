#!/usr/bin/env python
"""Print the KRR-ST transfer tables (markdown, one per protocol) from finished runs' ``results.json``.

    python zoo/krr_st/table.py runs/krr_st/digits_s0 runs/krr_st/digits_s1 runs/krr_st/digits_s2

Each cell: mean +- std (population) of test top-1 over every (distillation seed, transfer repeat) pair, with the
per-seed means in brackets.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import torch

OPTIONS = {"none": "no pre-training", "random": "random real subset + target-model representations",
           "tm": "trajectory matching (MTT) set + its labels", "krr_st": "KRR-ST (images + learned targets)",
           "target": "reference: the target model itself (Barlow Twins on all source images)"}
PROTOCOLS = {"finetune": "fine-tuning the whole network", "linear": "linear probe on the frozen backbone"}


def main(runs: List[str]) -> int:
    cells: Dict[Tuple[str, str, int], List[List[float]]] = {}
    for run in runs:
        results = json.loads((Path(run) / "results.json").read_text())
        for key, value in results.items():
            match = re.fullmatch(r"eval_(transfer|finetune|linear)_(\w+?)_(\d+)shot", key)
            if match:
                protocol = "finetune" if match.group(1) == "transfer" else match.group(1)  # older key name
                cells.setdefault((protocol, match.group(2), int(match.group(3))), []).append(value["accs"])
    for protocol, title in PROTOCOLS.items():
        shots = sorted({s for p, _, s in cells if p == protocol}, reverse=True)
        if not shots:
            continue
        print(f"\n{title}:\n")
        print("| pre-training | " + " | ".join(f"{s} labels/class" for s in shots) + " |")
        print("|---|" + "---|" * len(shots))
        for option in [o for o in OPTIONS if any((protocol, o, s) in cells for s in shots)]:
            row = []
            for s in shots:
                per_seed = cells.get((protocol, option, s), [])
                flat = torch.tensor([a for accs in per_seed for a in accs], dtype=torch.float64)
                means = ", ".join(f"{sum(a) / len(a):.1f}" for a in per_seed)
                row.append(f"{flat.mean():.2f} ± {flat.std(unbiased=False):.2f} ({means})" if len(flat) else "")
            print(f"| {OPTIONS[option]} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
