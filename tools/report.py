#!/usr/bin/env python
"""Write ``report.md`` with PNG figures for finished runs of ``tools/train.py`` or ``tools/distill.py``.

    python tools/report.py runs/a runs/b --out reports/ab                  # each folder is one run
    python tools/report.py --group CE=runs/zoo/ce PSKD=runs/zoo/pskd       # each folder holds seed*/ runs

With ``--group`` an argument is a folder of runs (the ``seed<k>/`` folders that ``tools/seeds.py`` writes: every
sub-folder holding a ``results.json``) or a quoted glob of run folders (``"MDCS=runs/lt/mdcs_s*"``);
``LABEL=FOLDER`` names it in tables and legends. The report has:

* final metrics, mean ± sample std over a group's runs (the statistic of ``tools/seeds.py``), per-seed values,
  and the best epoch's top-1 (a gap between best and final top-1 is over-fitting, e.g. to noisy labels);
* curves from ``summary.csv`` (each loss component, top-1, ECE, lr; a group's mean with a ±std band);
* a reliability diagram of classification runs (15 equal-width confidence bins, Guo et al. 2017): the model is
  rebuilt from ``config.yaml`` + ``model.safetensors`` and evaluated on the test split, so nothing has to be
  logged during training; the ECE it recomputes is listed beside the logged one;
* per-class and many/medium/few top-1 when the training class counts are imbalanced (many > 100 training
  images, medium 20-100, few < 20: the LDAM/MDCS convention);
* student vs teacher probe curves (``summary.csv`` columns with ``probe`` in their name);
* for metrics stored as ``{"mean", "accs"}`` (several evaluation networks or transfer repeats per run: MTT,
  KRR-ST), a second table pooled over every network of every run (mean ± population std, as the papers report);
* for distillation runs, every per-iteration series in ``checkpoint.safetensors`` (``history`` = matching loss)
  and the distilled-image grid ``grid_all.png``.

Figures need matplotlib (``pip install 'vsd[plots]'``); without it the tables are written and one notice says
the figures were skipped.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import shlex
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NUM_BINS = 15  # as vsd.engine.metrics.ClassificationMeter
SHOTS = (("many", lambda n: n > 100), ("medium", lambda n: 20 <= n <= 100), ("few", lambda n: n < 20))
CURVE_KEYS = ("eval_top1", "eval_ece", "lr")


@dataclass
class Run:
    """One finished run folder."""

    path: Path
    results: dict
    history: list[dict[str, float]]
    eval: Optional[dict] = None  # per-sample test outputs, filled by evaluate_run

    @property
    def is_distill(self) -> bool:
        return (self.path / "distilled.safetensors").is_file()


@dataclass
class Entry:
    """A labelled run or group of runs (seeds)."""

    label: str
    runs: list[Run]
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ loading
def read_summary(path: Path) -> list[dict[str, float]]:
    """Rows of ``summary.csv`` as floats (blank cells left out); [] when the file is missing."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                try:
                    row[key] = float(value)
                except (TypeError, ValueError):
                    continue
            rows.append(row)
    return rows


def load_run(folder: Path) -> Run:
    results_path = folder / "results.json"
    if not results_path.is_file():
        raise SystemExit(f"error: {str(folder)!r} is not a finished run (no results.json); expected a folder "
                         "written by tools/train.py or tools/distill.py")
    results = json.loads(results_path.read_text())
    if "seed" not in results and (folder / "config.yaml").is_file():  # runs written before results.json had it
        results["seed"] = (yaml.safe_load((folder / "config.yaml").read_text()) or {}).get("seed", "—")
    return Run(folder, results, read_summary(folder / "summary.csv"))


def load_entries(args: list[str], group: bool) -> list[Entry]:
    entries = []
    for arg in args:
        label, _, folder = arg.rpartition("=") if "=" in arg else ("", "", arg)
        path = Path(folder)
        if group and glob.has_magic(folder):  # LABEL=runs/x/mdcs_s*: the matching run folders
            members = sorted(Path(p) for p in glob.glob(folder) if (Path(p) / "results.json").is_file())
            if not members:
                raise SystemExit(f"error: no finished runs (folders with results.json) match {folder!r}")
            entries.append(Entry(label or path.parent.name, [load_run(p) for p in members]))
            continue
        if not path.is_dir():
            raise SystemExit(f"error: {folder!r} is not a folder; expected a run folder (or, with --group, a "
                             "folder of seed runs or a glob of run folders)")
        if group and not (path / "results.json").is_file():  # a run folder itself is a group of one
            members = sorted(p for p in path.iterdir() if (p / "results.json").is_file())
            if not members:
                raise SystemExit(f"error: {folder!r} holds no finished runs (sub-folders with results.json); "
                                 "expected the output folder of tools/seeds.py")
            runs = [load_run(p) for p in members]
        else:
            runs = [load_run(path)]
        entries.append(Entry(label or path.name, runs))
    return entries


# ------------------------------------------------------------------------------------------------ statistics
def scalar(value: Any) -> Optional[float]:
    """A number from a results value: numbers as they are, ``{"mean": m, ...}`` as m, anything else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict) and isinstance(value.get("mean"), (int, float)):
        return float(value["mean"])
    return None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}"


def best_top1(run: Run) -> Optional[float]:
    values = [row["eval_top1"] for row in run.history if "eval_top1" in row]
    return max(values) if values else None


def reliability(conf: "Any", correct: "Any") -> tuple[list[int], list[float], list[float], float]:
    """Per bin (count, mean confidence, accuracy) and ECE in %, ``NUM_BINS`` equal-width bins of the max
    softmax probability: ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)|."""
    import torch

    idx = (conf * NUM_BINS).long().clamp(max=NUM_BINS - 1)
    count = torch.bincount(idx, minlength=NUM_BINS).double()
    conf_sum = torch.zeros(NUM_BINS, dtype=torch.float64).index_add_(0, idx, conf.double())
    hit_sum = torch.zeros(NUM_BINS, dtype=torch.float64).index_add_(0, idx, correct.double())
    ece = float((conf_sum - hit_sum).abs().sum() / count.sum() * 100)
    safe = count.clamp(min=1)
    return count.long().tolist(), (conf_sum / safe).tolist(), (hit_sum / safe * 100).tolist(), ece


def evaluate_run(run: Run) -> None:
    """Rebuild the run's eval model and store test-split confidences, predictions, labels and training class
    counts in ``run.eval`` (left None for distillation runs or runs without ``model.safetensors``)."""
    if run.is_distill or not (run.path / "model.safetensors").is_file() or "eval_top1" not in run.results:
        return
    import torch
    from safetensors.torch import load_file
    from timm.utils.model import unwrap_model

    from vsd.config import load_config
    from vsd.data import dataset_to_tensors
    from vsd.engine.loaders import build_eval_data
    from vsd.models import build_model
    from vsd.tasks import TaskContext, create_task

    cfg = load_config(run.path / "config.yaml")
    data = build_eval_data(cfg)
    ctx = TaskContext(num_classes=data.info.num_classes, class_counts=data.class_counts,
                      num_train_samples=len(data.train_plain), epochs=cfg.train.epochs,
                      in_chans=data.info.in_chans, image_size=data.info.image_size)
    task = create_task(build_model(cfg, data.info), cfg, ctx)
    model = task.get_eval_model()
    unwrap_model(model).load_state_dict(load_file(str(run.path / "model.safetensors")))
    model.eval()
    images, labels = dataset_to_tensors(data.test)
    with torch.no_grad():
        probs = torch.cat([model(chunk).float().softmax(1) for chunk in images.split(512)])
    conf, pred = probs.max(1)
    run.eval = {"conf": conf, "pred": pred, "labels": labels, "class_counts": list(data.class_counts)}


def class_accuracy(run: Run) -> list[float]:
    ev = run.eval
    out = []
    for c in range(len(ev["class_counts"])):
        mask = ev["labels"] == c
        out.append(float((ev["pred"][mask] == c).float().mean() * 100) if mask.any() else float("nan"))
    return out


def shot_accuracy(run: Run) -> dict[str, Optional[float]]:
    """Top-1 (%) over the test samples of the many / medium / few-shot classes (None when a group is empty)."""
    import torch

    ev = run.eval
    out: dict[str, Optional[float]] = {}
    for name, rule in SHOTS:
        classes = [c for c, n in enumerate(ev["class_counts"]) if rule(n)]
        mask = torch.isin(ev["labels"], torch.tensor(classes, dtype=ev["labels"].dtype))
        out[name] = float((ev["pred"][mask] == ev["labels"][mask]).float().mean() * 100) if classes else None
    return out


def is_long_tailed(entries: list[Entry]) -> bool:
    counts = [r.eval["class_counts"] for e in entries for r in e.runs if r.eval]
    return any(min(c) > 0 and max(c) / min(c) >= 2 for c in counts)


# ------------------------------------------------------------------------------------------------ tables
def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def metrics_table(entries: list[Entry]) -> list[str]:
    """Final metrics, mean ± std over each entry's runs; eval_* keys of results.json plus best-epoch top-1."""
    keys = []
    for e in entries:
        for r in e.runs:
            keys += [k for k, v in r.results.items() if k.startswith("eval_") and scalar(v) is not None
                     and k not in keys]
    keys = sorted(keys, key=lambda k: ({"eval_top1": 0, "eval_ece": 1}.get(k, 2), k))
    with_best = any(best_top1(r) is not None for e in entries for r in e.runs)
    with_ece = any(r.eval for e in entries for r in e.runs)
    header = ["run", "n"] + [k.removeprefix("eval_") for k in keys]
    header += ["best-epoch top1"] if with_best else []
    header += ["ECE recomputed"] if with_ece else []
    lines = [_row(header), _row(["---"] * len(header))]
    for e in entries:
        cells = [e.label, str(len(e.runs))]
        cells += [fmt([scalar(r.results.get(k)) for r in e.runs]) for k in keys]
        cells += [fmt([best_top1(r) for r in e.runs])] if with_best else []
        cells += [fmt([reliability(r.eval["conf"], r.eval["pred"] == r.eval["labels"])[3]
                       for r in e.runs if r.eval])] if with_ece else []
        lines.append(_row(cells))
    return lines


def pooled_table(entries: list[Entry]) -> list[str]:
    """Metrics with per-network values (``accs``), pooled over every network of every run of an entry."""
    keys = sorted({k for e in entries for r in e.runs for k, v in r.results.items()
                   if k.startswith("eval_") and isinstance(v, dict) and isinstance(v.get("accs"), list)})
    if not keys:
        return []
    lines = [_row(["run", "metric", "pooled mean ± std (population)", "networks", "per-run means"]),
             _row(["---"] * 5)]
    for e in entries:
        for k in keys:
            present = [r.results[k] for r in e.runs if isinstance(r.results.get(k), dict)]
            pooled = [float(a) for p in present for a in p.get("accs", [])]
            if pooled:
                lines.append(_row([e.label, k.removeprefix("eval_"),
                                   f"{statistics.fmean(pooled):.2f} ± {statistics.pstdev(pooled):.2f}",
                                   str(len(pooled)), ", ".join(f"{scalar(p):.1f}" for p in present)]))
    return lines


def seeds_table(entry: Entry) -> list[str]:
    """Per-run top-1 / ECE (or the first eval_* keys) of one group, then mean ± std."""
    keys = [k for k in ("eval_top1", "eval_ece") if any(k in r.results for r in entry.runs)]
    if not keys:
        keys = sorted({k for r in entry.runs for k, v in r.results.items()
                       if k.startswith("eval_") and scalar(v) is not None})[:4]
    lines = [_row(["run", "seed"] + keys), _row(["---"] * (len(keys) + 2))]
    for r in entry.runs:
        lines.append(_row([r.path.name, str(r.results.get("seed", "—"))]
                          + [fmt([scalar(r.results.get(k))]) for k in keys]))
    lines.append(_row(["**mean ± std**", ""] + [fmt([scalar(r.results.get(k)) for r in entry.runs]) for k in keys]))
    return lines


def shots_table(entries: list[Entry]) -> list[str]:
    lines = [_row(["run", "n", "many (>100)", "medium (20-100)", "few (<20)", "classes many/medium/few"]),
             _row(["---"] * 6)]
    for e in entries:
        runs = [r for r in e.runs if r.eval]
        if not runs:
            continue
        shots = [shot_accuracy(r) for r in runs]
        counts = runs[0].eval["class_counts"]
        sizes = "/".join(str(sum(rule(n) for n in counts)) for _, rule in SHOTS)
        lines.append(_row([e.label, str(len(runs))] + [fmt([s[name] for s in shots]) for name, _ in SHOTS]
                          + [sizes]))
    return lines


def settings_table(entries: list[Entry]) -> list[str]:
    lines = [_row(["run", "folders", "method", "data", "model", "epochs", "data options"]), _row(["---"] * 7)]
    for e in entries:
        res = e.runs[0].results
        options = {k: res[k] for k in ("label_noise", "samples_per_class") if k in res}
        folders = ", ".join(str(r.path) for r in e.runs) if len(e.runs) < 3 else f"{e.runs[0].path.parent}/*"
        lines.append(_row([e.label, folders, str(res.get("method", "—")), str(res.get("dataset", "—")),
                           str(res.get("model", "—")), str(res.get("epochs", res.get("iterations_done", "—"))),
                           json.dumps(options) if options else "—"]))
    return lines


# ------------------------------------------------------------------------------------------------ figures
def _series(run: Run, key: str) -> tuple[list[float], list[float]]:
    pts = [(row.get("epoch", i), row[key]) for i, row in enumerate(run.history) if key in row]
    return [p[0] for p in pts], [p[1] for p in pts]


def _plot_group(ax: Any, entry: Entry, key: str) -> None:
    """A group's mean curve with a ±std band (one run: its curve)."""
    series = [_series(r, key) for r in entry.runs]
    series = [s for s in series if s[0]]
    if not series:
        return
    length = min(len(s[0]) for s in series)
    xs = series[0][0][:length]
    stats = [mean_std([s[1][i] for s in series]) for i in range(length)]
    mean = [m for m, _ in stats]
    line, = ax.plot(xs, mean, label=entry.label)
    if len(series) > 1:
        ax.fill_between(xs, [m - s for m, s in stats], [m + s for m, s in stats], alpha=0.2, color=line.get_color())


def _curve_keys(entries: list[Entry], probes: bool) -> list[str]:
    keys: list[str] = []
    for e in entries:
        for r in e.runs:
            for row in r.history:
                keys += [k for k in row if k not in keys]
    if probes:
        return [k for k in keys if "probe" in k]
    return [k for k in keys if ("loss" in k or k in CURVE_KEYS) and "probe" not in k]


def curves_figure(plt: Any, entries: list[Entry], keys: list[str], path: Path, title: str) -> None:
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for e in entries:
            _plot_group(ax, e, key)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def reliability_figure(plt: Any, entries: list[Entry], path: Path) -> None:
    """One panel per entry: accuracy per confidence bin (runs of a group pooled) against the diagonal."""
    import torch

    shown = [e for e in entries if any(r.eval for r in e.runs)]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.2), squeeze=False)
    width = 1.0 / NUM_BINS
    for ax, e in zip(axes.flat, shown):
        runs = [r for r in e.runs if r.eval]
        conf = torch.cat([r.eval["conf"] for r in runs])
        correct = torch.cat([r.eval["pred"] == r.eval["labels"] for r in runs])
        count, mean_conf, acc, ece = reliability(conf, correct)
        centers = [(b + 0.5) * width for b in range(NUM_BINS)]
        ax.bar(centers, [a / 100 if n else 0 for a, n in zip(acc, count)], width=width, edgecolor="black",
               linewidth=0.5, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        ax.set_title(f"{e.label}\nECE {ece:.2f}% (pooled, n={len(conf)})", fontsize=8)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def class_figure(plt: Any, entries: list[Entry], path: Path) -> None:
    """Per-class test top-1 (mean over a group's runs), classes in training-count order (head first)."""
    shown = [e for e in entries if any(r.eval for r in e.runs)]
    counts = next(r.eval["class_counts"] for e in shown for r in e.runs if r.eval)
    order = sorted(range(len(counts)), key=lambda c: -counts[c])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.4 * len(counts) * len(shown)), 3.2))
    width = 0.8 / len(shown)
    for i, e in enumerate(shown):
        accs = [class_accuracy(r) for r in e.runs if r.eval]
        mean = [statistics.fmean(a[c] for a in accs) for c in order]
        ax.bar([k + i * width for k in range(len(order))], mean, width=width, label=e.label)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(order))])
    ax.set_xticklabels([f"{c}\n(n={counts[c]})" for c in order], fontsize=6)
    ax.set_ylabel("test top-1 (%)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def distill_series(run: Run) -> dict[str, list[float]]:
    """Per-iteration series stored in a distillation checkpoint's ``extra`` (``history`` = matching loss)."""
    ckpt = run.path / "checkpoint.safetensors"
    if not ckpt.is_file():
        return {}
    from vsd.engine.checkpoint import load_checkpoint

    extra = load_checkpoint(ckpt).get("extra", {})
    return {("matching loss" if k == "history" else k): [float(x) for x in v] for k, v in extra.items()
            if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v)}


def distill_figure(plt: Any, entries: list[Entry], path: Path) -> bool:
    panels: dict[str, list[tuple[str, list[float]]]] = {}
    for e in entries:
        for r in e.runs:
            for name, values in distill_series(r).items():
                panels.setdefault(name, []).append((f"{e.label}/{r.path.name}", values))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0), squeeze=False)
    for ax, (name, series) in zip(axes.flat, panels.items()):
        for label, values in series:
            ax.plot(range(1, len(values) + 1), values, label=label, linewidth=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------------ report
def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(entries: list[Entry], out: Path, title: str, evaluate: bool = True, command: str = "") -> Path:
    """Write ``out/report.md`` (and the figures when matplotlib is importable); return its path. ``command``
    (how the report was made) is quoted at the top."""
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    if evaluate:
        for e in entries:
            for r in e.runs:
                try:
                    evaluate_run(r)
                except Exception as err:  # a report must still come out: say which run could not be rebuilt
                    e.notes.append(f"{r.path}: model not re-evaluated ({type(err).__name__}: {err})")
    md = [f"# {title}", "", *([f"Written by `{command}`.", ""] if command else []),
          "## Settings", "", *settings_table(entries), "",
          "## Final metrics (mean ± sample std over runs; % for top-1 and ECE)", "", *metrics_table(entries), ""]
    pooled = pooled_table(entries)
    if pooled:
        md += ["## Pooled over evaluation networks / transfer repeats", "", *pooled, ""]
    if plt is None:
        md += ["*Figures skipped: matplotlib is not installed (`pip install 'vsd[plots]'`).*", ""]
        print("report: matplotlib is not installed, figures skipped (pip install 'vsd[plots]')")
    for e in entries:
        if len(e.runs) > 1:
            md += [f"### Runs of {e.label}", "", *seeds_table(e), ""]
    keys = _curve_keys(entries, probes=False)
    if plt is not None and keys:
        curves_figure(plt, entries, keys, out / "curves.png", title)
        md += ["## Curves (mean, ±std band over runs)", "", "![curves](curves.png)", ""]
    if any(r.eval for e in entries for r in e.runs):
        if plt is not None:
            reliability_figure(plt, entries, out / "reliability.png")
            md += ["## Reliability (test split, runs pooled)", "", "![reliability](reliability.png)", ""]
        if is_long_tailed(entries):
            md += ["## Long-tailed accuracy (test top-1 %, by training-count group)", "", *shots_table(entries), ""]
            if plt is not None:
                class_figure(plt, entries, out / "per_class.png")
                md += ["![per-class top-1](per_class.png)", ""]
    probe_keys = _curve_keys(entries, probes=True)
    if plt is not None and probe_keys:
        curves_figure(plt, entries, probe_keys, out / "probes.png", "probes (student vs teacher)")
        md += ["## Probes", "", "![probes](probes.png)", ""]
    if plt is not None and distill_figure(plt, entries, out / "distill.png"):
        md += ["## Distillation", "", "![distillation series](distill.png)", ""]
    for e in entries:
        grid = e.runs[0].path / "grid_all.png"
        if grid.is_file():
            name = f"grid_{e.label}.png".replace("/", "_")
            shutil.copyfile(grid, out / name)
            md += [f"Distilled images of {e.runs[0].path} (one row per class):", "", f"![{e.label}]({name})", ""]
    notes = [n for e in entries for n in e.notes]
    if notes:
        md += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    path = out / "report.md"
    from vsd.engine.io import atomic_write_text

    atomic_write_text(path, "\n".join(md))
    return path


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="[LABEL=]FOLDER")
    parser.add_argument("--group", action="store_true", help="each FOLDER holds one run per seed")
    parser.add_argument("--out", help="report folder (default: <first FOLDER>/report)")
    parser.add_argument("--title", default="vsd report")
    parser.add_argument("--no-eval", action="store_true", help="do not rebuild models (no reliability / per-class)")
    args = parser.parse_args(argv)
    entries = load_entries(args.runs, args.group)
    out = Path(args.out) if args.out else entries[0].runs[0].path.parent / "report" if args.group \
        else entries[0].runs[0].path / "report"
    given = argv if argv is not None else sys.argv[1:]
    command = "python tools/report.py " + " ".join(shlex.quote(a) for a in given)
    path = write_report(entries, out, args.title, evaluate=not args.no_eval, command=command)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
