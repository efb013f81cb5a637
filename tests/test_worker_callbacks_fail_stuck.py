"""The worker callback routes (API.md "Worker callbacks"): fail and stuck, through the Django
test client.

Both retry the item with backoff (or fail it when no retry is left); sent twice they answer
200 and change nothing; a worker that is no longer the active attempt is fenced off with 409.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client

from orchestration.clock import db_now
from orchestration.models import FileLock, WorkerStatus, WorkItem, WorkItemStatus
from tests.callbacks_support import DELAYS, TOLERANCE, call, hold, kill, snapshot
from tests.factories import running_attempt
from tests.helpers import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


# --- fail ----------------------------------------------------------------------------------


def test_fail_retries_the_item_with_backoff_and_keeps_the_error(client: Client) -> None:
    item, worker = running_attempt()
    hold(worker, "a.py")
    before = db_now()

    resp = call(
        client,
        worker,
        "fail",
        {
            "error": "tests failed",
            "iteration": 3,
            "stack": "Traceback (most recent call last):\n  boom",
            "category": "AGENT_ERROR",
            "context": {"step": "test"},
        },
    )

    assert resp.status_code == 200, resp.content
    assert resp.json() == {"success": True}
    after = db_now()
    item.refresh_from_db()
    worker.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED
    assert item.retry_count == 1
    assert item.worker_id is None
    assert item.next_retry_at is not None
    delay = dt.timedelta(seconds=DELAYS[0])
    assert before + delay - TOLERANCE <= item.next_retry_at <= after + delay + TOLERANCE
    assert "tests failed" in item.error and "Traceback (most recent call last)" in item.error
    assert item.error_category == "AGENT_ERROR"
    assert worker.status == WorkerStatus.FAILED
    assert "tests failed" in worker.error and "boom" in worker.error
    assert not FileLock.objects.filter(worker=worker).exists()


def test_fail_twice_answers_200_and_changes_nothing(client: Client) -> None:
    item, worker = running_attempt()
    assert call(client, worker, "fail", {"error": "first"}).status_code == 200
    before = snapshot(item, worker)

    again = call(client, worker, "fail", {"error": "second", "category": "CONFIG_ERROR"})

    assert again.status_code == 200, again.content
    assert again.json() == {"success": True}
    assert snapshot(item, worker) == before
    assert item.retry_count == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"error": "x", "category": "lower"}, "category", id="category_lowercase"),
        pytest.param({"error": "x", "category": "A" * 41}, "category", id="category_long"),
        pytest.param({}, "error", id="error_missing"),
        pytest.param({"error": ["x"]}, "error", id="error_list"),
        pytest.param({"error": "x", "iteration": -1}, "iteration", id="iteration_negative"),
        pytest.param({"error": "x", "context": "ctx"}, "context", id="context_string"),
    ],
)
def test_fail_with_a_bad_body_changes_nothing(
    client: Client, body: dict[str, Any], field: str
) -> None:
    item, worker = running_attempt()
    before = snapshot(item, worker)

    details = assert_error(call(client, worker, "fail", body), 400, "VALIDATION_ERROR")["details"]

    assert field in details, details
    assert snapshot(item, worker) == before


def test_a_permanent_failure_is_not_retried(client: Client) -> None:
    item, worker = running_attempt()

    resp = call(client, worker, "fail", {"error": "bad config", "category": "CONFIG_ERROR"})

    assert resp.status_code == 200, resp.content
    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED
    assert item.retry_count == 0
    assert item.next_retry_at is None


# --- stuck ---------------------------------------------------------------------------------


def test_stuck_requeues_the_item_with_backoff(client: Client) -> None:
    item, worker = running_attempt()
    hold(worker, "a.py")

    resp = call(client, worker, "stuck", {"reason": "same error three times", "attempts": 3})

    assert resp.status_code == 200, resp.content
    assert resp.json() == {"success": True}
    item.refresh_from_db()
    worker.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED
    assert item.retry_count == 1
    assert item.next_retry_at is not None and item.next_retry_at > db_now()
    assert "same error three times" in item.error
    assert item.error_category == "STUCK"
    assert worker.status == WorkerStatus.STUCK
    assert not FileLock.objects.filter(worker=worker).exists()


def test_stuck_after_the_last_retry_fails_the_item(client: Client, settings: Any) -> None:
    item, worker = running_attempt()
    WorkItem.objects.filter(pk=item.pk).update(retry_count=settings.MAX_RETRIES)

    resp = call(client, worker, "stuck", {"reason": "loop"})

    assert resp.status_code == 200, resp.content
    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED
    assert item.next_retry_at is None
    assert item.completed_at is not None


def test_stuck_twice_answers_200_and_changes_nothing(client: Client) -> None:
    item, worker = running_attempt()
    assert call(client, worker, "stuck", {"reason": "loop"}).status_code == 200
    before = snapshot(item, worker)

    again = call(client, worker, "stuck", {"reason": "still looping", "attempts": 9})

    assert again.status_code == 200, again.content
    assert snapshot(item, worker) == before
    assert item.status == WorkItemStatus.QUEUED


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="reason_missing"),
        pytest.param({"reason": "x", "attempts": -1}, id="attempts_negative"),
        pytest.param({"reason": 5}, id="reason_number"),
    ],
)
def test_stuck_with_a_bad_body_changes_nothing(client: Client, body: dict[str, Any]) -> None:
    item, worker = running_attempt()
    before = snapshot(item, worker)

    assert_error(call(client, worker, "stuck", body), 400, "VALIDATION_ERROR")
    assert snapshot(item, worker) == before


@pytest.mark.parametrize("route", ["fail", "stuck"])
def test_ending_a_killed_worker_is_fenced(client: Client, route: str) -> None:
    item, worker = running_attempt()
    kill(worker)
    before = snapshot(item, worker)

    resp = call(client, worker, route, {"error": "late", "reason": "late"})

    assert_error(resp, 409, "INVALID_STATE")
    assert snapshot(item, worker) == before
