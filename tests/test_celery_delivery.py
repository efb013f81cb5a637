"""Delivery with real Celery worker processes, real Redis and real PostgreSQL (no eager mode)."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from typing import Any

import pytest
from django.db import connection

from orchestration import tasks
from orchestration.models import Worker, WorkerStatus, WorkItem, WorkItemEvent, WorkItemStatus
from orchestration.services.work_items import work_item_submit
from tests.factories import WorkItemFactory
from tests.helpers import wait_for

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def all_done(n: int) -> bool:
    return WorkItem.objects.filter(status=WorkItemStatus.COMPLETED).count() == n


def assert_each_item_completed_exactly_once() -> None:
    completions = Counter(
        WorkItemEvent.objects.filter(kind="completed").values_list("work_item_id", flat=True)
    )
    starts = Counter(
        WorkItemEvent.objects.filter(kind="started").values_list("work_item_id", flat=True)
    )
    items = set(WorkItem.objects.values_list("pk", flat=True))
    assert set(completions) == items and set(completions.values()) == {1}
    assert set(starts) == items and set(starts.values()) == {1}
    done = Counter(
        Worker.objects.filter(status=WorkerStatus.COMPLETED).values_list("work_item_id", flat=True)
    )
    assert set(done.values()) == {1}
    assert not Worker.objects.filter(status__in=Worker.ACTIVE).exists()


def test_submitted_work_is_delivered_and_completed_by_a_real_worker(celery_workers: Any) -> None:
    workers = celery_workers()
    workers.start()
    item, _ = work_item_submit(repo="acme/widgets", spec="# Hello", metadata={"mockSeconds": 0.2})

    wait_for(lambda: all_done(1), timeout=60, what="the item to complete")

    item.refresh_from_db()
    assert item.completed_at is not None
    assert_each_item_completed_exactly_once()


def test_four_dispatchers_racing_never_exceed_three_active_workers(celery_workers: Any) -> None:
    workers = celery_workers(MAX_WORKERS="3")
    workers.start(concurrency=8)
    WorkItemFactory.create_batch(50, metadata={"mockSeconds": 0.3})
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            while not stop.is_set():
                peak = max(peak, Worker.objects.filter(status__in=Worker.ACTIVE).count())
                time.sleep(0.005)
        finally:
            connection.close()

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        deadline = time.monotonic() + 180
        while not all_done(50):
            assert time.monotonic() < deadline, "items were not all dispatched in time"
            for _ in range(4):  # four dispatchers at once, again and again
                tasks.dispatch.delay()
            time.sleep(0.1)
    finally:
        stop.set()
        sampler.join()

    assert 1 <= peak <= 3
    assert peak == 3, "capacity was never used fully: the race was not exercised"
    assert_each_item_completed_exactly_once()


def test_a_worker_killed_with_sigkill_right_after_claiming_loses_and_doubles_nothing(
    celery_workers: Any,
) -> None:
    # Starts take 6 s (start_worker sleeps before it asks the runtime), so the kill
    # lands after the claim committed and before any container start did.
    workers = celery_workers(
        START_RENUDGE_SECONDS="2", BROKER_VISIBILITY_TIMEOUT="5", LOOP_INTERVAL="1"
    )
    first = workers.start(concurrency=2)
    for n in range(3):
        work_item_submit(
            repo="acme/widgets",
            spec=f"# Task {n}",
            metadata={"mockSeconds": 0.2, "mockStartSeconds": 6},
        )
    wait_for(
        lambda: Worker.objects.filter(status=WorkerStatus.STARTING).exists(),
        timeout=30,
        what="a claim",
    )
    workers.kill9(first)
    assert not WorkItemEvent.objects.filter(kind="started").exists(), "killed too late"
    assert WorkItem.objects.filter(status=WorkItemStatus.ASSIGNED).exists()

    workers.start(concurrency=2, beat=True)  # recovery: redelivery and the dispatch tick

    wait_for(lambda: all_done(3), timeout=120, what="every item to complete after the kill")
    assert_each_item_completed_exactly_once()
    assert not WorkItem.objects.filter(status=WorkItemStatus.ASSIGNED).exists()


def test_sigterm_lets_a_worker_finish_the_start_in_hand_then_exit(celery_workers: Any) -> None:
    """A process manager's SIGTERM (deploy, scale down): Celery's warm shutdown finishes the
    start it is running, takes nothing new, and exits; the rest of the item runs elsewhere."""
    import signal

    workers = celery_workers(LOOP_INTERVAL="1", LOG_LEVEL="DEBUG")  # DEBUG: "received" lines
    first = workers.start(concurrency=1)
    log = workers.logs[0]
    item, _ = work_item_submit(
        repo="acme/widgets", spec="# Graceful", metadata={"mockSeconds": 0.2, "mockStartSeconds": 4}
    )
    wait_for(
        # The banner lists the task name too: only its "received" line counts.
        lambda: re.search(rb"orchestration\.start_worker\[[0-9a-f-]+\] received", log.read_bytes()),
        timeout=30,
        what="the start task in hand",
    )
    assert not WorkItemEvent.objects.filter(kind="started").exists(), "started too soon"

    first.send_signal(signal.SIGTERM)

    assert first.wait(timeout=60) == 0
    assert b"Warm shutdown" in log.read_bytes()
    # The start in hand finished before the exit: one container start, recorded once.
    assert WorkItemEvent.objects.filter(work_item=item, kind="started").count() == 1
    workers.start(concurrency=2, beat=True)
    wait_for(lambda: all_done(1), timeout=60, what="the item on the next worker")
    assert_each_item_completed_exactly_once()
