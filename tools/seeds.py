#!/usr/bin/env python
"""Run one recipe over several seeds and report mean and std of its final metrics.

    python tools/seeds.py --config zoo/baseline/digits_convnet.yaml --seeds 0 1 2 --set train.epochs=12

Each seed writes its own folder ``<output>/seed<k>``; a finished seed is reused, not re-run. The summary
(mean, std over seeds and the per-seed values) is printed and written to ``<output>/seeds.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsd.cli import run_cli  # noqa: E402

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "zoo" / "baseline" / "digits_convnet.yaml"


def summarize(runs: list) -> dict:
    """Mean and sample std of every numeric ``eval_*`` metric over the runs."""
    keys = sorted({k for r in runs for k, v in r.items() if k.startswith("eval_") and isinstance(v, (int, float))})
    out = {}
    for key in keys:
        values = [r[key] for r in runs if key in r]
        out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from dataclasses import replace

    from vsd.engine.io import atomic_write_json
    from vsd.engine.trainer import train

    def job(cfg):
        root = Path(cfg.output)
        runs = []
        for seed in args.seeds:
            folder = root / f"seed{seed}"
            done = folder / "results.json"
            if done.is_file():
                runs.append(json.loads(done.read_text()))
                continue
            runs.append(train(replace(cfg, seed=seed, output=str(folder))))
        summary = {"config": args.config, "overrides": args.set, "seeds": args.seeds, "metrics": summarize(runs)}
        atomic_write_json(root / "seeds.json", summary)
        for key, stat in summary["metrics"].items():
            print(f"{key}: {stat['mean']:.2f} ± {stat['std']:.2f}  (n={len(stat['values'])})")

    return run_cli(args.config, args.set, None, DEFAULT_RECIPE, job)


if __name__ == "__main__":
    sys.exit(main())
