"""The state machine, services called directly on PostgreSQL: claiming an item, starting its
attempt, and the one active attempt an item may have.

Every transition is a conditional UPDATE plus exactly one event row (DESIGN.md §1); a repeat
is a no-op that reports False.
"""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from orchestration.clock import budget_date, db_now
from orchestration.models import DailyUsage, Worker, WorkerStatus, WorkItemEvent, WorkItemStatus
from orchestration.nudge import TaskName
from orchestration.services.dispatch import dispatch_claim_one, token_digest, worker_token
from orchestration.services.workers import worker_mark_started
from tests.factories import WorkerFactory, WorkItemFactory, running_attempt
from tests.helpers import task_mocks
from tests.transitions_support import claim, events_of, refreshed

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


# --- claim ---------------------------------------------------------------------------------


def test_a_claim_creates_a_starting_worker_and_assigns_the_item() -> None:
    item = WorkItemFactory.create()

    worker = claim(item)

    item.refresh_from_db()
    assert worker.status == WorkerStatus.STARTING
    assert worker.attempt == 1
    assert worker.token_hash == token_digest(worker_token(worker.pk))
    assert item.status == WorkItemStatus.ASSIGNED
    assert item.worker_id == worker.pk
    assert events_of(item) == [("claimed", "queued", "assigned")]
    assert WorkItemEvent.objects.get(work_item=item).worker_id == worker.pk
    assert DailyUsage.objects.get(date=budget_date(db_now())).spawns == 1


@pytest.mark.django_db(transaction=True)
def test_the_start_nudge_is_sent_only_after_the_claim_commits() -> None:
    item = WorkItemFactory.create()
    with task_mocks(TaskName.START_WORKER) as sent:
        delay = sent[TaskName.START_WORKER]
        with transaction.atomic():
            worker = claim(item)
            delay.assert_not_called()
        delay.assert_called_once_with(str(worker.pk))


@pytest.mark.django_db(transaction=True)
def test_a_claim_rolled_back_sends_no_nudge_and_leaves_the_item_queued() -> None:
    item = WorkItemFactory.create()
    with task_mocks(TaskName.START_WORKER) as sent:
        delay = sent[TaskName.START_WORKER]
        with pytest.raises(RuntimeError), transaction.atomic():
            claim(item)
            raise RuntimeError("the caller's transaction failed")
        delay.assert_not_called()
    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED
    assert not Worker.objects.exists()
    assert not WorkItemEvent.objects.exists()


def test_a_claim_with_nothing_queued_changes_nothing() -> None:
    WorkItemFactory.create(status=WorkItemStatus.COMPLETED)

    assert dispatch_claim_one() is None
    assert Worker.objects.count() == 0
    assert WorkItemEvent.objects.count() == 0
    assert DailyUsage.objects.count() == 0


# --- started -------------------------------------------------------------------------------


def test_mark_started_moves_the_worker_to_running_and_the_item_to_in_progress() -> None:
    item = WorkItemFactory.create()
    worker = claim(item)

    assert worker_mark_started(worker_id=worker.pk, container_id="abc123") is True

    refreshed(item, worker)
    assert worker.status == WorkerStatus.RUNNING
    assert worker.container_id == "abc123"
    assert worker.started_at is not None
    assert worker.last_progress_at is not None
    assert item.status == WorkItemStatus.IN_PROGRESS
    assert events_of(item) == [
        ("claimed", "queued", "assigned"),
        ("started", "assigned", "in_progress"),
    ]


def test_marking_a_worker_started_twice_is_a_no_op() -> None:
    item, worker = running_attempt()

    assert worker_mark_started(worker_id=worker.pk, container_id="other") is False

    worker.refresh_from_db()
    assert worker.container_id == f"c-{worker.pk}"
    assert [kind for kind, _, _ in events_of(item)].count("started") == 1


# --- the one-active-attempt constraint -----------------------------------------------------


def test_two_active_workers_for_one_item_are_impossible() -> None:
    first = WorkerFactory.create(status=WorkerStatus.RUNNING)

    with pytest.raises(IntegrityError), transaction.atomic():
        WorkerFactory.create(work_item=first.work_item, status=WorkerStatus.STARTING)

    assert Worker.objects.count() == 1


def test_a_new_attempt_is_allowed_once_the_last_one_ended() -> None:
    first = WorkerFactory.create(status=WorkerStatus.FAILED)

    second = WorkerFactory.create(work_item=first.work_item, status=WorkerStatus.STARTING)

    assert second.pk != first.pk
