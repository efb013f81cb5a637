"""The worker callback routes (API.md "Worker callbacks"): who may call them.

A container reaches these with its own secret token: as a Bearer header or in the callback
base URL (``/w/<token>/api/worker/…``). A token opens only its own worker's routes, and never
reaches a log line.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from orchestration.services.dispatch import worker_token
from tests.callbacks_support import call, hold, snapshot, token_of
from tests.factories import running_attempt
from tests.helpers import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


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
