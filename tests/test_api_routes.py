"""API.md's client routes: every route, every documented field, the error shape."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from orchestration.clock import db_now
from orchestration.models import (
    FileLock,
    Priority,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    WorkItemType,
)
from reviews.models import PRReview
from tests.factories import WorkerFactory, WorkItemFactory, running_item
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

SPEC = "# Add a login page\n\nPlease."

WORK_ITEM_FIELDS = {
    "id",
    "repo",
    "branch",
    "spec",
    "description",
    "type",
    "priority",
    "status",
    "workerId",
    "iteration",
    "maxIterations",
    "retryCount",
    "nextRetryAt",
    "prUrl",
    "prNumber",
    "parentWorkItemId",
    "verificationPassed",
    "source",
    "sourceRef",
    "createdAt",
    "updatedAt",
    "completedAt",
    "error",
    "metadata",
}
WORKER_FIELDS = {
    "id",
    "workItemId",
    "status",
    "iteration",
    "lastHeartbeat",
    "startedAt",
    "completedAt",
    "containerId",
    "error",
}


def post(api: Client, path: str, body: Any = None) -> Any:
    return api.post(path, json.dumps(body if body is not None else {}), "application/json")


def submit(api: Client, **fields: Any) -> Any:
    return post(api, "/api/work", {"repo": "acme/widgets", "spec": SPEC, **fields})


def is_iso_with_offset(value: str) -> bool:
    return dt.datetime.fromisoformat(value).utcoffset() is not None


# --- POST /api/work ---------------------------------------------------------------------------


def test_submit_answers_201_with_the_id_and_status(api: Client) -> None:
    resp = submit(api)
    assert resp.status_code == 201
    body = resp.json()
    assert set(body) == {"id", "status"}
    assert body["status"] == "queued"
    item = WorkItem.objects.get(pk=uuid.UUID(body["id"]))
    assert (item.repo, item.spec, item.status) == ("acme/widgets", SPEC, "queued")
    assert list(item.events.values_list("kind", flat=True)) == ["submitted"]


def test_submit_stores_every_given_field(api: Client) -> None:
    resp = submit(
        api,
        branch="feat/login",
        priority="critical",
        maxIterations=7,
        source="intake",
        sourceRef="ticket-12",
        metadata={"mock": "fail"},
    )
    item = WorkItem.objects.get(pk=resp.json()["id"])
    assert item.branch == "feat/login"
    assert item.priority == Priority.CRITICAL
    assert item.max_iterations == 7
    assert (item.source, item.source_ref) == ("intake", "ticket-12")
    assert item.metadata == {"mock": "fail"}


def test_submit_with_only_a_description_starts_generating(api: Client) -> None:
    resp = post(api, "/api/work", {"repo": "acme/widgets", "description": "Make it faster."})
    assert resp.status_code == 201
    assert resp.json()["status"] == "generating"


def test_the_same_idempotency_key_answers_200_with_the_first_item(api: Client) -> None:
    first = submit(api, idempotencyKey="req-1")
    again = submit(api, idempotencyKey="req-1", spec="# Something else", repo="acme/other")
    assert first.status_code == 201
    assert again.status_code == 200
    body = again.json()
    assert body["id"] == first.json()["id"]
    assert body["repo"] == "acme/widgets"
    assert body["spec"] == SPEC
    assert WorkItem.objects.count() == 1
    assert WorkItemEvent.objects.count() == 1


def test_a_different_idempotency_key_makes_a_second_item(api: Client) -> None:
    assert submit(api, idempotencyKey="req-1").status_code == 201
    assert submit(api, idempotencyKey="req-2").status_code == 201
    assert WorkItem.objects.count() == 2


# --- queue bounds -----------------------------------------------------------------------------


def test_a_submit_past_max_queued_answers_429_and_writes_nothing(
    api: Client, settings: Any
) -> None:
    settings.MAX_QUEUED = 3
    for n in range(3):
        assert submit(api, repo=f"acme/r{n}").status_code == 201
    body = assert_error(submit(api, repo="acme/r9"), 429, "QUEUE_FULL")
    assert body["details"]["limit"] == 3
    assert WorkItem.objects.count() == 3
    assert WorkItemEvent.objects.count() == 3


def test_finished_items_do_not_count_against_max_queued(api: Client, settings: Any) -> None:
    settings.MAX_QUEUED = 2
    WorkItemFactory.create_batch(3, status=WorkItemStatus.COMPLETED)
    WorkItemFactory.create(status=WorkItemStatus.IN_PROGRESS)
    assert submit(api).status_code == 201
    assert submit(api).status_code == 201
    assert_error(submit(api), 429, "QUEUE_FULL")


def test_cancelling_a_queued_item_frees_its_slot(api: Client, settings: Any) -> None:
    settings.MAX_QUEUED = 1
    first = submit(api).json()["id"]
    assert_error(submit(api), 429, "QUEUE_FULL")
    post(api, f"/api/work/{first}/cancel")
    assert submit(api).status_code == 201


def test_generating_items_count_as_queued(api: Client, settings: Any) -> None:
    settings.MAX_QUEUED = 1
    post(api, "/api/work", {"repo": "acme/widgets", "description": "Do it."})
    assert_error(submit(api), 429, "QUEUE_FULL")


def test_a_submit_past_max_queued_per_repo_is_refused_for_that_repo_only(
    api: Client, settings: Any
) -> None:
    settings.MAX_QUEUED_PER_REPO = 2
    assert submit(api, repo="acme/busy").status_code == 201
    assert submit(api, repo="acme/busy").status_code == 201
    body = assert_error(submit(api, repo="acme/busy"), 429, "QUEUE_FULL")
    assert body["details"]["repo"] == "acme/busy"
    assert WorkItem.objects.filter(repo="acme/busy").count() == 2
    assert submit(api, repo="acme/quiet").status_code == 201
    assert WorkItem.objects.count() == 3


def test_a_repeated_idempotency_key_is_answered_even_when_the_queue_is_full(
    api: Client, settings: Any
) -> None:
    settings.MAX_QUEUED = 1
    first = submit(api, idempotencyKey="k1")
    again = submit(api, idempotencyKey="k1")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


# --- GET /api/work/<id> -----------------------------------------------------------------------


def test_get_work_item_answers_with_every_documented_field(api: Client) -> None:
    item_id = submit(api, source="intake", sourceRef="T-1", metadata={"k": "v"}).json()["id"]
    resp = api.get(f"/api/work/{item_id}")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) >= WORK_ITEM_FIELDS
    assert body["id"] == item_id
    assert body["repo"] == "acme/widgets"
    assert body["branch"] == "add-a-login-page"
    assert body["spec"] == SPEC
    assert body["type"] == "execution"
    assert body["priority"] == "medium"
    assert body["status"] == "queued"
    assert body["workerId"] is None
    assert (body["iteration"], body["maxIterations"], body["retryCount"]) == (0, 50, 0)
    assert (body["source"], body["sourceRef"], body["metadata"]) == ("intake", "T-1", {"k": "v"})
    assert is_iso_with_offset(body["createdAt"])
    assert is_iso_with_offset(body["updatedAt"])
    assert body["completedAt"] is None


def test_get_work_item_shows_the_running_attempt_and_pr(api: Client) -> None:
    item, worker = running_item(pr_url="https://github.com/acme/w/pull/3", pr_number=3)
    body = api.get(f"/api/work/{item.pk}").json()
    assert body["workerId"] == str(worker.pk)
    assert body["status"] == "in_progress"
    assert (body["prUrl"], body["prNumber"]) == ("https://github.com/acme/w/pull/3", 3)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"/api/work/{uuid.UUID(int=1)}", id="unknown_id"),
        pytest.param("/api/work/not-a-uuid", id="malformed_id"),
        pytest.param("/api/work/12345", id="numeric_id"),
        pytest.param(f"/api/work/{uuid.UUID(int=1)}/verification", id="verification_unknown"),
        pytest.param("/api/work/nope/verification", id="verification_malformed"),
        pytest.param("/api/reviews/work-item/nope", id="reviews_malformed"),
        pytest.param(f"/api/reviews/work-item/{uuid.UUID(int=1)}", id="reviews_unknown"),
        pytest.param(f"/api/workers/{uuid.UUID(int=1)}/logs", id="logs_unknown"),
        pytest.param("/api/workers/nope/logs", id="logs_malformed"),
    ],
)
def test_an_unknown_or_malformed_id_answers_404(api: Client, path: str) -> None:
    assert_error(api.get(path), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"/api/work/{uuid.UUID(int=1)}/cancel", id="cancel"),
        pytest.param("/api/work/nope/cancel", id="cancel_malformed"),
        pytest.param(f"/api/work/{uuid.UUID(int=1)}/requeue", id="requeue"),
        pytest.param("/api/work/nope/requeue", id="requeue_malformed"),
        pytest.param(f"/api/workers/{uuid.UUID(int=1)}/kill", id="kill"),
        pytest.param("/api/workers/nope/kill", id="kill_malformed"),
    ],
)
def test_an_action_on_an_unknown_or_malformed_id_answers_404(api: Client, path: str) -> None:
    assert_error(post(api, path), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "path",
    ["/api/nope", "/api/", "/api", "/api/work/a/b/c", "/api/reviews/pr/abc", "/api/worker"],
)
def test_an_unknown_route_answers_404_in_the_error_shape(api: Client, path: str) -> None:
    assert_error(api.get(path), 404, "NOT_FOUND")


def test_an_unknown_route_answers_404_without_a_key_too(client: Client) -> None:
    assert_error(client.get("/api/nope"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("get", "/api/work", "POST"),
        ("put", "/api/work", "POST"),
        ("delete", f"/api/work/{uuid.UUID(int=1)}", "GET"),
        ("post", f"/api/work/{uuid.UUID(int=1)}", "GET"),
        ("get", f"/api/work/{uuid.UUID(int=1)}/cancel", "POST"),
        ("get", f"/api/work/{uuid.UUID(int=1)}/requeue", "POST"),
        ("post", "/api/queue", "GET"),
        ("post", "/api/status", "GET"),
        ("post", "/api/workers", "GET"),
        ("get", f"/api/workers/{uuid.UUID(int=1)}/kill", "POST"),
        ("post", "/api/metrics", "GET"),
        ("post", "/api/reviews", "GET"),
    ],
)
def test_a_wrong_method_answers_405(api: Client, method: str, path: str, allowed: str) -> None:
    resp = getattr(api, method)(path)
    assert resp.status_code == 405
    assert resp["Allow"] == allowed
    body = resp.json()
    assert set(body) <= {"error", "code", "details"}
    assert body["error"]
    assert WorkItem.objects.count() == 0


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_answers_success_and_cancels_the_item(api: Client) -> None:
    item_id = submit(api).json()["id"]
    resp = post(api, f"/api/work/{item_id}/cancel")
    assert resp.status_code == 200
    assert resp.json() == {"success": True}
    item = WorkItem.objects.get(pk=item_id)
    assert item.status == WorkItemStatus.CANCELLED
    assert item.completed_at is not None
    assert item.events.filter(kind="cancelled").count() == 1


def test_cancelling_twice_is_still_success_and_records_one_event(api: Client) -> None:
    item_id = submit(api).json()["id"]
    post(api, f"/api/work/{item_id}/cancel")
    again = post(api, f"/api/work/{item_id}/cancel")
    assert again.status_code == 200
    assert again.json() == {"success": True}
    assert WorkItemEvent.objects.filter(work_item_id=item_id, kind="cancelled").count() == 1


@pytest.mark.parametrize("status", [WorkItemStatus.COMPLETED, WorkItemStatus.FAILED])
def test_cancelling_a_finished_item_answers_invalid_state(api: Client, status: str) -> None:
    item = WorkItemFactory.create(status=status)
    assert_error(post(api, f"/api/work/{item.pk}/cancel"), 400, "INVALID_STATE")
    item.refresh_from_db()
    assert item.status == status


def test_cancelling_a_running_item_kills_its_worker_and_frees_its_locks(
    api: Client, django_capture_on_commit_callbacks: Any
) -> None:
    item, worker = running_item()
    FileLock.objects.create(
        repo=item.repo,
        path="src/app.py",
        worker=worker,
        expires_at=timezone.now() + dt.timedelta(minutes=5),
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        resp = post(api, f"/api/work/{item.pk}/cancel")
    assert resp.json() == {"success": True}
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.KILLED
    assert not FileLock.objects.filter(worker=worker).exists()
    assert WorkItem.objects.get(pk=item.pk).status == WorkItemStatus.CANCELLED
    assert callbacks, "stopping the container is queued after commit"


# --- requeue ----------------------------------------------------------------------------------


def test_requeue_puts_a_failed_item_back_and_answers_the_work_item(api: Client) -> None:
    item = WorkItemFactory.create(
        status=WorkItemStatus.FAILED, retry_count=3, completed_at=timezone.now(), error="boom"
    )
    resp = post(api, f"/api/work/{item.pk}/requeue")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) >= WORK_ITEM_FIELDS
    assert body["id"] == str(item.pk)
    assert body["status"] == "queued"
    assert body["retryCount"] == 3
    assert body["completedAt"] is None


def test_requeue_with_reset_retries_sets_the_retry_count_to_zero(api: Client) -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.FAILED, retry_count=3)
    resp = post(api, f"/api/work/{item.pk}/requeue", {"resetRetries": True})
    assert resp.json()["retryCount"] == 0
    assert WorkItem.objects.get(pk=item.pk).retry_count == 0


@pytest.mark.parametrize("status", [WorkItemStatus.CANCELLED, WorkItemStatus.COMPLETED])
def test_requeue_accepts_cancelled_and_completed_items(api: Client, status: str) -> None:
    item = WorkItemFactory.create(status=status)
    assert post(api, f"/api/work/{item.pk}/requeue").json()["status"] == "queued"


def test_requeue_of_a_running_item_answers_invalid_state(api: Client) -> None:
    item, _ = running_item()
    assert_error(post(api, f"/api/work/{item.pk}/requeue"), 400, "INVALID_STATE")
    assert WorkItem.objects.get(pk=item.pk).status == WorkItemStatus.IN_PROGRESS


@pytest.mark.parametrize("value", ["maybe", 3, [True], "true", ""])
def test_requeue_refuses_a_reset_retries_that_is_not_a_boolean(api: Client, value: Any) -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.FAILED, retry_count=2)
    body = assert_error(
        post(api, f"/api/work/{item.pk}/requeue", {"resetRetries": value}), 400, "VALIDATION_ERROR"
    )
    assert "resetRetries" in body["details"]
    assert WorkItem.objects.get(pk=item.pk).status == WorkItemStatus.FAILED


# --- verification -----------------------------------------------------------------------------


def test_verification_answers_404_when_there_is_none(api: Client) -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.COMPLETED)
    assert_error(api.get(f"/api/work/{item.pk}/verification"), 404, "NOT_FOUND")


def test_verification_answers_the_linked_child(api: Client) -> None:
    parent = WorkItemFactory.create(status=WorkItemStatus.COMPLETED)
    WorkItemFactory.create(parent_work_item=parent, type=WorkItemType.EXECUTION)
    child = WorkItemFactory.create(
        parent_work_item=parent, type=WorkItemType.VERIFICATION, verification_passed=True
    )
    resp = api.get(f"/api/work/{parent.pk}/verification")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) >= WORK_ITEM_FIELDS
    assert body["id"] == str(child.pk)
    assert body["type"] == "verification"
    assert body["parentWorkItemId"] == str(parent.pk)
    assert body["verificationPassed"] is True


# --- GET /api/queue ---------------------------------------------------------------------------


@pytest.fixture
def one_of_each_status() -> dict[str, WorkItem]:
    return {status: WorkItemFactory.create(status=status) for status in WorkItemStatus.values}


def queue_ids(api: Client, query: str = "") -> set[str]:
    resp = api.get(f"/api/queue{query}")
    assert resp.status_code == 200, resp.content
    return {i["id"] for i in resp.json()["items"]}


def ids(items: dict[str, WorkItem], *statuses: str) -> set[str]:
    return {str(items[s].pk) for s in statuses}


@pytest.mark.parametrize(
    ("query", "statuses"),
    [
        # Paused items wait too (for an operator), so the default view shows them.
        ("", ("generating", "queued", "assigned", "in_progress", "paused")),
        ("?status=active", ("assigned", "in_progress")),
        ("?status=queued", ("queued",)),
        ("?status=failed", ("failed",)),
        ("?status=completed", ("completed",)),
        ("?status=generating", ("generating",)),
        ("?status=cancelled", ("cancelled",)),
        ("?status=paused", ("paused",)),
        ("?status=all", tuple(WorkItemStatus.values)),
    ],
)
def test_the_queue_filters_by_status(
    api: Client, one_of_each_status: dict[str, WorkItem], query: str, statuses: tuple[str, ...]
) -> None:
    assert queue_ids(api, query) == ids(one_of_each_status, *statuses)


def test_the_queue_filters_by_type_and_repo(api: Client) -> None:
    a = WorkItemFactory.create(repo="acme/a")
    b = WorkItemFactory.create(repo="acme/b")
    v = WorkItemFactory.create(repo="acme/a", type=WorkItemType.VERIFICATION)
    assert queue_ids(api, "?repo=acme/a") == {str(a.pk), str(v.pk)}
    assert queue_ids(api, "?type=verification") == {str(v.pk)}
    assert queue_ids(api, "?type=execution") == {str(a.pk), str(b.pk)}
    assert queue_ids(api, "?type=execution&repo=acme/a") == {str(a.pk)}
    assert queue_ids(api, "?repo=acme/none") == set()


def test_the_queue_lists_newest_first_as_work_item_objects(api: Client) -> None:
    # Paged (a limit, cursor or status asked for): newest first. Without, dispatch order
    # (test_client_compat.py).
    made = [WorkItemFactory.create() for _ in range(3)]
    items = api.get("/api/queue?limit=50").json()["items"]
    assert [i["id"] for i in items] == [str(m.pk) for m in reversed(made)]
    assert all(set(i) >= WORK_ITEM_FIELDS for i in items)


def test_the_queue_walks_every_item_exactly_once_by_cursor(api: Client) -> None:
    made = {str(WorkItemFactory.create().pk) for _ in range(7)}
    seen: list[str] = []
    pages = 0
    cursor = ""
    while True:
        query = {"limit": "3", "cursor": cursor} if cursor else {"limit": "3"}
        resp = api.get("/api/queue", query)
        assert resp.status_code == 200
        body = resp.json()
        assert len(body["items"]) <= 3
        seen += [i["id"] for i in body["items"]]
        pages += 1
        cursor = body["nextCursor"]
        if not cursor:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == made


def test_a_page_that_fits_exactly_has_no_next_cursor(api: Client) -> None:
    WorkItemFactory.create_batch(3)
    assert api.get("/api/queue?limit=3").json()["nextCursor"] is None


def test_the_cursor_holds_while_items_with_the_same_timestamp_exist(api: Client) -> None:
    made = WorkItemFactory.create_batch(5)
    same = timezone.now()
    WorkItem.objects.filter(pk__in=[m.pk for m in made]).update(created_at=same)
    first = api.get("/api/queue?limit=2").json()
    second = api.get("/api/queue", {"limit": 2, "cursor": first["nextCursor"]}).json()
    third = api.get("/api/queue", {"limit": 2, "cursor": second["nextCursor"]}).json()
    walked = [i["id"] for page in (first, second, third) for i in page["items"]]
    assert sorted(walked) == sorted(str(m.pk) for m in made)
    assert third["nextCursor"] is None


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("!!!", id="not_base64"),
        pytest.param("abc", id="bad_padding"),
        pytest.param(base64.urlsafe_b64encode(b"no separator").decode(), id="no_separator"),
        pytest.param(base64.urlsafe_b64encode(b"yesterday|x").decode(), id="not_a_time"),
        pytest.param(
            base64.urlsafe_b64encode(b"2024-01-01T00:00:00+00:00|not-a-uuid").decode(),
            id="not_a_uuid",
        ),
        pytest.param(base64.urlsafe_b64encode(b"\xff\xfe").decode(), id="not_utf8"),
        pytest.param(
            base64.urlsafe_b64encode(f"2024-01-01T00:00:00|{uuid.uuid4()}".encode()).decode(),
            id="time_without_offset",
        ),
    ],
)
def test_a_bad_cursor_answers_400(api: Client, cursor: str) -> None:
    WorkItemFactory.create()
    body = assert_error(api.get("/api/queue", {"cursor": cursor}), 400, "VALIDATION_ERROR")
    assert "cursor" in body["details"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?status=bogus", "status"),
        ("?type=bogus", "type"),
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?limit=ten", "limit"),
    ],
)
def test_a_bad_queue_filter_answers_400_naming_it(api: Client, query: str, field: str) -> None:
    body = assert_error(api.get(f"/api/queue{query}"), 400, "VALIDATION_ERROR")
    assert field in body["details"]


def test_the_queue_stats_count_by_status_and_priority(api: Client) -> None:
    WorkItemFactory.create_batch(2, status=WorkItemStatus.QUEUED, priority=Priority.HIGH)
    WorkItemFactory.create(status=WorkItemStatus.FAILED, priority=Priority.LOW)
    WorkItemFactory.create(status=WorkItemStatus.COMPLETED, priority=Priority.HIGH)
    stats = api.get("/api/queue").json()["stats"]
    assert set(stats) == {"total", "byStatus", "byPriority"}
    assert stats["total"] == 4
    assert set(stats["byStatus"]) == set(WorkItemStatus.values)
    assert stats["byStatus"]["queued"] == 2
    assert stats["byStatus"]["failed"] == 1
    assert stats["byStatus"]["completed"] == 1
    assert stats["byStatus"]["in_progress"] == 0
    assert stats["byPriority"] == {"low": 1, "medium": 0, "high": 3, "critical": 0}


def test_the_queue_stats_follow_the_repo_filter(api: Client) -> None:
    WorkItemFactory.create(repo="acme/a")
    WorkItemFactory.create(repo="acme/b")
    assert api.get("/api/queue?repo=acme/a").json()["stats"]["total"] == 1


# --- status, workers, metrics -----------------------------------------------------------------


def test_status_answers_the_documented_shape(api: Client, settings: Any) -> None:
    settings.MAX_WORKERS = 4
    settings.DAILY_BUDGET = 99
    settings.COOLDOWN_SECONDS = 7
    oldest = WorkItemFactory.create()
    WorkItemFactory.create()
    running_item()
    body = api.get("/api/status").json()
    assert set(body) >= {"status", "workers", "queue", "rateLimits"}
    assert body["status"] in ("healthy", "degraded", "error")
    assert body["workers"] == {"active": 1, "maxWorkers": 4}
    assert body["queue"]["size"] == 2
    assert dt.datetime.fromisoformat(body["queue"]["oldest"]) == oldest.created_at
    limits = body["rateLimits"]
    assert set(limits) == {"iterationsToday", "dailyBudget", "lastSpawn", "cooldownSeconds"}
    assert (limits["dailyBudget"], limits["cooldownSeconds"]) == (99, 7)
    assert isinstance(limits["iterationsToday"], int)


def test_status_of_an_empty_queue_has_no_oldest(api: Client) -> None:
    assert api.get("/api/status").json()["queue"] == {"size": 0, "oldest": None}


def test_workers_lists_every_worker_newest_first(api: Client) -> None:
    made = [
        WorkerFactory.create(status=WorkerStatus.COMPLETED, completed_at=timezone.now()),
        WorkerFactory.create(status=WorkerStatus.FAILED, error="boom"),
        running_item()[1],
    ]
    resp = api.get("/api/workers")
    assert resp.status_code == 200
    body = resp.json()
    assert [w["id"] for w in body] == [str(w.pk) for w in reversed(made)]
    for row in body:
        assert set(row) >= WORKER_FIELDS
    newest = body[0]
    assert newest["workItemId"] == str(made[2].work_item_id)
    assert newest["status"] == "running"
    assert newest["containerId"] == made[2].container_id
    assert is_iso_with_offset(newest["startedAt"])
    assert is_iso_with_offset(newest["lastHeartbeat"])
    assert body[1]["error"] == "boom"


def test_kill_stops_a_running_worker(api: Client, django_capture_on_commit_callbacks: Any) -> None:
    item, worker = running_item()
    with django_capture_on_commit_callbacks(execute=False):
        resp = post(api, f"/api/workers/{worker.pk}/kill", {"reason": "stop it"})
    assert resp.status_code == 200
    assert resp.json() == {"success": True}
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.KILLED
    assert "stop it" in worker.error
    item.refresh_from_db()
    assert item.status not in WorkItem.ACTIVE


def test_kill_refuses_a_reason_that_is_not_text(api: Client) -> None:
    _, worker = running_item()
    body = assert_error(
        post(api, f"/api/workers/{worker.pk}/kill", {"reason": ["x"]}), 400, "VALIDATION_ERROR"
    )
    assert "reason" in body["details"]
    assert Worker.objects.get(pk=worker.pk).status == WorkerStatus.RUNNING


def test_kill_of_a_finished_worker_answers_invalid_state(api: Client) -> None:
    worker = WorkerFactory.create(status=WorkerStatus.COMPLETED)
    assert_error(post(api, f"/api/workers/{worker.pk}/kill"), 400, "INVALID_STATE")


def test_logs_answers_the_last_lines(api: Client) -> None:
    worker = WorkerFactory.create(status=WorkerStatus.FAILED, log_tail="one\ntwo\nthree\nfour")
    resp = api.get(f"/api/workers/{worker.pk}/logs?lines=2")
    assert resp.status_code == 200
    assert resp.json() == {"workerId": str(worker.pk), "logs": ["three", "four"]}
    assert api.get(f"/api/workers/{worker.pk}/logs").json()["logs"] == [
        "one",
        "two",
        "three",
        "four",
    ]


@pytest.mark.parametrize("lines", ["abc", "0", "-1", "10001", "1.5", ""])
def test_logs_refuses_a_bad_line_count(api: Client, lines: str) -> None:
    worker = WorkerFactory.create(log_tail="x")
    body = assert_error(
        api.get(f"/api/workers/{worker.pk}/logs?lines={lines}"), 400, "VALIDATION_ERROR"
    )
    assert "lines" in body["details"]


def test_metrics_answers_every_documented_field(api: Client) -> None:
    now = timezone.now()
    WorkItemFactory.create(status=WorkItemStatus.COMPLETED, completed_at=now)
    WorkItemFactory.create(status=WorkItemStatus.FAILED, completed_at=now)
    WorkItemFactory.create(status=WorkItemStatus.QUEUED)
    resp = api.get("/api/metrics")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) >= {
        "activeWorkers",
        "queuedItems",
        "completedToday",
        "failedToday",
        "iterationsToday",
        "dailyBudget",
        "avgCompletionTime",
        "successRate",
        "verification",
        "tokenUsage",
    }
    assert isinstance(body["verification"], dict)
    assert set(body["tokenUsage"]) == {"tokensIn", "tokensOut", "estimatedCostUsd"}
    assert (body["queuedItems"], body["completedToday"], body["failedToday"]) == (1, 1, 1)
    assert body["successRate"] == 0.5


# --- reviews ----------------------------------------------------------------------------------


def test_reviews_are_listed_all_by_item_and_by_pr(api: Client) -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.COMPLETED, pr_number=7)
    mine = PRReview.objects.create(
        work_item=item, repo=item.repo, pr_number=7, model_used="m", findings=[{"f": 1}]
    )
    other = PRReview.objects.create(repo="acme/other", pr_number=8, model_used="m")
    all_ids = [r["id"] for r in api.get("/api/reviews").json()]
    assert all_ids == [str(other.pk), str(mine.pk)]
    by_item = api.get(f"/api/reviews/work-item/{item.pk}").json()
    assert [r["id"] for r in by_item] == [str(mine.pk)]
    assert by_item[0]["workItemId"] == str(item.pk)
    # A list stored by an older version reads as the original's ReviewFindings object.
    assert by_item[0]["findings"]["overallSummary"] == "f: 1"
    # By PR: the one latest review, as the original; ?all=1 lists them.
    assert api.get("/api/reviews/pr/8").json()["id"] == str(other.pk)
    assert [r["id"] for r in api.get("/api/reviews/pr/8?all=1").json()] == [str(other.pk)]
    assert_error(api.get("/api/reviews/pr/999"), 404, "NOT_FOUND")
    assert api.get("/api/reviews/pr/999?all=1").json() == []


# --- health -----------------------------------------------------------------------------------


def test_health_needs_no_key(client: Client) -> None:
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"


def test_health_ready_needs_no_key_and_checks_database_and_broker(client: Client) -> None:
    resp = client.get("/health/ready")
    assert resp.status_code == 200, resp.content
    assert resp.json() == {"status": "ok", "checks": {"database": True, "broker": True}}


def test_prometheus_metrics_need_no_key_and_count_rows_by_status(client: Client) -> None:
    WorkItemFactory.create_batch(2)
    WorkItemFactory.create(status=WorkItemStatus.FAILED)

    resp = client.get("/metrics")

    assert resp.status_code == 200
    assert resp["Content-Type"].startswith("text/plain")
    text = resp.content.decode()
    assert 'whim_work_items{status="queued"} 2.0' in text
    assert 'whim_work_items{status="failed"} 1.0' in text
    assert "whim_max_workers" in text


def test_requeue_respects_the_queue_bound(api: Client, settings: Any) -> None:
    settings.MAX_QUEUED = 1
    WorkItemFactory.create()  # the one queue slot is taken
    failed = WorkItemFactory.create(status=WorkItemStatus.FAILED)

    resp = api.post(f"/api/work/{failed.pk}/requeue", data={}, content_type="application/json")

    assert resp.status_code == 429 and resp.json()["code"] == "QUEUE_FULL"
    failed.refresh_from_db()
    assert failed.status == WorkItemStatus.FAILED


def test_an_unexpected_error_is_a_500_in_the_error_shape_without_trace_or_secret(
    api: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from orchestration.api import views

    def explode(**_: Any) -> None:
        raise RuntimeError("password=hunter2 in a message nobody should see")

    monkeypatch.setattr(views, "status_summary", explode)

    resp = api.get("/api/status")

    assert resp.status_code == 500
    assert resp.json() == {"error": "Internal error", "code": "INTERNAL_ERROR"}
    assert b"hunter2" not in resp.content and b"Traceback" not in resp.content
    assert "unhandled error on GET /api/status" in caplog.text  # operators still see it


def test_requeue_with_reset_retries_restarts_an_item_waiting_for_its_retry_now(
    api: Client,
) -> None:
    item = WorkItemFactory.create(retry_count=2, next_retry_at=db_now() + dt.timedelta(minutes=5))
    body = post(api, f"/api/work/{item.pk}/requeue", {"resetRetries": True}).json()
    assert (body["status"], body["retryCount"], body["nextRetryAt"]) == ("queued", 0, None)
    assert WorkItemEvent.objects.filter(work_item=item, kind="requeued").count() == 1
