"""The original Whim's clients work unchanged (issue 14 §2): its terminal client's
``dashboard`` and ``status`` and its worker read these routes and fields."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orchestration.models import Priority, WorkerStatus, WorkItem, WorkItemStatus, WorkItemType
from reviews.models import PRReview
from tests.callbacks_support import call
from tests.factories import WorkItemFactory, running_attempt, running_item
from tests.helpers import assert_error
from tests.test_github_webhook import SECRET, deliver, review_payload

pytestmark = pytest.mark.django_db


def _aged(item: WorkItem, minutes: int) -> WorkItem:
    WorkItem.objects.filter(pk=item.pk).update(
        created_at=item.created_at - dt.timedelta(minutes=minutes)
    )
    return item


# --- GET /api/queue: the original's default view ------------------------------------------


def test_the_bare_queue_lists_every_waiting_and_running_item_in_dispatch_order(
    api: Client,
) -> None:
    # More than one page's worth (50), so the newest 50 would miss the next up.
    oldest_low = _aged(WorkItemFactory.create(priority=Priority.LOW), 120)
    filler = [_aged(WorkItemFactory.create(), 60 - i) for i in range(55)]
    verification = _aged(
        WorkItemFactory.create(type=WorkItemType.VERIFICATION, priority=Priority.CRITICAL), 200
    )
    critical_new = WorkItemFactory.create(priority=Priority.CRITICAL)
    running = _aged(WorkItemFactory.create(status=WorkItemStatus.IN_PROGRESS), 300)
    assigned = _aged(WorkItemFactory.create(status=WorkItemStatus.ASSIGNED), 250)
    WorkItemFactory.create(status=WorkItemStatus.COMPLETED)
    WorkItemFactory.create(status=WorkItemStatus.FAILED)

    resp = api.get("/api/queue")

    assert resp.status_code == 200
    body = resp.json()
    got = [i["id"] for i in body["items"]]
    expected = [critical_new, running, assigned, *filler, oldest_low, verification]
    assert got == [str(i.pk) for i in expected]
    assert body["nextCursor"] is None
    assert body["stats"]["byStatus"]["completed"] == 1


def test_the_bare_queue_answers_in_a_bounded_number_of_queries(api: Client) -> None:
    for _ in range(60):
        WorkItemFactory.create()
    with CaptureQueriesContext(connection) as ctx:
        assert len(api.get("/api/queue").json()["items"]) == 60
    assert len(ctx.captured_queries) <= 8


@pytest.mark.parametrize("query", ["?limit=50", "?status=queued", "?limit=2"])
def test_asking_for_a_page_keeps_cursor_paging_newest_first(api: Client, query: str) -> None:
    made = [_aged(WorkItemFactory.create(), 10 - i) for i in range(3)]
    made.append(WorkItemFactory.create(priority=Priority.CRITICAL))
    body = api.get(f"/api/queue{query}").json()
    newest_first = [str(i.pk) for i in reversed(made)]
    assert [i["id"] for i in body["items"]] == newest_first[: len(body["items"])]
    assert (body["nextCursor"] is not None) == (query == "?limit=2")


# --- GET /api/status and /api/metrics: the figures the original's client reads -------------


def _finish(status: str, **fields: object) -> WorkItem:
    return WorkItemFactory.create(status=status, completed_at=timezone.now(), **fields)


def test_status_carries_the_metrics_the_original_status_command_prints(api: Client) -> None:
    WorkItemFactory.create()
    WorkItemFactory.create()
    running_item()
    _finish(WorkItemStatus.COMPLETED)
    _finish(WorkItemStatus.FAILED)
    _finish(WorkItemStatus.FAILED)

    body = api.get("/api/status").json()

    assert body["metrics"] == {
        "activeWorkers": 1,
        "queuedItems": 2,
        "completedToday": 1,
        "failedToday": 2,
    }
    metrics = api.get("/api/metrics").json()
    assert {k: metrics[k] for k in body["metrics"]} == body["metrics"]


def test_status_and_metrics_answer_in_a_number_of_queries_that_does_not_grow(
    api: Client,
) -> None:
    def counts() -> tuple[int, int]:
        out = []
        for route in ("/api/status", "/api/metrics"):
            with CaptureQueriesContext(connection) as ctx:
                assert api.get(route).status_code == 200
            out.append(len(ctx.captured_queries))
        return out[0], out[1]

    few = counts()
    for status in (WorkItemStatus.COMPLETED, WorkItemStatus.FAILED, WorkItemStatus.QUEUED):
        for _ in range(5):
            _finish(status, type=WorkItemType.VERIFICATION)
    running_item()
    assert counts() == few


def test_metrics_count_pending_verifications(api: Client) -> None:
    for status in (WorkItemStatus.QUEUED, WorkItemStatus.ASSIGNED, WorkItemStatus.IN_PROGRESS):
        WorkItemFactory.create(type=WorkItemType.VERIFICATION, status=status)
    WorkItemFactory.create(type=WorkItemType.VERIFICATION, status=WorkItemStatus.CANCELLED)
    _finish(WorkItemStatus.COMPLETED, type=WorkItemType.VERIFICATION, verification_passed=True)
    WorkItemFactory.create()  # an execution item waits too: not a verification

    v = api.get("/api/metrics").json()["verification"]

    assert v == {"total": 5, "passed": 1, "failed": 0, "pending": 3, "passRate": 1.0}


# --- reviews: the original's PRReview object ------------------------------------------------

REVIEW_FIELDS = {
    "id": str,
    "workItemId": str,
    "prNumber": int,
    "reviewTimestamp": str,
    "modelUsed": str,
    "findings": dict,
    "createdAt": str,
    "updatedAt": str,
}


def _assert_original_review(review: dict[str, Any]) -> None:
    for field, kind in REVIEW_FIELDS.items():
        assert isinstance(review[field], kind), field
    findings = review["findings"]
    assert set(findings["specAlignment"]) == {"score", "summary", "gaps", "extras"}
    assert findings["specAlignment"]["score"] in ("aligned", "partial", "misaligned")
    assert set(findings["codeQuality"]) == {"score", "summary", "concerns"}
    assert findings["codeQuality"]["score"] in ("good", "acceptable", "needs-work")
    assert isinstance(findings["overallSummary"], str)
    for concern in findings["codeQuality"]["concerns"]:
        assert {"file", "issue", "suggestion"} <= set(concern)


def test_a_review_by_pr_is_the_one_latest_review_object_or_404(api: Client) -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.COMPLETED, pr_number=4)
    older = PRReview.objects.create(work_item=item, repo=item.repo, pr_number=4, findings=[])
    newer = PRReview.objects.create(
        work_item=item,
        repo=item.repo,
        pr_number=4,
        model_used="github:octocat",
        findings=[
            {"severity": "approved", "message": "ship it"},
            {"severity": "changes_requested", "message": "but fix this", "url": "https://x/1"},
            {"file": "a.py", "line": 3, "message": "typo", "suggestion": "spell it"},
        ],
    )

    latest = api.get("/api/reviews/pr/4").json()

    assert latest["id"] == str(newer.pk)
    _assert_original_review(latest)
    assert latest["reviewTimestamp"] == latest["createdAt"] == latest["updatedAt"]
    # An older version's list: the worst state scores it, file findings become concerns.
    assert latest["findings"]["specAlignment"]["score"] == "partial"
    assert latest["findings"]["codeQuality"]["score"] == "needs-work"
    assert latest["findings"]["overallSummary"] == "ship it\n\nbut fix this"
    assert latest["findings"]["codeQuality"]["concerns"] == [
        {"file": "a.py", "line": 3, "issue": "typo", "suggestion": "spell it"}
    ]
    listed = api.get("/api/reviews/pr/4?all=1").json()
    assert [r["id"] for r in listed] == [str(newer.pk), str(older.pk)]
    for review in listed + api.get("/api/reviews").json():
        _assert_original_review(review)
    assert_error(api.get("/api/reviews/pr/5"), 404, "NOT_FOUND")
    assert_error(api.get("/api/reviews/pr/4?all=maybe"), 400, "VALIDATION_ERROR")


def test_a_github_review_is_stored_in_the_original_shape_and_the_console_renders_it(
    client: Client, staff_client: Client, settings: Any
) -> None:
    settings.GITHUB_WEBHOOK_SECRET = SECRET
    item = WorkItemFactory.create(repo="acme/widgets", pr_number=7, status="completed")
    payload = review_payload()
    payload["review"]["body"] = "Please add a <b>test</b>."
    resp = deliver(client, payload)
    assert resp.status_code == 200, resp.content
    review = PRReview.objects.get(work_item=item)
    assert review.findings["codeQuality"]["score"] == "needs-work"

    page = staff_client.get(f"/work/{item.pk}/").content.decode()

    assert 'class="badge score-needs-work"' in page
    assert 'class="badge score-partial"' in page
    assert "Please add a &lt;b&gt;test&lt;/b&gt;." in page


# --- kill, fail and the verification link: the original's semantics -----------------------


@pytest.mark.usefixtures("retry_policy", "stop_delay")
def test_an_api_kill_requeues_with_backoff_as_the_original_unless_told_not_to(
    api: Client, settings: Any
) -> None:
    item, worker = running_attempt()

    resp = api.post(f"/api/workers/{worker.pk}/kill", "{}", "application/json")

    assert resp.status_code == 200, resp.content
    item.refresh_from_db()
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.KILLED
    assert worker.error == "killed: Manual kill"  # the original's default reason
    assert item.status == WorkItemStatus.QUEUED
    assert item.retry_count == 1
    assert item.next_retry_at is not None and item.next_retry_at > timezone.now()

    WorkItem.objects.filter(pk=item.pk).update(next_retry_at=None)
    item, worker = running_attempt(item)
    resp = api.post(
        f"/api/workers/{worker.pk}/kill", {"retry": False, "reason": "enough"}, "application/json"
    )
    assert resp.status_code == 200, resp.content
    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED and item.error == "killed: enough"


@pytest.mark.usefixtures("retry_policy", "stop_delay")
def test_a_kill_with_no_retries_left_fails_the_item(api: Client, settings: Any) -> None:
    item, worker = running_attempt()
    WorkItem.objects.filter(pk=item.pk).update(retry_count=settings.MAX_RETRIES)
    assert api.post(f"/api/workers/{worker.pk}/kill", "{}", "application/json").status_code == 200
    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED


@pytest.mark.usefixtures("stop_delay")
def test_a_kill_with_a_retry_that_is_not_a_boolean_is_refused(api: Client) -> None:
    _, worker = running_attempt()
    resp = api.post(f"/api/workers/{worker.pk}/kill", {"retry": "no"}, "application/json")
    assert_error(resp, 400, "VALIDATION_ERROR")
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.RUNNING


@pytest.mark.usefixtures("retry_policy")
def test_fail_keeps_the_context_and_the_iteration(client: Client) -> None:
    item, worker = running_attempt()
    body = {
        "error": "tests keep failing",
        "iteration": 7,
        "context": {"phase": "test", "command": "npm test"},
        "stack": "Error: boom\n  at x",
    }

    assert call(client, worker, "fail", body).status_code == 200

    worker.refresh_from_db()
    assert worker.iteration == 7
    assert 'Context: {"command": "npm test", "phase": "test"}' in worker.error
    assert worker.error.startswith("tests keep failing") and "Error: boom" in worker.error
    item.refresh_from_db()
    assert "npm test" in item.error


def test_the_verification_of_a_non_execution_item_is_invalid_type(api: Client) -> None:
    verification = WorkItemFactory.create(type=WorkItemType.VERIFICATION)
    review = WorkItemFactory.create(type=WorkItemType.REVIEW)
    for item in (verification, review):
        resp = api.get(f"/api/work/{item.pk}/verification")
        assert_error(resp, 400, "INVALID_TYPE")
    execution = WorkItemFactory.create()
    assert_error(api.get(f"/api/work/{execution.pk}/verification"), 404, "NOT_FOUND")
