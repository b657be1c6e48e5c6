"""Run outputs: ``summary.csv`` (one row per epoch, union of all columns) written atomically."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List

from vsd.engine.io import atomic_write_text

LEADING_COLUMNS = ["epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "eval_ece", "lr"]


def write_summary(path: Path, rows: List[Dict[str, float]]) -> None:
    """Write every epoch row; the leading columns come first, other columns in order of appearance."""
    columns = [c for c in LEADING_COLUMNS if any(c in r for r in rows)]
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _fmt(value: object) -> object:
    return f"{value:.6g}" if isinstance(value, float) else value
