#!/usr/bin/env python
"""Run the benchmark suites and write the results as a markdown table (default: BENCHMARKS.md).

    python tools/bench.py                  # every suite
    python tools/bench.py --suite train    # one suite
    python tools/bench.py --quick          # fewer repeats (smoke run)

Each suite (``tools/bench_suites/<name>.py``) measures its cases and a baseline in the same process and
reports ratios, so the numbers compare like with like on whatever machine runs them.
"""
from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def available_suites() -> list:
    return sorted(p.stem for p in (ROOT / "tools" / "bench_suites").glob("*.py") if not p.stem.startswith("_"))


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(rows: list, header: str) -> str:
    lines = [header, "", "| suite | case | metric | value | baseline | ratio | notes |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k in
                                         ("suite", "case", "metric", "value", "baseline", "ratio", "notes")) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", nargs="*", help=f"suites to run (default all: {', '.join(available_suites())})")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    suites = args.suite or available_suites()
    unknown = sorted(set(suites) - set(available_suites()))
    if unknown:
        print(f"error: unknown suite(s) {unknown}; available: {available_suites()}", file=sys.stderr)
        return 2
    import torch

    from vsd.engine.io import atomic_write_text

    sections = []
    for name in suites:
        start = time.time()
        suite = importlib.import_module(f"bench_suites.{name}")
        rows = suite.run(quick=args.quick)
        header = f"## {name}\n\n(measured in {time.time() - start:.0f} s)"
        notes = getattr(suite, "NOTES", "")  # a suite's fixed explanation, printed under its table
        sections.append(to_markdown(rows, header) + (f"\n{notes.strip()}\n" if notes else ""))
        print(sections[-1], flush=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    intro = (f"# Benchmarks\n\nWritten by `python tools/bench.py{' --quick' if args.quick else ''}`. "
             f"Machine: {platform.machine()}, {device}; torch {torch.__version__}. Ratios compare each case with "
             f"the baseline measured in the same process.\n")
    out = Path(args.output)
    if args.suite and out.exists():  # keep the other suites' sections
        kept = [s for s in out.read_text().split("\n## ")[1:] if s.split("\n", 1)[0] not in suites]
        sections = ["## " + s.rstrip("\n") + "\n" for s in kept] + sections
    atomic_write_text(out, intro + "\n" + "\n".join(sections))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
