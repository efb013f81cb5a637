"""Dispatcher throughput with 1, 2 and 4 nodes (issue 13's capacity note, README "Running on
several hosts"), on real PostgreSQL in a scratch database, nudges going nowhere (the fake
runtime's cost is nil; what is measured is the claim: gate, node choice, Worker row).

    eval "$(scripts/services.sh)"; .venv/bin/python -m bench.nodes

BENCH_ITEMS (default 2000) items are claimed by BENCH_CLAIMERS (default 4) threads, each
claim picking a node with free capacity, as dispatch does.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from unittest import mock

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whim.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ["DATABASE_TEST_NAME"] = "whim_bench_nodes"
if not os.environ.get("DATABASE_URL"):
    sys.exit('bench: set DATABASE_URL (eval "$(scripts/services.sh)")')

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from orchestration.models import PRIORITY_RANK, Node, Priority, Worker, WorkItem  # noqa: E402
from orchestration.services.dispatch import dispatch_claim_one  # noqa: E402
from orchestration.services.nodes import node_register  # noqa: E402

N = int(os.environ.get("BENCH_ITEMS", "2000"))
K = int(os.environ.get("BENCH_CLAIMERS", "4"))


def seed(n: int, nodes: int) -> None:
    Worker.objects.all().delete()
    WorkItem.objects.all().delete()
    Node.objects.all().delete()
    for i in range(nodes):
        node_register(name=f"n{i}", runtime="fake", capacity=10**6, labels=[])
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


def drain(claimers: int) -> float:
    barrier = threading.Barrier(claimers)

    def loop() -> None:
        barrier.wait()
        try:
            while dispatch_claim_one() is not None:
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


def main() -> None:
    settings.MAX_WORKERS = 10**9
    settings.DAILY_BUDGET = 10**9
    settings.COOLDOWN_SECONDS = 0
    mock.patch("celery.app.task.Task.delay", lambda *a, **k: None).start()
    mock.patch("celery.app.task.Task.apply_async", lambda *a, **k: None).start()
    mock.patch("celery.Celery.send_task", lambda *a, **k: None).start()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        for nodes in (1, 2, 4):
            seed(N, nodes)
            seconds = drain(K)
            spread = sorted(Worker.objects.values_list("node_id", flat=True).distinct())
            print(
                f"{nodes} node(s), {K} claimers: {N} claims in {seconds:6.2f} s = "
                f"{N / seconds:7.1f}/s (on {', '.join(map(str, spread))})"
            )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
