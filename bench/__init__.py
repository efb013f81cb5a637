"""Benchmarks: ``make bench`` (``python -m bench``). They print figures; nothing asserts."""
