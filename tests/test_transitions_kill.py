"""The state machine, services called directly on PostgreSQL: killing an attempt.

A kill stops the container and retries the item with backoff (as the original Whim: a manual
kill is not the task's fault), or fails it with ``retry=False``; the reason is recorded
("Manual kill" when none is given). Killing again is a no-op, and a worker that already ended
is an invalid state, not fenced.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from unittest import mock

import pytest

from orchestration.clock import db_now
from orchestration.errors import Fenced, InvalidState
from orchestration.models import FileLock, WorkerStatus, WorkItemEvent, WorkItemStatus
from orchestration.services.workers import Completion, worker_complete, worker_fail, worker_kill
from tests.factories import WorkItemFactory, running_attempt
from tests.helpers import MAX_RETRIES
from tests.transitions_support import DELAYS, events_of, lock, refreshed

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


# --- kill ----------------------------------------------------------------------------------


def test_kill_retries_the_item_with_backoff_and_stops_the_container(
    stop_delay: mock.MagicMock, django_capture_on_commit_callbacks: Any
) -> None:
    item, worker = running_attempt()
    lock(worker, "a.py")

    before = db_now()
    with django_capture_on_commit_callbacks(execute=True):
        assert worker_kill(worker_id=worker.pk, reason="runaway", actor="api-key:ops") is True

    refreshed(item, worker)
    assert worker.status == WorkerStatus.KILLED
    assert worker.error_category == "KILLED"
    assert item.status == WorkItemStatus.QUEUED
    assert item.retry_count == 1
    assert item.next_retry_at is not None
    assert item.next_retry_at >= before + dt.timedelta(seconds=DELAYS[0])
    assert item.error == "killed: runaway"
    assert not FileLock.objects.exists()
    assert events_of(item)[-1] == ("retry_scheduled", "in_progress", "queued")
    assert WorkItemEvent.objects.filter(work_item=item).last().actor == "api-key:ops"  # type: ignore[union-attr]
    stop_delay.assert_called_once_with(str(worker.pk))


def test_kill_without_retry_fails_the_item_even_with_retries_left(
    stop_delay: mock.MagicMock, django_capture_on_commit_callbacks: Any
) -> None:
    item, worker = running_attempt()
    lock(worker, "a.py")

    with django_capture_on_commit_callbacks(execute=True):
        assert worker_kill(worker_id=worker.pk, reason="runaway", actor="api-key:ops", retry=False)

    refreshed(item, worker)
    assert worker.status == WorkerStatus.KILLED
    assert worker.error_category == "KILLED"
    assert item.status == WorkItemStatus.FAILED
    assert item.retry_count == 0
    assert item.error == "killed: runaway"
    assert not FileLock.objects.exists()
    assert events_of(item)[-1] == ("failed", "in_progress", "failed")
    assert WorkItemEvent.objects.filter(work_item=item).last().actor == "api-key:ops"  # type: ignore[union-attr]
    stop_delay.assert_called_once_with(str(worker.pk))


def test_kill_of_an_item_out_of_retries_fails_it() -> None:
    item = WorkItemFactory.create(retry_count=MAX_RETRIES)
    item, worker = running_attempt(item)

    worker_kill(worker_id=worker.pk, reason="runaway")

    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED
    assert item.error == "killed: runaway"


@pytest.mark.parametrize("reason", ["", "   "])
def test_kill_without_a_reason_records_manual_kill(reason: str) -> None:
    item, worker = running_attempt()

    worker_kill(worker_id=worker.pk, reason=reason)

    refreshed(item, worker)
    assert item.error == worker.error == "killed: Manual kill"


def test_killing_a_killed_worker_is_a_no_op(
    stop_delay: mock.MagicMock, django_capture_on_commit_callbacks: Any
) -> None:
    item, worker = running_attempt()
    worker_kill(worker_id=worker.pk, reason="first")
    before = events_of(item)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert worker_kill(worker_id=worker.pk, reason="second") is False

    item.refresh_from_db()
    assert events_of(item) == before
    assert item.error == "killed: first"
    assert callbacks == []


@pytest.mark.parametrize("ending", ["complete", "fail"])
def test_killing_a_finished_worker_is_invalid_state_not_fenced(ending: str) -> None:
    item, worker = running_attempt()
    if ending == "complete":
        worker_complete(worker_id=worker.pk, result=Completion())
    else:
        worker_fail(worker_id=worker.pk, error="x")
    item.refresh_from_db()
    before = (item.status, events_of(item))

    with pytest.raises(InvalidState) as exc:
        worker_kill(worker_id=worker.pk, reason="too late")

    assert not isinstance(exc.value, Fenced)
    assert exc.value.status == 400
    item.refresh_from_db()
    worker.refresh_from_db()
    assert (item.status, events_of(item)) == before
    assert worker.status != WorkerStatus.KILLED
