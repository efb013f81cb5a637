"""A request id follows a request (issue 14 §3): answered as ``X-Request-ID`` (a sane incoming
one kept, else a new one), on the events recorded while handling it, in the header of every
Celery message it enqueues and bound again while that task runs, and on log records — one JSON
object a line with ``LOG_FORMAT=json``."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import types
from typing import Any
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client

from orchestration import nudge, requestid
from orchestration.api import openapi
from orchestration.logfilters import (
    JsonFormatter,
    PlainFormatter,
    RedactWorkerTokens,
    RequestIdFilter,
)
from orchestration.models import WorkItem, WorkItemEvent
from orchestration.services.dispatch import worker_token
from orchestration.services.events import event_record
from tests.conftest import ROOT
from tests.factories import WorkItemFactory, running_attempt
from whim.celery import app, bind_request_id, unbind_request_id

GENERATED = re.compile(r"[0-9a-f]{32}")


# --- the header ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/queue", "/health", "/api/nowhere", "/accounts/login/"])
def test_every_answer_carries_a_new_request_id(api: Client, path: str) -> None:
    first = api.get(path)
    second = api.get(path)

    assert GENERATED.fullmatch(first["X-Request-ID"]), first.headers
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.django_db
def test_an_error_answer_carries_one_too(client: Client) -> None:
    resp = client.get("/api/queue", REMOTE_ADDR="10.0.0.8")  # no key: 401

    assert resp.status_code == 401
    assert GENERATED.fullmatch(resp["X-Request-ID"])


@pytest.mark.django_db
@pytest.mark.parametrize(
    "incoming",
    ["abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "Root.1:2_x", "a" * 128],
)
def test_a_sane_incoming_request_id_is_kept(api: Client, incoming: str) -> None:
    assert api.get("/api/queue", headers={"X-Request-ID": incoming})["X-Request-ID"] == incoming


@pytest.mark.django_db
@pytest.mark.parametrize(
    "incoming",
    ["", " ", "a" * 129, "two words", "line\nbreak", "-leading", "semi;colon", "é", "a\x00b"],
)
def test_an_incoming_request_id_that_is_not_sane_is_replaced(api: Client, incoming: str) -> None:
    answered = api.get("/api/queue", HTTP_X_REQUEST_ID=incoming)["X-Request-ID"]

    assert GENERATED.fullmatch(answered), answered


# --- events and tasks ----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_events_a_request_records_carry_its_id(api: Client) -> None:
    resp = api.post(
        "/api/work",
        {"repo": "acme/widgets", "spec": "# Hello"},
        content_type="application/json",
        headers={"X-Request-ID": "submit-77"},
    )

    assert resp.status_code == 201, resp.content
    item = WorkItem.objects.get(pk=resp.json()["id"])
    events = list(WorkItemEvent.objects.filter(work_item=item))
    assert events
    assert {e.data.get("requestId") for e in events} == {"submit-77"}


@pytest.mark.django_db
def test_the_admin_finds_a_requests_events_by_its_id(api: Client, superuser_client: Client) -> None:
    for rid in ("find-me-1", "other-2"):
        body = {"repo": "acme/widgets", "spec": f"# For {rid}"}
        api.post("/api/work", body, content_type="application/json", HTTP_X_REQUEST_ID=rid)

    page = superuser_client.get("/admin/orchestration/workitemevent/", {"q": "find-me-1"})

    assert page.status_code == 200
    shown = list(page.context["cl"].result_list)
    assert shown and {e.data["requestId"] for e in shown} == {"find-me-1"}


@pytest.mark.django_db
def test_a_worker_callback_gets_its_own_id_on_the_events_it_records(client: Client) -> None:
    item, worker = running_attempt()
    before = set(WorkItemEvent.objects.values_list("pk", flat=True))
    resp = client.post(
        f"/api/worker/{worker.pk}/fail",
        json.dumps({"error": "boom", "iteration": 2}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {worker_token(worker.pk)}"},
    )

    assert resp.status_code == 200, resp.content
    rid = resp["X-Request-ID"]
    new = WorkItemEvent.objects.filter(work_item=item).exclude(pk__in=before)
    assert new.exists()
    assert {e.data.get("requestId") for e in new} == {rid}


@pytest.mark.django_db
def test_an_event_outside_a_request_has_no_request_id() -> None:
    item = WorkItemFactory.create()

    event = event_record(work_item=item, kind="note", data={"a": 1})

    assert event.data == {"a": 1}


@pytest.mark.django_db
def test_the_tasks_a_request_enqueues_carry_its_id_as_a_header(
    api: Client, django_capture_on_commit_callbacks: Any
) -> None:
    with (
        mock.patch.object(nudge.current_app, "send_task") as send_task,
        django_capture_on_commit_callbacks(execute=True),
    ):
        resp = api.post(
            "/api/work",
            {"repo": "acme/widgets", "spec": "# Hello"},
            content_type="application/json",
            headers={"X-Request-ID": "submit-88"},
        )

    assert resp.status_code == 201, resp.content
    assert send_task.call_args_list, "the submit enqueued nothing"
    for call in send_task.call_args_list:
        assert call.kwargs["headers"] == {"whim_request_id": "submit-88"}, call


def test_a_message_sent_outside_a_request_has_no_header() -> None:
    with mock.patch.object(nudge.current_app, "send_task") as send_task:
        nudge.send(nudge.TaskName.SWEEP, "all")

    send_task.assert_called_once_with(nudge.TaskName.SWEEP, args=["all"], headers=None)


@app.task(name="tests.request_id_now")
def request_id_now() -> str:
    """What the request id is while a task runs (and what it would enqueue with)."""
    with mock.patch.object(nudge.current_app, "send_task") as send_task:
        nudge.send(nudge.TaskName.DISPATCH)
    return f"{requestid.current()}|{send_task.call_args.kwargs['headers']}"


def test_a_task_runs_under_the_id_its_message_carried_and_passes_it_on() -> None:
    result = request_id_now.apply(headers={"whim_request_id": "from-web-1"}).get()

    assert result == "from-web-1|{'whim_request_id': 'from-web-1'}"
    assert requestid.current() == ""  # unbound after the task
    assert request_id_now.apply().get() == "|None"


def test_a_worker_binds_the_header_celery_made_a_request_attribute() -> None:
    """A real worker turns a custom message header into an attribute of ``task.request``."""
    task = types.SimpleNamespace(request=types.SimpleNamespace(whim_request_id="from-web-2"))

    bind_request_id(task_id="t-1", task=task)
    try:
        assert requestid.current() == "from-web-2"
    finally:
        unbind_request_id(task_id="t-1", task=task)
    assert requestid.current() == ""


@pytest.mark.parametrize("bad", ["with space", "x" * 200, "a\nb"])
def test_a_task_header_that_is_not_sane_is_not_bound(bad: str) -> None:
    task = types.SimpleNamespace(request=types.SimpleNamespace(whim_request_id=bad))

    bind_request_id(task_id="t-2", task=task)
    unbind_request_id(task_id="t-2", task=task)

    assert requestid.current() == ""


# --- log records ---------------------------------------------------------------------------


def _record(message: str, *args: Any) -> logging.LogRecord:
    record = logging.LogRecord("whim.test", logging.WARNING, __file__, 1, message, args, None)
    for f in (RedactWorkerTokens(), RequestIdFilter()):
        f.filter(record)
    return record


def test_a_json_log_line_has_the_request_id_and_stays_redacted() -> None:
    with requestid.bound("log-5"):
        record = _record("callback %s failed", "/w/sekret-token/api/worker/1/fail")

    line = JsonFormatter().format(record)

    entry = json.loads(line)
    assert entry["requestId"] == "log-5"
    assert entry["level"] == "WARNING" and entry["logger"] == "whim.test"
    assert entry["message"] == "callback /w/***/api/worker/1/fail failed"
    assert "sekret" not in line and "\n" not in line


def test_a_json_log_line_outside_a_request_has_no_request_id_and_keeps_a_traceback() -> None:
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        record = logging.LogRecord(
            "whim.test", logging.ERROR, __file__, 1, "oops", (), sys.exc_info()
        )
    RequestIdFilter().filter(record)

    entry = json.loads(JsonFormatter().format(record))

    assert "requestId" not in entry
    assert "RuntimeError: kaput" in entry["exception"]


def test_a_plain_log_line_shows_the_request_id_when_there_is_one() -> None:
    with requestid.bound("log-6"):
        inside = PlainFormatter().format(_record("hello"))
    outside = PlainFormatter().format(_record("hello"))

    assert inside.endswith(" WARNING whim.test [log-6] hello")
    assert outside.endswith(" WARNING whim.test hello")


def test_log_format_json_makes_every_line_json() -> None:
    """The settings wire it: a process started with LOG_FORMAT=json logs JSON objects."""
    code = (
        "import logging; from orchestration import requestid\n"
        "with requestid.bound('proc-1'): logging.getLogger('whim.x').warning('hi %s', 1)\n"
    )
    env = {"LOG_FORMAT": "json", "PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "whim.settings"}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env={**_inherited(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert {"logger": "whim.x", "message": "hi 1", "requestId": "proc-1"}.items() <= lines[
        -1
    ].items()


def _inherited() -> dict[str, str]:
    keep = ("DATABASE_URL", "REDIS_URL", "HOME", "WHIM_RUN_DIR", "SECRET_KEY", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k in keep or k.startswith("PG")}


def test_a_log_format_that_is_neither_is_refused_at_startup(settings: Any) -> None:
    settings.LOG_FORMAT = "xml"

    with pytest.raises(SystemCheckError, match="LOG_FORMAT 'xml' is not plain or json"):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


def test_every_documented_answer_names_the_request_id_header() -> None:
    """The OpenAPI document says each answer carries X-Request-ID (the live fuzz run checks
    the header against this pattern), with the rule the middleware keeps an incoming one by."""
    doc = openapi.openapi_document()
    header = openapi.RESPONSE_HEADERS["X-Request-ID"]
    assert re.fullmatch(header["schema"]["pattern"].strip("^$"), "a" * 128)
    for status, answer in doc["components"]["responses"].items():
        assert answer["headers"]["X-Request-ID"] == header, status
    for ops in doc["paths"].values():
        for op in ops.values():
            for status, answer in op["responses"].items():
                assert "$ref" in answer or answer["headers"]["X-Request-ID"] == header, status
