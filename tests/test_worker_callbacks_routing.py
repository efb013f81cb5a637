"""The worker callback routes (API.md "Worker callbacks"): unknown routes, methods and bodies
answer in the error shape and change nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client

from orchestration.models import WorkerStatus
from orchestration.services.dispatch import worker_token
from tests.callbacks_support import call, snapshot, token_of
from tests.factories import running_attempt
from tests.helpers import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


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


# --- the callback lane (WorkerCallbackMiddleware) ----------------------------------------------


@pytest.mark.parametrize("prefix", ["", "token"])
def test_a_callback_skips_the_browsers_middleware(client: Client, prefix: str) -> None:
    _, worker = running_attempt()
    base = f"/w/{token_of(worker)}" if prefix else ""
    client.cookies["sessionid"] = "whatever"  # a session middleware would read it

    resp = client.post(
        f"{base}/api/worker/{worker.pk}/heartbeat",
        json.dumps({"iteration": 1}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token_of(worker)}", "X-Request-ID": "beat-1"},
    )

    assert resp.status_code == 200, resp.content
    assert resp["X-Request-ID"] == "beat-1"  # the middleware before the lane ran
    # The headers every answer carries (the API document), set by the lane itself.
    assert resp["X-Content-Type-Options"] == "nosniff" and resp["X-Frame-Options"] == "DENY"
    # The browser's middleware did not run: no CSP, no session, no cookie.
    for header in ("Content-Security-Policy", "Referrer-Policy", "Vary"):
        assert header not in resp
    assert not resp.cookies
    assert not hasattr(resp.wsgi_request, "session")
    assert not hasattr(resp.wsgi_request, "user")


@pytest.mark.parametrize(
    ("raised", "status", "code"),
    [
        pytest.param(RuntimeError("password=hunter2"), 500, "INTERNAL_ERROR", id="unexpected"),
        pytest.param(OperationalError("server closed"), 503, "SERVICE_UNAVAILABLE", id="db_down"),
    ],
)
def test_an_exception_in_a_callback_view_is_answered_in_the_error_shape(
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    raised: Exception,
    status: int,
    code: str,
) -> None:
    from orchestration.api import worker_views

    def explode(*_: Any, **__: Any) -> None:
        raise raised

    _, worker = running_attempt()
    monkeypatch.setattr(worker_views.workers, "worker_heartbeat", explode)
    monkeypatch.setattr(worker_views, "coalescing", lambda: False)

    resp = call(client, worker, "heartbeat", {"iteration": 1})

    assert_error(resp, status, code)
    assert "hunter2" not in resp.content.decode()
    assert "Traceback" not in resp.content.decode()
    assert f"/api/worker/{worker.pk}/heartbeat" in caplog.text  # logged where it happened


def test_a_path_under_w_that_is_no_route_is_a_404_in_the_error_shape(client: Client) -> None:
    assert_error(client.post("/w/tok", "{}", content_type="application/json"), 404, "NOT_FOUND")
