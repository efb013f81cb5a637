"""The state machine, services called directly on PostgreSQL: killing an attempt.

A kill fails the item with the reason and stops the container; killing again is a no-op, and a
worker that already ended is an invalid state, not fenced.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

from orchestration.errors import Fenced, InvalidState
from orchestration.models import FileLock, WorkerStatus, WorkItemEvent, WorkItemStatus
from orchestration.services.workers import Completion, worker_complete, worker_fail, worker_kill
from tests.factories import running_attempt
from tests.transitions_support import events_of, lock, refreshed

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


# --- kill ----------------------------------------------------------------------------------


def test_kill_fails_the_item_with_the_reason_and_stops_the_container(
    stop_delay: mock.MagicMock, django_capture_on_commit_callbacks: Any
) -> None:
    item, worker = running_attempt()
    lock(worker, "a.py")

    with django_capture_on_commit_callbacks(execute=True):
        assert worker_kill(worker_id=worker.pk, reason="runaway", actor="api-key:ops") is True

    refreshed(item, worker)
    assert worker.status == WorkerStatus.KILLED
    assert worker.error_category == "KILLED"
    assert item.status == WorkItemStatus.FAILED  # no retry, even with retries left
    assert item.retry_count == 0
    assert item.error == "killed: runaway"
    assert not FileLock.objects.exists()
    assert events_of(item)[-1] == ("failed", "in_progress", "failed")
    assert WorkItemEvent.objects.filter(work_item=item).last().actor == "api-key:ops"  # type: ignore[union-attr]
    stop_delay.assert_called_once_with(str(worker.pk))


def test_kill_without_a_reason_says_killed() -> None:
    item, worker = running_attempt()

    worker_kill(worker_id=worker.pk)

    item.refresh_from_db()
    assert item.error == "killed"


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
