"""Mean and standard deviation over seeds of finished ``tools/train.py`` runs, optionally with many/medium/few-shot
accuracy (the long-tailed convention: many > 100 training images per class, medium 20-100, few < 20).

    python zoo/mdcs/summarize.py --shots "MDCS=runs/h3b/mdcs_s*" "CE=runs/h3b/ce_lt_s*"

Each ``LABEL=GLOB`` groups the run folders matching GLOB. Shot accuracies rebuild each run's eval model from its
``config.yaml`` and ``checkpoint-last.safetensors`` (the trained module, e.g. MDCS's experts) and evaluate the
test split. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing vsd

from vsd.config import load_config  # noqa: E402
from vsd.data import dataset_to_tensors  # noqa: E402
from vsd.engine.checkpoint import load_checkpoint  # noqa: E402
from vsd.engine.loaders import build_eval_data  # noqa: E402
from vsd.engine.trainer import CHECKPOINT_NAME, build_model  # noqa: E402
from vsd.tasks import TaskContext, create_task  # noqa: E402

SHOTS = {"many": lambda n: n > 100, "medium": lambda n: 20 <= n <= 100, "few": lambda n: n < 20}


@torch.no_grad()
def shot_accuracy(run: Path) -> Dict[str, float]:
    """Top-1 (%) of the run's eval model on the test split, per shot group of the training class counts."""
    cfg = load_config(run / "config.yaml")
    data = build_eval_data(cfg)
    model = build_model(cfg, data.info)
    ctx = TaskContext(num_classes=data.info.num_classes, class_counts=data.class_counts, in_chans=data.info.in_chans,
                      image_size=data.info.image_size)
    task = create_task(model, cfg, ctx)
    task.get_trainable_module().load_state_dict(load_checkpoint(run / CHECKPOINT_NAME)["model"])
    eval_model = task.get_eval_model().eval()
    images, labels = dataset_to_tensors(data.test)
    preds = torch.cat([eval_model(chunk).argmax(1) for chunk in images.split(512)])
    out = {}
    for name, rule in SHOTS.items():
        classes = [c for c, n in enumerate(data.class_counts) if rule(n)]
        mask = torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))
        out[name] = float((preds[mask] == labels[mask]).float().mean() * 100) if classes else float("nan")
    return out


def _fmt(values: List[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="+", help="LABEL=GLOB of run folders")
    parser.add_argument("--shots", action="store_true", help="also many/medium/few-shot top-1 (long-tailed data)")
    args = parser.parse_args()
    header = ["method", "seeds", "top-1 (%)", "ECE (%)"] + (list(SHOTS) if args.shots else [])
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for group in args.groups:
        label, pattern = group.split("=", 1)
        runs = sorted(Path(p) for p in glob.glob(pattern) if (Path(p) / "results.json").is_file())
        if not runs:
            raise SystemExit(f"error: no finished runs (results.json) match {pattern!r}")
        results = [json.loads((r / "results.json").read_text()) for r in runs]
        cells = [label, str(len(runs)), _fmt([r["eval_top1"] for r in results]), _fmt([r["eval_ece"] for r in results])]
        if args.shots:
            shots = [shot_accuracy(r) for r in runs]
            cells += [_fmt([s[name] for s in shots]) for name in SHOTS]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
