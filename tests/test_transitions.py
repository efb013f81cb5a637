"""The state machine, one transition at a time: services called directly on PostgreSQL.

Every transition is a conditional UPDATE plus exactly one event row (DESIGN.md §1); a repeat
is a no-op that reports False; a worker that is no longer the active attempt is fenced (§3).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from unittest import mock
from uuid import UUID

import pytest
from django.db import IntegrityError, transaction

from orchestration.clock import budget_date, db_now
from orchestration.errors import Fenced, InvalidState
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
from orchestration.nudge import TaskName
from orchestration.services.dispatch import dispatch_claim_one, token_digest, worker_token
from orchestration.services.work_items import (
    work_item_cancel,
    work_item_generate_spec,
    work_item_requeue,
    work_item_submit,
)
from orchestration.services.workers import (
    Completion,
    worker_complete,
    worker_fail,
    worker_heartbeat,
    worker_kill,
    worker_mark_started,
    worker_stuck,
)
from reviews.models import PRReview
from tests.conftest import task_mocks
from tests.factories import WorkerFactory, WorkItemFactory, running_attempt

pytestmark = pytest.mark.django_db

DELAYS = [60, 300, 1800]
TOLERANCE = dt.timedelta(seconds=2)


@pytest.fixture(autouse=True)
def _retry_policy(settings: Any) -> None:
    settings.MAX_RETRIES = 3
    settings.RETRY_DELAYS = list(DELAYS)


@pytest.fixture
def stop_delay() -> Iterator[mock.MagicMock]:
    """Record "stop this container" nudges instead of sending them to a broker."""
    with task_mocks(TaskName.STOP_CONTAINER) as sent:
        yield sent[TaskName.STOP_CONTAINER]


# --- helpers -------------------------------------------------------------------------------


def events_of(item: WorkItem) -> list[tuple[str, str, str]]:
    return list(
        WorkItemEvent.objects.filter(work_item=item).values_list("kind", "from_status", "to_status")
    )


def claim(item: WorkItem) -> Worker:
    """Claim ``item`` through the gated claim; it must be the only claimable item."""
    worker_id = dispatch_claim_one()
    assert worker_id is not None, "the claim found nothing to claim"
    worker = Worker.objects.get(pk=worker_id)
    assert worker.work_item_id == item.pk
    return worker


def lock(worker: Worker, *paths: str, repo: str = "") -> None:
    for path in paths:
        FileLock.objects.create(
            repo=repo or worker.work_item.repo,
            path=path,
            worker=worker,
            expires_at=db_now() + dt.timedelta(minutes=5),
        )


def make_due(item: WorkItem) -> None:
    """Skip the backoff wait so the next claim can take the item."""
    WorkItem.objects.filter(pk=item.pk).update(next_retry_at=db_now() - dt.timedelta(seconds=1))


def refreshed(*rows: Any) -> None:
    for row in rows:
        row.refresh_from_db()


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


# --- complete ------------------------------------------------------------------------------


def test_complete_records_the_pull_request_and_the_metrics() -> None:
    item, worker = running_attempt()
    metrics = {
        "tokensIn": 1200,
        "tokensOut": 340,
        "duration": 65_000,
        "filesModified": 4,
        "testsRun": 10,
        "testsPassed": 9,
        "testsFailed": 1,
        "testStatus": "failed",
    }

    done = worker_complete(
        worker_id=worker.pk,
        result=Completion(
            pr_url="https://github.com/acme/repo/pull/7",
            pr_number=7,
            verification_passed=True,
            metrics=metrics,
            learnings=["run make lint first"],
        ),
    )

    assert done is True
    refreshed(item, worker)
    assert worker.status == WorkerStatus.COMPLETED
    assert worker.completed_at is not None
    assert item.status == WorkItemStatus.COMPLETED
    assert item.pr_url == "https://github.com/acme/repo/pull/7"
    assert item.pr_number == 7
    assert item.verification_passed is True
    assert item.completed_at is not None
    row = WorkerMetrics.objects.get(worker=worker)
    assert row.work_item_id == item.pk
    assert (row.tokens_in, row.tokens_out, row.duration_ms) == (1200, 340, 65_000)
    assert (row.files_modified, row.tests_run, row.tests_passed, row.tests_failed) == (4, 10, 9, 1)
    assert row.test_status == "failed"
    assert row.learnings == ["run make lint first"]
    assert events_of(item)[-1] == ("completed", "in_progress", "completed")
    assert len(events_of(item)) == 3


def test_complete_without_metrics_keeps_the_tokens_the_heartbeats_reported() -> None:
    _item, worker = running_attempt()
    worker_heartbeat(worker_id=worker.pk, iteration=3, tokens_in=500, tokens_out=50)

    worker_complete(worker_id=worker.pk, result=Completion())

    row = WorkerMetrics.objects.get(worker=worker)
    assert (row.tokens_in, row.tokens_out) == (500, 50)


def test_complete_releases_the_workers_locks_and_only_those() -> None:
    item, worker = running_attempt()
    _other_item, other = running_attempt(WorkItemFactory.create(repo=item.repo))
    lock(worker, "src/a.py", "src/b.py")
    lock(other, "src/c.py")

    worker_complete(worker_id=worker.pk, result=Completion())

    assert not FileLock.objects.filter(worker=worker).exists()
    assert list(FileLock.objects.values_list("path", flat=True)) == ["src/c.py"]


def test_complete_with_a_review_stores_a_pr_review() -> None:
    item, worker = running_attempt()
    findings = [{"file": "a.py", "line": 3, "severity": "minor", "message": "typo"}]

    worker_complete(
        worker_id=worker.pk,
        result=Completion(pr_number=12, review={"modelUsed": "claude-test", "findings": findings}),
    )

    review = PRReview.objects.get()
    assert review.work_item_id == item.pk
    assert review.repo == item.repo
    assert review.pr_number == 12
    assert review.model_used == "claude-test"
    assert review.findings == findings


def test_complete_without_a_review_stores_none() -> None:
    _, worker = running_attempt()

    worker_complete(worker_id=worker.pk, result=Completion(pr_number=12))

    assert not PRReview.objects.exists()


def test_a_repeated_complete_is_a_no_op_that_writes_no_second_event() -> None:
    item, worker = running_attempt()
    result = Completion(pr_url="https://github.com/acme/r/pull/1", pr_number=1, review={})
    assert worker_complete(worker_id=worker.pk, result=result) is True
    before = events_of(item)

    again = worker_complete(
        worker_id=worker.pk,
        result=Completion(
            pr_url="https://github.com/acme/r/pull/2",
            pr_number=2,
            review={"modelUsed": "m", "findings": []},
        ),
    )

    assert again is False
    assert events_of(item) == before
    item.refresh_from_db()
    assert (item.pr_url, item.pr_number) == ("https://github.com/acme/r/pull/1", 1)
    assert WorkerMetrics.objects.count() == 1
    assert not PRReview.objects.exists()


def test_complete_after_fail_is_fenced_with_a_409() -> None:
    item, worker = running_attempt()
    worker_fail(worker_id=worker.pk, error="boom")
    item.refresh_from_db()
    before = events_of(item)

    with pytest.raises(Fenced) as exc:
        worker_complete(worker_id=worker.pk, result=Completion(pr_number=3))

    assert exc.value.status == 409
    assert exc.value.code == "INVALID_STATE"
    assert events_of(item) == before
    after = WorkItem.objects.get(pk=item.pk)
    assert after.status == WorkItemStatus.QUEUED
    assert after.pr_number is None
    assert not WorkerMetrics.objects.exists()


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
        worker_kill(worker_id=worker.pk)
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


# --- spec generation -----------------------------------------------------------------------


def test_generate_spec_queues_a_description_only_item_with_a_spec_and_a_derived_branch() -> None:
    item, created = work_item_submit(
        repo="acme/widgets", description="Add dark mode\n\nThe settings page needs a toggle."
    )
    assert created
    assert item.status == WorkItemStatus.GENERATING
    assert item.branch == ""  # derived once the spec exists

    assert work_item_generate_spec(work_item_id=item.pk) is True

    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED
    assert item.spec.startswith("# Add dark mode\n")
    assert "The settings page needs a toggle." in item.spec
    assert item.branch == "add-dark-mode"
    assert events_of(item) == [
        ("submitted", "", "generating"),
        ("spec_generated", "generating", "queued"),
    ]


def test_generate_spec_keeps_a_branch_given_at_submit() -> None:
    item, _ = work_item_submit(repo="acme/widgets", description="Fix it", branch="fix/login")

    work_item_generate_spec(work_item_id=item.pk)

    item.refresh_from_db()
    assert item.branch == "fix/login"


def test_generate_spec_is_idempotent() -> None:
    item, _ = work_item_submit(repo="acme/widgets", description="Add dark mode")
    work_item_generate_spec(work_item_id=item.pk)
    item.refresh_from_db()
    spec, branch = item.spec, item.branch

    assert work_item_generate_spec(work_item_id=item.pk) is False

    item.refresh_from_db()
    assert (item.status, item.spec, item.branch) == (WorkItemStatus.QUEUED, spec, branch)
    assert [kind for kind, _, _ in events_of(item)].count("spec_generated") == 1


def test_generate_spec_of_a_missing_item_is_a_quiet_no_op() -> None:
    assert work_item_generate_spec(work_item_id=UUID(int=1)) is False


# --- heartbeat -----------------------------------------------------------------------------


def test_a_heartbeat_records_liveness_iteration_and_tokens() -> None:
    item, worker = running_attempt()
    started_beat = worker.last_heartbeat

    worker_heartbeat(worker_id=worker.pk, iteration=2, tokens_in=300, tokens_out=40)

    refreshed(item, worker)
    assert started_beat is not None and worker.last_heartbeat is not None
    assert worker.last_heartbeat > started_beat
    assert worker.last_progress_at == worker.last_heartbeat
    assert (worker.iteration, worker.tokens_in, worker.tokens_out) == (2, 300, 40)
    assert item.iteration == 2


def test_a_heartbeat_without_progress_moves_only_the_liveness_time() -> None:
    _item, worker = running_attempt()
    worker_heartbeat(worker_id=worker.pk, iteration=2, tokens_in=300, tokens_out=40)
    worker.refresh_from_db()
    progress, beat = worker.last_progress_at, worker.last_heartbeat

    worker_heartbeat(worker_id=worker.pk, iteration=2, tokens_in=300, tokens_out=40)

    worker.refresh_from_db()
    assert beat is not None and worker.last_heartbeat is not None
    assert worker.last_heartbeat > beat
    assert worker.last_progress_at == progress


@pytest.mark.parametrize(
    "beat",
    [{"iteration": 3}, {"iteration": 2, "tokens_in": 301}, {"iteration": 2, "tokens_out": 41}],
)
def test_any_rising_count_is_progress(beat: dict[str, int]) -> None:
    _, worker = running_attempt()
    worker_heartbeat(worker_id=worker.pk, iteration=2, tokens_in=300, tokens_out=40)
    worker.refresh_from_db()
    progress = worker.last_progress_at

    worker_heartbeat(worker_id=worker.pk, **beat)

    worker.refresh_from_db()
    assert progress is not None and worker.last_progress_at is not None
    assert worker.last_progress_at > progress


def test_a_late_heartbeat_with_lower_counts_never_lowers_them() -> None:
    item, worker = running_attempt()
    worker_heartbeat(worker_id=worker.pk, iteration=5, tokens_in=500, tokens_out=50)
    worker.refresh_from_db()
    progress = worker.last_progress_at

    worker_heartbeat(worker_id=worker.pk, iteration=3, tokens_in=100, tokens_out=10)

    refreshed(item, worker)
    assert (worker.iteration, worker.tokens_in, worker.tokens_out) == (5, 500, 50)
    assert item.iteration == 5
    assert worker.last_progress_at == progress


def test_heartbeats_charge_the_days_iterations_by_how_far_they_rose() -> None:
    _, worker = running_attempt()
    today = budget_date(db_now())

    worker_heartbeat(worker_id=worker.pk, iteration=2)
    worker_heartbeat(worker_id=worker.pk, iteration=5)
    worker_heartbeat(worker_id=worker.pk, iteration=5)
    worker_heartbeat(worker_id=worker.pk, iteration=4)

    assert DailyUsage.objects.get(date=today).iterations == 5


def test_a_heartbeat_writes_no_event() -> None:
    item, worker = running_attempt()
    before = events_of(item)

    worker_heartbeat(worker_id=worker.pk, iteration=1)

    assert events_of(item) == before


@pytest.mark.parametrize("ending", ["fail", "kill", "stuck", "complete"])
def test_a_heartbeat_from_a_worker_that_is_no_longer_active_is_fenced(ending: str) -> None:
    _item, worker = running_attempt()
    {
        "fail": lambda: worker_fail(worker_id=worker.pk, error="x"),
        "kill": lambda: worker_kill(worker_id=worker.pk),
        "stuck": lambda: worker_stuck(worker_id=worker.pk, reason="x"),
        "complete": lambda: worker_complete(worker_id=worker.pk, result=Completion()),
    }[ending]()
    worker.refresh_from_db()
    beat = worker.last_heartbeat

    with pytest.raises(Fenced):
        worker_heartbeat(worker_id=worker.pk, iteration=9, tokens_in=1)

    worker.refresh_from_db()
    assert worker.last_heartbeat == beat
    assert worker.iteration == 0
    assert not DailyUsage.objects.filter(iterations__gt=0).exists()


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
