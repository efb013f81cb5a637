"""Claim throughput on real PostgreSQL, against submit throughput measured in the same run.

1. claim, 1 claimer: ``dispatch_claim_one`` per second over a queue of N items, against
   ``work_item_submit`` per second (one connection): a claim should cost about a submit.
2. claim, K claimers: the same queue drained by K threads (own connections) at once, against
   one claimer: what SKIP LOCKED buys (the gate row serialises the gated claim, so the
   ungated claim is measured too).
Nudges go nowhere here (``Task.delay`` and ``send_task`` are patched out): the broker and
the workers are not what is measured.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from unittest import mock

from django.conf import settings
from django.db import connection

from bench.core import Benchmark, Context, Figure, interleave
from orchestration.models import PRIORITY_RANK, Priority, WorkItem
from orchestration.services.dispatch import dispatch_claim_one
from orchestration.services.work_items import work_item_submit


def seed(n: int) -> None:
    WorkItem.objects.all().delete()
    WorkItem.objects.bulk_create(
        WorkItem(
            repo=f"acme/r{i % 20}",
            branch=f"b{i}",
            spec="# x",
            priority=Priority.MEDIUM,
            priority_rank=PRIORITY_RANK[Priority.MEDIUM],
        )
        for i in range(n)
    )


def drain(claimers: int, use_gate: bool) -> float:
    """Seconds for ``claimers`` threads to claim every queued item."""
    barrier = threading.Barrier(claimers)

    def loop() -> None:
        barrier.wait()
        try:
            while dispatch_claim_one(use_gate=use_gate) is not None:
                pass
        finally:
            connection.close()

    threads = [threading.Thread(target=loop) for _ in range(claimers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Nudges go nowhere and the limits stay out of the way: the claim alone is measured."""
    with (
        mock.patch("celery.app.task.Task.delay", lambda *a, **kw: None),
        mock.patch("celery.Celery.send_task", lambda *a, **kw: None),
        mock.patch.multiple(
            settings,
            MAX_WORKERS=10**9,
            DAILY_BUDGET=10**9,
            COOLDOWN_SECONDS=0,
            MAX_QUEUED=10**9,
            MAX_QUEUED_PER_REPO=10**9,
        ),
    ):
        yield


def claims(ctx: Context) -> list[Figure]:
    n = ctx.size(500, 40)
    k = 8 if not ctx.smoke else 2
    with quiet():

        def submit_rate() -> float:
            WorkItem.objects.all().delete()
            count = n // 4
            started = time.perf_counter()
            for i in range(count):
                work_item_submit(repo=f"acme/r{i % 20}", spec=f"# Item {i}")
            return count / (time.perf_counter() - started)

        def claim_rate(claimers: int, gate: bool) -> float:
            seed(n)
            return n / drain(claimers, gate)

        one, submit = interleave(ctx, a=lambda: claim_rate(1, True), b=submit_rate)
        figures = [
            Figure(
                "claim, 1 claimer (gate on)",
                "items/s",
                one,
                submit,
                "work_item_submit, one connection",
                higher_is_better=True,
            )
        ]
        for gate in (True, False):
            many, single = interleave(
                ctx,
                a=functools.partial(claim_rate, k, gate),
                b=functools.partial(claim_rate, 1, gate),
            )
            figures.append(
                Figure(
                    f"claim, {k} claimers (gate {'on' if gate else 'off'})",
                    "items/s",
                    many,
                    single,
                    "the same claim, 1 claimer",
                    higher_is_better=True,
                )
            )
        ctx.reset_db()
        return figures


BENCHMARKS = [Benchmark("claims", "claim and submit throughput (no broker)", claims)]
