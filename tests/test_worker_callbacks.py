"""The worker callback routes (API.md "Worker callbacks"), through the Django test client.

A container reaches these with its own secret token: as a Bearer header or in the callback
base URL (``/w/<token>/api/worker/…``). Every callback is safe to repeat, and a worker that is
no longer the active attempt is fenced off with 409.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from orchestration.clock import db_now
from orchestration.models import (
    FileLock,
    Worker,
    WorkerMetrics,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.services.dispatch import worker_token
from orchestration.services.workers import worker_kill
from reviews.models import PRReview
from tests.factories import running_attempt
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

DELAYS = [60, 300, 1800]
TOLERANCE = dt.timedelta(seconds=5)
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _retry_policy(settings: Any) -> None:
    settings.MAX_RETRIES = 3
    settings.RETRY_DELAYS = list(DELAYS)


# --- helpers -------------------------------------------------------------------------------


def token_of(worker: Worker) -> str:
    return worker_token(worker.pk)


def call(
    client: Client,
    worker: Worker,
    route: str,
    body: Any = None,
    *,
    token: str | None = None,
    raw: str | bytes | None = None,
) -> Any:
    """POST a callback as ``worker`` (its own token unless another is given)."""
    path = "/api/worker/register" if route == "register" else f"/api/worker/{worker.pk}/{route}"
    data = raw if raw is not None else json.dumps(body if body is not None else {})
    return client.post(
        path,
        data,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token if token is not None else token_of(worker)}"},
    )


def snapshot(item: WorkItem, worker: Worker) -> tuple[Any, ...]:
    """Everything a callback could change about an attempt, to prove it did not."""
    item.refresh_from_db()
    worker.refresh_from_db()
    return (
        item.status,
        item.updated_at,
        item.retry_count,
        item.next_retry_at,
        item.error,
        item.iteration,
        item.pr_url,
        item.verification_passed,
        worker.status,
        worker.last_heartbeat,
        worker.iteration,
        worker.tokens_in,
        worker.tokens_out,
        worker.error,
        WorkItemEvent.objects.filter(work_item=item).count(),
        WorkItem.objects.count(),
        WorkerMetrics.objects.count(),
        PRReview.objects.count(),
        sorted(FileLock.objects.values_list("repo", "path", "worker_id", "expires_at")),
    )


def hold(worker: Worker, *paths: str, seconds: int = 30) -> None:
    for path in paths:
        FileLock.objects.create(
            repo=worker.work_item.repo,
            path=path,
            worker=worker,
            expires_at=db_now() + dt.timedelta(seconds=seconds),
        )


def kill(worker: Worker) -> None:
    """An operator kills the attempt (the container stop is sent on commit, never here)."""
    assert worker_kill(worker_id=worker.pk, reason="operator")


# --- auth ----------------------------------------------------------------------------------


def test_a_callback_without_a_token_is_unauthorized(client: Client) -> None:
    item, worker = running_attempt()
    before = snapshot(item, worker)

    resp = client.post(
        f"/api/worker/{worker.pk}/heartbeat", {"iteration": 1}, content_type="application/json"
    )

    assert_error(resp, 401, "UNAUTHORIZED")
    assert snapshot(item, worker) == before


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not-a-token", id="garbage"),
        pytest.param(worker_token(uuid.uuid4()), id="token_of_no_worker"),
        pytest.param("x" * 500, id="overlong"),
    ],
)
def test_a_callback_with_a_wrong_token_is_unauthorized(client: Client, token: str) -> None:
    item, worker = running_attempt()
    before = snapshot(item, worker)

    assert_error(
        call(client, worker, "heartbeat", {"iteration": 1}, token=token), 401, "UNAUTHORIZED"
    )
    assert snapshot(item, worker) == before


def test_a_wrong_token_in_the_path_is_unauthorized(client: Client) -> None:
    item, worker = running_attempt()
    before = snapshot(item, worker)

    resp = client.post(
        f"/w/not-a-token/api/worker/{worker.pk}/heartbeat",
        {"iteration": 1},
        content_type="application/json",
    )

    assert_error(resp, 401, "UNAUTHORIZED")
    assert snapshot(item, worker) == before


@pytest.mark.parametrize("route", ["heartbeat", "lock", "unlock", "complete", "fail", "stuck"])
def test_a_token_opens_only_its_own_workers_routes(client: Client, route: str) -> None:
    _item_a, worker_a = running_attempt(repo="acme/shared")
    item_b, worker_b = running_attempt(repo="acme/shared")
    hold(worker_b, "b.py")
    bodies = {
        "heartbeat": {"iteration": 5},
        "lock": {"repo": "acme/shared", "files": ["c.py"]},
        "unlock": {"repo": "acme/shared", "files": ["b.py"]},
        "complete": {},
        "fail": {"error": "boom"},
        "stuck": {"reason": "loop"},
    }
    before_b = snapshot(item_b, worker_b)

    resp = call(client, worker_b, route, bodies[route], token=token_of(worker_a))

    assert_error(resp, 403, "FORBIDDEN")
    assert snapshot(item_b, worker_b) == before_b


def test_a_token_in_the_path_of_another_worker_is_forbidden(client: Client) -> None:
    _, worker_a = running_attempt()
    item_b, worker_b = running_attempt()
    before_b = snapshot(item_b, worker_b)

    resp = client.post(
        f"/w/{token_of(worker_a)}/api/worker/{worker_b.pk}/heartbeat",
        {"iteration": 5},
        content_type="application/json",
    )

    assert_error(resp, 403, "FORBIDDEN")
    assert snapshot(item_b, worker_b) == before_b


def test_a_bearer_token_opens_the_workers_routes(client: Client) -> None:
    _, worker = running_attempt()

    resp = call(client, worker, "heartbeat", {"iteration": 2})

    assert resp.status_code == 200, resp.content
    assert resp.json() == {"success": True}
    worker.refresh_from_db()
    assert worker.iteration == 2


def test_the_token_in_the_callback_base_url_works_without_a_header(client: Client) -> None:
    item, worker = running_attempt()

    resp = client.post(
        f"/w/{token_of(worker)}/api/worker/{worker.pk}/heartbeat",
        {"iteration": 3},
        content_type="application/json",
    )
    registered = client.post(
        f"/w/{token_of(worker)}/api/worker/register",
        {"workItemId": str(item.pk)},
        content_type="application/json",
    )

    assert resp.status_code == 200, resp.content
    assert registered.status_code == 201, registered.content
    worker.refresh_from_db()
    assert worker.iteration == 3


# --- no token in the logs ------------------------------------------------------------------


@pytest.fixture
def handler_output() -> Iterator[dict[str, io.StringIO]]:
    """What every configured handler on the request's logger chain writes, per handler.

    caplog's handler sits on the root beside the configured ``console`` handler; it does not
    run the console handler's filters itself, so the handlers' own output is checked too.
    """
    streams: dict[str, io.StringIO] = {}
    swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
    for name in ("django.request", "django", ""):
        for handler in logging.getLogger(name).handlers:
            if (
                isinstance(handler, logging.StreamHandler)
                and not type(handler).__module__.startswith("_pytest")
                and handler not in (h for h, _ in swapped)
            ):
                stream = io.StringIO()
                swapped.append((handler, handler.setStream(stream)))
                streams[f"{name or 'root'}:{handler.name or type(handler).__name__}"] = stream
    yield streams
    for handler, old in swapped:
        handler.setStream(old)


def _all_loggers_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    for name in (None, "django", "django.request", "django.db.backends", "whim", "orchestration"):
        caplog.set_level(logging.DEBUG, logger=name)


def test_the_configured_console_handler_redacts_tokens() -> None:
    root_consoles = [h for h in logging.getLogger().handlers if h.name == "console"]
    assert root_consoles, "settings.LOGGING attaches a console handler to the root logger"
    assert any(type(f).__name__ == "RedactWorkerTokens" for h in root_consoles for f in h.filters)


@pytest.mark.parametrize(
    "debug",
    [False, True],
    ids=["debug_off", "debug_on"],
)
@pytest.mark.parametrize("valid", [True, False], ids=["right_token", "wrong_token"])
def test_no_token_reaches_a_log_line(
    client: Client,
    caplog: pytest.LogCaptureFixture,
    handler_output: dict[str, io.StringIO],
    settings: Any,
    debug: bool,
    valid: bool,
) -> None:
    settings.DEBUG = debug
    _all_loggers_at_debug(caplog)
    _item, worker = running_attempt()
    token = token_of(worker) if valid else "s3cret-wrong-token-" + uuid.uuid4().hex
    other = running_attempt()[1]  # a 403 is logged by django.request as well

    responses = [
        client.post(
            f"/w/{token}/api/worker/{worker.pk}/heartbeat",
            {"iteration": 1},
            content_type="application/json",
        ),
        client.post(
            f"/w/{token}/api/worker/{other.pk}/heartbeat",
            {"iteration": 1},
            content_type="application/json",
        ),
        client.post(
            f"/w/{token}/api/worker/{worker.pk}/complete",
            "{not json",
            content_type="application/json",
        ),
        client.post(f"/w/{token}/api/worker/{worker.pk}/nope", {}),
        client.get(f"/w/{token}/api/worker/{worker.pk}/heartbeat"),
    ]

    assert [r.status_code for r in responses] == (
        [200, 403, 400, 404, 405] if valid else [401, 401, 401, 404, 405]
    )
    # The requests were logged (4xx by django.request), just not with the token.
    assert any(r.name == "django.request" for r in caplog.records)
    assert any("/w/***/" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert token not in record.getMessage(), record.name
        assert token not in str(record.msg), record.name
        assert token not in repr(record.args), record.name
    assert token not in caplog.text
    assert handler_output, "no stream handler found on the request's logger chain"
    for name, stream in handler_output.items():
        assert token not in stream.getvalue(), name
    assert "/w/***/" in "".join(s.getvalue() for s in handler_output.values())


def test_the_redacting_filter_rewrites_a_request_log_record_as_django_formats_it() -> None:
    from orchestration.logfilters import RedactWorkerTokens

    token = worker_token(uuid.uuid4())
    record = logging.LogRecord(
        "django.request",
        logging.WARNING,
        __file__,
        1,
        "%s: %s",
        ("Unauthorized", f"/w/{token}/api/worker/x/heartbeat"),
        None,
    )

    assert RedactWorkerTokens().filter(record) is True
    assert record.getMessage() == "Unauthorized: /w/***/api/worker/x/heartbeat"
    assert token not in logging.Formatter("%(message)s").format(record)


# --- register ------------------------------------------------------------------------------


def test_register_answers_201_with_the_worker_and_its_item(client: Client) -> None:
    item, worker = running_attempt()

    resp = call(client, worker, "register", {"workItemId": str(item.pk)})

    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["workerId"] == str(worker.pk)
    assert body["workItem"]["id"] == str(item.pk)
    assert body["workItem"]["repo"] == item.repo
    assert body["workItem"]["spec"] == item.spec
    assert body["workItem"]["workerId"] == str(worker.pk)


def test_register_is_safe_to_repeat(client: Client) -> None:
    item, worker = running_attempt()

    first = call(client, worker, "register", {"workItemId": str(item.pk)})
    second = call(client, worker, "register", {"workItemId": str(item.pk)})

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["workItem"]["id"] == second.json()["workItem"]["id"] == str(item.pk)
    item.refresh_from_db()
    worker.refresh_from_db()
    assert item.status == WorkItemStatus.IN_PROGRESS
    assert worker.status == WorkerStatus.RUNNING


@pytest.mark.parametrize(
    "work_item_id",
    [
        pytest.param("other", id="another_workers_item"),
        pytest.param(str(uuid.UUID(int=7)), id="unknown_item"),
        pytest.param("not-a-uuid", id="malformed"),
        pytest.param(None, id="missing"),
    ],
)
def test_register_with_a_wrong_work_item_is_a_validation_error(
    client: Client, work_item_id: str | None
) -> None:
    _item, worker = running_attempt()
    other_item, _ = running_attempt()
    body = {} if work_item_id is None else {"workItemId": work_item_id}
    if work_item_id == "other":
        body["workItemId"] = str(other_item.pk)

    resp = call(client, worker, "register", body)

    details = assert_error(resp, 400, "VALIDATION_ERROR")["details"]
    assert "workItemId" in details


def test_register_of_a_killed_worker_is_fenced(client: Client) -> None:
    item, worker = running_attempt()
    kill(worker)

    resp = call(client, worker, "register", {"workItemId": str(item.pk)})

    assert_error(resp, 409, "INVALID_STATE")


# --- heartbeat -----------------------------------------------------------------------------


def test_heartbeat_records_liveness_iteration_and_tokens(client: Client) -> None:
    item, worker = running_attempt()
    Worker.objects.filter(pk=worker.pk).update(last_heartbeat=db_now() - dt.timedelta(minutes=5))
    before = db_now()

    resp = call(client, worker, "heartbeat", {"iteration": 4, "tokensIn": 1200, "tokensOut": 300})

    assert resp.status_code == 200, resp.content
    assert resp.json() == {"success": True}
    worker.refresh_from_db()
    item.refresh_from_db()
    assert worker.last_heartbeat is not None and worker.last_heartbeat >= before
    assert (worker.iteration, worker.tokens_in, worker.tokens_out) == (4, 1200, 300)
    assert item.iteration == 4


def test_heartbeat_renews_the_workers_lock_leases(client: Client, settings: Any) -> None:
    settings.LOCK_TTL = 600
    _item, worker = running_attempt(repo="acme/shared")
    _, other = running_attempt(repo="acme/shared")
    hold(worker, "a.py", "b.py", seconds=5)
    hold(other, "c.py", seconds=5)
    others_lease = FileLock.objects.get(path="c.py").expires_at
    start = db_now()

    assert call(client, worker, "heartbeat", {"iteration": 1}).status_code == 200

    end = db_now()
    ttl = dt.timedelta(seconds=600)
    for lease in FileLock.objects.filter(worker=worker):
        assert start + ttl <= lease.expires_at <= end + ttl, lease.path
    assert FileLock.objects.get(path="c.py").expires_at == others_lease


def test_heartbeat_does_not_revive_a_lease_that_already_lapsed(
    client: Client, settings: Any
) -> None:
    settings.LOCK_TTL = 600
    _item, worker = running_attempt(repo="acme/shared")
    hold(worker, "live.py", seconds=5)
    hold(worker, "lapsed.py", seconds=-5)
    lapsed = FileLock.objects.get(path="lapsed.py").expires_at

    assert call(client, worker, "heartbeat", {"iteration": 1}).status_code == 200

    assert FileLock.objects.get(path="lapsed.py").expires_at == lapsed
    assert FileLock.objects.get(path="live.py").expires_at > db_now() + dt.timedelta(seconds=500)


def test_heartbeat_of_a_killed_worker_is_fenced(client: Client) -> None:
    item, worker = running_attempt()
    kill(worker)
    before = snapshot(item, worker)

    assert_error(call(client, worker, "heartbeat", {"iteration": 9}), 409, "INVALID_STATE")
    assert snapshot(item, worker) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "iteration", id="iteration_missing"),
        pytest.param({"iteration": -1}, "iteration", id="iteration_negative"),
        pytest.param({"iteration": "x"}, "iteration", id="iteration_string"),
        pytest.param({"iteration": "3"}, "iteration", id="iteration_numeric_text"),
        pytest.param({"iteration": True}, "iteration", id="iteration_true"),
        pytest.param({"iteration": 1.5}, "iteration", id="iteration_fraction"),
        pytest.param({"iteration": 1, "tokensIn": -5}, "tokensIn", id="tokens_in_negative"),
        pytest.param({"iteration": 1, "tokensOut": "many"}, "tokensOut", id="tokens_out_string"),
    ],
)
def test_heartbeat_with_a_bad_body_changes_nothing(
    client: Client, body: dict[str, Any], field: str
) -> None:
    item, worker = running_attempt()
    hold(worker, "a.py", seconds=5)
    before = snapshot(item, worker)

    details = assert_error(call(client, worker, "heartbeat", body), 400, "VALIDATION_ERROR")[
        "details"
    ]

    assert field in details, details
    assert snapshot(item, worker) == before


# --- complete ------------------------------------------------------------------------------

FULL_COMPLETION: dict[str, Any] = {
    "prUrl": "https://github.com/acme/widgets/pull/42",
    "prNumber": 42,
    "commitSha": SHA,
    "metrics": {
        "tokensIn": 1000,
        "tokensOut": 250,
        "duration": 90_000,
        "filesModified": 3,
        "testsRun": 12,
        "testsPassed": 11,
        "testsFailed": 1,
        "testStatus": "failed",
    },
    "review": {"modelUsed": "claude", "findings": [{"file": "a.py", "note": "ok"}]},
    "learnings": ["run the linter first"],
}


def test_complete_records_the_result_and_frees_the_locks(client: Client, api: Client) -> None:
    item, worker = running_attempt()
    hold(worker, "a.py", "b.py")

    resp = call(client, worker, "complete", FULL_COMPLETION)

    assert resp.status_code == 200, resp.content
    assert resp.json() == {"success": True}
    item.refresh_from_db()
    worker.refresh_from_db()
    assert item.status == WorkItemStatus.COMPLETED
    assert worker.status == WorkerStatus.COMPLETED
    assert item.completed_at is not None
    assert (item.pr_url, item.pr_number, item.commit_sha) == (
        "https://github.com/acme/widgets/pull/42",
        42,
        SHA,
    )
    metrics = WorkerMetrics.objects.get(worker=worker)
    assert metrics.work_item_id == item.pk
    assert (metrics.tokens_in, metrics.tokens_out, metrics.duration_ms) == (1000, 250, 90_000)
    assert (metrics.files_modified, metrics.tests_run, metrics.tests_passed) == (3, 12, 11)
    assert (metrics.tests_failed, metrics.test_status) == (1, "failed")
    assert metrics.learnings == ["run the linter first"]
    review = PRReview.objects.get(work_item=item)
    assert (review.model_used, review.pr_number, review.repo) == ("claude", 42, item.repo)
    assert review.findings == [{"file": "a.py", "note": "ok"}]
    assert not FileLock.objects.filter(worker=worker).exists()
    shown = api.get(f"/api/work/{item.pk}").json()
    assert shown["status"] == "completed"
    assert shown["commitSha"] == SHA
    assert shown["prNumber"] == 42


def test_complete_twice_answers_200_and_changes_nothing(client: Client) -> None:
    item, worker = running_attempt()
    assert call(client, worker, "complete", FULL_COMPLETION).status_code == 200
    before = snapshot(item, worker)

    again = call(
        client,
        worker,
        "complete",
        {**FULL_COMPLETION, "prUrl": "https://github.com/acme/widgets/pull/43", "prNumber": 43},
    )

    assert again.status_code == 200, again.content
    assert again.json() == {"success": True}
    assert snapshot(item, worker) == before
    assert item.pr_number == 42


def test_complete_after_fail_is_fenced(client: Client) -> None:
    item, worker = running_attempt()
    assert call(client, worker, "fail", {"error": "boom"}).status_code == 200
    before = snapshot(item, worker)

    assert_error(call(client, worker, "complete", FULL_COMPLETION), 409, "INVALID_STATE")
    assert snapshot(item, worker) == before


def test_complete_of_a_killed_worker_is_fenced(client: Client) -> None:
    item, worker = running_attempt()
    kill(worker)
    before = snapshot(item, worker)

    assert_error(call(client, worker, "complete", FULL_COMPLETION), 409, "INVALID_STATE")
    assert snapshot(item, worker) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"metrics": {"tokensIn": "many"}}, "metrics", id="metric_string"),
        pytest.param({"metrics": {"testsRun": -1}}, "metrics", id="metric_negative"),
        pytest.param({"metrics": {"duration": True}}, "metrics", id="metric_bool"),
        pytest.param({"metrics": {"testStatus": 3}}, "metrics", id="test_status_number"),
        pytest.param({"metrics": [1]}, "metrics", id="metrics_list"),
        pytest.param({"prNumber": "forty-two"}, "prNumber", id="pr_number_word"),
        pytest.param({"prNumber": 0}, "prNumber", id="pr_number_zero"),
        pytest.param({"prUrl": "javascript:alert(1)"}, "prUrl", id="pr_url_scheme"),
        pytest.param({"commitSha": "zzz"}, "commitSha", id="commit_sha"),
        pytest.param({"verificationEnabled": "maybe"}, "verificationEnabled", id="verif_flag"),
        pytest.param({"review": "great"}, "review", id="review_string"),
        pytest.param({"learnings": "one"}, "learnings", id="learnings_string"),
    ],
)
def test_complete_with_a_bad_body_changes_nothing(
    client: Client, body: dict[str, Any], field: str
) -> None:
    item, worker = running_attempt()
    hold(worker, "a.py")
    before = snapshot(item, worker)

    details = assert_error(call(client, worker, "complete", body), 400, "VALIDATION_ERROR")[
        "details"
    ]

    assert field in details, details
    assert snapshot(item, worker) == before
    assert item.status == WorkItemStatus.IN_PROGRESS


def test_a_verified_completion_queues_a_linked_verification_item(
    client: Client, api: Client
) -> None:
    item, worker = running_attempt()

    resp = call(client, worker, "complete", {**FULL_COMPLETION, "verificationEnabled": True})

    assert resp.status_code == 200, resp.content
    child = WorkItem.objects.get(parent_work_item=item)
    assert child.type == "verification"
    assert child.status == WorkItemStatus.QUEUED
    assert (child.repo, child.branch) == (item.repo, item.branch)
    shown = api.get(f"/api/work/{item.pk}/verification")
    assert shown.status_code == 200, shown.content
    assert shown.json()["id"] == str(child.pk)
    assert shown.json()["parentWorkItemId"] == str(item.pk)
    assert shown.json()["type"] == "verification"


def test_a_completion_without_verification_queues_nothing(client: Client, api: Client) -> None:
    item, worker = running_attempt()

    assert call(client, worker, "complete", FULL_COMPLETION).status_code == 200

    assert not WorkItem.objects.filter(parent_work_item=item).exists()
    assert_error(api.get(f"/api/work/{item.pk}/verification"), 404, "NOT_FOUND")


@pytest.mark.parametrize("passed", [False, True])
def test_a_verification_result_reaches_the_parent(client: Client, passed: bool) -> None:
    parent, worker = running_attempt()
    assert (
        call(client, worker, "complete", {**FULL_COMPLETION, "verificationEnabled": True})
    ).status_code == 200
    child = WorkItem.objects.get(parent_work_item=parent)
    child, verifier = running_attempt(child)

    resp = call(client, verifier, "complete", {"verificationPassed": passed})

    assert resp.status_code == 200, resp.content
    parent.refresh_from_db()
    child.refresh_from_db()
    assert child.status == WorkItemStatus.COMPLETED
    assert parent.verification_passed is passed
    # A verification item does not ask for a verification of its own.
    assert not WorkItem.objects.filter(parent_work_item=child).exists()


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


# --- routing, methods, bodies --------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "token"])
def test_an_unknown_worker_route_is_a_404_in_the_error_shape(client: Client, prefix: str) -> None:
    _, worker = running_attempt()
    base = f"/w/{token_of(worker)}" if prefix else ""

    resp = client.post(
        f"{base}/api/worker/{worker.pk}/nope",
        "{}",
        content_type="application/json",
        headers={"Authorization": f"Bearer {token_of(worker)}"},
    )

    assert_error(resp, 404, "NOT_FOUND")


@pytest.mark.parametrize("route", ["heartbeat", "lock", "unlock", "complete", "fail", "stuck"])
def test_a_get_on_a_callback_route_is_405(client: Client, route: str) -> None:
    item, worker = running_attempt()
    before = snapshot(item, worker)

    resp = client.get(
        f"/api/worker/{worker.pk}/{route}", headers={"Authorization": f"Bearer {token_of(worker)}"}
    )

    assert_error(resp, 405, "METHOD_NOT_ALLOWED")
    assert resp["Allow"] == "POST"
    assert snapshot(item, worker) == before


def test_a_get_on_register_is_405(client: Client) -> None:
    assert_error(client.get("/api/worker/register"), 405, "METHOD_NOT_ALLOWED")


def test_a_body_over_one_megabyte_is_413(client: Client, settings: Any) -> None:
    item, worker = running_attempt()
    before = snapshot(item, worker)
    body = json.dumps({"error": "x" * settings.MAX_REQUEST_BYTES})

    resp = call(client, worker, "fail", raw=body)

    assert_error(resp, 413, "PAYLOAD_TOO_LARGE")
    assert snapshot(item, worker) == before


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("{not json", id="malformed"),
        pytest.param("[1, 2]", id="array"),
        pytest.param('"text"', id="string"),
        pytest.param(b'{"iteration": "\xff\xfe"}', id="not_utf8"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(client: Client, raw: str | bytes) -> None:
    item, worker = running_attempt()
    before = snapshot(item, worker)

    assert_error(call(client, worker, "heartbeat", raw=raw), 400, "VALIDATION_ERROR")
    assert snapshot(item, worker) == before


@pytest.mark.parametrize(
    "body",
    [
        '{"metrics": {"tokensIn": NaN}}',
        '{"metrics": {"duration": Infinity}}',
        '{"prNumber": 99999999999}',
        '{"metrics": {"testsRun": 99999999999}}',
        '{"metrics": {"tokensIn": 100000000000000000000}}',
    ],
    ids=["nan", "infinity", "pr_number_over_int4", "count_over_int4", "tokens_over_int8"],
)
def test_out_of_range_numbers_are_a_400_and_change_nothing(client: Client, body: str) -> None:
    _, worker = running_attempt()
    resp = client.post(
        f"/api/worker/{worker.pk}/complete",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {worker_token(worker.pk)}",
    )
    assert resp.status_code == 400, resp.content
    assert resp.json()["code"] == "VALIDATION_ERROR"
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.RUNNING
