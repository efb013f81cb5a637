"""Placeholder: filled in by the hot-path benchmarks (issue 12)."""

from bench.core import Benchmark

BENCHMARKS: list[Benchmark] = []
