"""The state machine, services called directly on PostgreSQL: an attempt that completes.

A completion records the pull request, the metrics and the review, frees the worker's locks and
writes one event; a repeat is a no-op, and a worker that is no longer the active attempt is
fenced (DESIGN.md §3).
"""

from __future__ import annotations

import pytest

from orchestration.errors import Fenced
from orchestration.models import (
    FileLock,
    Learning,
    WorkerMetrics,
    WorkerStatus,
    WorkItem,
    WorkItemStatus,
)
from orchestration.services.workers import (
    Completion,
    worker_complete,
    worker_fail,
    worker_heartbeat,
)
from reviews.models import PRReview
from tests.factories import WorkItemFactory, running_attempt
from tests.transitions_support import events_of, lock, refreshed

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


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
            learnings=[{"content": "run make lint first", "spec": item.spec}],
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
    assert [(x.repo, x.content, x.spec, x.work_item_id) for x in Learning.objects.all()] == [
        (item.repo, "run make lint first", item.spec, item.pk)
    ]
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
