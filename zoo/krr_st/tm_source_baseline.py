#!/usr/bin/env python
"""Trajectory-matching baseline for the KRR-ST digits transfer table: MTT distilled from the SOURCE classes only.

The transfer benchmark's source is digits 0-4 and its target digits 5-9, so the trajectory-matching set must not
see classes 5-9. ``distill.method: mtt`` distills a whole data set; this script runs it on the classes given
by ``--classes`` by restricting the real tensors MTT loads (``vsd.distill.mtt.load_problem``) and its class
count. Everything else is the ordinary ``tools/distill.py`` run (same config keys, output, resume).

    python zoo/krr_st/tm_source_baseline.py --config zoo/krr_st/digits_tm_source.yaml --classes 0 1 2 3 4
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--classes", type=int, nargs="+", required=True)
    parser.add_argument("--set", nargs="*", default=[])
    args = parser.parse_args()

    import torch

    from vsd.distill import mtt

    original = mtt.load_problem
    keep = sorted(args.classes)
    if keep != list(range(len(keep))):
        raise SystemExit("--classes must be 0..K-1 (labels are kept as they are)")

    def restricted(cfg, device):
        problem = original(cfg, device)

        def subset(split):
            x, y = split
            mask = torch.isin(y, torch.tensor(keep, device=y.device))
            return x[mask], y[mask]

        info = dataclasses.replace(problem.info, num_classes=len(keep),
                                   classes=tuple(problem.info.classes[c] for c in keep))
        return dataclasses.replace(problem, info=info, train=subset(problem.train), test=subset(problem.test),
                                   make_model=mtt.model_factory(cfg.model.name, cfg.model.kwargs, info))

    mtt.load_problem = restricted
    import distill as distill_tool  # tools/distill.py

    return distill_tool.main(["--config", args.config, "--set", *args.set])


if __name__ == "__main__":
    sys.exit(main())
