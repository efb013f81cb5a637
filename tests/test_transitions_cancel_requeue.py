"""The state machine, services called directly on PostgreSQL: a client cancelling or requeueing
an item.

Cancel kills a running item's worker, frees its locks and stops its container; requeue puts a
finished item back in the queue. A repeat reports False; a wrong state is InvalidState.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from unittest import mock

import pytest

from orchestration.clock import db_now
from orchestration.errors import Fenced, InvalidState
from orchestration.models import FileLock, WorkerStatus, WorkItem, WorkItemStatus
from orchestration.services.dispatch import dispatch_claim_one
from orchestration.services.work_items import (
    work_item_cancel,
    work_item_generate_spec,
    work_item_requeue,
)
from orchestration.services.workers import (
    Completion,
    worker_complete,
    worker_heartbeat,
    worker_kill,
    worker_mark_started,
)
from tests.factories import WorkItemFactory, running_attempt
from tests.transitions_support import claim, events_of, lock, refreshed

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


# --- cancel --------------------------------------------------------------------------------


def test_cancel_of_a_queued_item_cancels_it() -> None:
    later = db_now() + dt.timedelta(minutes=5)
    item = WorkItemFactory.create(
        retry_count=1, next_retry_at=later, error="flaky", error_category="AGENT_ERROR"
    )

    assert work_item_cancel(work_item_id=item.pk, actor="cli", reason="not needed") is True

    item.refresh_from_db()
    assert item.status == WorkItemStatus.CANCELLED
    assert item.completed_at is not None
    assert item.next_retry_at is None
    assert (item.error, item.error_category) == ("not needed", "CANCELLED")
    assert events_of(item) == [("cancelled", "queued", "cancelled")]
    assert dispatch_claim_one() is None


def test_cancel_of_a_generating_item_cancels_it() -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.GENERATING, spec="")

    assert work_item_cancel(work_item_id=item.pk) is True

    item.refresh_from_db()
    assert item.status == WorkItemStatus.CANCELLED
    assert work_item_generate_spec(work_item_id=item.pk) is False


def test_cancel_of_an_assigned_item_kills_its_starting_worker() -> None:
    item = WorkItemFactory.create()
    worker = claim(item)
    lock(worker, "x.py")

    assert work_item_cancel(work_item_id=item.pk) is True

    refreshed(item, worker)
    assert item.status == WorkItemStatus.CANCELLED
    assert worker.status == WorkerStatus.KILLED
    assert not FileLock.objects.exists()
    assert events_of(item)[-1] == ("cancelled", "assigned", "cancelled")
    # The late start finds it killed and does not start it.
    assert worker_mark_started(worker_id=worker.pk, container_id="late") is False


def test_cancel_of_a_running_item_kills_its_worker_frees_its_locks_and_stops_the_container(
    stop_delay: mock.MagicMock, django_capture_on_commit_callbacks: Any
) -> None:
    item, worker = running_attempt()
    _other_item, other = running_attempt(WorkItemFactory.create(repo=item.repo))
    lock(worker, "a.py", "b.py")
    lock(other, "c.py")

    with django_capture_on_commit_callbacks(execute=True):
        assert work_item_cancel(work_item_id=item.pk, reason="changed my mind") is True

    refreshed(item, worker, other)
    assert item.status == WorkItemStatus.CANCELLED
    assert worker.status == WorkerStatus.KILLED
    assert worker.completed_at is not None
    assert other.status == WorkerStatus.RUNNING
    assert list(FileLock.objects.values_list("path", flat=True)) == ["c.py"]
    assert events_of(item)[-1] == ("cancelled", "in_progress", "cancelled")
    stop_delay.assert_called_once_with(str(worker.pk))
    # The cancelled attempt's callbacks are now fenced off.
    with pytest.raises(Fenced):
        worker_complete(worker_id=worker.pk, result=Completion())
    with pytest.raises(Fenced):
        worker_heartbeat(worker_id=worker.pk, iteration=9)


def test_a_repeated_cancel_returns_false_without_error() -> None:
    item = WorkItemFactory.create()
    work_item_cancel(work_item_id=item.pk)

    assert work_item_cancel(work_item_id=item.pk) is False

    assert events_of(item) == [("cancelled", "queued", "cancelled")]


@pytest.mark.parametrize("status", [WorkItemStatus.COMPLETED, WorkItemStatus.FAILED])
def test_cancel_of_a_finished_item_is_invalid_state(status: str) -> None:
    item = WorkItemFactory.create(status=status)

    with pytest.raises(InvalidState):
        work_item_cancel(work_item_id=item.pk)

    item.refresh_from_db()
    assert item.status == status
    assert events_of(item) == []


# --- requeue -------------------------------------------------------------------------------


@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("status", [WorkItemStatus.FAILED, WorkItemStatus.CANCELLED])
def test_requeue_of_a_finished_item_queues_it_now(status: str, reset: bool) -> None:
    item = WorkItemFactory.create(retry_count=2)
    item, worker = running_attempt(item)
    if status == WorkItemStatus.FAILED:
        worker_kill(worker_id=worker.pk, retry=False)
    else:
        work_item_cancel(work_item_id=item.pk)
    before = len(events_of(item))

    assert work_item_requeue(work_item_id=item.pk, reset_retries=reset, actor="cli") is True

    result = WorkItem.objects.get(pk=item.pk)
    assert result.status == WorkItemStatus.QUEUED
    assert result.retry_count == (0 if reset else 2)
    assert result.next_retry_at is None
    assert result.completed_at is None
    assert result.worker_id is None
    assert events_of(item)[before:] == [("requeued", status, "queued")]
    assert claim(item).attempt == 2  # claimable at once


def test_requeue_of_a_queued_item_is_a_no_op() -> None:
    later = db_now() + dt.timedelta(minutes=5)
    item = WorkItemFactory.create(retry_count=1, next_retry_at=later)

    assert work_item_requeue(work_item_id=item.pk) is False

    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED
    assert (item.retry_count, item.next_retry_at) == (1, later)
    assert events_of(item) == []


@pytest.mark.parametrize("started", [False, True])
def test_requeue_of_an_active_item_is_invalid_state(started: bool) -> None:
    item = WorkItemFactory.create()
    worker = claim(item)
    if started:
        worker_mark_started(worker_id=worker.pk, container_id="c")
    item.refresh_from_db()
    before = (item.status, events_of(item))

    with pytest.raises(InvalidState):
        work_item_requeue(work_item_id=item.pk, reset_retries=True)

    item.refresh_from_db()
    assert (item.status, events_of(item)) == before
    assert item.worker_id == worker.pk
