"""The benchmark suite's core: figures, targets, A/B interleaving, the scratch run, the report.

``python -m bench [--smoke] [--only NAME ...] [--json PATH]`` (``make bench``) runs every
registered benchmark against a baseline measured in the same run, on a scratch PostgreSQL
database and a scratch Redis database that the run creates and drops, prints one table and
writes a JSON file for history (default ``.run/bench/<timestamp>.json``).

Plug-in interface (how a module joins the suite)
------------------------------------------------
1. A module ``bench/<name>.py`` defines ``BENCHMARKS: list[Benchmark]``. A ``Benchmark`` is a
   name (what ``--only`` matches), a one-line description, and ``run(ctx) -> list[Figure]``.
   ``needs`` names what it requires (``"docker"``); a benchmark whose needs are missing is
   reported as skipped, not failed.
2. Register the module with one line in ``MODULES`` in ``bench/__main__.py``.
3. ``run`` gets a ``Context``:
   - ``ctx.smoke`` — tiny sizes: use ``ctx.size(full, smoke)`` for every count and
     ``ctx.rounds`` for the number of A/B rounds. Targets are not enforced in a smoke.
   - the Django ORM is set up on the scratch database (``ctx.database``); ``ctx.reset_db()``
     empties every table (TRUNCATE … CASCADE) between benchmarks that need a clean slate;
     ``ctx.redis_url`` is the scratch Redis database; ``ctx.env()`` is the environment for
     subprocesses (web, Celery) pointed at both; ``ctx.queue`` is this run's Celery queue.
   - ``bench.procs`` starts gunicorn and Celery workers on them (``ctx.processes`` stops
     whatever is left at the end of the run).
4. ``interleave(ctx, a=..., b=...)`` runs ``a`` (Whim) and ``b`` (the baseline) alternately for
   ``ctx.rounds`` rounds (the order flips every round, so neither always runs on a warm or a
   cold machine). Each call returns a list of samples (latencies in ms) or one number (a
   rate); the pooled samples make the two sides of a ``Figure``.
5. A ``Figure`` holds the samples of both sides, the unit, whether higher is better, and
   ``targets`` (``Target("p50", max_ratio=2)``: Whim's p50 at most twice the baseline's;
   ``Target("p95", max_value=8)``: an absolute bound, e.g. a query count). The ratio is
   Whim / baseline; a figure passes when every target holds.

Shared machines: this machine has 2 cores and other people on it; medians of interleaved
rounds are what the README quotes, never a single run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import statistics
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
STATS = ("p50", "p95", "p99", "max")


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100); NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def stat(samples: Sequence[float], name: str) -> float:
    if name == "p50":
        return statistics.median(samples) if samples else math.nan
    if name == "max":
        return max(samples) if samples else math.nan
    return percentile(samples, float(name[1:]))


@dataclasses.dataclass(frozen=True)
class Target:
    """One bound a figure must meet: on the ratio Whim/baseline of a statistic, or on Whim's
    statistic itself (``max_value``)."""

    stat: str = "p50"
    max_ratio: float | None = None
    min_ratio: float | None = None
    max_value: float | None = None

    def describe(self) -> str:
        parts = []
        if self.max_ratio is not None:
            parts.append(f"{self.stat} ≤ {self.max_ratio:g}x")
        if self.min_ratio is not None:
            parts.append(f"{self.stat} ≥ {self.min_ratio:g}x")
        if self.max_value is not None:
            parts.append(f"{self.stat} ≤ {self.max_value:g}")
        return ", ".join(parts)

    def holds(self, figure: Figure) -> bool:
        value = stat(figure.whim, self.stat)
        if self.max_value is not None and not value <= self.max_value:
            return False
        if self.max_ratio is not None or self.min_ratio is not None:
            ratio = figure.ratio(self.stat)
            if math.isnan(ratio):
                return False
            if self.max_ratio is not None and ratio > self.max_ratio:
                return False
            if self.min_ratio is not None and ratio < self.min_ratio:
                return False
        return True


@dataclasses.dataclass
class Figure:
    """One line of the report: Whim's samples and the baseline's, measured in the same run."""

    name: str
    unit: str
    whim: list[float]
    baseline: list[float] = dataclasses.field(default_factory=list)
    baseline_name: str = ""
    higher_is_better: bool = False
    targets: tuple[Target, ...] = ()
    note: str = ""
    skipped: str = ""  # why it was not measured (missing Docker, …)
    bench: str = ""  # the benchmark that measured it (set by the runner)

    def ratio(self, name: str = "p50") -> float:
        base = stat(self.baseline, name)
        if not self.baseline or not base:
            return math.nan
        return stat(self.whim, name) / base

    @property
    def passed(self) -> bool | None:
        if self.skipped or not self.targets:
            return None
        return all(t.holds(self) for t in self.targets)

    def as_dict(self) -> dict[str, Any]:
        def side(samples: list[float]) -> dict[str, Any]:
            return {"n": len(samples), **{s: _num(stat(samples, s)) for s in STATS}}

        return {
            "name": self.name,
            "bench": self.bench,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "whim": side(self.whim),
            "baseline_name": self.baseline_name,
            "baseline": side(self.baseline),
            "ratio": {s: _num(self.ratio(s)) for s in STATS},
            "targets": [t.describe() for t in self.targets],
            "passed": self.passed,
            "note": self.note,
            "skipped": self.skipped,
            "samples": {"whim": self.whim, "baseline": self.baseline},
        }


def _num(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A named measurement: ``run(ctx)`` returns its figures."""

    name: str
    description: str
    run: Callable[[Context], list[Figure]]
    needs: tuple[str, ...] = ()


@dataclasses.dataclass
class Context:
    """What a benchmark gets: sizes, the scratch database and Redis, and process cleanup."""

    smoke: bool
    database: str
    redis_url: str
    queue: str
    database_url: str
    rounds: int = 5
    processes: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)
    artifacts: Path = ROOT / ".run" / "bench" / "logs"

    def size(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for a subprocess of this run (web, Celery) on the scratch stores."""
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "CELERY_QUEUE": self.queue,
            "LOG_LEVEL": "WARNING",
            "COOLDOWN_SECONDS": "0",
            "MAX_WORKERS": "100000",
            "DAILY_BUDGET": "1000000",
            "MAX_QUEUED": "1000000",
            "MAX_QUEUED_PER_REPO": "1000000",
            "WHIM_RUNTIME": "fake",
            "WHIM_AGENT": "none",
            **extra,
        }

    def reset_db(self) -> None:
        """Empty every table of the scratch database (one TRUNCATE, sequences restarted)."""
        from django.db import connection  # set up by the runner before any benchmark runs

        tables = connection.introspection.django_table_names(only_existing=True)
        if tables:
            quoted = ", ".join(connection.ops.quote_name(t) for t in tables)
            with connection.cursor() as cursor:
                cursor.execute(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")

    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.redis_url)


Sample = list[float] | float


def interleave(
    ctx: Context, *, a: Callable[[], Sample], b: Callable[[], Sample], rounds: int | None = None
) -> tuple[list[float], list[float]]:
    """Run ``a`` (Whim) and ``b`` (baseline) alternately, flipping the order every round;
    return the pooled samples of each side."""
    whim: list[float] = []
    base: list[float] = []
    for i in range(rounds if rounds is not None else ctx.rounds):
        order = ((a, whim), (b, base)) if i % 2 == 0 else ((b, base), (a, whim))
        for fn, out in order:
            got = fn()
            out.extend(got if isinstance(got, list) else [got])
    return whim, base


def with_db(url: str, db: int | str) -> str:
    """``url`` with its path (the Redis db number or the PostgreSQL database) replaced."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


# --- the report ---


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def table(figures: Sequence[Figure], *, smoke: bool) -> str:
    head = (
        f"{'figure':<46} {'unit':<8} {'whim p50':>9} {'p95':>8} {'p99':>8} "
        f"{'base p50':>9} {'p99':>8} {'ratio':>6}  {'target':<22} result"
    )
    lines = [head, "-" * len(head)]
    for f in figures:
        if f.skipped:
            lines.append(f"{f.name:<46} skipped: {f.skipped}")
            continue
        result = {True: "pass", False: "FAIL", None: ""}[f.passed]
        if smoke and f.targets:
            result = "(smoke)"
        lines.append(
            f"{f.name[:46]:<46} {f.unit:<8} {_fmt(stat(f.whim, 'p50')):>9} "
            f"{_fmt(stat(f.whim, 'p95')):>8} {_fmt(stat(f.whim, 'p99')):>8} "
            f"{_fmt(stat(f.baseline, 'p50')):>9} {_fmt(stat(f.baseline, 'p99')):>8} "
            f"{_fmt(f.ratio()):>6}  {'; '.join(t.describe() for t in f.targets)[:22]:<22} {result}"
        )
        if f.baseline_name:
            lines.append(f"{'':<4}baseline: {f.baseline_name}" + (f" — {f.note}" if f.note else ""))
        elif f.note:
            lines.append(f"{'':<4}{f.note}")
    return "\n".join(lines)


def write_json(path: Path, *, figures: Sequence[Figure], smoke: bool, took: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "smoke": smoke,
        "seconds": round(took, 1),
        "cpus": os.cpu_count(),
        "commit": _git_head(),
        "figures": [f.as_dict() for f in figures],
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip()
    except OSError:
        return ""


def default_json_path() -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return ROOT / ".run" / "bench" / f"{stamp}.json"
