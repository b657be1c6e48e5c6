#!/usr/bin/env python
"""Train several recipes over several seeds in one process and print mean +- std of top-1 and ECE.

    python zoo/pskd/compare_seeds.py --seeds 0 1 2 3 4 --out runs/pskd_digits \
        --set "model.kwargs={net_width: 16}" train.epochs=10 \
        --case ce zoo/baseline/digits_convnet.yaml \
        --case pskd zoo/pskd/digits_convnet.yaml \
        --case pskd_compact_k2 zoo/pskd/digits_convnet.yaml method.bank=compact method.topk=2

Each run is ``vsd.engine.trainer.train`` on the recipe with ``--set`` overrides, then the case's own overrides,
then ``seed`` and ``output=<out>/<case>/seed<k>``: the same as ``tools/train.py --config RECIPE --set ...``,
without paying the start-up once per run. A run whose ``results.json`` exists is read back, not retrained, so
an interrupted comparison continues where it stopped. Writes ``<out>/summary.json`` and a markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

METRICS = ("eval_top1", "eval_ece")


def _mean_std(values: List[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs="+", action="append", required=True, metavar="NAME RECIPE [KEY=VALUE]",
                        help="a case: its name, its recipe and its own overrides")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every case")
    parser.add_argument("--out", required=True, help="folder for the runs and summary.json")
    args = parser.parse_args(argv)

    from vsd.config import load_config
    from vsd.engine.io import atomic_write_json
    from vsd.engine.trainer import train

    out = Path(args.out)
    summary: Dict[str, Dict[str, List[float]]] = {}
    for name, recipe, *overrides in args.case:
        per_metric: Dict[str, List[float]] = {m: [] for m in METRICS + ("wall_s",)}
        for seed in args.seeds:
            run_dir = out / name / f"seed{seed}"
            done = run_dir / "results.json"
            if done.is_file():
                results = json.loads(done.read_text())
            else:
                cfg = load_config(ROOT / recipe if not Path(recipe).is_absolute() else recipe,
                                  [*args.set, *overrides, f"seed={seed}", f"output={run_dir}", "overwrite=true"])
                results = train(cfg)
            for metric in per_metric:
                per_metric[metric].append(float(results[metric]))
            print(f"{name} seed {seed}: top-1 {results['eval_top1']:.2f}  ECE {results['eval_ece']:.2f}", flush=True)
        summary[name] = per_metric
    atomic_write_json(out / "summary.json", {"seeds": args.seeds, "set": args.set, "cases": args.case,
                                             "results": summary})
    print(f"\n| case | top-1 (%) | ECE (%) | wall s / run | seeds |\n|---|---|---|---|---|")
    for name, per_metric in summary.items():
        print(f"| {name} | {_mean_std(per_metric['eval_top1'])} | {_mean_std(per_metric['eval_ece'])} | "
              f"{statistics.mean(per_metric['wall_s']):.0f} | {len(args.seeds)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
