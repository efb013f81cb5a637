"""Supervision sweeps on real PostgreSQL: each leaves nothing stuck, leaked or doubled."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from orchestration.clock import db_now
from orchestration.errors import Fenced
from orchestration.models import (
    DailyUsage,
    FileLock,
    Worker,
    WorkerMetrics,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.services.dispatch import dispatch_claim_one
from orchestration.services.sweeps import (
    sweep_heartbeats,
    sweep_locks,
    sweep_retention,
    sweep_run,
    sweep_stuck,
)
from orchestration.services.workers import worker_fail, worker_heartbeat
from tests.factories import WorkItemFactory, running_attempt

pytestmark = pytest.mark.django_db(transaction=True)


def age(worker: Worker, **fields: dt.timedelta) -> None:
    """Move the worker's timestamps into the past by the given amounts."""
    now = db_now()
    Worker.objects.filter(pk=worker.pk).update(**{k: now - v for k, v in fields.items()})


def hold(worker: Worker, path: str, expires_in: dt.timedelta = dt.timedelta(minutes=5)) -> None:
    FileLock.objects.create(
        repo=worker.work_item.repo, path=path, worker=worker, expires_at=db_now() + expires_in
    )


def together(*fns: Callable[[], Any]) -> list[Any]:
    """Run the functions in threads released at the same instant (own DB connections)."""
    barrier = threading.Barrier(len(fns))
    results: list[Any] = []

    def run(fn: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(fn())
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_a_silent_worker_is_declared_lost_its_locks_freed_and_its_item_retried(
    settings: Any,
) -> None:
    settings.STALE_THRESHOLD, settings.HEARTBEAT_GRACE = 60, 10
    item, worker = running_attempt(use_gate=False)
    hold(worker, "a.py")
    age(worker, last_heartbeat=dt.timedelta(seconds=71))

    assert sweep_heartbeats() == {"lost": 1}

    worker.refresh_from_db()
    item.refresh_from_db()
    assert worker.status == WorkerStatus.LOST and worker.error_category == "HEARTBEAT_TIMEOUT"
    assert item.status == WorkItemStatus.QUEUED and item.retry_count == 1
    assert not FileLock.objects.exists()
    assert sweep_heartbeats() == {"lost": 0}  # a second run changes nothing


def test_a_worker_within_the_threshold_and_grace_is_left_alone(settings: Any) -> None:
    settings.STALE_THRESHOLD, settings.HEARTBEAT_GRACE = 60, 10
    _, worker = running_attempt(use_gate=False)
    age(worker, last_heartbeat=dt.timedelta(seconds=65))

    assert sweep_heartbeats() == {"lost": 0}
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.RUNNING


def test_heartbeat_racing_the_kill_sweep_never_ends_half_way(settings: Any) -> None:
    """100 trials: the heartbeat and the sweep start together. Either the heartbeat wins
    (accepted; the worker runs on with its lock and item) or the sweep wins (the heartbeat gets
    409; worker lost, lock freed, item queued) — never both, never a mix."""
    settings.STALE_THRESHOLD, settings.HEARTBEAT_GRACE = 1, 0
    outcomes = {"heartbeat": 0, "sweep": 0}
    for trial in range(100):
        item, worker = running_attempt(use_gate=False)
        hold(worker, f"f{trial}.py")
        age(worker, last_heartbeat=dt.timedelta(seconds=1, milliseconds=50))
        accepted: list[bool] = []

        def beat(worker_id: Any = worker.pk, accepted: list[bool] = accepted) -> None:
            try:
                worker_heartbeat(worker_id=worker_id, iteration=1)
                accepted.append(True)
            except Fenced:
                accepted.append(False)

        together(beat, sweep_heartbeats)
        worker.refresh_from_db()
        item.refresh_from_db()
        locked = FileLock.objects.filter(worker=worker).exists()
        if accepted == [True]:
            assert worker.status == WorkerStatus.RUNNING, f"trial {trial}: killed after ack"
            assert item.status == WorkItemStatus.IN_PROGRESS and locked
            outcomes["heartbeat"] += 1
        else:
            assert accepted == [False]
            assert worker.status == WorkerStatus.LOST, f"trial {trial}: refused but alive"
            assert item.status == WorkItemStatus.QUEUED and not locked
            outcomes["sweep"] += 1
        # Finish the trial's item so the next claim takes the next one.
        if worker.status == WorkerStatus.RUNNING:
            worker_fail(worker_id=worker.pk, error="trial over", category="PERMANENT")
        WorkItem.objects.filter(pk=item.pk).update(status=WorkItemStatus.CANCELLED)
    assert sum(outcomes.values()) == 100
    assert min(outcomes.values()) > 0, f"only one side ever won: {outcomes}"


def test_a_start_that_never_came_up_is_retried_after_the_assigned_timeout(
    settings: Any,
) -> None:
    settings.ASSIGNED_TIMEOUT = 60
    item = WorkItemFactory.create()
    worker = Worker.objects.get(pk=dispatch_claim_one(use_gate=False) or "")
    age(worker, last_heartbeat=dt.timedelta(seconds=61))

    assert sweep_stuck()["start_timeout"] == 1

    item.refresh_from_db()
    worker.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED
    assert worker.status == WorkerStatus.LOST and worker.error_category == "START_TIMEOUT"


def test_alive_but_making_no_progress_is_treated_as_stuck(settings: Any) -> None:
    settings.PROGRESS_TIMEOUT = 120
    item, worker = running_attempt(use_gate=False)
    age(worker, last_progress_at=dt.timedelta(seconds=121))  # heartbeats still arrive
    worker_heartbeat(worker_id=worker.pk, iteration=0)  # alive, but nothing rises

    assert sweep_stuck()["no_progress"] == 1

    worker.refresh_from_db()
    item.refresh_from_db()
    assert worker.status == WorkerStatus.STUCK and worker.error_category == "NO_PROGRESS"
    assert item.status != WorkItemStatus.IN_PROGRESS


def test_progress_keeps_a_slow_worker_alive(settings: Any) -> None:
    settings.PROGRESS_TIMEOUT = 120
    _, worker = running_attempt(use_gate=False)
    age(worker, last_progress_at=dt.timedelta(seconds=121))
    worker_heartbeat(worker_id=worker.pk, iteration=5)  # the iteration rose: progress

    assert sweep_stuck()["no_progress"] == 0


def test_an_item_left_in_progress_without_a_live_attempt_is_recovered() -> None:
    item, worker = running_attempt(use_gate=False)
    # The bookkeeping broke: the attempt ended but the item still says in_progress.
    Worker.objects.filter(pk=worker.pk).update(status=WorkerStatus.FAILED)
    WorkItem.objects.filter(pk=item.pk).update(updated_at=db_now() - dt.timedelta(minutes=5))

    assert sweep_stuck()["recovered"] == 1

    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED and item.worker_id is None
    assert WorkItemEvent.objects.filter(work_item=item, kind="recovered").count() == 1
    assert sweep_stuck()["recovered"] == 0


def test_recovery_leaves_alone_an_item_another_process_still_owns() -> None:
    owned, _ = running_attempt(
        use_gate=False
    )  # a live attempt: its process owns it, however old the row
    WorkItem.objects.filter(pk=owned.pk).update(updated_at=db_now() - dt.timedelta(minutes=5))
    fresh, fresh_worker = running_attempt(
        use_gate=False
    )  # no live attempt, but it changed moments ago
    Worker.objects.filter(pk=fresh_worker.pk).update(status=WorkerStatus.FAILED)

    assert sweep_stuck()["recovered"] == 0

    assert WorkItem.objects.get(pk=owned.pk).status == WorkItemStatus.IN_PROGRESS
    assert WorkItem.objects.get(pk=fresh.pk).status == WorkItemStatus.IN_PROGRESS
    assert not WorkItemEvent.objects.filter(kind="recovered").exists()


def test_expired_leases_and_leases_of_finished_workers_are_deleted() -> None:
    _, alive = running_attempt(use_gate=False)
    _, gone = running_attempt(use_gate=False)
    hold(alive, "fresh.py")
    hold(alive, "expired.py", expires_in=dt.timedelta(seconds=-1))
    hold(gone, "orphan.py")
    Worker.objects.filter(pk=gone.pk).update(status=WorkerStatus.KILLED)

    assert sweep_locks() == {"deleted": 2}
    assert list(FileLock.objects.values_list("path", flat=True)) == ["fresh.py"]


def test_crash_loops_are_quarantined_instead_of_retried_forever(settings: Any) -> None:
    settings.QUARANTINE_AFTER, settings.MAX_RETRIES = 3, 10
    item = WorkItemFactory.create()
    for _ in range(3):
        WorkItem.objects.filter(pk=item.pk).update(next_retry_at=None)
        worker_id = dispatch_claim_one(use_gate=False)
        assert worker_id is not None
        worker_fail(worker_id=worker_id, error="OOM", category="RESOURCE_ERROR")

    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED
    assert item.error_category == "QUARANTINED" and "quarantined" in item.error
    assert item.retry_count == 2  # two retries, then the third crash quarantined it


def test_agent_failures_do_not_count_towards_quarantine(settings: Any) -> None:
    settings.QUARANTINE_AFTER, settings.MAX_RETRIES = 2, 10
    item = WorkItemFactory.create()
    for _ in range(3):
        WorkItem.objects.filter(pk=item.pk).update(next_retry_at=None)
        worker_id = dispatch_claim_one(use_gate=False)
        assert worker_id is not None
        worker_fail(worker_id=worker_id, error="x", category="AGENT_ERROR")
    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED and item.retry_count == 3


def test_retention_purges_old_history_in_batches_and_keeps_the_rest(settings: Any) -> None:
    settings.RETENTION_DAYS, settings.LOG_RETENTION_DAYS = 30, 7
    old = WorkItemFactory.create_batch(3, status=WorkItemStatus.COMPLETED)
    recent = WorkItemFactory.create(status=WorkItemStatus.COMPLETED)
    queued_old = WorkItemFactory.create()
    WorkItem.objects.filter(pk__in=[i.pk for i in [*old, queued_old]]).update(
        updated_at=db_now() - dt.timedelta(days=31)
    )
    _, worker = running_attempt(queued_old, use_gate=False)  # the oldest queued is claimed
    Worker.objects.filter(pk=worker.pk).update(
        status=WorkerStatus.COMPLETED, log_tail="lines", completed_at=db_now() - dt.timedelta(8)
    )
    DailyUsage.objects.create(date=dt.date(2020, 1, 1), spawns=3)

    counts = sweep_retention()

    assert counts == {"items": 3, "logs": 1, "usage": 1, "deliveries": 0, "learnings": 0}
    assert set(WorkItem.objects.values_list("pk", flat=True)) >= {recent.pk, queued_old.pk}
    assert not WorkItem.objects.filter(pk__in=[i.pk for i in old]).exists()
    assert sweep_retention() == {
        "items": 0,
        "logs": 0,
        "usage": 0,
        "deliveries": 0,
        "learnings": 0,
    }


def test_retention_takes_old_items_events_attempts_and_metrics_in_batches(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestration.services import sweeps

    monkeypatch.setattr(sweeps, "BATCH", 2)
    settings.RETENTION_DAYS, settings.MAX_RETRIES = 30, 0  # each attempt fails its item
    old: list[WorkItem] = []
    kept: list[WorkItem] = []
    for n in range(7):
        item, worker = running_attempt(use_gate=False)
        worker_fail(worker_id=worker.pk, error="boom", category="TEST")
        WorkerMetrics.objects.create(worker=worker, work_item=item, tokens_in=n)
        (old if n < 5 else kept).append(item)
    WorkItem.objects.filter(pk__in=[i.pk for i in old]).update(
        updated_at=db_now() - dt.timedelta(days=31)
    )

    assert sweep_retention()["items"] == 5  # three batches of at most two

    assert set(WorkItem.objects.values_list("pk", flat=True)) == {i.pk for i in kept}
    for model in (Worker, WorkItemEvent, WorkerMetrics):
        left = set(model.objects.values_list("work_item_id", flat=True))
        assert left == {i.pk for i in kept}, model.__name__


def test_beat_skips_a_sweep_another_process_is_running_and_runs_it_once_free() -> None:
    from orchestration import tasks
    from orchestration.clock import advisory_try_lock

    held, release = threading.Event(), threading.Event()

    def other_process() -> None:
        try:
            with advisory_try_lock("whim.sweep.locks") as mine:
                assert mine
                held.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=other_process)
    holder.start()
    try:
        assert held.wait(10)
        assert tasks.sweep.run("locks") == {}  # beat's copy: skipped, not queued behind it
        assert set(tasks.sweep.run("all")) == {
            "heartbeats",
            "stuck",
            "containers",
            "nodes",
            "retention",
            "github",  # intake's outbox
            "tallies",  # the page counts' deltas folded
            "beats",  # coalesced heartbeats written
        }
        assert set(sweep_run(name="locks")) == {"locks"}  # by hand: runs regardless
    finally:
        release.set()
        holder.join()

    assert set(tasks.sweep.run("locks")) == {"locks"}


def test_sweeps_run_by_name_or_all() -> None:
    result = sweep_run(name="all")
    assert set(result) == {
        "heartbeats",
        "stuck",
        "locks",
        "containers",
        "nodes",
        "retention",
        "github",
        "tallies",
        "beats",
    }


def test_two_sweeps_at_once_end_a_stale_worker_exactly_once(settings: Any) -> None:
    settings.STALE_THRESHOLD, settings.HEARTBEAT_GRACE = 1, 0
    item, worker = running_attempt(use_gate=False)
    age(worker, last_heartbeat=dt.timedelta(seconds=5))

    results = together(sweep_heartbeats, sweep_heartbeats)

    assert sorted(r["lost"] for r in results) == [0, 1]
    assert WorkItemEvent.objects.filter(work_item=item, kind="retry_scheduled").count() == 1


def test_a_requeue_by_hand_clears_the_quarantine_count(settings: Any) -> None:
    from orchestration.services.work_items import work_item_requeue

    settings.QUARANTINE_AFTER, settings.MAX_RETRIES = 2, 10
    item = WorkItemFactory.create()

    def crash() -> None:
        WorkItem.objects.filter(pk=item.pk).update(next_retry_at=None)
        worker_id = dispatch_claim_one(use_gate=False)
        assert worker_id is not None
        worker_fail(worker_id=worker_id, error="OOM", category="RESOURCE_ERROR")

    crash()
    crash()
    item.refresh_from_db()
    assert item.error_category == "QUARANTINED"

    work_item_requeue(work_item_id=item.pk, actor="ops")
    crash()  # one new infrastructure failure after the requeue: retried, not quarantined
    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED and item.error_category == "RESOURCE_ERROR"
