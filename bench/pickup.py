"""Pickup latency and dispatch throughput, fake runtime, against plain Celery on the same Redis.

1. pickup: an item committed → its attempt started (``Worker.started_at``, written by the
   start task), one item at a time; against a plain two-hop Celery chain (``plain.hop1``
   sends ``plain.hop2``, which records its latency). Whim's pickup is two hops too: the
   dispatch run that claims, then the start. Targets: p50 ≤ 2x, p99 ≤ 3x.
2. dispatch: N items committed at once (one transaction) → every attempt started, items/s;
   against N plain no-op tasks sent at once → all run, at the same worker concurrency.
   Target ≥ 1x.

Whim's worker is ``celery -A whim worker`` on this run's queue, the baseline's is
``celery -A bench.plain worker`` on its own queue of the same Redis, both prefork with the
same concurrency, both running throughout (idle while the other side is measured). The
times are this host's clock on both sides (PostgreSQL runs here, ``clock_timestamp()``).
"""

from __future__ import annotations

import functools
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any
from unittest import mock

from django.conf import settings
from django.db import transaction

from bench import plain, procs
from bench.core import Benchmark, Context, Figure, Target, interleave
from orchestration.models import Worker
from orchestration.services.work_items import work_item_submit

CONCURRENCY = 2  # Celery worker processes on each side (the machine has 2 cores)
LIMITS: dict[str, Any] = {
    "MAX_WORKERS": 10**9,
    "DAILY_BUDGET": 10**9,
    "COOLDOWN_SECONDS": 0,
    "MAX_QUEUED": 10**9,
    "MAX_QUEUED_PER_REPO": 10**9,
}


def wait_for(fn: Callable[[], Any], timeout: float, what: str, poll: float = 0.003) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(poll)
    raise RuntimeError(f"timed out waiting for {what}")


class Sides:
    """Both workers, and how to send to the baseline's."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.plain_queue = f"{ctx.queue}-plain"
        procs.celery_worker(ctx, concurrency=CONCURRENCY)
        procs.celery_worker(
            ctx,
            app="bench.plain",
            concurrency=CONCURRENCY,
            queue=self.plain_queue,
            PLAIN_QUEUE=self.plain_queue,
        )
        plain.app.conf["broker_url"] = ctx.redis_url
        self.redis = ctx.redis()

    def send(self, name: str, *args: object) -> None:
        plain.app.send_task(name, args=list(args), queue=self.plain_queue)

    def submit(self, count: int) -> tuple[list[uuid.UUID], float]:
        return submit_items(count)


def submit_items(count: int) -> tuple[list[uuid.UUID], float]:
    """``count`` items committed in one transaction; their ids and the commit time."""
    box: dict[str, float] = {}
    ids = []
    with transaction.atomic():
        # Registered first, so it runs first at commit (before the dispatch nudge).
        transaction.on_commit(lambda: box.setdefault("t0", time.time()))
        for _ in range(count):
            item, _ = work_item_submit(
                repo=f"acme/r{uuid.uuid4().hex[:6]}", spec="# x", metadata={"mockSeconds": 0}
            )
            ids.append(item.pk)
    return ids, box["t0"]


def started_times(ids: list[uuid.UUID]) -> list[float]:
    rows = Worker.objects.filter(work_item_id__in=ids, started_at__isnull=False)
    return [t.timestamp() for t in rows.values_list("started_at", flat=True).order_by() if t]


def settle(ids: list[uuid.UUID], timeout: float = 60) -> None:
    """Wait until these items' attempts are over (their fake runs no longer compete)."""
    wait_for(
        lambda: not Worker.objects.filter(work_item_id__in=ids, status__in=Worker.ACTIVE).exists(),
        timeout,
        "the fake runs to end",
        poll=0.02,
    )


def pickup(ctx: Context) -> list[Figure]:
    sides = Sides(ctx)
    per_round = ctx.size(40, 4)

    hops: list[tuple[float, float]] = []  # (commit → claimed, claimed → started) in ms

    def whim() -> list[float]:
        out = []
        for _ in range(per_round):
            ids, t0 = sides.submit(1)
            # The figure is the rows' own times, not when they are seen: a slow poll keeps
            # this process off the two cores the pickup runs on.
            got = wait_for(
                functools.partial(started_times, ids), 30, "the attempt to start", poll=0.05
            )
            out.append((got[0] - t0) * 1000)
            claimed = Worker.objects.filter(work_item_id=ids[0]).values_list("created_at")[0][0]
            hops.append(((claimed.timestamp() - t0) * 1000, (got[0] - claimed.timestamp()) * 1000))
            settle(ids)
        return out

    def chain() -> list[float]:
        out = []
        key = f"bench:hop:{uuid.uuid4().hex}"
        for _ in range(per_round):
            sides.send("plain.hop1", time.time(), key)
            _, value = sides.redis.blpop([key], timeout=30)
            out.append(float(value) * 1000)
            time.sleep(0.02)  # as Whim's side waits for its run to end
        return out

    with mock.patch.multiple(settings, **LIMITS):
        whim(), chain()  # warm both sides (connections, imports) before measuring
        a, b = interleave(ctx, a=whim, b=chain)
    figures = [
        Figure(
            f"pickup {s}: committed → attempt started",
            "ms",
            a,
            b,
            "plain two-hop Celery chain, same Redis",
            targets=(Target(s, max_ratio=r),),
            note=f"Whim's hops, p50: commit → claimed {statistics.median(h[0] for h in hops):.0f} "
            f"ms, claimed → started {statistics.median(h[1] for h in hops):.0f} ms",
        )
        for s, r in (("p50", 2), ("p99", 3))
    ]
    return figures + dispatch_burst(ctx, sides)


def dispatch_burst(ctx: Context, sides: Sides) -> list[Figure]:
    n = ctx.size(500, 20)

    def whim() -> float:
        ids, t0 = sides.submit(n)
        wait_for(lambda: len(started_times(ids)) == n, 300, "every attempt to start", poll=0.05)
        rate = n / (max(started_times(ids)) - t0)
        settle(ids, timeout=300)
        return rate

    def noops() -> float:
        key = f"bench:noop:{uuid.uuid4().hex}"
        t0 = time.time()
        for _ in range(n):
            sides.send("plain.noop", key)
        wait_for(lambda: sides.redis.llen(key) >= n, 300, "the no-op tasks", poll=0.05)
        return n / (max(float(v) for v in sides.redis.lrange(key, 0, -1)) - t0)

    with mock.patch.multiple(settings, **LIMITS):
        a, b = interleave(ctx, a=whim, b=noops, rounds=max(2, ctx.rounds - 2))
    ctx.reset_db()
    return [
        Figure(
            f"dispatch: {n} items at once → all started",
            "items/s",
            a,
            b,
            f"{n} plain Celery no-op tasks, same Redis, -c {CONCURRENCY}",
            higher_is_better=True,
            targets=(Target("p50", min_ratio=1),),
        )
    ]


BENCHMARKS = [
    Benchmark(
        "pickup",
        "item committed → attempt started, and 500 at once (fake runtime) vs plain Celery",
        pickup,
    )
]
