#!/usr/bin/env python
"""Mean +- std over seeds of the runs written by zoo/dmae/digits_table.sh and the random-teacher runs.

    python zoo/dmae/summarize.py runs/repr_table2 ft_none ft_mae ft_dmae ft_fpsd         # eval_top1 of fine-tunes
    python zoo/dmae/summarize.py runs/repr_rt photos photos_bn --metrics eval_probe_student_linear ...
"""
import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("groups", nargs="+", help="run-name prefixes; runs are <root>/<group>_s<seed>")
    parser.add_argument("--metrics", nargs="+", default=["eval_top1"])
    args = parser.parse_args()
    print("| runs | seeds | " + " | ".join(args.metrics) + " |")
    print("|---|---|" + "---|" * len(args.metrics))
    for group in args.groups:
        results = [json.loads(p.read_text()) for p in sorted(Path(args.root).glob(f"{group}_s*/results.json"))]
        cells = []
        for metric in args.metrics:
            values = [r[metric] for r in results if metric in r]
            if not values:
                cells.append("n/a")
            elif len(values) == 1:
                cells.append(f"{values[0]:.2f} (one seed)")
            else:
                cells.append(f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}")
        print(f"| {group} | {len(results)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
