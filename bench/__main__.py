"""Claim and submit throughput on real PostgreSQL, against a baseline measured in the same run.

Run with ``make bench`` (it starts PostgreSQL and Redis): a scratch database is created,
migrated, used and dropped; nothing touches the ``whim`` database.

Figures:
1. submit: ``work_item_submit`` calls per second (one connection) — the baseline for 2.
2. claim, 1 claimer: ``dispatch_claim_one`` per second over a queue of N items.
3. claim, K claimers: the same queue drained by K threads (own connections) at once; the
   speed-up over 2 shows what SKIP LOCKED buys (the gate row serialises the gated claim, so
   the ungated claim is measured too).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from unittest import mock

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whim.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# Its own scratch database, never the test suite's (test_whim) nor the real one.
os.environ["DATABASE_TEST_NAME"] = "whim_bench"
if not os.environ.get("DATABASE_URL"):
    sys.exit("bench: set DATABASE_URL (make bench does) — the embedded SQLite is not measured")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from orchestration.models import PRIORITY_RANK, Priority, WorkItem  # noqa: E402
from orchestration.services.dispatch import dispatch_claim_one  # noqa: E402
from orchestration.services.work_items import work_item_submit  # noqa: E402

N = int(os.environ.get("BENCH_ITEMS", "2000"))
K = int(os.environ.get("BENCH_CLAIMERS", "8"))


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


def timed(label: str, n: int, fn: Callable[[], float]) -> float:
    seconds = fn()
    rate = n / seconds
    print(f"{label:<44} {n:>6} in {seconds:7.2f} s = {rate:9.1f}/s")
    return rate


def main() -> None:
    # Limits out of the way: this measures the claim, not the gate's decisions.
    settings.MAX_WORKERS = 10**9
    settings.DAILY_BUDGET = 10**9
    settings.COOLDOWN_SECONDS = 0
    settings.MAX_QUEUED = settings.MAX_QUEUED_PER_REPO = 10**9
    # Nudges go nowhere: the broker and the workers are not what is measured here.
    mock.patch("celery.app.task.Task.delay", lambda *args, **kwargs: None).start()
    old_name = connection.settings_dict["NAME"]
    test_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    print(f"bench: scratch database {test_name}, {N} items, {K} claimers\n")
    try:

        def submit_all() -> float:
            WorkItem.objects.all().delete()
            started = time.perf_counter()
            for i in range(N // 4):
                work_item_submit(repo=f"acme/r{i % 20}", spec=f"# Item {i}")
            return time.perf_counter() - started

        submit_rate = timed("submit (baseline)", N // 4, submit_all)
        results = {}
        for gate in (True, False):
            for claimers in (1, K):
                seed(N)
                label = f"claim, {claimers} claimer(s), gate {'on' if gate else 'off'}"
                results[(gate, claimers)] = timed(label, N, partial(drain, claimers, gate))
        print()
        for gate in (True, False):
            one, many = results[(gate, 1)], results[(gate, K)]
            print(
                f"gate {'on ' if gate else 'off'}: {K} claimers vs 1 = x{many / one:.2f}; "
                f"1 claimer vs submit = x{one / submit_rate:.2f}"
            )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
