"""Benchmark suites collected by ``tools/bench.py``; each module exposes ``run(quick) -> list[dict]``."""
