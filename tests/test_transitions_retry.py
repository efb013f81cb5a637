"""The state machine, services called directly on PostgreSQL: an attempt that fails or is
stuck, and the retry with backoff (or the final failure) that follows.

A repeat is a no-op that reports False; a worker that is no longer the active attempt is
fenced (DESIGN.md §3).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from orchestration.clock import db_now
from orchestration.errors import Fenced
from orchestration.models import FileLock, Worker, WorkerStatus, WorkItem, WorkItemStatus
from orchestration.services.workers import Completion, worker_complete, worker_fail, worker_stuck
from tests.factories import WorkItemFactory, running_attempt
from tests.transitions_support import DELAYS, TOLERANCE, claim, events_of, lock, make_due, refreshed

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


# --- fail ----------------------------------------------------------------------------------


@pytest.mark.parametrize("retries_so_far", [0, 1, 2])
def test_fail_requeues_the_item_after_the_backoff_of_its_retry_count(retries_so_far: int) -> None:
    item = WorkItemFactory.create(retry_count=retries_so_far)
    item, worker = running_attempt(item)
    lock(worker, "src/a.py")

    before = db_now()
    assert worker_fail(worker_id=worker.pk, error="tests failed", category="TEST_FAILURE")
    after = db_now()

    refreshed(item, worker)
    delay = dt.timedelta(seconds=DELAYS[retries_so_far])
    assert item.next_retry_at is not None
    # The one clock (the database's): the backoff starts between our two readings of it.
    assert before + delay <= item.next_retry_at <= after + delay
    assert item.status == WorkItemStatus.QUEUED
    assert item.retry_count == retries_so_far + 1
    assert item.worker_id is None
    assert (item.error, item.error_category) == ("tests failed", "TEST_FAILURE")
    assert worker.status == WorkerStatus.FAILED
    assert (worker.error, worker.error_category) == ("tests failed", "TEST_FAILURE")
    assert worker.completed_at is not None
    assert not FileLock.objects.exists()
    assert events_of(item)[-1] == ("retry_scheduled", "in_progress", "queued")
    assert len(events_of(item)) == 3


def test_fail_of_an_assigned_attempt_requeues_it_too() -> None:
    item = WorkItemFactory.create()
    worker = claim(item)

    worker_fail(worker_id=worker.pk, error="no container", category="START_ERROR")

    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED
    assert events_of(item)[-1] == ("retry_scheduled", "assigned", "queued")


def test_fail_without_a_category_is_an_agent_error() -> None:
    item, worker = running_attempt()

    worker_fail(worker_id=worker.pk, error="", category="")

    refreshed(item, worker)
    assert (item.error, item.error_category) == ("failed", "AGENT_ERROR")
    assert worker.error_category == "AGENT_ERROR"


def test_a_retried_item_is_claimed_again_as_a_new_attempt() -> None:
    item, first = running_attempt()
    worker_fail(worker_id=first.pk, error="flaky")
    make_due(item)

    second = claim(item)

    item.refresh_from_db()
    assert second.pk != first.pk
    assert second.attempt == 2
    assert item.worker_id == second.pk
    # The last attempt's error goes with its category: no stale errorCategory on a new attempt.
    assert (item.error, item.error_category) == ("", "")


def test_the_item_fails_once_its_retries_are_exhausted(settings: Any) -> None:
    item = WorkItemFactory.create()
    attempts = []
    for _ in range(settings.MAX_RETRIES + 1):
        item, worker = running_attempt(item)
        attempts.append(worker.attempt)
        worker_fail(worker_id=worker.pk, error=f"attempt {worker.attempt} failed")
        item.refresh_from_db()
        if item.status == WorkItemStatus.QUEUED:
            make_due(item)

    assert attempts == [1, 2, 3, 4]
    assert item.status == WorkItemStatus.FAILED
    assert item.retry_count == settings.MAX_RETRIES
    assert item.next_retry_at is None
    assert item.completed_at is not None
    assert item.error == "attempt 4 failed"
    assert events_of(item)[-1] == ("failed", "in_progress", "failed")
    kinds = [kind for kind, _, _ in events_of(item)]
    assert kinds.count("retry_scheduled") == 3
    assert kinds.count("failed") == 1


def test_retries_past_the_listed_delays_wait_the_last_delay(settings: Any) -> None:
    settings.MAX_RETRIES = 10
    item, worker = running_attempt(WorkItemFactory.create(retry_count=7))

    before = db_now()
    worker_fail(worker_id=worker.pk, error="again")

    item.refresh_from_db()
    assert item.next_retry_at is not None
    wait = item.next_retry_at - before
    assert dt.timedelta(seconds=DELAYS[-1]) <= wait <= dt.timedelta(seconds=DELAYS[-1]) + TOLERANCE


@pytest.mark.parametrize("category", ["CONFIG_ERROR", "VALIDATION_ERROR", "PERMANENT"])
def test_a_permanent_category_fails_the_item_at_once(category: str) -> None:
    item, worker = running_attempt()

    worker_fail(worker_id=worker.pk, error="bad config", category=category)

    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED
    assert item.retry_count == 0
    assert item.next_retry_at is None
    assert item.error_category == category
    assert events_of(item)[-1] == ("failed", "in_progress", "failed")


def test_a_repeated_fail_is_a_no_op() -> None:
    item, worker = running_attempt()
    assert worker_fail(worker_id=worker.pk, error="first") is True
    item.refresh_from_db()
    before_events, before_retry = events_of(item), item.next_retry_at

    assert worker_fail(worker_id=worker.pk, error="second") is False

    item.refresh_from_db()
    assert events_of(item) == before_events
    assert item.retry_count == 1
    assert item.next_retry_at == before_retry
    assert item.error == "first"


def test_fail_after_complete_is_fenced() -> None:
    item, worker = running_attempt()
    worker_complete(worker_id=worker.pk, result=Completion())

    with pytest.raises(Fenced):
        worker_fail(worker_id=worker.pk, error="late")

    item.refresh_from_db()
    assert item.status == WorkItemStatus.COMPLETED
    assert item.error == ""


def test_a_stale_active_worker_failing_does_not_move_the_item() -> None:
    item, worker = running_attempt()
    # Something else (a sweep, an operator) already moved the item on without this attempt.
    later = db_now() + dt.timedelta(minutes=10)
    WorkItem.objects.filter(pk=item.pk).update(
        status=WorkItemStatus.QUEUED, worker=None, retry_count=1, next_retry_at=later, error="x"
    )
    before = events_of(item)

    assert worker_fail(worker_id=worker.pk, error="late failure") is True

    refreshed(item, worker)
    assert worker.status == WorkerStatus.FAILED
    assert item.status == WorkItemStatus.QUEUED
    assert (item.retry_count, item.next_retry_at, item.error) == (1, later, "x")
    # Its own ending is recorded, without moving the item.
    assert events_of(item) == [*before, ("attempt_failed", "queued", "queued")]


def test_a_superseded_worker_is_fenced_and_leaves_the_new_attempt_alone() -> None:
    item, first = running_attempt()
    worker_fail(worker_id=first.pk, error="flaky")
    make_due(item)
    item, second = running_attempt(item)

    with pytest.raises(Fenced):
        worker_complete(worker_id=first.pk, result=Completion(pr_number=1))
    with pytest.raises(Fenced):
        worker_stuck(worker_id=first.pk, reason="late")
    # A repeat of what already happened to it is fine (a 200 no-op at the edge).
    assert worker_fail(worker_id=first.pk, error="flaky") is False

    refreshed(item, second)
    assert item.status == WorkItemStatus.IN_PROGRESS
    assert item.worker_id == second.pk
    assert second.status == WorkerStatus.RUNNING


# --- stuck ---------------------------------------------------------------------------------


def test_stuck_requeues_the_item_with_backoff() -> None:
    item, worker = running_attempt()
    lock(worker, "README.md")

    before = db_now()
    assert worker_stuck(worker_id=worker.pk, reason="loops on the same test", attempts=3)

    refreshed(item, worker)
    assert worker.status == WorkerStatus.STUCK
    assert worker.error == "stuck: loops on the same test (after 3 attempts)"
    assert item.status == WorkItemStatus.QUEUED
    assert item.error_category == "STUCK"
    assert item.retry_count == 1
    assert item.next_retry_at is not None
    assert item.next_retry_at >= before + dt.timedelta(seconds=DELAYS[0])
    assert not FileLock.objects.exists()
    assert events_of(item)[-1] == ("retry_scheduled", "in_progress", "queued")


def test_stuck_on_the_last_retry_fails_the_item(settings: Any) -> None:
    item, worker = running_attempt(WorkItemFactory.create(retry_count=settings.MAX_RETRIES))

    worker_stuck(worker_id=worker.pk, reason="no idea")

    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED
    assert item.error == "stuck: no idea"
    assert events_of(item)[-1] == ("failed", "in_progress", "failed")


@pytest.mark.parametrize("retries_so_far", [0, 3])
def test_a_stuck_item_is_never_left_in_progress(retries_so_far: int) -> None:
    item, worker = running_attempt(WorkItemFactory.create(retry_count=retries_so_far))

    worker_stuck(worker_id=worker.pk, reason="r")

    item.refresh_from_db()
    assert item.status in (WorkItemStatus.QUEUED, WorkItemStatus.FAILED)
    assert not Worker.objects.filter(work_item=item, status__in=Worker.ACTIVE).exists()


def test_a_repeated_stuck_is_a_no_op() -> None:
    item, worker = running_attempt()
    worker_stuck(worker_id=worker.pk, reason="r")
    before = events_of(item)

    assert worker_stuck(worker_id=worker.pk, reason="r") is False

    item.refresh_from_db()
    assert events_of(item) == before
    assert item.retry_count == 1
