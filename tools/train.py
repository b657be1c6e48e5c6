#!/usr/bin/env python
"""Train a model with any vsd method from a YAML recipe.

    python tools/train.py                                   # default recipe: ConvNet on digits, cross-entropy
    python tools/train.py --config zoo/uskd/digits_convnet.yaml --set train.epochs=5 seed=1
    python tools/train.py --resume runs/x/checkpoint-last.safetensors
    torchrun --nproc_per_node=2 tools/train.py --config ...  # DDP (gloo on CPU, nccl on GPU)

Writes config.yaml, summary.csv, results.json, checkpoint-last.safetensors and model.safetensors into
``output``. A resume continues its run in the folder its checkpoint is in (a moved folder resumes where it now
is); next to --resume, --set may change only train.epochs (the schedule becomes that of the new length),
train.log_interval, train.checkpoint_every, train.eval_batch_size, train.device, data.num_workers and
eval.ece_bins. Exit status: 0 done, 2 bad input (one ``error:`` line; nothing outside the run's folder touched).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsd.cli import run_cli  # noqa: E402

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "zoo" / "baseline" / "digits_convnet.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help=f"YAML recipe (default: {DEFAULT_RECIPE.relative_to(DEFAULT_RECIPE.parents[2])})")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--resume", help="checkpoint to resume from (config comes from it unless --config)")
    args = parser.parse_args(argv)

    from vsd.engine.trainer import train

    def job(cfg):
        results = train(cfg, resume=args.resume)
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
            return results
        if "eval_top1" in results:
            print(f"final top-1: {results['eval_top1']:.2f}%  ({cfg.output}/results.json)")
        else:
            print(f"done: {cfg.output}/results.json")
        return results

    return run_cli(args.config, args.set, args.resume, DEFAULT_RECIPE, job)


if __name__ == "__main__":
    sys.exit(main())
